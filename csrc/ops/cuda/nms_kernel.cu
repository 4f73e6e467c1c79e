// CUDA kernels of segdet::nms and segdet::batched_nms.
//
// Bitmask NMS: boxes are sorted (by score; for batched_nms by category, then score) and cut into
// blocks of 64. For each box, one 64-bit word per later column block records which boxes of that
// block it would suppress (nms_mask_kernel, fully parallel). A single thread block then walks the
// boxes in order, keeping a box unless an earlier kept box marked it, and ORs the kept boxes'
// words into a running "removed" bitset (nms_reduce_kernel); the mask never leaves the device.
//
// batched_nms never compares boxes of different categories: after sorting by category each box
// only needs the column blocks up to the end of its category, so each row block stores words
// only for its own column range. The mask is then about N * (category size) / 64 words instead
// of N^2 / 64, which is what makes 100k+ boxes over many categories fit.
//
// The IoU test is nms_math::box_iou, the CPU kernel's arithmetic with explicitly rounded
// operations, and scores are sorted stably as on the CPU, so both devices keep the same boxes.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>

#include "ops/nms.h"
#include "ops/nms_math.h"

namespace segdet::ops {
namespace {

constexpr int kBlockBoxes = 64;  // boxes per mask word
constexpr int kReduceThreads = 256;
constexpr int64_t kMaxGridY = 65535;

// Where the mask words of each row block live. Row block r covers boxes [64 r, 64 r + 64) and
// column blocks [r, last_col[r]]; box 64 r + k stores its word for column block c at
// word_offset[r] + k * (last_col[r] - r + 1) + (c - r).
struct MaskLayout {
  at::Tensor last_col;     // int64 [R]
  at::Tensor word_offset;  // int64 [R]
  int64_t total_words;
  int64_t max_width;
};

template <typename T>
__global__ void nms_mask_kernel(const T* __restrict__ boxes, int64_t n, const int64_t* __restrict__ group_end,
                                const int64_t* __restrict__ last_col, const int64_t* __restrict__ word_offset,
                                T threshold, unsigned long long* __restrict__ mask) {
  __shared__ T col_boxes[kBlockBoxes][5];
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

// One block walks the row blocks in order. Thread 0 resolves the 64 boxes of a row block among
// themselves (a sequential dependency, on words staged in shared memory); then all threads fold
// the kept boxes' words into the later column blocks of `removed`.
__global__ void nms_reduce_kernel(const unsigned long long* __restrict__ mask, int64_t n, int64_t num_row_blocks,
                                  const int64_t* __restrict__ last_col, const int64_t* __restrict__ word_offset,
                                  unsigned long long* __restrict__ removed, uint8_t* __restrict__ keep) {
  __shared__ unsigned long long diagonal[kBlockBoxes];
  __shared__ unsigned long long kept_bits;
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
    __syncthreads();  // removed[r + 1] is read by thread 0 next
  }
}

// Layout of one category: every row block reaches the last column block.
MaskLayout single_group_layout(int64_t num_row_blocks, const at::TensorOptions& long_options) {
  const int64_t R = num_row_blocks;
  const at::Tensor r = at::arange(R, long_options);
  // Row block r stores 64 * (R - r) words: the sum over earlier rows is 64 * (r R - r (r - 1) / 2).
  return {at::full({R}, R - 1, long_options), (r * R - (r * (r - 1)).div(2, "floor")) * kBlockBoxes,
          kBlockBoxes * R * (R + 1) / 2, R};
}

// Layout for boxes sorted by category; group_end[i] is the end of box i's category.
MaskLayout grouped_layout(const at::Tensor& group_end, int64_t n, int64_t num_row_blocks) {
  const auto long_options = group_end.options();
  const at::Tensor r = at::arange(num_row_blocks, long_options);
  const at::Tensor last_row = (r * kBlockBoxes + (kBlockBoxes - 1)).clamp_max(n - 1);
  const at::Tensor last_col = (group_end.index_select(0, last_row) - 1).div(kBlockBoxes, "floor");
  const at::Tensor width = last_col - r + 1;
  const at::Tensor ends = (width * kBlockBoxes).cumsum(0);
  // The mask's size depends on the categories: one small device-to-host copy.
  const at::Tensor sizes = at::stack({ends[-1], width.max()}).cpu();
  return {last_col, ends - width * kBlockBoxes, sizes[0].item<int64_t>(), sizes[1].item<int64_t>()};
}

// Keep flags (uint8 [n]) of `sorted_boxes` ([n, 4], processing order).
at::Tensor keep_flags(const at::Tensor& sorted_boxes, const std::optional<at::Tensor>& group_end,
                      const MaskLayout& layout, double iou_threshold) {
  const int64_t n = sorted_boxes.size(0);
  const int64_t R = layout.last_col.size(0);
  const auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor mask = at::empty({layout.total_words}, sorted_boxes.options().dtype(at::kLong));
  auto* mask_p = reinterpret_cast<unsigned long long*>(mask.data_ptr<int64_t>());
  const int64_t* group_end_p = group_end.has_value() ? group_end->const_data_ptr<int64_t>() : nullptr;
  const dim3 grid(static_cast<unsigned>(R), static_cast<unsigned>(std::min(layout.max_width, kMaxGridY)));
  AT_DISPATCH_FLOATING_TYPES(sorted_boxes.scalar_type(), "nms_mask_cuda", [&] {
    nms_mask_kernel<scalar_t><<<grid, kBlockBoxes, 0, stream>>>(
        sorted_boxes.const_data_ptr<scalar_t>(), n, group_end_p, layout.last_col.const_data_ptr<int64_t>(),
        layout.word_offset.const_data_ptr<int64_t>(), nms_math::threshold_in<scalar_t>(iou_threshold), mask_p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  at::Tensor removed = at::zeros({R}, mask.options());
  at::Tensor keep = at::zeros({n}, sorted_boxes.options().dtype(at::kByte));
  nms_reduce_kernel<<<1, kReduceThreads, 0, stream>>>(
      mask_p, n, R, layout.last_col.const_data_ptr<int64_t>(), layout.word_offset.const_data_ptr<int64_t>(),
      reinterpret_cast<unsigned long long*>(removed.data_ptr<int64_t>()), keep.data_ptr<uint8_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return keep;
}

// Half-precision inputs are computed in float32 (exact widening), as on the CPU.
at::Tensor widened(const at::Tensor& t) {
  const auto type = t.scalar_type();
  return (type == at::kHalf || type == at::kBFloat16) ? t.to(at::kFloat) : t;
}

int64_t row_blocks(int64_t n) {
  return (n + kBlockBoxes - 1) / kBlockBoxes;
}

at::Tensor nms_kernel(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  detail::check_nms_args("nms", "dets", dets, scores);
  TORCH_CHECK_VALUE(dets.is_cuda(), "nms: the CUDA kernel got dets on ", dets.device());
  const c10::cuda::CUDAGuard guard(dets.device());
  if (dets.size(0) == 0) {
    return at::empty({0}, dets.options().dtype(at::kLong));
  }
  const int64_t n = dets.size(0);
  // Stable, like the CPU kernel and torchvision's CPU nms: equal scores keep index order.
  const at::Tensor order = std::get<1>(widened(scores).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted_boxes = widened(dets).index_select(0, order).contiguous();
  const MaskLayout layout = single_group_layout(row_blocks(n), order.options());
  const at::Tensor keep = keep_flags(sorted_boxes, std::nullopt, layout, iou_threshold);
  return order.masked_select(keep.to(at::kBool));  // the one host sync: the output size
}

at::Tensor batched_nms_kernel(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                              double iou_threshold) {
  detail::check_batched_nms_args(boxes, scores, idxs);
  TORCH_CHECK_VALUE(boxes.is_cuda(), "batched_nms: the CUDA kernel got boxes on ", boxes.device());
  const c10::cuda::CUDAGuard guard(boxes.device());
  if (boxes.size(0) == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const int64_t n = boxes.size(0);
  const at::Tensor order = std::get<1>(widened(scores).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  // A stable sort by category keeps score order within each category. rank_order[p] is the
  // position in score order of the p-th box processed.
  const at::Tensor category_by_score = idxs.to(at::kLong).index_select(0, order);
  const auto [categories, rank_order] =
      at::sort(category_by_score, /*stable=*/std::optional<bool>(true), /*dim=*/0, /*descending=*/false);
  const at::Tensor group_end = at::searchsorted(categories, categories, /*out_int32=*/false, /*right=*/true);
  const at::Tensor sorted_boxes = widened(boxes).index_select(0, order.index_select(0, rank_order)).contiguous();
  const MaskLayout layout = grouped_layout(group_end, n, row_blocks(n));
  const at::Tensor keep = keep_flags(sorted_boxes, group_end, layout, iou_threshold);
  const at::Tensor keep_by_rank = at::zeros_like(keep).index_copy_(0, rank_order, keep);
  return order.masked_select(keep_by_rank.to(at::kBool));
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, CUDA, m) {
  m.impl("nms", &nms_kernel);
  m.impl("batched_nms", &batched_nms_kernel);
}

}  // namespace segdet::ops
