// CPU kernel of segdet::paste_masks: every output row is written once, in parallel over the
// D x height rows; only the pixels inside a detection's box are interpolated, the rest of the
// row is zero-filled.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "ops/paste_masks.h"
#include "ops/paste_masks_math.h"

namespace segdet::ops {
namespace {

namespace pm = paste_masks_math;

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SEGDET_PASTE_X86 1
// The extension is built for baseline x86-64; the fused variant is compiled for FMA hardware
// so that std::fma is one instruction instead of a libm call.
#define SEGDET_FMA_TARGET __attribute__((target("fma")))
#else
#define SEGDET_PASTE_X86 0
#define SEGDET_FMA_TARGET
#endif
#define SEGDET_ALWAYS_INLINE inline __attribute__((always_inline))

// True when ATen's CPU upsampling kernels run with fused multiply-adds: ATen compiles them per
// CPU capability, with FMA enabled for AVX2 and AVX-512 (x86) and always on other targets.
// paste_masks follows the same choice so its results stay identical to F.interpolate's.
bool aten_upsample_uses_fma() {
  static const bool fused = [] {
#if SEGDET_PASTE_X86
    const std::string capability = at::get_cpu_capability();
    return capability.rfind("AVX", 0) == 0 && __builtin_cpu_supports("fma");
#else
    return true;
#endif
  }();
  return fused;
}

// One detection's pasting job, in image pixels.
struct Job {
  int64_t x1 = 0, y1 = 0;      // top-left of the integer box the mask is resized into
  int64_t out_w = 1, out_h = 1;  // size of the resized mask
  int64_t xa = 0, xb = 0;      // columns [xa, xb) of the image covered by the box
  int64_t ya = 0, yb = 0;      // rows [ya, yb)
  int64_t taps_offset = 0;     // first of this job's xb - xa column taps
  bool four_tap = false;
  bool empty() const { return xa >= xb || ya >= yb; }
};

template <typename box_t>
std::vector<Job> plan_jobs(const at::Tensor& boxes, int64_t mask_size, int64_t height, int64_t width,
                           int64_t* num_taps) {
  const int64_t num = boxes.size(0);
  const box_t* b = boxes.const_data_ptr<box_t>();
  const box_t scale = static_cast<box_t>((mask_size + 2.0) / mask_size);
  std::vector<Job> jobs(num);
  int64_t taps = 0;
  for (int64_t i = 0; i < num; ++i) {
    const pm::PasteBox box = pm::grow_box<box_t>(b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3], scale);
    Job& job = jobs[i];
    if (!box.valid) {
      continue;
    }
    job.x1 = box.x1;
    job.y1 = box.y1;
    job.out_w = pm::resized_extent(box.x1, box.x2);
    job.out_h = pm::resized_extent(box.y1, box.y2);
    job.xa = std::max<int64_t>(box.x1, 0);
    job.xb = std::min<int64_t>(box.x2 + 1, width);
    job.ya = std::max<int64_t>(box.y1, 0);
    job.yb = std::min<int64_t>(box.y2 + 1, height);
    job.four_tap = pm::use_four_tap_order(job.out_h, job.out_w);
    if (!job.empty()) {
      job.taps_offset = taps;
      taps += job.xb - job.xa;
    }
  }
  *num_taps = taps;
  return jobs;
}

template <bool kFused, typename T>
SEGDET_ALWAYS_INLINE void column_taps_impl(const Job& job, int64_t padded_size, pm::Taps<T>* taps) {
  const T scale = static_cast<T>(padded_size) / static_cast<T>(job.out_w);
  for (int64_t x = job.xa; x < job.xb; ++x) {
    taps[x - job.xa] = pm::linear_taps<kFused, T>(scale, x - job.x1, padded_size, job.out_w);
  }
}

// Columns [xa, xb) of image row y of one detection, written to box_row[0 .. xb - xa).
template <bool kFused, typename T>
SEGDET_ALWAYS_INLINE void paste_box_row_impl(const Job& job, int64_t y, const T* padded, int64_t padded_size,
                                             const pm::Taps<T>* taps, T threshold, bool* box_row) {
  const T scale = static_cast<T>(padded_size) / static_cast<T>(job.out_h);
  const pm::Taps<T> ty = pm::linear_taps<kFused, T>(scale, y - job.y1, padded_size, job.out_h);
  const T* row0 = padded + ty.i0 * padded_size;
  const T* row1 = padded + ty.i1 * padded_size;
  for (int64_t x = job.xa; x < job.xb; ++x) {
    const pm::Taps<T>& tx = taps[x - job.xa];
    const T v = pm::bilinear_cpu_order<kFused, T>(row0[tx.i0], row0[tx.i1], row1[tx.i0], row1[tx.i1], ty, tx,
                                                  job.four_tap);
    box_row[x - job.xa] = v > threshold;
  }
}

// One image row y of one detection: interpolate columns [xa, xb), zero the rest.
template <bool kFused, typename T>
SEGDET_ALWAYS_INLINE void paste_row_impl(const Job& job, int64_t y, const T* padded, int64_t padded_size,
                                         const pm::Taps<T>* taps, T threshold, int64_t width, bool* out) {
  std::memset(out, 0, job.xa);
  paste_box_row_impl<kFused, T>(job, y, padded, padded_size, taps, threshold, out + job.xa);
  std::memset(out + job.xb, 0, width - job.xb);
}

template <typename T>
SEGDET_FMA_TARGET void column_taps_fused(const Job& job, int64_t padded_size, pm::Taps<T>* taps) {
  column_taps_impl<true, T>(job, padded_size, taps);
}

template <typename T>
void column_taps_plain(const Job& job, int64_t padded_size, pm::Taps<T>* taps) {
  column_taps_impl<false, T>(job, padded_size, taps);
}

template <typename T>
SEGDET_FMA_TARGET void paste_row_fused(const Job& job, int64_t y, const T* padded, int64_t padded_size,
                                       const pm::Taps<T>* taps, T threshold, int64_t width, bool* out) {
  paste_row_impl<true, T>(job, y, padded, padded_size, taps, threshold, width, out);
}

template <typename T>
void paste_row_plain(const Job& job, int64_t y, const T* padded, int64_t padded_size, const pm::Taps<T>* taps,
                     T threshold, int64_t width, bool* out) {
  paste_row_impl<false, T>(job, y, padded, padded_size, taps, threshold, width, out);
}

template <typename T>
SEGDET_FMA_TARGET void paste_box_row_fused(const Job& job, int64_t y, const T* padded, int64_t padded_size,
                                           const pm::Taps<T>* taps, T threshold, bool* box_row) {
  paste_box_row_impl<true, T>(job, y, padded, padded_size, taps, threshold, box_row);
}

template <typename T>
void paste_box_row_plain(const Job& job, int64_t y, const T* padded, int64_t padded_size, const pm::Taps<T>* taps,
                         T threshold, bool* box_row) {
  paste_box_row_impl<false, T>(job, y, padded, padded_size, taps, threshold, box_row);
}

// Column taps of every non-empty job, in parallel over the jobs.
template <typename T>
std::vector<pm::Taps<T>> all_column_taps(const std::vector<Job>& jobs, int64_t num_taps, int64_t padded_size) {
  const bool fused = aten_upsample_uses_fma();
  std::vector<pm::Taps<T>> taps(static_cast<size_t>(num_taps));
  at::parallel_for(0, static_cast<int64_t>(jobs.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (!jobs[i].empty()) {
        pm::Taps<T>* t = taps.data() + jobs[i].taps_offset;
        fused ? column_taps_fused<T>(jobs[i], padded_size, t) : column_taps_plain<T>(jobs[i], padded_size, t);
      }
    }
  });
  return taps;
}

