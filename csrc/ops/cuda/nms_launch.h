#pragma once

// Host launch arithmetic of the bitmask NMS kernels (nms_kernels.cuh): the mask layout of one
// category and the size check that comes before any allocation. Unit-tested in csrc/tests.
//
// Row block r covers boxes [64 r, 64 r + 64) and column blocks [r, last_col[r]]; box 64 r + k stores
// its word for column block c at word_offset[r] + k * (last_col[r] - r + 1) + (c - r). For one
// category every row block reaches the last column block R - 1, so the mask is the upper triangle:
// 64 * R * (R + 1) / 2 words of 8 bytes (R = ceil(n / 64)), about n^2 / 16 bytes.
#include <cstdint>
#include <limits>

namespace segdet::cuda::nms {

constexpr int kBlockBoxes = 64;  // boxes per mask word
constexpr int kReduceThreads = 256;
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kWordBytes = 8;

inline int64_t row_blocks(int64_t n) {
  return n <= 0 ? 0 : (n - 1) / kBlockBoxes + 1;
}

// First word of row block r when all R row blocks reach column block R - 1: the rows before r hold
// 64 * (R - j) words each, j < r.
inline int64_t single_group_word_offset(int64_t r, int64_t R) {
  return kBlockBoxes * (r * R - r * (r - 1) / 2);
}

// Mask size of one category, saturated at INT64_MAX when it does not fit in int64.
inline int64_t single_group_mask_words(int64_t n) {
  const int64_t R = row_blocks(n);
  // 64 R (R + 1) / 2 = 32 R (R + 1); R <= 2^57 for any int64 n.
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  if (R != 0 && R + 1 > kMax / 32 / R) {
    return kMax;
  }
  return 32 * R * (R + 1);
}

// Bytes of `words` mask words, saturated at INT64_MAX.
inline int64_t mask_bytes(int64_t words) {
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  return words > kMax / kWordBytes ? kMax : words * kWordBytes;
}

// Whether a mask of `words` words may be allocated on a device of `device_bytes` bytes. Leaves
// room for the boxes, the sort buffers and other tensors: at most half the device.
inline bool mask_fits(int64_t words, int64_t device_bytes) {
  return mask_bytes(words) <= device_bytes / 2;
}

// grid.y of the mask kernel: one block per column block of the widest row, folded by a loop
// above the grid limit.
inline int64_t mask_grid_y(int64_t max_width) {
  return max_width < 1 ? 1 : (max_width < kMaxGridY ? max_width : kMaxGridY);
}

}  // namespace segdet::cuda::nms
