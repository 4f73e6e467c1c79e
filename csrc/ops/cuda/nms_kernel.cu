// ATen glue of segdet::nms and segdet::batched_nms on CUDA: sort, mask layout, size check,
// launches. The device code is nms_kernels.cuh; this file also compiles as C++ under
// SEGDET_EMULATION, where the same glue drives the CPU emulator.
//
// batched_nms never compares boxes of different categories: after sorting by category each box
// only needs the column blocks up to the end of its category, so each row block stores words
// only for its own column range. The mask is then about N * (category size) / 64 words instead
// of N^2 / 64, which is what makes 100k+ boxes over many categories fit.
//
// Scores are sorted stably as on the CPU, on a key that orders NaNs (of either sign) and zeros
// as the CPU sort does, so both devices keep the same boxes.
#include "ops/cuda/glue.h"

#include <ATen/Dispatch.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "ops/cuda/glue_functions.h"
#include "ops/cuda/nms_kernels.cuh"
#include "ops/cuda/nms_launch.h"
#include "ops/nms.h"
#include "ops/nms_math.h"

namespace segdet::ops::cuda_glue {
namespace {

namespace kern = segdet::cuda::nms;

// Where the mask words of each row block live (see nms_launch.h).
struct MaskLayout {
  at::Tensor last_col;     // int64 [R]
  at::Tensor word_offset;  // int64 [R]
  int64_t total_words;
  int64_t max_width;
};

// Refuses, before allocating, a mask the device cannot hold, naming the box count and the size.
void check_mask_size(const char* op, int64_t n, int64_t words) {
  const int64_t device_bytes = segdet::cuda::device_memory_bytes();
  TORCH_CHECK(kern::mask_fits(words, device_bytes), op, ": ", n, " boxes need a suppression mask of ",
              kern::mask_bytes(words), " bytes (", words,
              " 64-bit words), more than half of the device's ", device_bytes,
              " bytes; run it on fewer boxes (e.g. keep the top-scoring ones first), per image, or on the CPU");
}

// Layout of one category: every row block reaches the last column block.
MaskLayout single_group_layout(const char* op, int64_t n, const at::TensorOptions& long_options) {
  const int64_t R = kern::row_blocks(n);
  const int64_t words = kern::single_group_mask_words(n);
  check_mask_size(op, n, words);
  std::vector<int64_t> offsets(R);
  for (int64_t r = 0; r < R; ++r) {
    offsets[r] = kern::single_group_word_offset(r, R);
  }
  const at::Tensor word_offset =
      at::from_blob(offsets.data(), {R}, at::TensorOptions().dtype(at::kLong))
          .to(long_options.device(), at::kLong, /*non_blocking=*/false, /*copy=*/true);  // offsets dies here
  return {at::full({R}, R - 1, long_options), word_offset, words, R};
}

// Layout for boxes sorted by category; group_end[i] is the end of box i's category.
MaskLayout grouped_layout(const at::Tensor& group_end, int64_t n) {
  const int64_t R = kern::row_blocks(n);
  const auto long_options = group_end.options();
  const at::Tensor r = at::arange(R, long_options);
  const at::Tensor last_row = (r * kern::kBlockBoxes + (kern::kBlockBoxes - 1)).clamp_max(n - 1);
  const at::Tensor last_col = (group_end.index_select(0, last_row) - 1).div(kern::kBlockBoxes, "floor");
  const at::Tensor width = last_col - r + 1;
  const at::Tensor ends = (width * kern::kBlockBoxes).cumsum(0);
  // The mask's size depends on the categories: one small device-to-host copy.
  const at::Tensor sizes = at::stack({ends[-1], width.max()}).cpu();
  const int64_t words = sizes[0].item<int64_t>();
  check_mask_size("batched_nms", n, words);
  return {last_col, ends - width * kern::kBlockBoxes, words, sizes[1].item<int64_t>()};
}

// Keep flags (uint8 [n]) of `sorted_boxes` ([n, 4], processing order).
at::Tensor keep_flags(const at::Tensor& sorted_boxes, const std::optional<at::Tensor>& group_end,
                      const MaskLayout& layout, double iou_threshold) {
  const int64_t n = sorted_boxes.size(0);
  const int64_t R = layout.last_col.size(0);
  const auto stream = segdet::cuda::current_stream();
  at::Tensor mask = at::empty({layout.total_words}, sorted_boxes.options().dtype(at::kLong));
  auto* mask_p = reinterpret_cast<unsigned long long*>(mask.data_ptr<int64_t>());
  const int64_t* group_end_p = group_end.has_value() ? group_end->const_data_ptr<int64_t>() : nullptr;
  const dim3 grid(static_cast<unsigned>(R), static_cast<unsigned>(kern::mask_grid_y(layout.max_width)));
  AT_DISPATCH_FLOATING_TYPES(sorted_boxes.scalar_type(), "nms_mask_cuda", [&] {
    const auto kernel = &kern::nms_mask_kernel<scalar_t>;
    SEGDET_LAUNCH(kernel, grid, kern::kBlockBoxes, stream, sorted_boxes.const_data_ptr<scalar_t>(), n, group_end_p,
                  layout.last_col.const_data_ptr<int64_t>(), layout.word_offset.const_data_ptr<int64_t>(),
                  nms_math::threshold_in<scalar_t>(iou_threshold), mask_p);
    segdet::cuda::check_launch();
  });
  at::Tensor removed = at::zeros({R}, mask.options());
  at::Tensor keep = at::zeros({n}, sorted_boxes.options().dtype(at::kByte));
  const auto reduce = &kern::nms_reduce_kernel;
  SEGDET_LAUNCH(reduce, 1, kern::kReduceThreads, stream, mask_p, n, R, layout.last_col.const_data_ptr<int64_t>(),
                layout.word_offset.const_data_ptr<int64_t>(),
                reinterpret_cast<unsigned long long*>(removed.data_ptr<int64_t>()), keep.data_ptr<uint8_t>());
  segdet::cuda::check_launch();
  return keep;
}

// Half-precision inputs are computed in float32 (exact widening), as on the CPU.
at::Tensor widened(const at::Tensor& t) {
  const auto type = t.scalar_type();
  return (type == at::kHalf || type == at::kBFloat16) ? t.to(at::kFloat) : t;
}

// The CPU sort compares values: every NaN ranks above +inf and ties with the other NaNs, and
// -0 ties with +0. The CUDA sort of more than 128 elements is a radix sort on bit patterns, which
// puts a negative-sign NaN (what 0/0 gives on x86) below -inf and -0 below +0. Sorting on a key
// with one positive NaN and one zero makes both sorts agree; ties then keep index order.
at::Tensor score_sort_key(const at::Tensor& scores) {
  const at::Tensor s = widened(scores);
  const at::Tensor canonical_zero = s + 0.0;  // -0 + +0 is +0 in round-to-nearest
  return at::where(s.isnan(), at::scalar_tensor(std::numeric_limits<double>::quiet_NaN(), s.options()),
                   canonical_zero);
}

// Indices of `scores` in decreasing order, ties (and NaNs, first) in index order.
at::Tensor score_order(const at::Tensor& scores) {
  return std::get<1>(score_sort_key(scores).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
}

}  // namespace

at::Tensor nms(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  detail::check_nms_args("nms", "dets", dets, scores);
  const segdet::cuda::DeviceGuard guard(dets);
  if (dets.size(0) == 0) {
    return at::empty({0}, dets.options().dtype(at::kLong));
  }
  const int64_t n = dets.size(0);
  const at::Tensor order = score_order(scores);
  const MaskLayout layout = single_group_layout("nms", n, order.options());
  const at::Tensor sorted_boxes = widened(dets).index_select(0, order).contiguous();
  const at::Tensor keep = keep_flags(sorted_boxes, std::nullopt, layout, iou_threshold);
  return order.masked_select(keep.to(at::kBool));  // the one host sync: the output size
}

at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold) {
  detail::check_batched_nms_args(boxes, scores, idxs);
  const segdet::cuda::DeviceGuard guard(boxes);
  if (boxes.size(0) == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const int64_t n = boxes.size(0);
  const at::Tensor order = score_order(scores);
  // A stable sort by category keeps score order within each category. rank_order[p] is the
  // position in score order of the p-th box processed.
  const at::Tensor category_by_score = idxs.to(at::kLong).index_select(0, order);
  const auto [categories, rank_order] =
      at::sort(category_by_score, /*stable=*/std::optional<bool>(true), /*dim=*/0, /*descending=*/false);
  const at::Tensor group_end = at::searchsorted(categories, categories, /*out_int32=*/false, /*right=*/true);
  const MaskLayout layout = grouped_layout(group_end, n);
  const at::Tensor sorted_boxes = widened(boxes).index_select(0, order.index_select(0, rank_order)).contiguous();
  const at::Tensor keep = keep_flags(sorted_boxes, group_end, layout, iou_threshold);
  const at::Tensor keep_by_rank = at::zeros_like(keep).index_copy_(0, rank_order, keep);
  return order.masked_select(keep_by_rank.to(at::kBool));
}

SEGDET_CUDA_IMPL(m) {
  m.impl("nms", &nms);
  m.impl("batched_nms", &batched_nms);
}

}  // namespace segdet::ops::cuda_glue
