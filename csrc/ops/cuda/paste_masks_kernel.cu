// ATen glue of segdet::paste_masks on CUDA; the device code is paste_masks_kernels.cuh. Also
// compiles as C++ under SEGDET_EMULATION, where the same glue drives the CPU emulator.
#include "ops/cuda/glue.h"

#include <ATen/Dispatch.h>

#include "ops/cuda/glue_functions.h"
#include "ops/cuda/paste_masks_kernels.cuh"
#include "ops/cuda/paste_masks_launch.h"
#include "ops/paste_masks.h"

namespace segdet::ops::cuda_glue {

namespace kern = segdet::cuda::paste_masks;

at::Tensor paste_masks(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width,
                       double threshold) {
  detail::check_paste_masks_args(masks, boxes, height, width);

  const segdet::cuda::DeviceGuard device_guard(masks);
  const int64_t num = masks.size(0);
  auto out = at::empty({num, height, width}, masks.options().dtype(at::kBool));
  const int64_t total = out.numel();
  if (total == 0) {
    return out;
  }
  // The reference pads each mask with one zero pixel per side before resizing.
  const auto padded = at::constant_pad_nd(masks, {1, 1, 1, 1}, 0).contiguous();
  const auto box_data = boxes.contiguous();
  const int64_t mask_size = masks.size(1);
  const dim3 grid(static_cast<unsigned>(kern::num_blocks(total, segdet::cuda::num_sms())));
  const auto stream = segdet::cuda::current_stream();

  AT_DISPATCH_FLOATING_TYPES(padded.scalar_type(), "paste_masks_cuda", [&] {
    using mask_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(box_data.scalar_type(), "paste_masks_cuda_boxes", [&] {
      const auto kernel = &kern::paste_masks_kernel<mask_t, scalar_t>;
      SEGDET_LAUNCH(kernel, grid, kern::kThreads, stream, padded.const_data_ptr<mask_t>(),
                    box_data.const_data_ptr<scalar_t>(), out.mutable_data_ptr<bool>(), total, mask_size, height,
                    width, static_cast<mask_t>(threshold));
      segdet::cuda::check_launch();
    });
  });
  return out;
}

SEGDET_CUDA_IMPL(m) {
  m.impl("paste_masks", &paste_masks);
}

}  // namespace segdet::ops::cuda_glue
