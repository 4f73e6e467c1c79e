// Python module entry point of segdet._C. Operators register themselves with the dispatcher
// (TORCH_LIBRARY_FRAGMENT in csrc/ops/*.cpp) when this library is loaded; the module reports how
// it was built and exposes the ops' argument checks (csrc/ops/<op>.h) to their fake kernels, so
// that a traced call is checked by the code that checks an eager one (see ops/arg_checks.h).
#include <torch/csrc/Exceptions.h>
#include <torch/extension.h>

#include <optional>
#include <string>
#include <vector>

#include "ops/decode_boxes.h"
#include "ops/nms.h"
#include "ops/paste_masks.h"
#include "ops/paste_masks_aligned.h"
#include "ops/roi_align.h"

namespace {

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

namespace ops = segdet::ops;

// Arguments as the fake kernels receive them: fake tensors and, for SymInt schema arguments,
// ints or torch.SymInts.
void check_roi_align_args(const at::Tensor& input, const at::Tensor& rois, const c10::SymInt& pooled_height,
                          const c10::SymInt& pooled_width) {
  ops::roi_align_detail::check_forward_args(input, rois, pooled_height, pooled_width);
}

void check_roi_align_backward_args(const at::Tensor& grad, const at::Tensor& rois, const c10::SymInt& pooled_height,
                                   const c10::SymInt& pooled_width, const c10::SymInt& batch_size,
                                   const c10::SymInt& channels, const c10::SymInt& height,
                                   const c10::SymInt& width) {
  ops::roi_align_detail::check_backward_args(grad, rois, pooled_height, pooled_width, batch_size, channels, height,
                                             width);
}

void check_nms_args(const at::Tensor& dets, const at::Tensor& scores) {
  ops::detail::check_nms_args("nms", "dets", dets, scores);
}

void check_batched_nms_args(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs) {
  ops::detail::check_batched_nms_args(boxes, scores, idxs);
}

void check_decode_boxes_args(const at::Tensor& rel_codes, const at::Tensor& boxes, const std::vector<double>& weights,
                             double bbox_xform_clip, const std::optional<std::vector<c10::SymInt>>& image_size) {
  ops::detail::check_decode_boxes_args(rel_codes, boxes, weights,
                                       image_size ? at::OptionalSymIntArrayRef(*image_size) : std::nullopt);
  ops::detail::check_bbox_xform_clip(bbox_xform_clip);
}

void check_paste_masks_args(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width) {
  ops::detail::check_paste_masks_args(masks, boxes, height, width);
}

void check_paste_masks_aligned_args(const std::string& op, const at::Tensor& masks, const at::Tensor& boxes,
                                    int64_t height, int64_t width, double threshold) {
  ops::detail::check_paste_masks_aligned_args(op.c_str(), masks, boxes, height, width, threshold);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "segdet compiled operators (registered under torch.ops.segdet)";
  m.def("with_cuda", &with_cuda, "True when the CUDA kernels were compiled in");
  // wrap_pybind_function translates c10 errors as the dispatcher does: c10::ValueError to
  // ValueError, c10::TypeError to TypeError, with the same message.
  m.def("check_roi_align_args", torch::wrap_pybind_function(check_roi_align_args));
  m.def("check_roi_align_backward_args", torch::wrap_pybind_function(check_roi_align_backward_args));
  m.def("check_nms_args", torch::wrap_pybind_function(check_nms_args));
  m.def("check_batched_nms_args", torch::wrap_pybind_function(check_batched_nms_args));
  m.def("check_decode_boxes_args", torch::wrap_pybind_function(check_decode_boxes_args));
  m.def("check_paste_masks_args", torch::wrap_pybind_function(check_paste_masks_args));
  m.def("check_paste_masks_aligned_args", torch::wrap_pybind_function(check_paste_masks_aligned_args));
}
