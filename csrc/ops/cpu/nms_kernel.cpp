// CPU kernels of segdet::nms and segdet::batched_nms.
//
// Both run the same greedy loop as torchvision (take the best remaining box, suppress every
// later box whose IoU with it exceeds the threshold) with the same arithmetic (nms_math.h), so
// results are identical, but laid out for speed:
//  * boxes are sorted once and copied into structure-of-arrays order (x1[], y1[], x2[], y2[],
//    area[]), so the inner loop reads contiguous memory and auto-vectorises (AVX-512/AVX2
//    clones are picked at load time; the build itself targets baseline x86-64);
//  * the inner loop is branch-free over all later candidates, and suppressed candidates are
//    compacted away once they are the majority, so later passes only read live boxes;
//  * boxes are resolved 64 at a time, then the block's kept boxes sweep the later candidates
//    tile by tile (cache reuse), split across threads only when the sweep is large;
//  * batched_nms groups the boxes by category (a stable grouping of the score order) and runs
//    the categories in parallel, each in its own slice of the arrays.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <optional>
#include <type_traits>
#include <vector>

#include "ops/nms.h"
#include "ops/nms_math.h"

namespace segdet::ops {
namespace {

// torchvision.ops.batched_nms on CPU switches from the coordinate-offset trick (one nms over
// all boxes: ties in score kept in index order) to a per-category loop that finishes with an
// unstable sort of the kept scores when boxes.numel() exceeds this. Its tie order is what the
// callers compare against, so it is reproduced here.
constexpr int64_t kTorchvisionVanillaNumel = 4000;

// Boxes resolved together before their kept boxes are applied to the later candidates.
constexpr int64_t kBlockBoxes = 64;

// Candidates per cache tile (about 48 KiB of float32 coordinates, areas and flags).
constexpr int64_t kTileBoxes = 2048;

// A block's pass is split across threads only above this many box pairs (a few ms of work):
// on a busy 2-core machine waking a second thread can cost a millisecond.
constexpr int64_t kParallelBlockWork = 1 << 23;

// Categories are spread over threads only when their summed pairwise work (sum of squared
// sizes) exceeds this; below it, waking threads costs more than the whole job.
constexpr int64_t kParallelSlicesWork = 1 << 20;

// Compaction is skipped until at least this many candidates are dead: copying a handful of
// boxes costs more than re-testing them.
constexpr int64_t kMinDeadToCompact = 64;

// Suppression flags as wide as the coordinates keep the vectorised loop in one lane width.
template <typename T>
using flag_t = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

// Structure-of-arrays boxes in processing order; rank[p] is the position of box p in the global
// (stable, descending) score order.
template <typename T>
struct BoxArrays {
  T* x1;
  T* y1;
  T* x2;
  T* y2;
  T* area;
  int64_t* rank;
  flag_t<T>* suppressed;
};

// Marks candidates [begin, end) whose IoU with the kept box k exceeds `threshold` and returns
// how many were newly marked. Inlined into the per-ISA clones below.
template <typename T>
__attribute__((always_inline)) inline int64_t suppress_range(const BoxArrays<T>& b, int64_t k, int64_t begin,
                                                             int64_t end, T threshold) {
  const T* __restrict x1 = b.x1;
  const T* __restrict y1 = b.y1;
  const T* __restrict x2 = b.x2;
  const T* __restrict y2 = b.y2;
  const T* __restrict area = b.area;
  flag_t<T>* __restrict suppressed = b.suppressed;
  const T kx1 = x1[k], ky1 = y1[k], kx2 = x2[k], ky2 = y2[k], karea = area[k];
  flag_t<T> newly = 0;
  for (int64_t j = begin; j < end; ++j) {
    const T iou = nms_math::box_iou(kx1, ky1, kx2, ky2, karea, x1[j], y1[j], x2[j], y2[j], area[j]);
    const flag_t<T> hit = iou > threshold ? 1 : 0;
    const flag_t<T> old = suppressed[j];
    suppressed[j] = old | hit;
    newly += hit & ~old;
  }
  return static_cast<int64_t>(newly);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// No FMA-only target here: the box_iou expression must not be contracted into an FMA.
#define SEGDET_NMS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SEGDET_NMS_CLONES
#endif

SEGDET_NMS_CLONES int64_t suppress_range_f32(const BoxArrays<float>& b, int64_t k, int64_t begin, int64_t end,
                                             float threshold) {
  return suppress_range(b, k, begin, end, threshold);
}

SEGDET_NMS_CLONES int64_t suppress_range_f64(const BoxArrays<double>& b, int64_t k, int64_t begin, int64_t end,
                                             double threshold) {
  return suppress_range(b, k, begin, end, threshold);
}

template <typename T>
int64_t suppress_range_best(const BoxArrays<T>& b, int64_t k, int64_t begin, int64_t end, T threshold) {
  if constexpr (std::is_same_v<T, float>) {
    return suppress_range_f32(b, k, begin, end, threshold);
  } else {
    return suppress_range_f64(b, k, begin, end, threshold);
  }
}

// Applies every kept box of a block to the candidates [begin, end). Tiles of candidates stay in
// cache while all the block's kept boxes pass over them, and large jobs are split across
// threads: one fork-join per block of kBlockBoxes boxes rather than per kept box, which would
// cost more than the work on a busy machine.
template <typename T>
int64_t suppress_by_block(const BoxArrays<T>& b, const int64_t* kept, int64_t num_kept, int64_t begin, int64_t end,
                          T threshold) {
  auto run = [&](int64_t lo, int64_t hi) {
    int64_t newly = 0;
    for (int64_t tile = lo; tile < hi; tile += kTileBoxes) {
      const int64_t tile_end = std::min(hi, tile + kTileBoxes);
      for (int64_t k = 0; k < num_kept; ++k) {
        newly += suppress_range_best(b, kept[k], tile, tile_end, threshold);
      }
    }
    return newly;
  };
  if ((end - begin) * num_kept < kParallelBlockWork) {
    return run(begin, end);
  }
  return at::parallel_reduce(
      begin, end, kTileBoxes, int64_t{0},
      [&](int64_t lo, int64_t hi, int64_t acc) { return acc + run(lo, hi); }, std::plus<int64_t>());
}

// Greedy NMS over boxes [0, n) of `b`, already in processing (score) order. Sets keep[rank] = 1
// for every kept box. Reorders the slice in place while compacting.
//
// Boxes are taken kBlockBoxes at a time: the block is first resolved on its own, in order (its
// boxes were already tested against every earlier kept box), then its kept boxes are applied
// to all later candidates at once. Which boxes are kept is exactly as in the one-at-a-time loop.
template <typename T>
void nms_slice(BoxArrays<T> b, int64_t n, T threshold, uint8_t* keep) {
  std::fill(b.suppressed, b.suppressed + n, flag_t<T>{0});
  int64_t live_end = n;  // candidates live in [i, live_end)
  int64_t dead = 0;      // suppressed entries in [i, live_end)
  int64_t i = 0;
  int64_t kept[kBlockBoxes];
  while (i < live_end) {
    const int64_t block_end = std::min(live_end, i + kBlockBoxes);
    int64_t num_kept = 0;
    for (int64_t p = i; p < block_end; ++p) {
      if (b.suppressed[p]) {
        --dead;
        continue;
      }
      keep[b.rank[p]] = 1;
      kept[num_kept++] = p;
      dead += suppress_range_best(b, p, p + 1, block_end, threshold);
    }
    i = block_end;
    if (num_kept > 0 && i < live_end) {
      dead += suppress_by_block(b, kept, num_kept, i, live_end, threshold);
    }
    if (dead >= kMinDeadToCompact && 2 * dead > live_end - i) {
      int64_t w = 0;
      for (int64_t j = i; j < live_end; ++j) {
        b.x1[w] = b.x1[j];
        b.y1[w] = b.y1[j];
        b.x2[w] = b.x2[j];
        b.y2[w] = b.y2[j];
        b.area[w] = b.area[j];
        b.rank[w] = b.rank[j];
        w += b.suppressed[j] ? 0 : 1;
      }
      std::fill(b.suppressed, b.suppressed + w, flag_t<T>{0});
      live_end = w;
      i = 0;
      dead = 0;
    }
  }
}

// Processing order of a batched problem: `rank_order[p]` (a position in the score order) of the
// p-th box processed, and the bounds of each category's slice.
struct Grouping {
  at::Tensor rank_order;         // int64 [N]
  std::vector<int64_t> bounds;  // slice s is [bounds[s], bounds[s + 1])
};

// Groups positions of the score order by category, keeping score order inside each category.
Grouping group_by_category(const at::Tensor& categories_in_score_order) {
  const int64_t n = categories_in_score_order.size(0);
  const int64_t* cat = categories_in_score_order.const_data_ptr<int64_t>();
  const auto [lo_it, hi_it] = std::minmax_element(cat, cat + n);
  const int64_t lo = *lo_it;
  // Unsigned, so that the span of any two int64 values is representable.
  const uint64_t span = static_cast<uint64_t>(*hi_it) - static_cast<uint64_t>(lo);
  Grouping g;
  g.rank_order = at::empty({n}, categories_in_score_order.options());
  int64_t* out = g.rank_order.mutable_data_ptr<int64_t>();
  if (span < static_cast<uint64_t>(std::max<int64_t>(n, 1 << 16))) {
    const uint64_t range = span + 1;
    // Counting sort: stable, linear, and the usual case (categories are small labels).
    std::vector<int64_t> start(range + 1, 0);
    for (int64_t p = 0; p < n; ++p) {
      ++start[static_cast<uint64_t>(cat[p]) - static_cast<uint64_t>(lo) + 1];
    }
    std::partial_sum(start.begin(), start.end(), start.begin());
    for (size_t c = 0; c < range; ++c) {
      if (start[c + 1] > start[c]) {
        g.bounds.push_back(start[c]);
      }
    }
    g.bounds.push_back(n);
    for (int64_t p = 0; p < n; ++p) {
      out[start[static_cast<uint64_t>(cat[p]) - static_cast<uint64_t>(lo)]++] = p;
    }
  } else {
    const at::Tensor perm =
        std::get<1>(at::sort(categories_in_score_order, /*stable=*/std::optional<bool>(true), /*dim=*/0));
    g.rank_order.copy_(perm);
    for (int64_t p = 0; p < n; ++p) {
      if (p == 0 || cat[out[p]] != cat[out[p - 1]]) {
        g.bounds.push_back(p);
      }
    }
    g.bounds.push_back(n);
  }
  return g;
}

// Runs NMS on every slice of `g` and returns keep flags (uint8 [N]) indexed by score rank.
template <typename T>
at::Tensor keep_flags(const at::Tensor& boxes, const at::Tensor& order, const Grouping& g, double iou_threshold) {
  const int64_t n = boxes.size(0);
  const T threshold = nms_math::threshold_in<T>(iou_threshold);
  at::Tensor coords = at::empty({5, n}, boxes.options());
  at::Tensor rank = at::empty({n}, order.options());
  at::Tensor suppressed = at::empty({n}, boxes.options().dtype(sizeof(T) == 4 ? at::kInt : at::kLong));
  BoxArrays<T> b{coords[0].data_ptr<T>(), coords[1].data_ptr<T>(), coords[2].data_ptr<T>(),
                 coords[3].data_ptr<T>(), coords[4].data_ptr<T>(), rank.data_ptr<int64_t>(),
                 reinterpret_cast<flag_t<T>*>(suppressed.data_ptr())};
  const T* src = boxes.const_data_ptr<T>();
  const int64_t* order_p = order.const_data_ptr<int64_t>();
  const int64_t* rank_order = g.rank_order.const_data_ptr<int64_t>();
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t r = rank_order[p];
      const T* box = src + 4 * order_p[r];
      b.x1[p] = box[0];
      b.y1[p] = box[1];
      b.x2[p] = box[2];
      b.y2[p] = box[3];
      b.area[p] = nms_math::box_area(box[0], box[1], box[2], box[3]);
      b.rank[p] = r;
    }
  });

