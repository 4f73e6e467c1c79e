#pragma once

// segdet::paste_masks: the dispatcher wrapper and the argument checks its kernels share.

#include <ATen/ATen.h>

namespace segdet::ops {

// masks: [D, S, S] probabilities (float32/float64); boxes: [D, 4] (x1, y1, x2, y2) pixels of the
// height x width image. Returns bool [D, height, width]: each mask resized into its box (grown by
// (S + 2) / S for the one-pixel zero padding) and thresholded with `>`.
at::Tensor paste_masks(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width,
                       double threshold);

namespace detail {

// Checks every paste_masks kernel runs first, so a direct torch.ops call gets the same
// messages whichever backend it lands on.
inline void check_paste_masks_args(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width) {
  TORCH_CHECK_VALUE(masks.dim() == 3 && masks.size(1) == masks.size(2) && masks.size(1) > 0,
                    "paste_masks: masks must be a 3-D tensor [D, S, S] of square masks (S > 0), got shape ",
                    masks.sizes());
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4,
                    "paste_masks: boxes must be a 2-D tensor [D, 4] of (x1, y1, x2, y2), got shape ", boxes.sizes());
  TORCH_CHECK_VALUE(masks.size(0) == boxes.size(0), "paste_masks: masks has ", masks.size(0),
                    " masks but boxes has ", boxes.size(0), " rows; expected one box per mask");
  TORCH_CHECK_TYPE(masks.scalar_type() == at::kFloat || masks.scalar_type() == at::kDouble,
                   "paste_masks: masks must be float32 or float64, got ", masks.scalar_type());
  TORCH_CHECK_TYPE(boxes.scalar_type() == at::kFloat || boxes.scalar_type() == at::kDouble,
                   "paste_masks: boxes must be float32 or float64, got ", boxes.scalar_type());
  TORCH_CHECK_VALUE(boxes.device() == masks.device(), "paste_masks: boxes device (", boxes.device(),
                    ") must match masks device (", masks.device(), ")");
  TORCH_CHECK_VALUE(height >= 0 && width >= 0, "paste_masks: height and width must be >= 0, got (", height, ", ",
                    width, ")");
}

}  // namespace detail
}  // namespace segdet::ops
