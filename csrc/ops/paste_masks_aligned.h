#pragma once

// segdet::paste_masks_aligned and segdet::paste_masks_aligned_crops: the argument checks their kernels
// and fake kernels share (the contract: ops/arg_checks.h). The math is paste_masks_aligned_math.h.

#include <ATen/ATen.h>

#include "ops/arg_checks.h"

namespace segdet::ops::detail {

// masks: [D, S, S] probabilities of any floating dtype (float64 is pasted in float64, the others in
// float32); boxes: [D, 4] (x1, y1, x2, y2) pixels of the height x width image, any floating dtype, on
// masks' device; threshold in [0, 1).
inline void check_paste_masks_aligned_args(const char* op, const at::Tensor& masks, const at::Tensor& boxes,
                                           int64_t height, int64_t width, double threshold) {
  TORCH_CHECK_VALUE(masks.dim() == 3 && size_holds(masks.sym_size(1).sym_eq(masks.sym_size(2))) &&
                        size_holds(masks.sym_size(1).sym_gt(0)),
                    op, ": masks must be [D, S, S] (square masks, S > 0), got shape ", masks.sym_sizes());
  TORCH_CHECK_VALUE(boxes.dim() == 2 && size_holds(boxes.sym_size(1).sym_eq(4)), op,
                    ": boxes must be [D, 4] (x1, y1, x2, y2), got shape ", boxes.sym_sizes());
  TORCH_CHECK_VALUE(size_holds(masks.sym_size(0).sym_eq(boxes.sym_size(0))), op, ": masks has ", masks.sym_size(0),
                    " rows but boxes has ", boxes.sym_size(0), "; expected one box per mask");
  TORCH_CHECK_TYPE(at::isFloatingType(masks.scalar_type()) && at::isFloatingType(boxes.scalar_type()), op,
                   ": masks and boxes must be floating point, got ", masks.scalar_type(), " and ",
                   boxes.scalar_type());
  TORCH_CHECK_VALUE(boxes.device() == masks.device(), op, ": masks (", masks.device(), ") and boxes (",
                    boxes.device(), ") must be on one device");
  TORCH_CHECK_VALUE(height >= 0 && width >= 0, op, ": height and width must be >= 0, got (", height, ", ", width,
                    ")");
  TORCH_CHECK_VALUE(threshold >= 0.0 && threshold < 1.0, op, ": threshold must be in [0, 1), got ", threshold);
}

// The compute type of the masks: double for float64, float for the rest.
inline at::ScalarType aligned_paste_compute_type(const at::Tensor& masks) {
  return masks.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The masks in the compute type with one zero cell per side: [D, S + 2, S + 2], contiguous.
inline at::Tensor aligned_paste_padded(const at::Tensor& masks) {
  const int64_t num = masks.size(0), size = masks.size(1);
  at::Tensor padded = at::zeros({num, size + 2, size + 2}, masks.options().dtype(aligned_paste_compute_type(masks)));
  padded.narrow(1, 1, size).narrow(2, 1, size).copy_(masks);
  return padded;
}

}  // namespace segdet::ops::detail
