#pragma once

// Per-RoI bilinear taps for the CPU kernels of segdet::roi_align (cpu/roi_align_kernel.cpp): the
// sampling geometry of every RoI, computed once per call and shared by all channels, plus the
// per-image bookkeeping (RoI lists, touched window, work estimate) the kernels schedule by.
// Header-only and internal to that file.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "ops/roi_align_math.h"

namespace segdet {
namespace ops {
namespace roi_align_cpu {

namespace math = roi_align_math;
using math::Tap;

struct Geometry {
  int64_t N, C, H, W, PH, PW;
};

// Inclusive pixel rectangle [y0, y1] x [x0, x1]; empty when y1 < y0.
struct Window {
  int64_t y0 = 0, y1 = -1, x0 = 0, x1 = -1;
  bool empty() const { return y1 < y0 || x1 < x0; }
  int64_t height() const { return empty() ? 0 : y1 - y0 + 1; }
  int64_t width() const { return empty() ? 0 : x1 - x0 + 1; }
};

// Bilinear taps of all RoIs, per axis. The taps of bin row (k, ph) are
// y_taps[y_offset[k * PH + ph] .. y_offset[k * PH + ph + 1]), likewise x_taps for (k, pw).
// Only samples that touch the map are stored; the y weights already carry the 1 / (grid_h * grid_w)
// of the bin average, so a bin is sum over y taps, x taps of w_y * w_x * pixel.
template <typename acc_t>
struct RoiTaps {
  std::vector<int64_t> batch;
  std::vector<std::vector<int64_t>> rois_of_image;
  std::vector<int64_t> y_offset;
  std::vector<int64_t> x_offset;
  std::vector<Tap<acc_t>> y_taps;
  std::vector<Tap<acc_t>> x_taps;
  std::vector<Window> window;  // per image: the pixels its RoIs' taps read
  int64_t samples = 0;         // bilinear samples of all RoIs for one channel: the work unit
};

// Samples per parallel chunk: small calls (a few RoIs, as in tests or gradcheck) stay on the calling
// thread, where waking the pool would cost far more than the work.
constexpr int64_t kGrainSamples = int64_t(1) << 14;

inline int64_t grain_for(int64_t samples_per_item) {
  return std::max<int64_t>(1, kGrainSamples / std::max<int64_t>(1, samples_per_item));
}

// rois[k, 0] as an image index; raises unless 0 <= index < N. This is the one check of roi_align
// that reads tensor data, so the fake kernels cannot make it: the CPU kernels make it (the CUDA
// kernels, which cannot raise on data without a sync, pool such RoIs to zeros). `op` names the op.
template <typename scalar_t>
int64_t checked_batch_index(const char* op, const at::TensorAccessor<scalar_t, 2>& r, int64_t k, int64_t N) {
  const double b = static_cast<double>(r[k][0]);
  TORCH_CHECK_VALUE(b >= 0.0 && b < static_cast<double>(N), op, ": rois[", k, ", 0] = ", b,
                    " is not a batch index (expected 0 <= index < N = ", N, ")");
  return static_cast<int64_t>(b);
}

// Validation only: a call with an empty output pools nothing but must still reject bad indices.
template <typename scalar_t>
void check_batch_indices(const char* op, const at::Tensor& rois, int64_t N) {
  const auto r = rois.accessor<scalar_t, 2>();
  for (int64_t k = 0; k < rois.size(0); ++k) {
    checked_batch_index<scalar_t>(op, r, k, N);
  }
}

template <typename scalar_t>
std::vector<int64_t> batch_indices(const char* op, const at::Tensor& rois, int64_t N) {
  const auto r = rois.accessor<scalar_t, 2>();
  std::vector<int64_t> batch(rois.size(0));
  for (int64_t k = 0; k < rois.size(0); ++k) {
    batch[k] = checked_batch_index<scalar_t>(op, r, k, N);
  }
  return batch;
}

// Calls f(tap) for each sample of bin p of the axis that touches the map (size pixels long), in
// sample order.
template <typename acc_t, typename F>
void for_each_tap(const math::Axis<acc_t>& axis, int64_t p, int size, F&& f) {
  if (axis.grid == 0) {
    return;
  }
  int64_t first, last;
  math::sample_range(axis, p, size, first, last);
  for (int64_t i = first; i <= last; ++i) {
    Tap<acc_t> tap;
    if (math::make_tap(math::sample_coord(axis, p, i), size, tap)) {
      f(tap);
    }
  }
}

// Counted with for_each_tap itself, so tap_offsets reserves exactly the taps fill_taps writes.
template <typename acc_t>
int64_t count_taps(const math::Axis<acc_t>& axis, int64_t p, int size) {
  int64_t n = 0;
  for_each_tap(axis, p, size, [&](const Tap<acc_t>&) { ++n; });
  return n;
}

// The RoIs of each image, in RoI order.
inline std::vector<std::vector<int64_t>> group_by_image(const std::vector<int64_t>& batch, int64_t N) {
  std::vector<std::vector<int64_t>> rois_of_image(N);
  for (int64_t k = 0; k < static_cast<int64_t>(batch.size()); ++k) {
    rois_of_image[batch[k]].push_back(k);
  }
  return rois_of_image;
}

// The y and x sampling axes of every RoI. A RoI that is not finite, or has no samples on one
// axis, gets grid 0 on both, so it has no taps at all.
template <typename acc_t>
struct RoiAxes {
  std::vector<math::Axis<acc_t>> y, x;
};

template <typename scalar_t, typename acc_t>
RoiAxes<acc_t> sampling_axes(const at::Tensor& rois, const Geometry& g, double spatial_scale, int64_t sampling_ratio,
                             bool aligned) {
  const int64_t K = rois.size(0);
  const scalar_t* r = rois.data_ptr<scalar_t>();
  const acc_t scale = static_cast<acc_t>(spatial_scale);
  RoiAxes<acc_t> axes{std::vector<math::Axis<acc_t>>(K), std::vector<math::Axis<acc_t>>(K)};
  at::parallel_for(0, K, 256, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const scalar_t* box = r + k * 5;
      auto& ax = axes.x[k];
      auto& ay = axes.y[k];
      const bool fx = math::make_axis<acc_t>(box[1], box[3], scale, g.PW, sampling_ratio, aligned, ax);
      const bool fy = math::make_axis<acc_t>(box[2], box[4], scale, g.PH, sampling_ratio, aligned, ay);
      if (!fx || !fy || ax.grid == 0 || ay.grid == 0) {
        ax.grid = 0;
        ay.grid = 0;
      }
    }
  });
  return axes;
}

// Offsets of the taps of every bin row (y_offset) and bin column (x_offset): counts per bin,
// then their prefix sums.
template <typename acc_t>
void tap_offsets(const RoiAxes<acc_t>& axes, const Geometry& g, RoiTaps<acc_t>& t) {
  const int64_t K = static_cast<int64_t>(axes.y.size());
  const int H = static_cast<int>(g.H), W = static_cast<int>(g.W);
  t.y_offset.assign(K * g.PH + 1, 0);
  t.x_offset.assign(K * g.PW + 1, 0);
  at::parallel_for(0, K, 256, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      for (int64_t ph = 0; ph < g.PH; ++ph) {
        t.y_offset[k * g.PH + ph + 1] = count_taps(axes.y[k], ph, H);
      }
      for (int64_t pw = 0; pw < g.PW; ++pw) {
        t.x_offset[k * g.PW + pw + 1] = count_taps(axes.x[k], pw, W);
      }
    }
  });
  std::partial_sum(t.y_offset.begin(), t.y_offset.end(), t.y_offset.begin());
  std::partial_sum(t.x_offset.begin(), t.x_offset.end(), t.x_offset.begin());
}

