#pragma once

// Device code of segdet::paste_masks (ATen-free; the glue is paste_masks_kernel.cu): one thread per
// output pixel (grid-stride loop over D x height x width), the per-pixel math of
// paste_masks_math.h. Pixels outside their detection's box are written as false without touching
// the mask.
#include "ops/cuda/device.h"

#include <cstdint>

#include "ops/paste_masks_math.h"

namespace segdet::cuda::paste_masks {

namespace pm = ::segdet::ops::paste_masks_math;

// out [D, height, width] (bool) from padded [D, S + 2, S + 2] (masks with one zero pixel per side)
// and boxes [D, 4]; total = D * height * width.
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

}  // namespace segdet::cuda::paste_masks
