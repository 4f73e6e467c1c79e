// ATen glue of segdet::roi_align and segdet::_roi_align_backward on CUDA: checks, device guard,
// layouts, dtype dispatch and launches. The device code is roi_align_kernels.cuh; this file also
// compiles as C++ under SEGDET_EMULATION, where the same glue drives the CPU emulator.
//
// _roi_align_backward has two kernels: a scatter with atomics (fast; its float sums may round
// differently from run to run, so it raises under torch.use_deterministic_algorithms(True) when
// called directly) and a gather without atomics, bit-identical to the CPU backward in float32,
// which the op uses whenever deterministic algorithms are requested.
#include "ops/cuda/glue.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "ops/cuda/glue_functions.h"
#include "ops/cuda/roi_align_kernels.cuh"
#include "ops/cuda/roi_align_launch.h"
#include "ops/roi_align.h"

namespace segdet::ops::cuda_glue {
namespace {

namespace kern = segdet::cuda::roi_align;
using segdet::cuda::acc_type;


dim3 grid_for(int64_t total) {
  return dim3(static_cast<unsigned>(kern::num_blocks(total, segdet::cuda::num_sms())));
}

// Common prologue of both backward kernels; nullopt when there is nothing to launch.
struct BackwardSetup {
  kern::Params p;
  bool nhwc;
  at::Tensor grad;
  at::Tensor rois;
  at::Tensor grad_input;  // zero-filled only when `empty`
  bool empty;
};

BackwardSetup backward_setup(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                             int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                             int64_t height, int64_t width, int64_t sampling_ratio, bool aligned, bool zero_fill) {
  const kern::Geometry g{batch_size, channels, height, width, pooled_height, pooled_width};
  const bool nhwc = roi_align_detail::use_channels_last(grad);
  const auto format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  BackwardSetup s{{g, spatial_scale, sampling_ratio, aligned}, nhwc, grad.contiguous(format), rois.contiguous(),
                  at::empty({g.N, g.C, g.H, g.W}, grad.options().memory_format(format)), false};
  s.empty = s.grad.numel() == 0 || s.grad_input.numel() == 0;
  if (zero_fill || s.empty) {
    s.grad_input.zero_();
  }
  return s;
}

void check_backward(const at::Tensor& grad, const at::Tensor& rois, int64_t pooled_height, int64_t pooled_width,
                    int64_t batch_size, int64_t channels, int64_t height, int64_t width) {
  roi_align_detail::check_backward_args(grad, rois, pooled_height, pooled_width, batch_size, channels, height,
                                        width);
}

bool is_half(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

}  // namespace

at::Tensor roi_align_forward(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                             int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  roi_align_detail::check_forward_args(input, rois, pooled_height, pooled_width);
  const kern::Geometry g{input.size(0), input.size(1), input.size(2), input.size(3), pooled_height, pooled_width};
  const segdet::cuda::DeviceGuard device_guard(input);
  const bool nhwc = roi_align_detail::use_channels_last(input);
  const auto format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor in = input.contiguous(format);
  const at::Tensor r = rois.contiguous();
  at::Tensor output = at::empty({r.size(0), g.C, g.PH, g.PW}, input.options().memory_format(format));
  const int64_t total = output.numel();
  if (total == 0) {
    return output;
  }
  const kern::Params p{g, spatial_scale, sampling_ratio, aligned};
  const auto stream = segdet::cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    const auto kernel = nhwc ? &kern::roi_align_forward_kernel<scalar_t, acc_t, true>
                             : &kern::roi_align_forward_kernel<scalar_t, acc_t, false>;
    SEGDET_LAUNCH(kernel, grid_for(total), kern::kThreads, stream, total, in.const_data_ptr<scalar_t>(),
                  r.const_data_ptr<scalar_t>(), p, output.mutable_data_ptr<scalar_t>());
    segdet::cuda::check_launch();
  });
  return output;
}

