// Autocast for segdet::roi_align and segdet::_roi_align_backward: both run in float32 and the
// result is cast back to the input's dtype. Bilinear averaging is cheap next to the convolutions
// around it, and float keeps the sample weights and the bin sums from losing precision in half.
// Registered for CUDA and CPU autocast; the casts are ordinary ops, so autograd sees them.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "ops/roi_align.h"

namespace segdet {
namespace ops {
namespace {

template <c10::DispatchKey key, c10::DeviceType device>
at::Tensor roi_align_autocast(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                              c10::SymInt pooled_height, c10::SymInt pooled_width, int64_t sampling_ratio,
                              bool aligned) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  return roi_align(at::autocast::cached_cast(at::kFloat, input, device),
                   at::autocast::cached_cast(at::kFloat, rois, device), spatial_scale, std::move(pooled_height),
                   std::move(pooled_width), sampling_ratio, aligned)
      .to(input.scalar_type());
}

template <c10::DispatchKey key, c10::DeviceType device>
at::Tensor roi_align_backward_autocast(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                       c10::SymInt pooled_height, c10::SymInt pooled_width, c10::SymInt batch_size,
                                       c10::SymInt channels, c10::SymInt height, c10::SymInt width,
                                       int64_t sampling_ratio, bool aligned) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  return _roi_align_backward(at::autocast::cached_cast(at::kFloat, grad, device),
                             at::autocast::cached_cast(at::kFloat, rois, device), spatial_scale,
                             std::move(pooled_height), std::move(pooled_width), std::move(batch_size),
                             std::move(channels), std::move(height), std::move(width), sampling_ratio, aligned)
      .to(grad.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, AutocastCUDA, m) {
  m.impl("roi_align", TORCH_FN((roi_align_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>)));
  m.impl("_roi_align_backward",
         TORCH_FN((roi_align_backward_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>)));
}

TORCH_LIBRARY_IMPL(segdet, AutocastCPU, m) {
  m.impl("roi_align", TORCH_FN((roi_align_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>)));
  m.impl("_roi_align_backward",
         TORCH_FN((roi_align_backward_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>)));
}

}  // namespace ops
}  // namespace segdet
