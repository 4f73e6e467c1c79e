#pragma once

// Host launch arithmetic of the decode_boxes kernel (see decode_boxes_kernels.cuh).
#include <cstdint>

#include "ops/cuda/grid_launch.h"

namespace segdet::cuda::decode_boxes {

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 16;

inline int64_t num_blocks(int64_t num_deltas, int64_t num_sms) {
  return grid_stride_blocks(num_deltas, kThreads, num_sms, kBlocksPerSm);
}

}  // namespace segdet::cuda::decode_boxes