template <typename T>
void paste_all(const std::vector<Job>& jobs, int64_t num_taps, const at::Tensor& padded, double threshold,
               int64_t height, int64_t width, at::Tensor& out) {
  const bool fused = aten_upsample_uses_fma();
  const int64_t num = static_cast<int64_t>(jobs.size());
  const int64_t padded_size = padded.size(1);
  const T* padded_data = padded.const_data_ptr<T>();
  // Thresholding a T tensor with a Python float compares against the float rounded to T.
  const T thr = static_cast<T>(threshold);
  bool* out_data = out.mutable_data_ptr<bool>();

  const std::vector<pm::Taps<T>> taps = all_column_taps<T>(jobs, num_taps, padded_size);

  // A grain of ~64 KiB of output keeps the per-task overhead small next to the memsets.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(width, 1));
  at::parallel_for(0, num * height, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r / height;
      const int64_t y = r - i * height;
      const Job& job = jobs[i];
      bool* row = out_data + r * width;
      if (job.empty() || y < job.ya || y >= job.yb) {
        std::memset(row, 0, width);
        continue;
      }
      const T* mask = padded_data + i * padded_size * padded_size;
      const pm::Taps<T>* t = taps.data() + job.taps_offset;
      fused ? paste_row_fused<T>(job, y, mask, padded_size, t, thr, width, row)
            : paste_row_plain<T>(job, y, mask, padded_size, t, thr, width, row);
    }
  });
}

