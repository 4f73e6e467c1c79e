#pragma once

// Device code of segdet::paste_masks_crops (ATen-free; the glue is paste_masks_crops_kernel.cu): one
// thread per crop pixel (grid-stride loop over all crops' pixels), the per-pixel math of
// paste_masks_math.h exactly as paste_masks_kernel computes it for the full image, so each crop holds
// the same pixels as the full-image paste.
#include "ops/cuda/device.h"

#include <cstdint>

#include "ops/paste_masks_crops_math.h"

namespace segdet::cuda::paste_masks_crops {

namespace pm = ::segdet::ops::paste_masks_math;

// One detection's crop, planned on the host: the integer paste box (edges inclusive) and the crop's
// origin and width in image pixels. The crop's pixels are out[offsets[d] .. offsets[d + 1]), row-major.
struct CropJob {
  int64_t x1, y1, x2, y2;
  int64_t x0, y0, w;
};

// out [total] (bool) from padded [D, S + 2, S + 2] (masks with one zero pixel per side), jobs [D] and
// offsets [D + 1] (non-decreasing, offsets[0] = 0, offsets[D] = total).
template <typename T>
__global__ void paste_masks_crops_kernel(const T* __restrict__ padded, const CropJob* __restrict__ jobs,
                                         const int64_t* __restrict__ offsets, int64_t num, bool* __restrict__ out,
                                         int64_t total, int64_t mask_size, T threshold) {
  const int64_t padded_size = mask_size + 2;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t lo = pm::crop_owner(offsets, num, idx);
    const CropJob job = jobs[lo];
    const int64_t local = idx - offsets[lo];
    const int64_t row = local / job.w;
    const int64_t x = job.x0 + (local - row * job.w);
    const int64_t y = job.y0 + row;
    const int64_t out_w = pm::resized_extent(job.x1, job.x2);
    const int64_t out_h = pm::resized_extent(job.y1, job.y2);
    const T scale_x = static_cast<T>(padded_size) / static_cast<T>(out_w);
    const T scale_y = static_cast<T>(padded_size) / static_cast<T>(out_h);
    const auto tx = pm::linear_taps<true, T>(scale_x, x - job.x1, padded_size, out_w);
    const auto ty = pm::linear_taps<true, T>(scale_y, y - job.y1, padded_size, out_h);
    const T* mask = padded + lo * padded_size * padded_size;
    const T* row0 = mask + ty.i0 * padded_size;
    const T* row1 = mask + ty.i1 * padded_size;
    out[idx] = pm::bilinear_cuda_order<T>(row0[tx.i0], row0[tx.i1], row1[tx.i0], row1[tx.i1], ty, tx) > threshold;
  }
}

}  // namespace segdet::cuda::paste_masks_crops
