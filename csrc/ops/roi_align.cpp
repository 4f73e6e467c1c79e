// Schema of segdet::roi_align and segdet::_roi_align_backward and their dispatcher wrappers.
// Kernels live in cpu/, cuda/ and autocast/; fake kernels and autograd in segdet/ops/roi_align.py.
#include "ops/roi_align.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace segdet {
namespace ops {

at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                     c10::SymInt pooled_height, c10::SymInt pooled_width, int64_t sampling_ratio, bool aligned) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("segdet::roi_align", "").typed<decltype(roi_align)>();
  return op.call(input, rois, spatial_scale, std::move(pooled_height), std::move(pooled_width), sampling_ratio,
                 aligned);
}

at::Tensor _roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                               c10::SymInt pooled_height, c10::SymInt pooled_width, c10::SymInt batch_size,
                               c10::SymInt channels, c10::SymInt height, c10::SymInt width, int64_t sampling_ratio,
                               bool aligned) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segdet::_roi_align_backward", "")
                       .typed<decltype(_roi_align_backward)>();
  return op.call(grad, rois, spatial_scale, std::move(pooled_height), std::move(pooled_width), std::move(batch_size),
                 std::move(channels), std::move(height), std::move(width), sampling_ratio, aligned);
}

TORCH_LIBRARY_FRAGMENT(segdet, m) {
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, "
      "bool aligned) -> Tensor");
}

}  // namespace ops
}  // namespace segdet
