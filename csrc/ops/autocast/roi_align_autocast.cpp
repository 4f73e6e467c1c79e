// Autocast for segdet::roi_align and segdet::_roi_align_backward. The result has the input's
// (forward) or grad's (backward) dtype either way; what differs by device is where the math runs.
// - CPU: a bfloat16 map is passed through as it is, with the rois in float32. The CPU kernels read
//   bf16 and pool, scatter and accumulate in float (cpu/roi_align_kernel.cpp), so the values are
//   bitwise those of the float32 kernel on the widened map, rounded once. Skipping the float copies
//   of the map (forward) and of grad_input (backward) saves their memory (~165 MB each for an R50-FPN
//   batch of 2 at 800x1216) and measured 1.7-4x faster at those shapes, about even at the small
//   model's (scripts/bench_bf16_ops.py, 2 CPU threads). Other dtypes take the float32 path below.
// - CUDA: both run in float32 and the result is cast back to the input's dtype. The CUDA kernels
//   read rois in the map's dtype, so a native bf16 call would round box coordinates to bf16.
// The casts are ordinary ops, so autograd sees them.
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

constexpr auto kCpu = c10::DispatchKey::AutocastCPU;

// The map dtypes the CPU kernels take natively under autocast. float16 keeps the float32 path: it is
// not what CPU autocast emits by default and its native path has not been measured.
bool native_on_cpu(const at::Tensor& map) { return map.scalar_type() == at::kBFloat16; }

at::Tensor roi_align_autocast_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                  c10::SymInt pooled_height, c10::SymInt pooled_width, int64_t sampling_ratio,
                                  bool aligned) {
  if (!native_on_cpu(input)) {
    return roi_align_autocast<kCpu, c10::DeviceType::CPU>(input, rois, spatial_scale, std::move(pooled_height),
                                                         std::move(pooled_width), sampling_ratio, aligned);
  }
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kCpu);
  return roi_align(input, at::autocast::cached_cast(at::kFloat, rois, c10::DeviceType::CPU), spatial_scale,
                   std::move(pooled_height), std::move(pooled_width), sampling_ratio, aligned);
}

at::Tensor roi_align_backward_autocast_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                           c10::SymInt pooled_height, c10::SymInt pooled_width,
                                           c10::SymInt batch_size, c10::SymInt channels, c10::SymInt height,
                                           c10::SymInt width, int64_t sampling_ratio, bool aligned) {
  if (!native_on_cpu(grad)) {
    return roi_align_backward_autocast<kCpu, c10::DeviceType::CPU>(
        grad, rois, spatial_scale, std::move(pooled_height), std::move(pooled_width), std::move(batch_size),
        std::move(channels), std::move(height), std::move(width), sampling_ratio, aligned);
  }
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kCpu);
  return _roi_align_backward(grad, at::autocast::cached_cast(at::kFloat, rois, c10::DeviceType::CPU), spatial_scale,
                             std::move(pooled_height), std::move(pooled_width), std::move(batch_size),
                             std::move(channels), std::move(height), std::move(width), sampling_ratio, aligned);
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, AutocastCUDA, m) {
  m.impl("roi_align", TORCH_FN((roi_align_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>)));
  m.impl("_roi_align_backward",
         TORCH_FN((roi_align_backward_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>)));
}

TORCH_LIBRARY_IMPL(segdet, AutocastCPU, m) {
  m.impl("roi_align", TORCH_FN(roi_align_autocast_cpu));
  m.impl("_roi_align_backward", TORCH_FN(roi_align_backward_autocast_cpu));
}

}  // namespace ops
}  // namespace segdet
