#pragma once

// segdet::nms and segdet::batched_nms: the dispatcher wrappers and the argument checks their
// kernels share.

#include <ATen/ATen.h>

#include "ops/arg_checks.h"

namespace segdet::ops {

// boxes: [N, 4] (x1, y1, x2, y2) pixels; scores: [N]. Returns int64 [K], the indices of the kept
// boxes in decreasing score order (torchvision.ops.nms semantics).
at::Tensor nms(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold);

// As nms, but boxes only suppress boxes of their own category idxs: integer [N].
at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold);

namespace detail {

// Checks every nms kernel and the fake kernels run first (the contract: ops/arg_checks.h).
// `op` and `boxes_name` name the op and its boxes argument.
inline void check_nms_args(const char* op, const char* boxes_name, const at::Tensor& boxes,
                           const at::Tensor& scores) {
  TORCH_CHECK_VALUE(boxes.dim() == 2 && size_holds(boxes.sym_size(1).sym_eq(4)), op, ": ", boxes_name,
                    " must be a 2-D tensor [N, 4] of (x1, y1, x2, y2), got shape ", boxes.sym_sizes());
  TORCH_CHECK_VALUE(scores.dim() == 1, op, ": scores must be a 1-D tensor [N], got shape ", scores.sym_sizes());
  TORCH_CHECK_VALUE(size_holds(boxes.sym_size(0).sym_eq(scores.sym_size(0))), op, ": ", boxes_name, " has ",
                    boxes.sym_size(0), " rows but scores has ", scores.sym_size(0),
                    " elements; expected one score per box");
  TORCH_CHECK_TYPE(at::isFloatingType(boxes.scalar_type()), op, ": ", boxes_name,
                   " must be float64, float32, float16 or bfloat16, got ", boxes.scalar_type());
  TORCH_CHECK_TYPE(scores.scalar_type() == boxes.scalar_type(), op, ": scores dtype (", scores.scalar_type(),
                   ") must match ", boxes_name, " dtype (", boxes.scalar_type(), ")");
  TORCH_CHECK_VALUE(scores.device() == boxes.device(), op, ": scores device (", scores.device(), ") must match ",
                    boxes_name, " device (", boxes.device(), ")");
}

inline void check_batched_nms_args(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs) {
  check_nms_args("batched_nms", "boxes", boxes, scores);
  TORCH_CHECK_VALUE(idxs.dim() == 1 && size_holds(idxs.sym_size(0).sym_eq(boxes.sym_size(0))),
                    "batched_nms: idxs must be a 1-D tensor [N] with one category per box (N = ", boxes.sym_size(0),
                    "), got shape ", idxs.sym_sizes());
  TORCH_CHECK_TYPE(at::isIntegralType(idxs.scalar_type(), /*includeBool=*/false),
                   "batched_nms: idxs must be an integer tensor (category of each box), got ", idxs.scalar_type());
  TORCH_CHECK_VALUE(idxs.device() == boxes.device(), "batched_nms: idxs device (", idxs.device(),
                    ") must match boxes device (", boxes.device(), ")");
}

}  // namespace detail
}  // namespace segdet::ops