// Writes the taps at the offsets tap_offsets computed.
template <typename acc_t>
void fill_taps(const RoiAxes<acc_t>& axes, const Geometry& g, RoiTaps<acc_t>& t) {
  const int64_t K = static_cast<int64_t>(axes.y.size());
  const int H = static_cast<int>(g.H), W = static_cast<int>(g.W);
  t.y_taps.resize(t.y_offset.back());
  t.x_taps.resize(t.x_offset.back());
  at::parallel_for(0, K, 256, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      if (axes.y[k].grid == 0) {
        continue;
      }
      // torchvision divides the bin sum by grid_h * grid_w in T; folding it into w_y is the same average.
      const acc_t inv_count = acc_t(1) / static_cast<acc_t>(axes.y[k].grid * axes.x[k].grid);
      for (int64_t ph = 0; ph < g.PH; ++ph) {
        Tap<acc_t>* out = t.y_taps.data() + t.y_offset[k * g.PH + ph];
        for_each_tap(axes.y[k], ph, H, [&](Tap<acc_t> tap) {
          tap.w_lo *= inv_count;
          tap.w_hi *= inv_count;
          *out++ = tap;
        });
      }
      for (int64_t pw = 0; pw < g.PW; ++pw) {
        Tap<acc_t>* out = t.x_taps.data() + t.x_offset[k * g.PW + pw];
        for_each_tap(axes.x[k], pw, W, [&](const Tap<acc_t>& tap) { *out++ = tap; });
      }
    }
  });
}

