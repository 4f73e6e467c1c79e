// CUDA kernel of segdet::paste_masks: one thread per output pixel (grid-stride loop over
// D x height x width). Pixels outside their detection's box are written as false without
// touching the mask.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "ops/paste_masks.h"
#include "ops/paste_masks_math.h"

namespace segdet::ops {
namespace {

namespace pm = paste_masks_math;

constexpr int kThreads = 256;

template <typename T, typename box_t>
__global__ void paste_masks_kernel(const T* __restrict__ padded, const box_t* __restrict__ boxes,
                                   bool* __restrict__ out, int64_t total, int64_t mask_size, int64_t height,
                                   int64_t width, T threshold) {
  const int64_t padded_size = mask_size + 2;
  const box_t scale = static_cast<box_t>((mask_size + 2.0) / mask_size);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t x = idx % width;
    const int64_t y = (idx / width) % height;
    const int64_t d = idx / (width * height);
    const box_t* b = boxes + 4 * d;
    // Recomputed per pixel: four loads and a few flops, cheaper than a second launch.
    const pm::PasteBox box = pm::grow_box<box_t>(b[0], b[1], b[2], b[3], scale);
    bool value = false;
    if (box.valid && x >= box.x1 && x <= box.x2 && y >= box.y1 && y <= box.y2) {
      const int64_t out_w = pm::resized_extent(box.x1, box.x2);
      const int64_t out_h = pm::resized_extent(box.y1, box.y2);
      const T scale_x = static_cast<T>(padded_size) / static_cast<T>(out_w);
      const T scale_y = static_cast<T>(padded_size) / static_cast<T>(out_h);
      const auto tx = pm::linear_taps<true, T>(scale_x, x - box.x1, padded_size, out_w);
      const auto ty = pm::linear_taps<true, T>(scale_y, y - box.y1, padded_size, out_h);
      const T* mask = padded + d * padded_size * padded_size;
      const T* row0 = mask + ty.i0 * padded_size;
      const T* row1 = mask + ty.i1 * padded_size;
      value = pm::bilinear_cuda_order<T>(row0[tx.i0], row0[tx.i1], row1[tx.i0], row1[tx.i1], ty, tx) > threshold;
    }
    out[idx] = value;
  }
}

at::Tensor paste_masks_cuda(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width,
                            double threshold) {
  detail::check_paste_masks_args(masks, boxes, height, width);
  TORCH_CHECK(masks.is_cuda(), "paste_masks: CUDA kernel got masks on ", masks.device());

  const c10::cuda::CUDAGuard device_guard(masks.device());
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

  const int64_t max_blocks = 32LL * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int blocks = static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, max_blocks));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES(padded.scalar_type(), "paste_masks_cuda", [&] {
    using mask_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(box_data.scalar_type(), "paste_masks_cuda_boxes", [&] {
      paste_masks_kernel<mask_t, scalar_t><<<blocks, kThreads, 0, stream>>>(
          padded.const_data_ptr<mask_t>(), box_data.const_data_ptr<scalar_t>(), out.mutable_data_ptr<bool>(), total,
          mask_size, height, width, static_cast<mask_t>(threshold));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, CUDA, m) {
  m.impl("paste_masks", &paste_masks_cuda);
}

}  // namespace segdet::ops
