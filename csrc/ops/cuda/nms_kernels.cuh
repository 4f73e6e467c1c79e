#pragma once

// Device code of segdet::nms and segdet::batched_nms (ATen-free; the glue is nms_kernel.cu).
//
// Bitmask NMS: boxes are sorted (by score; for batched_nms by category, then score) and cut into
// blocks of 64. For each box, one 64-bit word per later column block records which boxes of that
// block it would suppress (nms_mask_kernel, fully parallel). A single thread block then walks the
// boxes in order, keeping a box unless an earlier kept box marked it, and ORs the kept boxes'
// words into a running "removed" bitset (nms_reduce_kernel); the mask never leaves the device.
// The mask layout is described in nms_launch.h.
//
// The IoU test is nms_math::box_iou, the CPU kernel's arithmetic with explicitly rounded
// operations, so both devices decide borderline pairs alike.
#include "ops/cuda/device.h"

#include <cstdint>

#include "ops/cuda/nms_launch.h"
#include "ops/nms_math.h"

namespace segdet::cuda::nms {

// mask words of row block blockIdx.x, column blocks blockIdx.y, blockIdx.y + gridDim.y, ...;
// blockDim.x == kBlockBoxes. boxes [n, 4] in processing order; group_end[i] (nullptr for one
// category) is the end of box i's category.
template <typename T>
__global__ void nms_mask_kernel(const T* __restrict__ boxes, int64_t n, const int64_t* __restrict__ group_end,
                                const int64_t* __restrict__ last_col, const int64_t* __restrict__ word_offset,
                                T threshold, unsigned long long* __restrict__ mask) {
  SEGDET_SHARED(T, col_boxes, [kBlockBoxes][5]);
  const int64_t r = blockIdx.x;
  const int64_t row_last_col = last_col[r];
  const int64_t width = row_last_col - r + 1;
  const int64_t i = r * kBlockBoxes + threadIdx.x;
  T x1 = 0, y1 = 0, x2 = 0, y2 = 0, area = 0;
  int64_t end = n;  // boxes [i + 1, end) share box i's category
  if (i < n) {
    x1 = boxes[4 * i];
    y1 = boxes[4 * i + 1];
    x2 = boxes[4 * i + 2];
    y2 = boxes[4 * i + 3];
    area = nms_math::box_area(x1, y1, x2, y2);
    if (group_end != nullptr) {
      end = group_end[i];
    }
  }
  for (int64_t c = r + blockIdx.y; c <= row_last_col; c += gridDim.y) {
    const int64_t col0 = c * kBlockBoxes;
    const int cols = static_cast<int>(min(static_cast<int64_t>(kBlockBoxes), n - col0));
    __syncthreads();  // the previous column block is no longer read
    if (threadIdx.x < cols) {
      const T* b = boxes + 4 * (col0 + threadIdx.x);
      col_boxes[threadIdx.x][0] = b[0];
      col_boxes[threadIdx.x][1] = b[1];
      col_boxes[threadIdx.x][2] = b[2];
      col_boxes[threadIdx.x][3] = b[3];
      col_boxes[threadIdx.x][4] = nms_math::box_area(b[0], b[1], b[2], b[3]);
    }
    __syncthreads();
    if (i < n) {
      unsigned long long bits = 0;
      for (int k = 0; k < cols; ++k) {
        const int64_t j = col0 + k;
        if (j > i && j < end &&
            nms_math::box_iou(x1, y1, x2, y2, area, col_boxes[k][0], col_boxes[k][1], col_boxes[k][2],
                              col_boxes[k][3], col_boxes[k][4]) > threshold) {
          bits |= 1ULL << k;
        }
      }
      mask[word_offset[r] + threadIdx.x * width + (c - r)] = bits;
    }
  }
}

// One block (kReduceThreads threads) walks the row blocks in order. Thread 0 resolves the 64 boxes
// of a row block among themselves (a sequential dependency, on words staged in shared memory);
// then all threads fold the kept boxes' words into the later column blocks of `removed` (zeroed by
// the caller, R words). keep [n] (zeroed by the caller) gets 1 for every kept box.
__global__ void nms_reduce_kernel(const unsigned long long* __restrict__ mask, int64_t n, int64_t num_row_blocks,
                                  const int64_t* __restrict__ last_col, const int64_t* __restrict__ word_offset,
                                  unsigned long long* __restrict__ removed, uint8_t* __restrict__ keep) {
  SEGDET_SHARED(unsigned long long, diagonal, [kBlockBoxes]);
  SEGDET_SHARED(unsigned long long, kept_bits, );
  for (int64_t r = 0; r < num_row_blocks; ++r) {
    const int64_t row_last_col = last_col[r];
    const int64_t width = row_last_col - r + 1;
    const int64_t base = word_offset[r];
    const int rows = static_cast<int>(min(static_cast<int64_t>(kBlockBoxes), n - r * kBlockBoxes));
    if (threadIdx.x < rows) {
      diagonal[threadIdx.x] = mask[base + threadIdx.x * width];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long gone = removed[r];
      unsigned long long kept = 0;
      for (int k = 0; k < rows; ++k) {
        if (!((gone >> k) & 1ULL)) {
          kept |= 1ULL << k;
          gone |= diagonal[k];
          keep[r * kBlockBoxes + k] = 1;
        }
      }
      kept_bits = kept;
    }
    __syncthreads();
    const unsigned long long kept = kept_bits;
    for (int64_t c = r + 1 + threadIdx.x; c <= row_last_col; c += blockDim.x) {
      unsigned long long acc = removed[c];
      for (unsigned long long bits = kept; bits != 0; bits &= bits - 1) {
        const int k = __ffsll(static_cast<long long>(bits)) - 1;
        acc |= mask[base + k * width + (c - r)];
      }
      removed[c] = acc;
    }
    __syncthreads();  // removed[r + 1] is read by thread 0 next, and diagonal/kept_bits rewritten
  }
}

}  // namespace segdet::cuda::nms