// The taps of RoI k: t.y_taps[y_begin(k) .. y_end(k)) over all its bin rows, likewise x.
template <typename acc_t>
int64_t y_begin(const RoiTaps<acc_t>& t, int64_t k, int64_t PH) { return t.y_offset[k * PH]; }
template <typename acc_t>
int64_t y_end(const RoiTaps<acc_t>& t, int64_t k, int64_t PH) { return t.y_offset[(k + 1) * PH]; }
template <typename acc_t>
int64_t x_begin(const RoiTaps<acc_t>& t, int64_t k, int64_t PW) { return t.x_offset[k * PW]; }
template <typename acc_t>
int64_t x_end(const RoiTaps<acc_t>& t, int64_t k, int64_t PW) { return t.x_offset[(k + 1) * PW]; }

// Bilinear samples of all RoIs for one channel: the kernels' work estimate.
template <typename acc_t>
int64_t count_samples(const RoiTaps<acc_t>& t, const Geometry& g) {
  int64_t samples = 0;
  for (int64_t k = 0; k < static_cast<int64_t>(t.batch.size()); ++k) {
    samples += (y_end(t, k, g.PH) - y_begin(t, k, g.PH)) * (x_end(t, k, g.PW) - x_begin(t, k, g.PW));
  }
  return samples;
}

// Per image, the smallest pixel rectangle holding every pixel its RoIs' taps read.
template <typename acc_t>
std::vector<Window> touched_windows(const RoiTaps<acc_t>& t, const Geometry& g) {
  std::vector<Window> windows(g.N);
  for (int64_t n = 0; n < g.N; ++n) {
    Window w{g.H, -1, g.W, -1};
    for (const int64_t k : t.rois_of_image[n]) {
      if (y_end(t, k, g.PH) == y_begin(t, k, g.PH) || x_end(t, k, g.PW) == x_begin(t, k, g.PW)) {
        continue;  // no sample of this RoI touches the map
      }
      for (int64_t i = y_begin(t, k, g.PH); i < y_end(t, k, g.PH); ++i) {
        w.y0 = std::min<int64_t>(w.y0, t.y_taps[i].lo);
        w.y1 = std::max<int64_t>(w.y1, t.y_taps[i].hi);
      }
      for (int64_t i = x_begin(t, k, g.PW); i < x_end(t, k, g.PW); ++i) {
        w.x0 = std::min<int64_t>(w.x0, t.x_taps[i].lo);
        w.x1 = std::max<int64_t>(w.x1, t.x_taps[i].hi);
      }
    }
    if (!w.empty()) {
      windows[n] = w;
    }
  }
  return windows;
}

// Pool each image's RoIs top to bottom: consecutive RoIs then read overlapping rows of the gathered
// block while they are still in cache. The sort is stable, so the order (and the summation order
// of the backward pass) stays deterministic.
template <typename acc_t>
void order_rois_top_to_bottom(RoiTaps<acc_t>& t, const Geometry& g) {
  const int64_t K = static_cast<int64_t>(t.batch.size());
  std::vector<int64_t> top(K, INT64_MAX);
  for (int64_t k = 0; k < K; ++k) {
    if (y_end(t, k, g.PH) > y_begin(t, k, g.PH)) {
      top[k] = t.y_taps[y_begin(t, k, g.PH)].lo;
    }
  }
  for (auto& list : t.rois_of_image) {
    std::stable_sort(list.begin(), list.end(), [&](int64_t a, int64_t b) { return top[a] < top[b]; });
  }
}

// The taps of every RoI of rois (Tensor[K, 5], contiguous, scalar_t) on the g.N maps of g.H x g.W,
// with the per-image RoI lists and windows the kernels schedule by. `op` names the calling op in
// the error raised for a bad batch index.
template <typename scalar_t, typename acc_t>
RoiTaps<acc_t> build_taps(const char* op, const at::Tensor& rois, const Geometry& g, double spatial_scale,
                          int64_t sampling_ratio, bool aligned) {
  RoiTaps<acc_t> t;
  t.batch = batch_indices<scalar_t>(op, rois, g.N);
  t.rois_of_image = group_by_image(t.batch, g.N);
  const RoiAxes<acc_t> axes = sampling_axes<scalar_t, acc_t>(rois, g, spatial_scale, sampling_ratio, aligned);
  tap_offsets(axes, g, t);
  fill_taps(axes, g, t);
  t.samples = count_samples(t, g);
  t.window = touched_windows(t, g);
  order_rois_top_to_bottom(t, g);
  return t;
}

}  // namespace roi_align_cpu
}  // namespace ops
}  // namespace segdet
