// ATen glue of segdet::paste_masks_crops on CUDA; the device code is paste_masks_crops_kernels.cuh.
// Also compiles as C++ under SEGDET_EMULATION, where the same glue drives the CPU emulator.
//
// The crops' total size depends on the box values, so the boxes (D x 4 numbers) are copied to the host,
// where the crops are planned with the same grow_box the kernels use; the one synchronisation this costs
// is the one any data-dependent output size needs.
#include "ops/cuda/glue.h"

#include <ATen/Dispatch.h>

#include <cstring>
#include <tuple>
#include <vector>

#include "ops/cuda/paste_masks_crops_glue.h"
#include "ops/cuda/paste_masks_crops_kernels.cuh"
#include "ops/cuda/paste_masks_launch.h"
#include "ops/paste_masks.h"
#include "ops/paste_masks_crops_math.h"

namespace segdet::ops::cuda_glue {

namespace kern = segdet::cuda::paste_masks_crops;
namespace pm = segdet::ops::paste_masks_math;

std::tuple<at::Tensor, at::Tensor> paste_masks_crops(const at::Tensor& masks, const at::Tensor& boxes,
                                                     int64_t height, int64_t width, double threshold) {
  detail::check_paste_masks_args(masks, boxes, height, width);

  const segdet::cuda::DeviceGuard device_guard(masks);
  const int64_t num = masks.size(0);
  const int64_t mask_size = masks.size(1);
  const auto host_boxes = boxes.to(at::kCPU).contiguous();
  auto host_regions = at::zeros({num, 4}, host_boxes.options().dtype(at::kLong));
  auto host_offsets = at::empty({num + 1}, host_boxes.options().dtype(at::kLong));
  std::vector<kern::CropJob> jobs(static_cast<size_t>(num));
  int64_t* regions = host_regions.mutable_data_ptr<int64_t>();
  int64_t* offsets = host_offsets.mutable_data_ptr<int64_t>();
  offsets[0] = 0;
  AT_DISPATCH_FLOATING_TYPES(host_boxes.scalar_type(), "paste_masks_crops_cuda_plan", [&] {
    const scalar_t* b = host_boxes.const_data_ptr<scalar_t>();
    const scalar_t scale = static_cast<scalar_t>((mask_size + 2.0) / mask_size);
    for (int64_t i = 0; i < num; ++i) {
      const pm::PasteBox box = pm::grow_box<scalar_t>(b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3], scale);
      const pm::CropRegion r = pm::crop_region(box, height, width);
      regions[4 * i] = r.x;
      regions[4 * i + 1] = r.y;
      regions[4 * i + 2] = r.w;
      regions[4 * i + 3] = r.h;
      jobs[i] = kern::CropJob{box.x1, box.y1, box.x2, box.y2, r.x, r.y, r.w};
      offsets[i + 1] = offsets[i] + r.w * r.h;
    }
  });
  const int64_t total = offsets[num];
  auto data = at::empty({total}, masks.options().dtype(at::kBool));
  auto out_regions = host_regions.to(masks.device());
  if (total == 0) {
    return {data, out_regions};
  }
  auto host_jobs = at::empty({static_cast<int64_t>(num * sizeof(kern::CropJob))}, host_boxes.options().dtype(at::kByte));
  std::memcpy(host_jobs.mutable_data_ptr<uint8_t>(), jobs.data(), num * sizeof(kern::CropJob));
  const auto device_jobs = host_jobs.to(masks.device());
  const auto device_offsets = host_offsets.to(masks.device());
  // The reference pads each mask with one zero pixel per side before resizing.
  const auto padded = at::constant_pad_nd(masks, {1, 1, 1, 1}, 0).contiguous();
  const dim3 grid(static_cast<unsigned>(segdet::cuda::paste_masks::num_blocks(total, segdet::cuda::num_sms())));
  const auto stream = segdet::cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES(padded.scalar_type(), "paste_masks_crops_cuda", [&] {
    const auto kernel = &kern::paste_masks_crops_kernel<scalar_t>;
    SEGDET_LAUNCH(kernel, grid, segdet::cuda::paste_masks::kThreads, stream, padded.const_data_ptr<scalar_t>(),
                  reinterpret_cast<const kern::CropJob*>(device_jobs.const_data_ptr<uint8_t>()),
                  device_offsets.const_data_ptr<int64_t>(), num, data.mutable_data_ptr<bool>(), total, mask_size,
                  static_cast<scalar_t>(threshold));
    segdet::cuda::check_launch();
  });
  return {data, out_regions};
}

SEGDET_CUDA_IMPL(m) {
  m.impl("paste_masks_crops", &paste_masks_crops);
}

}  // namespace segdet::ops::cuda_glue
