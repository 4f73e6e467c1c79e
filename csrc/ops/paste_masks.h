#pragma once

// segdet::paste_masks: the dispatcher wrapper and the argument checks its kernels share.

#include <ATen/ATen.h>

#include "ops/arg_checks.h"

namespace segdet::ops {

// masks: [D, S, S] probabilities (float32/float64; on the CPU also bfloat16, pasted exactly as the
// float32 masks it widens to); boxes: [D, 4] (x1, y1, x2, y2) pixels of the
// height x width image. Returns bool [D, height, width]: each mask resized into its box (grown by
// (S + 2) / S for the one-pixel zero padding) and thresholded with `>`.
at::Tensor paste_masks(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width,
                       double threshold);

namespace detail {

// bfloat16 masks: the CPU kernels widen them exactly to float32; the CUDA kernels read float32 and
// float64 only, and so does their glue compiled for the emulator (SEGDET_EMULATION, CPU tensors).
inline bool takes_bfloat16_masks(const at::Tensor& masks) {
#ifdef SEGDET_EMULATION
  (void)masks;
  return false;
#else
  return masks.device().is_cpu();
#endif
}

// Checks every paste_masks kernel and the fake kernel run first (the contract: ops/arg_checks.h).
inline void check_paste_masks_args(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width) {
  TORCH_CHECK_VALUE(masks.dim() == 3 && size_holds(masks.sym_size(1).sym_eq(masks.sym_size(2))) &&
                        size_holds(masks.sym_size(1).sym_gt(0)),
                    "paste_masks: masks must be a 3-D tensor [D, S, S] of square masks (S > 0), got shape ",
                    masks.sym_sizes());
  TORCH_CHECK_VALUE(boxes.dim() == 2 && size_holds(boxes.sym_size(1).sym_eq(4)),
                    "paste_masks: boxes must be a 2-D tensor [D, 4] of (x1, y1, x2, y2), got shape ",
                    boxes.sym_sizes());
  TORCH_CHECK_VALUE(size_holds(masks.sym_size(0).sym_eq(boxes.sym_size(0))), "paste_masks: masks has ",
                    masks.sym_size(0), " masks but boxes has ", boxes.sym_size(0), " rows; expected one box per mask");
  TORCH_CHECK_TYPE(masks.scalar_type() == at::kFloat || masks.scalar_type() == at::kDouble ||
                       (masks.scalar_type() == at::kBFloat16 && takes_bfloat16_masks(masks)),
                   "paste_masks: masks must be float32 or float64 (or bfloat16 on the CPU), got ",
                   masks.scalar_type(), " on ", masks.device());
  TORCH_CHECK_TYPE(boxes.scalar_type() == at::kFloat || boxes.scalar_type() == at::kDouble,
                   "paste_masks: boxes must be float32 or float64, got ", boxes.scalar_type());
  TORCH_CHECK_VALUE(boxes.device() == masks.device(), "paste_masks: boxes device (", boxes.device(),
                    ") must match masks device (", masks.device(), ")");
  TORCH_CHECK_VALUE(height >= 0 && width >= 0, "paste_masks: height and width must be >= 0, got (", height, ", ",
                    width, ")");
}

}  // namespace detail
}  // namespace segdet::ops