  at::Tensor keep = at::zeros({n}, boxes.options().dtype(at::kByte));
  uint8_t* keep_p = keep.data_ptr<uint8_t>();
  const int64_t num_slices = static_cast<int64_t>(g.bounds.size()) - 1;
  auto run_slice = [&](int64_t s) {
    const int64_t first = g.bounds[s];
    BoxArrays<T> slice{b.x1 + first, b.y1 + first,   b.x2 + first,         b.y2 + first,
                       b.area + first, b.rank + first, b.suppressed + first};
    nms_slice(slice, g.bounds[s + 1] - first, threshold, keep_p);
  };
  if (num_slices == 1) {
    run_slice(0);  // lets the passes themselves go parallel
    return keep;
  }
  double work = 0;
  for (int64_t s = 0; s < num_slices; ++s) {
    work += static_cast<double>(g.bounds[s + 1] - g.bounds[s]) * static_cast<double>(g.bounds[s + 1] - g.bounds[s]);
  }
  if (work < kParallelSlicesWork || at::get_num_threads() == 1) {
    for (int64_t s = 0; s < num_slices; ++s) {
      run_slice(s);
    }
    return keep;
  }
  // Categories differ wildly in size: hand them out largest first, one at a time, so threads
  // finish together. Each slice writes only its own keep entries, so the result does not
  // depend on the schedule.
  std::vector<int64_t> by_size(num_slices);
  std::iota(by_size.begin(), by_size.end(), 0);
  std::stable_sort(by_size.begin(), by_size.end(), [&](int64_t a, int64_t c) {
    return g.bounds[a + 1] - g.bounds[a] > g.bounds[c + 1] - g.bounds[c];
  });
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    for (int64_t k = next++; k < num_slices; k = next++) {
      run_slice(by_size[k]);
    }
  });
  return keep;
}

