// Schemas of segdet::nms and segdet::batched_nms and their C++ dispatcher wrappers.
// Kernels: cpu/nms_kernel.cpp, cuda/nms_kernel.cu.

#include "ops/nms.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace segdet::ops {

at::Tensor nms(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("segdet::nms", "").typed<decltype(nms)>();
  return op.call(dets, scores, iou_threshold);
}

at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("segdet::batched_nms", "").typed<decltype(batched_nms)>();
  return op.call(boxes, scores, idxs, iou_threshold);
}

TORCH_LIBRARY_FRAGMENT(segdet, m) {
  m.def("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
}

}  // namespace segdet::ops