// The masks padded with one zero pixel per side, as the reference pads each mask before resizing:
// [D, S + 2, S + 2], contiguous. bfloat16 masks are widened to float32 in the same pass (exactly), so
// they paste as their float32 values would, threshold included; mask arrays are small next to the
// pasted output, so the float copy costs little.
at::Tensor padded_masks(const at::Tensor& masks) {
  const int64_t num = masks.size(0), size = masks.size(1);
  const auto dtype = masks.scalar_type() == at::kBFloat16 ? at::kFloat : masks.scalar_type();
  at::Tensor padded = at::zeros({num, size + 2, size + 2}, masks.options().dtype(dtype));
  padded.narrow(1, 1, size).narrow(2, 1, size).copy_(masks);
  return padded;
}

at::Tensor paste_masks_cpu(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width,
                           double threshold) {
  detail::check_paste_masks_args(masks, boxes, height, width);

  const int64_t num = masks.size(0);
  auto out = at::empty({num, height, width}, masks.options().dtype(at::kBool));
  if (out.numel() == 0) {
    return out;
  }
  const int64_t size = masks.size(1);
  const auto box_data = boxes.contiguous();
  int64_t num_taps = 0;
  std::vector<Job> jobs;
  AT_DISPATCH_FLOATING_TYPES(box_data.scalar_type(), "paste_masks_cpu_boxes", [&] {
    jobs = plan_jobs<scalar_t>(box_data, size, height, width, &num_taps);
  });
  const at::Tensor padded = padded_masks(masks);
  AT_DISPATCH_FLOATING_TYPES(padded.scalar_type(), "paste_masks_cpu", [&] {
    paste_all<scalar_t>(jobs, num_taps, padded, threshold, height, width, out);
  });
  return out;
}