// Half-precision inputs are widened to float32: every half value is exact in float32, so the
// score order is unchanged and the IoU is computed as torchvision's CUDA kernel does for half.
at::Tensor widened(const at::Tensor& t) {
  const auto type = t.scalar_type();
  return (type == at::kHalf || type == at::kBFloat16) ? t.to(at::kFloat) : t;
}

at::Tensor kept_in_score_order(const at::Tensor& keep, const at::Tensor& order) {
  return order.masked_select(keep.to(at::kBool));
}

at::Tensor nms_kernel(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  detail::check_nms_args("nms", "dets", dets, scores);
  if (dets.size(0) == 0) {
    return at::empty({0}, dets.options().dtype(at::kLong));
  }
  const at::Tensor boxes = widened(dets).contiguous();
  const at::Tensor score = widened(scores).contiguous();
  // torchvision sorts stably: equal scores keep their index order.
  const at::Tensor order = std::get<1>(score.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const int64_t n = boxes.size(0);
  Grouping g{at::arange(n, order.options()), {0, n}};
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_cpu",
                             [&] { keep = keep_flags<scalar_t>(boxes, order, g, iou_threshold); });
  return kept_in_score_order(keep, order);
}

at::Tensor batched_nms_kernel(const at::Tensor& boxes_in, const at::Tensor& scores, const at::Tensor& idxs,
                              double iou_threshold) {
  detail::check_batched_nms_args(boxes_in, scores, idxs);
  if (boxes_in.size(0) == 0) {
    return at::empty({0}, boxes_in.options().dtype(at::kLong));
  }
  const at::Tensor boxes = widened(boxes_in).contiguous();
  const at::Tensor score = widened(scores).contiguous();
  const at::Tensor order = std::get<1>(score.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const Grouping g = group_by_category(idxs.to(at::kLong).index_select(0, order));
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "batched_nms_cpu",
                             [&] { keep = keep_flags<scalar_t>(boxes, order, g, iou_threshold); });
  if (boxes_in.numel() <= kTorchvisionVanillaNumel) {
    return kept_in_score_order(keep, order);
  }
  // torchvision's per-category path: kept indices in increasing index order, then
  // scores[kept].sort(descending=True), whose (unstable) tie order is reproduced by making
  // the same call on the same values.
  const at::Tensor keep_by_index = at::zeros_like(keep).index_copy_(0, order, keep);
  const at::Tensor kept_by_index = at::nonzero(keep_by_index).squeeze(1);
  const at::Tensor perm = std::get<1>(score.index_select(0, kept_by_index).sort(/*dim=*/0, /*descending=*/true));
  return kept_by_index.index_select(0, perm);
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, CPU, m) {
  m.impl("nms", &nms_kernel);
  m.impl("batched_nms", &batched_nms_kernel);
}

}  // namespace segdet::ops
