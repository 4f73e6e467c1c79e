// ATen glue of segdet::paste_masks_aligned and paste_masks_aligned_crops on CUDA; the device code is
// paste_masks_aligned_kernels.cuh. Also compiles as C++ under SEGDET_EMULATION, where the same glue
// drives the CPU emulator.
//
// The full-image paste plans its detections on the device (no synchronisation). The crops' total size
// depends on the box values, so paste_masks_aligned_crops copies the boxes (D x 4 numbers) to the host
// and plans there with the same make_job, as paste_masks_crops does.
#include "ops/cuda/glue.h"

#include <ATen/Dispatch.h>

#include <cstring>
#include <tuple>
#include <vector>

#include "ops/cuda/glue_functions.h"
#include "ops/cuda/paste_masks_aligned_kernels.cuh"
#include "ops/cuda/paste_masks_launch.h"
#include "ops/paste_masks_aligned.h"

namespace segdet::ops::cuda_glue {

namespace kern = segdet::cuda::paste_masks_aligned;
namespace apm = segdet::ops::aligned_paste_math;

at::Tensor paste_masks_aligned(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width,
                               double threshold) {
  detail::check_paste_masks_aligned_args("paste_masks_aligned", masks, boxes, height, width, threshold);

  const segdet::cuda::DeviceGuard device_guard(masks);
  const int64_t num = masks.size(0);
  auto out = at::empty({num, height, width}, masks.options().dtype(at::kBool));
  const int64_t total = out.numel();
  if (total == 0) {
    return out;
  }
  const int64_t mask_size = masks.size(1);
  const auto padded = detail::aligned_paste_padded(masks);
  const auto box_data = boxes.to(at::kDouble).contiguous();
  const auto stream = segdet::cuda::current_stream();
  const int64_t sms = segdet::cuda::num_sms();
  AT_DISPATCH_FLOATING_TYPES(padded.scalar_type(), "paste_masks_aligned_cuda", [&] {
    using Job = apm::Job<scalar_t>;
    auto job_bytes = at::empty({num * static_cast<int64_t>(sizeof(Job))}, masks.options().dtype(at::kByte));
    Job* jobs = reinterpret_cast<Job*>(job_bytes.mutable_data_ptr<uint8_t>());
    const auto plan = &kern::plan_kernel<scalar_t>;
    const dim3 plan_grid(static_cast<unsigned>(
        segdet::cuda::grid_stride_blocks(num, segdet::cuda::paste_masks::kThreads, sms, 1)));
    SEGDET_LAUNCH(plan, plan_grid, segdet::cuda::paste_masks::kThreads, stream, box_data.const_data_ptr<double>(),
                  num, mask_size, height, width, jobs);
    segdet::cuda::check_launch();
    const auto paste = &kern::paste_kernel<scalar_t>;
    const dim3 grid(static_cast<unsigned>(segdet::cuda::paste_masks::num_blocks(total, sms)));
    SEGDET_LAUNCH(paste, grid, segdet::cuda::paste_masks::kThreads, stream, padded.const_data_ptr<scalar_t>(), jobs,
                  out.mutable_data_ptr<bool>(), total, mask_size, height, width, static_cast<scalar_t>(threshold));
    segdet::cuda::check_launch();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> paste_masks_aligned_crops(const at::Tensor& masks, const at::Tensor& boxes,
                                                             int64_t height, int64_t width, double threshold) {
  detail::check_paste_masks_aligned_args("paste_masks_aligned_crops", masks, boxes, height, width, threshold);

  const segdet::cuda::DeviceGuard device_guard(masks);
  const int64_t num = masks.size(0);
  const int64_t mask_size = masks.size(1);
  const auto host_boxes = boxes.to(at::kCPU).to(at::kDouble).contiguous();
  const auto host = host_boxes.options();
  auto host_regions = at::zeros({num, 4}, host.dtype(at::kLong));
  auto host_offsets = at::empty({num + 1}, host.dtype(at::kLong));
  int64_t* regions = host_regions.mutable_data_ptr<int64_t>();
  int64_t* offsets = host_offsets.mutable_data_ptr<int64_t>();
  offsets[0] = 0;
  const auto compute_type = detail::aligned_paste_compute_type(masks);
  std::tuple<at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(compute_type, "paste_masks_aligned_crops_cuda", [&] {
    using Job = apm::Job<scalar_t>;
    std::vector<Job> jobs(static_cast<size_t>(num));
    const double* b = host_boxes.const_data_ptr<double>();
    for (int64_t i = 0; i < num; ++i) {
      jobs[i] = apm::make_job<scalar_t>(b + 4 * i, mask_size, height, width);
      const apm::Region& r = jobs[i].region;
      regions[4 * i] = r.x;
      regions[4 * i + 1] = r.y;
      regions[4 * i + 2] = r.w;
      regions[4 * i + 3] = r.h;
      offsets[i + 1] = offsets[i] + r.w * r.h;
    }
    const int64_t total = offsets[num];
    auto data = at::empty({total}, masks.options().dtype(at::kBool));
    result = {data, host_regions.to(masks.device())};
    if (total == 0) {
      return;
    }
    auto host_jobs = at::empty({num * static_cast<int64_t>(sizeof(Job))}, host.dtype(at::kByte));
    std::memcpy(host_jobs.mutable_data_ptr<uint8_t>(), jobs.data(), num * sizeof(Job));
    const auto device_jobs = host_jobs.to(masks.device());
    const auto device_offsets = host_offsets.to(masks.device());
    const auto padded = detail::aligned_paste_padded(masks);
    const auto kernel = &kern::crops_kernel<scalar_t>;
    const dim3 grid(static_cast<unsigned>(segdet::cuda::paste_masks::num_blocks(total, segdet::cuda::num_sms())));
    SEGDET_LAUNCH(kernel, grid, segdet::cuda::paste_masks::kThreads, segdet::cuda::current_stream(),
                  padded.const_data_ptr<scalar_t>(), reinterpret_cast<const Job*>(device_jobs.const_data_ptr<uint8_t>()),
                  device_offsets.const_data_ptr<int64_t>(), num, data.mutable_data_ptr<bool>(), total, mask_size,
                  static_cast<scalar_t>(threshold));
    segdet::cuda::check_launch();
  });
  return result;
}

SEGDET_CUDA_IMPL(m) {
  m.impl("paste_masks_aligned", &paste_masks_aligned);
  m.impl("paste_masks_aligned_crops", &paste_masks_aligned_crops);
}

}  // namespace segdet::ops::cuda_glue
