#pragma once

// segdet::decode_boxes: the dispatcher wrapper and the argument checks its kernels share.

#include <ATen/ATen.h>

#include <cmath>

#include "ops/arg_checks.h"
#include "ops/box_coder_math.h"

namespace segdet::ops {

// rel_codes: [N, 4K] deltas (dx, dy, dw, dh) per class; boxes: [N, 4] (x1, y1, x2, y2) pixels;
// weights: 4 numbers; image_size: (height, width) to clip to, or none. Returns [N, 4K].
at::Tensor decode_boxes(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                        double bbox_xform_clip, at::OptionalSymIntArrayRef image_size);

namespace detail {

// Checks the CPU and CUDA kernels and the fake kernel run first (the contract: ops/arg_checks.h).
// IntT is int64_t in the kernels and c10::SymInt in the fake kernel, whose image_size may be traced.
template <typename IntT>
inline void check_decode_boxes_args(const at::Tensor& rel_codes, const at::Tensor& boxes,
                                    at::ArrayRef<double> weights, c10::OptionalArrayRef<IntT> image_size) {
  TORCH_CHECK_VALUE(rel_codes.dim() == 2 && size_holds((rel_codes.sym_size(1) % 4).sym_eq(0)),
                    "decode_boxes: rel_codes must be a 2-D tensor [N, 4*K] whose columns are (dx, dy, dw, dh) "
                    "per class, got shape ", rel_codes.sym_sizes());
  TORCH_CHECK_VALUE(boxes.dim() == 2 && size_holds(boxes.sym_size(1).sym_eq(4)),
                    "decode_boxes: boxes must be a 2-D tensor [N, 4] of (x1, y1, x2, y2), got shape ",
                    boxes.sym_sizes());
  TORCH_CHECK_VALUE(size_holds(rel_codes.sym_size(0).sym_eq(boxes.sym_size(0))), "decode_boxes: rel_codes has ",
                    rel_codes.sym_size(0), " rows but boxes has ", boxes.sym_size(0),
                    "; expected one reference box per row");
  TORCH_CHECK_TYPE(at::isFloatingType(rel_codes.scalar_type()),
                   "decode_boxes: rel_codes must be float64, float32, float16 or bfloat16, got ",
                   rel_codes.scalar_type());
  TORCH_CHECK_TYPE(boxes.scalar_type() == rel_codes.scalar_type(), "decode_boxes: boxes dtype (",
                   boxes.scalar_type(), ") must match rel_codes dtype (", rel_codes.scalar_type(), ")");
  TORCH_CHECK_VALUE(boxes.device() == rel_codes.device(), "decode_boxes: boxes device (", boxes.device(),
                    ") must match rel_codes device (", rel_codes.device(), ")");
  TORCH_CHECK_VALUE(weights.size() == 4, "decode_boxes: weights must be 4 numbers (wx, wy, ww, wh), got ",
                    weights.size());
  for (double w : weights) {
    TORCH_CHECK_VALUE(std::isfinite(w) && w > 0, "decode_boxes: weights must be finite and positive, got ",
                      weights);
  }
  if (image_size.has_value()) {
    const auto size = *image_size;
    TORCH_CHECK_VALUE(size.size() == 2 && size[0] > 0 && size[1] > 0,
                      "decode_boxes: image_size must be two positive ints (height, width), got ", size);
  }
}

// A NaN bound would make exp(min(d, bound)) depend on how min treats NaN. make_decode_params calls
// it, so every kernel that decodes anything checks it.
inline void check_bbox_xform_clip(double bbox_xform_clip) {
  TORCH_CHECK_VALUE(!std::isnan(bbox_xform_clip), "decode_boxes: bbox_xform_clip must not be NaN");
}

// The kernels' view of the op's arguments, in the accumulation type T (float for half types).
template <typename T>
inline box_coder::DecodeParams<T> make_decode_params(at::ArrayRef<double> weights, double bbox_xform_clip,
                                                     at::OptionalIntArrayRef image_size) {
  check_bbox_xform_clip(bbox_xform_clip);
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
