#pragma once

// Device code of segdet::paste_masks_aligned and paste_masks_aligned_crops (ATen-free; the glue is
// paste_masks_aligned_kernel.cu). The per-pixel math is ops/paste_masks_aligned_math.h, the same the
// CPU kernel runs, so both give the same masks.
#include "ops/cuda/device.h"

#include <cstdint>

#include "ops/paste_masks_aligned_math.h"
#include "ops/paste_masks_crops_math.h"

namespace segdet::cuda::paste_masks_aligned {

namespace apm = ::segdet::ops::aligned_paste_math;

// jobs[d] from boxes [D, 4] (float64): one thread per detection (grid-stride), so the pixel kernel
// reads a planned job instead of dividing per pixel, and the full-image paste needs no host sync.
template <typename T>
__global__ void plan_kernel(const double* __restrict__ boxes, int64_t num, int64_t mask_size, int64_t height,
                            int64_t width, apm::Job<T>* __restrict__ jobs) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; d < num; d += stride) {
    jobs[d] = apm::make_job<T>(boxes + 4 * d, mask_size, height, width);
  }
}

// One pixel of detection `job`, (x, y) in image pixels.
template <typename T>
SEGDET_DEVICE bool paste_pixel(const apm::Job<T>& job, const T* padded, int64_t mask_size, int64_t x, int64_t y,
                               T threshold) {
  const apm::Tap<T> tx = apm::make_tap<T>(job.ax, x, mask_size);
  const apm::Tap<T> ty = apm::make_tap<T>(job.ay, y, mask_size);
  return tx.hit && ty.hit && apm::sample<T>(padded, mask_size + 2, ty, tx) > threshold;
}

// out [D, height, width] (bool) from padded [D, S + 2, S + 2] (masks with one zero cell per side) and
// jobs [D]; one thread per output pixel (grid-stride over total = D * height * width). Pixels outside
// their detection's region are written false without reading the mask, as the CPU kernel does.
template <typename T>
__global__ void paste_kernel(const T* __restrict__ padded, const apm::Job<T>* __restrict__ jobs,
                             bool* __restrict__ out, int64_t total, int64_t mask_size, int64_t height, int64_t width,
                             T threshold) {
  const int64_t mask_stride = (mask_size + 2) * (mask_size + 2);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t x = idx % width;
    const int64_t y = (idx / width) % height;
    const int64_t d = idx / (width * height);
    const apm::Job<T> job = jobs[d];
    out[idx] = apm::in_region(job.region, x, y) &&
               paste_pixel<T>(job, padded + d * mask_stride, mask_size, x, y, threshold);
  }
}

// out [total] (bool): the crops, detection d's region row-major at out[offsets[d] .. offsets[d + 1]), from
// jobs planned on the host (offsets [D + 1], non-decreasing, offsets[0] = 0, offsets[D] = total).
template <typename T>
__global__ void crops_kernel(const T* __restrict__ padded, const apm::Job<T>* __restrict__ jobs,
                             const int64_t* __restrict__ offsets, int64_t num, bool* __restrict__ out, int64_t total,
                             int64_t mask_size, T threshold) {
  const int64_t mask_stride = (mask_size + 2) * (mask_size + 2);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t d = ::segdet::ops::paste_masks_math::crop_owner(offsets, num, idx);
    const apm::Job<T> job = jobs[d];
    const int64_t local = idx - offsets[d];
    const int64_t row = local / job.region.w;
    out[idx] = paste_pixel<T>(job, padded + d * mask_stride, mask_size, job.region.x + (local - row * job.region.w),
                              job.region.y + row, threshold);
  }
}

}  // namespace segdet::cuda::paste_masks_aligned
