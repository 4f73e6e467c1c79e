#pragma once

// segdet::decode_boxes: the dispatcher wrapper and the argument checks its kernels share.

#include <ATen/ATen.h>

#include <cmath>

#include "ops/box_coder_math.h"

namespace segdet::ops {

// rel_codes: [N, 4K] deltas (dx, dy, dw, dh) per class; boxes: [N, 4] (x1, y1, x2, y2) pixels;
// weights: 4 numbers; image_size: (height, width) to clip to, or none. Returns [N, 4K].
at::Tensor decode_boxes(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                        double bbox_xform_clip, at::OptionalSymIntArrayRef image_size);

namespace detail {

// Checks the CPU and CUDA kernels both run first, so a direct torch.ops call gets the same
// messages whichever backend it lands on.
inline void check_decode_boxes_args(const at::Tensor& rel_codes, const at::Tensor& boxes,
                                    at::ArrayRef<double> weights, at::OptionalIntArrayRef image_size) {
  TORCH_CHECK(rel_codes.dim() == 2 && rel_codes.size(1) % 4 == 0,
              "decode_boxes: rel_codes must be a 2-D tensor [N, 4*K] whose columns are (dx, dy, dw, dh) "
              "per class, got shape ", rel_codes.sizes());
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4,
              "decode_boxes: boxes must be a 2-D tensor [N, 4] of (x1, y1, x2, y2), got shape ", boxes.sizes());
  TORCH_CHECK(rel_codes.size(0) == boxes.size(0), "decode_boxes: rel_codes has ", rel_codes.size(0),
              " rows but boxes has ", boxes.size(0), "; expected one reference box per row");
  TORCH_CHECK(at::isFloatingType(rel_codes.scalar_type()),
              "decode_boxes: rel_codes must be float64, float32, float16 or bfloat16, got ", rel_codes.scalar_type());
  TORCH_CHECK(boxes.scalar_type() == rel_codes.scalar_type(), "decode_boxes: boxes dtype (", boxes.scalar_type(),
              ") must match rel_codes dtype (", rel_codes.scalar_type(), ")");
  TORCH_CHECK(boxes.device() == rel_codes.device(), "decode_boxes: boxes device (", boxes.device(),
              ") must match rel_codes device (", rel_codes.device(), ")");
  TORCH_CHECK(weights.size() == 4, "decode_boxes: weights must be 4 numbers (wx, wy, ww, wh), got ",
              weights.size());
  for (double w : weights) {
    TORCH_CHECK(std::isfinite(w) && w > 0, "decode_boxes: weights must be finite and positive, got ", weights);
  }
  if (image_size.has_value()) {
    const auto size = *image_size;
    TORCH_CHECK(size.size() == 2 && size[0] > 0 && size[1] > 0,
                "decode_boxes: image_size must be two positive ints (height, width), got ", size);
  }
}

// The kernels' view of the op's arguments, in the accumulation type T (float for half types).
template <typename T>
inline box_coder::DecodeParams<T> make_decode_params(at::ArrayRef<double> weights, double bbox_xform_clip,
                                                     at::OptionalIntArrayRef image_size) {
  box_coder::DecodeParams<T> params;
  params.wx = static_cast<T>(weights[0]);
  params.wy = static_cast<T>(weights[1]);
  params.ww = static_cast<T>(weights[2]);
  params.wh = static_cast<T>(weights[3]);
  params.max_log_scale = static_cast<T>(bbox_xform_clip);
  params.clip = image_size.has_value();
  params.height = params.clip ? static_cast<T>((*image_size)[0]) : T(0);
  params.width = params.clip ? static_cast<T>((*image_size)[1]) : T(0);
  return params;
}

}  // namespace detail
}  // namespace segdet::ops
