// Host-side tests of the CUDA launch arithmetic (csrc/ops/cuda/*_launch.h): grid sizes, the NMS
// mask layout and its size check. Plain integer functions, no torch, no GPU. Run through ctest.
#include <cstdint>
#include <cstdio>
#include <limits>

#include "ops/cuda/decode_boxes_launch.h"
#include "ops/cuda/grid_launch.h"
#include "ops/cuda/nms_launch.h"
#include "ops/cuda/paste_masks_launch.h"
#include "ops/cuda/roi_align_launch.h"

namespace {

int g_failures = 0;
int g_checks = 0;

void check(bool ok, const char* what, int line) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::fprintf(stderr, "FAILED (line %d): %s\n", line, what);
  }
}

#define CHECK(cond) check((cond), #cond, __LINE__)

void test_grid_stride() {
  using segdet::cuda::grid_stride_blocks;
  CHECK(grid_stride_blocks(0, 256, 132, 16) == 1);  // never a zero-block launch
  CHECK(grid_stride_blocks(1, 256, 132, 16) == 1);
  CHECK(grid_stride_blocks(256, 256, 132, 16) == 1);
  CHECK(grid_stride_blocks(257, 256, 132, 16) == 2);
  CHECK(grid_stride_blocks(int64_t(1) << 40, 256, 132, 16) == 132 * 16);  // capped: the loop strides
  CHECK(grid_stride_blocks(int64_t(1) << 40, 256, 0, 16) == 16);          // a bogus SM count still launches
  CHECK(grid_stride_blocks(std::numeric_limits<int64_t>::max(), 1, int64_t(1) << 40, int64_t(1) << 20) ==
        segdet::cuda::kMaxGridX);
  // Every item is covered: blocks * threads * (loop trips) >= total.
  for (int64_t total : {1, 100, 4097, 1 << 20, 123456789}) {
    const int64_t b = segdet::cuda::roi_align::num_blocks(total, 4);
    CHECK(b >= 1 && b <= 4 * segdet::cuda::roi_align::kBlocksPerSm);
    CHECK(b * segdet::cuda::roi_align::kThreads >= total || b == 4 * segdet::cuda::roi_align::kBlocksPerSm);
  }
  CHECK(segdet::cuda::decode_boxes::num_blocks(1000, 4) == 4);
  CHECK(segdet::cuda::paste_masks::num_blocks(1 << 30, 4) == 4 * segdet::cuda::paste_masks::kBlocksPerSm);
  CHECK(segdet::cuda::roi_align::map_size_ok(0, 5));
  CHECK(!segdet::cuda::roi_align::map_size_ok(int64_t(1) << 31, 5));
  CHECK(!segdet::cuda::roi_align::map_size_ok(-1, 5));
}

void test_nms_layout() {
  using namespace segdet::cuda::nms;
  CHECK(row_blocks(0) == 0 && row_blocks(1) == 1 && row_blocks(64) == 1 && row_blocks(65) == 2);
  // The row blocks tile the mask exactly: row r holds 64 * (R - r) words, the last ends at the total.
  for (int64_t n : {1, 63, 64, 65, 1000, 4097}) {
    const int64_t R = row_blocks(n);
    CHECK(single_group_word_offset(0, R) == 0);
    bool contiguous = true;
    for (int64_t r = 0; r + 1 < R; ++r) {
      contiguous &= single_group_word_offset(r + 1, R) - single_group_word_offset(r, R) == kBlockBoxes * (R - r);
    }
    CHECK(contiguous);
    CHECK(single_group_word_offset(R - 1, R) + kBlockBoxes == single_group_mask_words(n));
  }
  // The review's numbers: 626 MB at 100k boxes, 62.5 GB at 1M.
  CHECK(mask_bytes(single_group_mask_words(100000)) == 625800192);
  CHECK(mask_bytes(single_group_mask_words(1000000)) == 62504000000);
  // Saturates instead of overflowing.
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  CHECK(single_group_mask_words(kMax) == kMax);
  CHECK(mask_bytes(kMax / 4) == kMax);
  CHECK(single_group_mask_words(int64_t(1) << 40) == kMax);  // 2^68 words do not fit
  // 100k boxes fit an 80 GB device; 3M boxes (562 GB) fit none.
  CHECK(mask_fits(single_group_mask_words(100000), int64_t(80) << 30));
  CHECK(!mask_fits(single_group_mask_words(3000000), int64_t(141) << 30));
  CHECK(!mask_fits(single_group_mask_words(1000000), int64_t(16) << 30));
  CHECK(!mask_fits(kMax, kMax));
  CHECK(mask_grid_y(0) == 1 && mask_grid_y(7) == 7 && mask_grid_y(100000) == kMaxGridY);
}

}  // namespace

int main() {
  test_grid_stride();
  test_nms_layout();
  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
