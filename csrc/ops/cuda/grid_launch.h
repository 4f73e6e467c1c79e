#pragma once

// Grid sizes of the grid-stride kernels (roi_align, decode_boxes, paste_masks): plain integer
// arithmetic, shared by the CUDA glue and the emulated build, unit-tested in csrc/tests.
#include <algorithm>
#include <cstdint>

namespace segdet::cuda {

// Largest grid.x a launch accepts (2^31 - 1).
constexpr int64_t kMaxGridX = 2147483647;

// Blocks for `total` work items at `threads` per block: enough to cover every item once, but no
// more than `blocks_per_sm` per multiprocessor (the grid-stride loop covers the rest), and at least
// one so an empty launch is never made by mistake.
inline int64_t grid_stride_blocks(int64_t total, int64_t threads, int64_t num_sms, int64_t blocks_per_sm) {
  const int64_t needed = total <= 0 ? 1 : (total - 1) / threads + 1;
  const int64_t resident = std::max<int64_t>(1, num_sms) * std::max<int64_t>(1, blocks_per_sm);
  return std::clamp<int64_t>(std::min(needed, resident), 1, kMaxGridX);
}

}  // namespace segdet::cuda