// paste_masks_crops: the same pixels as paste_masks, but only the part of each detection's box inside the image
// is written, as a row-major crop; the crops lie one after another in one flat bool buffer.
template <typename T>
void paste_crops(const std::vector<Job>& jobs, int64_t num_taps, const at::Tensor& padded, double threshold,
                 const std::vector<int64_t>& data_offsets, const std::vector<int64_t>& row_offsets, at::Tensor& data) {
  const bool fused = aten_upsample_uses_fma();
  const int64_t padded_size = padded.size(1);
  const T* padded_data = padded.const_data_ptr<T>();
  const T thr = static_cast<T>(threshold);
  bool* out = data.mutable_data_ptr<bool>();
  const std::vector<pm::Taps<T>> taps = all_column_taps<T>(jobs, num_taps, padded_size);
  const int64_t total_rows = row_offsets.back();
  const int64_t max_width = std::max<int64_t>(1, data.numel() / std::max<int64_t>(total_rows, 1));
  const int64_t grain = std::max<int64_t>(1, 65536 / max_width);
  // Work is split over all crop rows of all detections, so one huge box does not serialise the paste.
  at::parallel_for(0, total_rows, grain, [&](int64_t begin, int64_t end) {
    // The job owning row `begin`: the last one whose first row is <= begin.
    int64_t i = std::upper_bound(row_offsets.begin(), row_offsets.end(), begin) - row_offsets.begin() - 1;
    for (int64_t r = begin; r < end; ++r) {
      while (r >= row_offsets[i + 1]) {
        ++i;
      }
      const Job& job = jobs[i];
      const int64_t y = job.ya + (r - row_offsets[i]);
      bool* row = out + data_offsets[i] + (y - job.ya) * (job.xb - job.xa);
      const T* mask = padded_data + i * padded_size * padded_size;
      const pm::Taps<T>* t = taps.data() + job.taps_offset;
      fused ? paste_box_row_fused<T>(job, y, mask, padded_size, t, thr, row)
            : paste_box_row_plain<T>(job, y, mask, padded_size, t, thr, row);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> paste_masks_crops_cpu(const at::Tensor& masks, const at::Tensor& boxes,
                                                         int64_t height, int64_t width, double threshold) {
  detail::check_paste_masks_args(masks, boxes, height, width);
  TORCH_CHECK(masks.device().is_cpu(), "paste_masks_crops: CPU kernel got masks on ", masks.device());

  const int64_t num = masks.size(0);
  auto regions = at::zeros({num, 4}, masks.options().dtype(at::kLong));
  if (num == 0) {
    return {at::empty({0}, masks.options().dtype(at::kBool)), regions};
  }
  const int64_t size = masks.size(1);
  const auto box_data = boxes.contiguous();
  int64_t num_taps = 0;
  std::vector<Job> jobs;
  AT_DISPATCH_FLOATING_TYPES(box_data.scalar_type(), "paste_masks_crops_cpu_boxes", [&] {
    jobs = plan_jobs<scalar_t>(box_data, size, height, width, &num_taps);
  });
  // Crop i covers image columns [xa, xb) and rows [ya, yb); an empty one is (0, 0, 0, 0).
  std::vector<int64_t> data_offsets(num + 1, 0);
  std::vector<int64_t> row_offsets(num + 1, 0);
  int64_t* reg = regions.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < num; ++i) {
    const Job& job = jobs[i];
    const bool empty = job.empty();
    const int64_t w = empty ? 0 : job.xb - job.xa;
    const int64_t h = empty ? 0 : job.yb - job.ya;
    if (!empty) {
      reg[4 * i] = job.xa;
      reg[4 * i + 1] = job.ya;
      reg[4 * i + 2] = w;
      reg[4 * i + 3] = h;
    }
    data_offsets[i + 1] = data_offsets[i] + w * h;
    row_offsets[i + 1] = row_offsets[i] + h;
  }
  auto data = at::empty({data_offsets.back()}, masks.options().dtype(at::kBool));
  if (data.numel() == 0) {
    return {data, regions};
  }
  const at::Tensor padded = padded_masks(masks);
  AT_DISPATCH_FLOATING_TYPES(padded.scalar_type(), "paste_masks_crops_cpu", [&] {
    paste_crops<scalar_t>(jobs, num_taps, padded, threshold, data_offsets, row_offsets, data);
  });
  return {data, regions};
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, CPU, m) {
  m.impl("paste_masks", &paste_masks_cpu);
  m.impl("paste_masks_crops", &paste_masks_crops_cpu);
}

}  // namespace segdet::ops
