#pragma once

// Host launch arithmetic of the roi_align kernels (see roi_align_kernels.cuh).
#include <cstdint>

#include "ops/cuda/grid_launch.h"

namespace segdet::cuda::roi_align {

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 16;

inline int64_t num_blocks(int64_t total, int64_t num_sms) {
  return grid_stride_blocks(total, kThreads, num_sms, kBlocksPerSm);
}

// The kernels index the map with int (Tap::lo/hi) and int64 element offsets.
inline bool map_size_ok(int64_t height, int64_t width) {
  return height >= 0 && width >= 0 && height < 2147483647 && width < 2147483647;
}

}  // namespace segdet::cuda::roi_align