at::Tensor roi_align_backward_atomic(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                     int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                     int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                     bool aligned) {
  check_backward(grad, rois, pooled_height, pooled_width, batch_size, channels, height, width);
  at::globalContext().alertNotDeterministic("segdet::_roi_align_backward (CUDA)");
  const segdet::cuda::DeviceGuard device_guard(grad);
  if (is_half(grad)) {
    // Atomic adds in half would round every partial sum; accumulate in float and round once.
    return roi_align_backward_atomic(grad.to(at::kFloat), rois.to(at::kFloat), spatial_scale, pooled_height,
                                     pooled_width, batch_size, channels, height, width, sampling_ratio, aligned)
        .to(grad.scalar_type());
  }
  BackwardSetup s = backward_setup(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                                   height, width, sampling_ratio, aligned, /*zero_fill=*/true);
  if (s.empty) {
    return s.grad_input;
  }
  const int64_t total = s.grad.numel();
  const auto stream = segdet::cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cuda", [&] {
    const auto kernel = s.nhwc ? &kern::roi_align_backward_kernel<scalar_t, true>
                               : &kern::roi_align_backward_kernel<scalar_t, false>;
    SEGDET_LAUNCH(kernel, grid_for(total), kern::kThreads, stream, total, s.grad.const_data_ptr<scalar_t>(),
                  s.rois.const_data_ptr<scalar_t>(), s.p, s.grad_input.mutable_data_ptr<scalar_t>());
    segdet::cuda::check_launch();
  });
  return s.grad_input;
}

at::Tensor roi_align_backward_deterministic(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                            int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                            int64_t channels, int64_t height, int64_t width,
                                            int64_t sampling_ratio, bool aligned) {
  check_backward(grad, rois, pooled_height, pooled_width, batch_size, channels, height, width);
  const segdet::cuda::DeviceGuard device_guard(grad);
  if (is_half(grad)) {
    // As the CPU backward: the float kernel, rounded once at the end.
    return roi_align_backward_deterministic(grad.to(at::kFloat), rois.to(at::kFloat), spatial_scale, pooled_height,
                                            pooled_width, batch_size, channels, height, width, sampling_ratio,
                                            aligned)
        .to(grad.scalar_type());
  }
  BackwardSetup s = backward_setup(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                                   height, width, sampling_ratio, aligned, /*zero_fill=*/false);
  if (s.empty) {
    return s.grad_input;
  }
  const int64_t num_rois = s.rois.size(0);
  const int64_t total = s.grad_input.numel();
  const auto stream = segdet::cuda::current_stream();
  const auto long_options = s.rois.options().dtype(at::kLong);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_deterministic_cuda", [&] {
    // The CPU's RoI order (per image, stably by first y tap) as a stable sort of one int64 key.
    at::Tensor key = at::empty({num_rois}, long_options);
    at::Tensor window = at::empty({num_rois, 4}, long_options.dtype(at::kInt));
    const auto key_kernel = &kern::roi_align_order_key_kernel<scalar_t>;
    SEGDET_LAUNCH(key_kernel, grid_for(num_rois), kern::kThreads, stream, num_rois,
                  s.rois.const_data_ptr<scalar_t>(), s.p, key.mutable_data_ptr<int64_t>(),
                  window.mutable_data_ptr<int32_t>());
    segdet::cuda::check_launch();
    const auto [sorted_key, order] = at::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    const at::Tensor boundaries = at::arange(batch_size + 1, long_options) * (height + 1);
    const at::Tensor image_begin =
        at::searchsorted(sorted_key, boundaries, /*out_int32=*/false, /*right=*/false).contiguous();
    const at::Tensor order_c = order.contiguous();
    const auto kernel = s.nhwc ? &kern::roi_align_backward_gather_kernel<scalar_t, true>
                               : &kern::roi_align_backward_gather_kernel<scalar_t, false>;
    SEGDET_LAUNCH(kernel, grid_for(total), kern::kThreads, stream, total, s.grad.const_data_ptr<scalar_t>(),
                  s.rois.const_data_ptr<scalar_t>(), order_c.const_data_ptr<int64_t>(),
                  image_begin.const_data_ptr<int64_t>(), window.const_data_ptr<int32_t>(), s.p,
                  s.grad_input.mutable_data_ptr<scalar_t>());
    segdet::cuda::check_launch();
  });
  return s.grad_input;
}

at::Tensor roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                              int64_t height, int64_t width, int64_t sampling_ratio, bool aligned) {
  const auto backward = at::globalContext().deterministicAlgorithms() ? &roi_align_backward_deterministic
                                                                      : &roi_align_backward_atomic;
  return backward(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
                  sampling_ratio, aligned);
}

SEGDET_CUDA_IMPL(m) {
  m.impl("roi_align", TORCH_FN(roi_align_forward));
  m.impl("_roi_align_backward", TORCH_FN(roi_align_backward));
}

}  // namespace segdet::ops::cuda_glue
