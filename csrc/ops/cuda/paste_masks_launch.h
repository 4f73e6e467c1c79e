#pragma once

// Host launch arithmetic of the paste_masks kernel (see paste_masks_kernels.cuh).
#include <cstdint>

#include "ops/cuda/grid_launch.h"

namespace segdet::cuda::paste_masks {

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 32;

inline int64_t num_blocks(int64_t total_pixels, int64_t num_sms) {
  return grid_stride_blocks(total_pixels, kThreads, num_sms, kBlocksPerSm);
}

}  // namespace segdet::cuda::paste_masks
