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

// Batch index of every RoI; out-of-range indices raise instead of reading outside the input.
template <typename scalar_t>
std::vector<int64_t> batch_indices(const at::Tensor& rois, int64_t N) {
  const int64_t K = rois.size(0);
  const auto r = rois.accessor<scalar_t, 2>();
  std::vector<int64_t> batch(K);
  for (int64_t k = 0; k < K; ++k) {
    const double b = static_cast<double>(r[k][0]);
    TORCH_CHECK(b >= 0.0 && b < static_cast<double>(N), "roi_align: rois[", k, ", 0] = ", b,
                " is not a batch index of input (expected 0 <= index < N = ", N, ")");
    batch[k] = static_cast<int64_t>(b);
  }
  return batch;
}

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

template <typename scalar_t, typename acc_t>
RoiTaps<acc_t> build_taps(const at::Tensor& rois, const Geometry& g, double spatial_scale, int64_t sampling_ratio,
                          bool aligned) {
  const int64_t K = rois.size(0);
  RoiTaps<acc_t> t;
  t.batch = batch_indices<scalar_t>(rois, g.N);
  t.rois_of_image.resize(g.N);
  for (int64_t k = 0; k < K; ++k) {
    t.rois_of_image[t.batch[k]].push_back(k);
  }
  const scalar_t* r = rois.data_ptr<scalar_t>();
  const acc_t scale = static_cast<acc_t>(spatial_scale);
  std::vector<math::Axis<acc_t>> ay(K), ax(K);
  t.y_offset.assign(K * g.PH + 1, 0);
  t.x_offset.assign(K * g.PW + 1, 0);
  const int H = static_cast<int>(g.H), W = static_cast<int>(g.W);
  at::parallel_for(0, K, 256, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const scalar_t* box = r + k * 5;
      const bool fx = math::make_axis<acc_t>(box[1], box[3], scale, g.PW, sampling_ratio, aligned, ax[k]);
      const bool fy = math::make_axis<acc_t>(box[2], box[4], scale, g.PH, sampling_ratio, aligned, ay[k]);
      if (!fx || !fy || ax[k].grid == 0 || ay[k].grid == 0) {
        ax[k].grid = 0;
        ay[k].grid = 0;
      }
      for (int64_t ph = 0; ph < g.PH; ++ph) {
        int64_t n = 0;
        for_each_tap(ay[k], ph, H, [&](const Tap<acc_t>&) { ++n; });
        t.y_offset[k * g.PH + ph + 1] = n;
      }
      for (int64_t pw = 0; pw < g.PW; ++pw) {
        int64_t n = 0;
        for_each_tap(ax[k], pw, W, [&](const Tap<acc_t>&) { ++n; });
        t.x_offset[k * g.PW + pw + 1] = n;
      }
    }
  });
  std::partial_sum(t.y_offset.begin(), t.y_offset.end(), t.y_offset.begin());
  std::partial_sum(t.x_offset.begin(), t.x_offset.end(), t.x_offset.begin());
  t.y_taps.resize(t.y_offset.back());
  t.x_taps.resize(t.x_offset.back());
  for (int64_t k = 0; k < K; ++k) {
    t.samples += (t.y_offset[(k + 1) * g.PH] - t.y_offset[k * g.PH]) * (t.x_offset[(k + 1) * g.PW] - t.x_offset[k * g.PW]);
  }
  at::parallel_for(0, K, 256, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      if (ay[k].grid == 0) {
        continue;
      }
      // torchvision divides the bin sum by grid_h * grid_w in T; folding it into w_y is the same average.
      const acc_t inv_count = acc_t(1) / static_cast<acc_t>(ay[k].grid * ax[k].grid);
      for (int64_t ph = 0; ph < g.PH; ++ph) {
        Tap<acc_t>* out = t.y_taps.data() + t.y_offset[k * g.PH + ph];
        for_each_tap(ay[k], ph, H, [&](Tap<acc_t> tap) {
          tap.w_lo *= inv_count;
          tap.w_hi *= inv_count;
          *out++ = tap;
        });
      }
      for (int64_t pw = 0; pw < g.PW; ++pw) {
        Tap<acc_t>* out = t.x_taps.data() + t.x_offset[k * g.PW + pw];
        for_each_tap(ax[k], pw, W, [&](const Tap<acc_t>& tap) { *out++ = tap; });
      }
    }
  });
  t.window.assign(g.N, Window{});
  for (int64_t n = 0; n < g.N; ++n) {
    Window w{g.H, -1, g.W, -1};
    for (const int64_t k : t.rois_of_image[n]) {
      const int64_t ny = t.y_offset[(k + 1) * g.PH] - t.y_offset[k * g.PH];
      const int64_t nx = t.x_offset[(k + 1) * g.PW] - t.x_offset[k * g.PW];
      if (ny == 0 || nx == 0) {
        continue;  // no sample of this RoI touches the map
      }
      for (int64_t i = t.y_offset[k * g.PH]; i < t.y_offset[(k + 1) * g.PH]; ++i) {
        w.y0 = std::min<int64_t>(w.y0, t.y_taps[i].lo);
        w.y1 = std::max<int64_t>(w.y1, t.y_taps[i].hi);
      }
      for (int64_t i = t.x_offset[k * g.PW]; i < t.x_offset[(k + 1) * g.PW]; ++i) {
        w.x0 = std::min<int64_t>(w.x0, t.x_taps[i].lo);
        w.x1 = std::max<int64_t>(w.x1, t.x_taps[i].hi);
      }
    }
    if (!w.empty()) {
      t.window[n] = w;
    }
  }
  // Pool each image's RoIs top to bottom: consecutive RoIs then read overlapping rows of the gathered
  // block while they are still in cache. The sort is stable, so the order (and the summation order
  // of the backward pass) stays deterministic.
  std::vector<int64_t> top(K, INT64_MAX);
  for (int64_t k = 0; k < K; ++k) {
    if (t.y_offset[(k + 1) * g.PH] > t.y_offset[k * g.PH]) {
      top[k] = t.y_taps[t.y_offset[k * g.PH]].lo;
    }
  }
  for (auto& list : t.rois_of_image) {
    std::stable_sort(list.begin(), list.end(), [&](int64_t a, int64_t b) { return top[a] < top[b]; });
  }
  return t;
}

}  // namespace roi_align_cpu
}  // namespace ops
}  // namespace segdet
