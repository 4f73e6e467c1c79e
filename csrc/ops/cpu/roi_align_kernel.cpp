// CPU kernels of segdet::roi_align and segdet::_roi_align_backward.
//
// Layout of the work, chosen for speed on many RoIs x many channels:
//   * The bilinear taps of every RoI (pixel indices and weights per sample, per axis; see
//     roi_align_math.h) are computed once and shared by all channels.
//   * One task per (image, block of 16 float / 8 double channels) pools every RoI of that image;
//     the block's channels are interleaved per pixel (channels_last input already is; NCHW planes
//     are gathered first), so each bilinear corner is one vectorisable fixed-length loop and the
//     bin sums stay in registers.
//   * In the backward pass each task owns its (image, channel block) slice of grad_input: race-free
//     and deterministic (independent of the thread count) without atomics.
// Reduced-precision types accumulate in float (at::opmath_type); their backward pass runs the float
// kernel and rounds grad_input once at the end.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "ops/roi_align.h"
#include "ops/roi_align_math.h"

namespace segdet {
namespace ops {
namespace {

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

int64_t grain_for(int64_t samples_per_item) {
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

// Channels are processed in blocks of kLanes (one 64-byte cache line of acc_t): a task gathers one
// block of one image into a dense buffer with the channels interleaved per pixel (zero-padded past C)
// and pools every RoI of that image from it. Every bilinear corner is then one fixed-length vector
// loop, the bin sums stay in registers, NCHW and channels_last input share the code, and one task,
// (image, channel block), owns its slice of grad_input. Only the window of the map that the image's
// taps touch is gathered, so a few small RoIs do not pay for the whole map.
template <typename T>
constexpr int kLanes = static_cast<int>(64 / sizeof(T));

struct Block {
  int64_t n;   // image
  int64_t c0;  // first channel
  int64_t cn;  // channels in this block, <= kLanes
};

template <typename T>
Block block_of(int64_t task, const Geometry& g) {
  const int64_t blocks = (g.C + kLanes<T> - 1) / kLanes<T>;
  const int64_t c0 = (task % blocks) * kLanes<T>;
  return {task / blocks, c0, std::min<int64_t>(kLanes<T>, g.C - c0)};
}

// The gathered window of one channel block: channel j of map pixel (y, x) is at
// data[((y - win.y0) * win.width() + (x - win.x0)) * kLanes + j].
template <typename T>
struct Slab {
  T* data;
  Window win;
};

template <typename T>
inline T* pixel(const Slab<T>& s, int64_t y, int64_t x) {
  return s.data + ((y - s.win.y0) * s.win.width() + (x - s.win.x0)) * kLanes<std::remove_const_t<T>>;
}

// Copies channels [c0, c0 + cn) of image n inside the window into buf, zero-padding lanes past cn.
template <typename scalar_t, typename acc_t>
void gather_block(const scalar_t* input, bool nhwc, const Geometry& g, const Block& b, const Window& win, acc_t* buf) {
  constexpr int L = kLanes<acc_t>;
  const int64_t width = win.width();
  if (b.cn < L) {
    std::fill(buf, buf + win.height() * width * L, acc_t(0));
  }
  for (int64_t y = win.y0; y <= win.y1; ++y) {
    acc_t* row = buf + (y - win.y0) * width * L;
    if (nhwc) {
      const scalar_t* src = input + ((b.n * g.H + y) * g.W + win.x0) * g.C + b.c0;
      for (int64_t x = 0; x < width; ++x) {
        for (int64_t j = 0; j < b.cn; ++j) row[x * L + j] = static_cast<acc_t>(src[x * g.C + j]);
      }
    } else {
      // Plane by plane within one row: the written row stays in L1 while each plane is read in order.
      for (int64_t j = 0; j < b.cn; ++j) {
        const scalar_t* src = input + ((b.n * g.C + b.c0 + j) * g.H + y) * g.W + win.x0;
        for (int64_t x = 0; x < width; ++x) row[x * L + j] = static_cast<acc_t>(src[x]);
      }
    }
  }
}

// Inverse of gather_block for grad_input: writes the block's channels of image n, the window from
// buf and zeros elsewhere.
template <typename T>
void scatter_block(const T* buf, bool nhwc, const Geometry& g, const Block& b, const Window& win, T* output) {
  constexpr int L = kLanes<T>;
  for (int64_t y = 0; y < g.H; ++y) {
    const bool in_rows = y >= win.y0 && y <= win.y1;
    const T* row = in_rows ? buf + (y - win.y0) * win.width() * L : nullptr;
    for (int64_t j = 0; j < b.cn; ++j) {
      T* dst = nhwc ? output + (b.n * g.H + y) * g.W * g.C + b.c0 + j : output + ((b.n * g.C + b.c0 + j) * g.H + y) * g.W;
      const int64_t step = nhwc ? g.C : 1;
      for (int64_t x = 0; x < g.W; ++x) {
        dst[x * step] = (in_rows && x >= win.x0 && x <= win.x1) ? row[(x - win.x0) * L + j] : T(0);
      }
    }
  }
}

// bins[(ph * PW + pw) * L + j] = bin (ph, pw) of RoI k for lane j of the slab.
template <typename T>
inline __attribute__((always_inline)) void pool_roi_body(const Slab<const T>& s, const RoiTaps<T>& t, int64_t k,
                                                         int64_t PH, int64_t PW, T* bins) {
  constexpr int L = kLanes<T>;
  for (int64_t ph = 0; ph < PH; ++ph) {
    const Tap<T>* y_begin = t.y_taps.data() + t.y_offset[k * PH + ph];
    const Tap<T>* y_end = t.y_taps.data() + t.y_offset[k * PH + ph + 1];
    for (int64_t pw = 0; pw < PW; ++pw) {
      const Tap<T>* x_begin = t.x_taps.data() + t.x_offset[k * PW + pw];
      const Tap<T>* x_end = t.x_taps.data() + t.x_offset[k * PW + pw + 1];
      T acc[L] = {};
      for (const Tap<T>* yt = y_begin; yt != y_end; ++yt) {
        for (const Tap<T>* xt = x_begin; xt != x_end; ++xt) {
          const T* p00 = pixel(s, yt->lo, xt->lo);
          const T* p01 = pixel(s, yt->lo, xt->hi);
          const T* p10 = pixel(s, yt->hi, xt->lo);
          const T* p11 = pixel(s, yt->hi, xt->hi);
          const T w00 = yt->w_lo * xt->w_lo, w01 = yt->w_lo * xt->w_hi;
          const T w10 = yt->w_hi * xt->w_lo, w11 = yt->w_hi * xt->w_hi;
          // One broadcast multiply-add loop per corner vectorises cleanly over the lanes.
          for (int j = 0; j < L; ++j) acc[j] += w00 * p00[j];
          for (int j = 0; j < L; ++j) acc[j] += w01 * p01[j];
          for (int j = 0; j < L; ++j) acc[j] += w10 * p10[j];
          for (int j = 0; j < L; ++j) acc[j] += w11 * p11[j];
        }
      }
      std::copy(acc, acc + L, bins + (ph * PW + pw) * L);
    }
  }
}

// Adjoint of pool_roi_body: adds every bin's gradient, bins[(ph * PW + pw) * L + j], into the slab.
template <typename T>
inline __attribute__((always_inline)) void scatter_roi_body(const Slab<T>& s, const RoiTaps<T>& t, int64_t k,
                                                            int64_t PH, int64_t PW, const T* bins) {
  constexpr int L = kLanes<T>;
  for (int64_t ph = 0; ph < PH; ++ph) {
    const Tap<T>* y_begin = t.y_taps.data() + t.y_offset[k * PH + ph];
    const Tap<T>* y_end = t.y_taps.data() + t.y_offset[k * PH + ph + 1];
    for (int64_t pw = 0; pw < PW; ++pw) {
      const Tap<T>* x_begin = t.x_taps.data() + t.x_offset[k * PW + pw];
      const Tap<T>* x_end = t.x_taps.data() + t.x_offset[k * PW + pw + 1];
      const T* gv = bins + (ph * PW + pw) * L;
      for (const Tap<T>* yt = y_begin; yt != y_end; ++yt) {
        for (const Tap<T>* xt = x_begin; xt != x_end; ++xt) {
          // The corners coincide at the clamped last row/column: one loop per corner keeps
          // each loop free of aliasing, so it vectorises and every update lands.
          T* p00 = pixel(s, yt->lo, xt->lo);
          T* p01 = pixel(s, yt->lo, xt->hi);
          T* p10 = pixel(s, yt->hi, xt->lo);
          T* p11 = pixel(s, yt->hi, xt->hi);
          const T w00 = yt->w_lo * xt->w_lo, w01 = yt->w_lo * xt->w_hi;
          const T w10 = yt->w_hi * xt->w_lo, w11 = yt->w_hi * xt->w_hi;
          for (int j = 0; j < L; ++j) p00[j] += w00 * gv[j];
          for (int j = 0; j < L; ++j) p01[j] += w01 * gv[j];
          for (int j = 0; j < L; ++j) p10[j] += w10 * gv[j];
          for (int j = 0; j < L; ++j) p11[j] += w11 * gv[j];
        }
      }
    }
  }
}

// The inner loops compiled for the baseline ISA and for AVX2, picked at run time. GCC keeps
// floating-point contraction off in ISO C++ mode, so both give bit-identical results.
template <typename T>
void pool_roi_base(const Slab<const T>& s, const RoiTaps<T>& t, int64_t k, int64_t PH, int64_t PW, T* bins) {
  pool_roi_body(s, t, k, PH, PW, bins);
}
template <typename T>
void scatter_roi_base(const Slab<T>& s, const RoiTaps<T>& t, int64_t k, int64_t PH, int64_t PW, const T* bins) {
  scatter_roi_body(s, t, k, PH, PW, bins);
}
#if defined(__GNUC__) && defined(__x86_64__)
#define SEGDET_HAVE_AVX2_PATH 1
template <typename T>
__attribute__((target("avx2"))) void pool_roi_avx2(const Slab<const T>& s, const RoiTaps<T>& t, int64_t k, int64_t PH,
                                                    int64_t PW, T* bins) {
  pool_roi_body(s, t, k, PH, PW, bins);
}
template <typename T>
__attribute__((target("avx2"))) void scatter_roi_avx2(const Slab<T>& s, const RoiTaps<T>& t, int64_t k, int64_t PH,
                                                       int64_t PW, const T* bins) {
  scatter_roi_body(s, t, k, PH, PW, bins);
}
#endif

bool use_avx2() {
#ifdef SEGDET_HAVE_AVX2_PATH
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
#else
  return false;
#endif
}

template <typename T>
void pool_roi(const Slab<const T>& s, const RoiTaps<T>& t, int64_t k, int64_t PH, int64_t PW, T* bins) {
#ifdef SEGDET_HAVE_AVX2_PATH
  if (use_avx2()) return pool_roi_avx2(s, t, k, PH, PW, bins);
#endif
  pool_roi_base(s, t, k, PH, PW, bins);
}

template <typename T>
void scatter_roi(const Slab<T>& s, const RoiTaps<T>& t, int64_t k, int64_t PH, int64_t PW, const T* bins) {
#ifdef SEGDET_HAVE_AVX2_PATH
  if (use_avx2()) return scatter_roi_avx2(s, t, k, PH, PW, bins);
#endif
  scatter_roi_base(s, t, k, PH, PW, bins);
}

template <typename scalar_t, typename acc_t>
void forward_blocks(const scalar_t* input, scalar_t* output, bool nhwc, const RoiTaps<acc_t>& t, const Geometry& g) {
  constexpr int L = kLanes<acc_t>;
  const int64_t tasks = g.N * ((g.C + L - 1) / L);
  const int64_t bins = g.PH * g.PW;
  at::parallel_for(0, tasks, grain_for(t.samples / g.N * L), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer;
    std::vector<acc_t> pooled(bins * L);
    for (int64_t task = begin; task < end; ++task) {
      const Block b = block_of<acc_t>(task, g);
      const Window& win = t.window[b.n];
      if (!win.empty()) {
        buffer.resize(win.height() * win.width() * L);
        gather_block(input, nhwc, g, b, win, buffer.data());
      }
      const Slab<const acc_t> slab{buffer.data(), win};
      for (const int64_t k : t.rois_of_image[b.n]) {
        pool_roi(slab, t, k, g.PH, g.PW, pooled.data());
        if (nhwc) {
          for (int64_t i = 0; i < bins; ++i) {
            scalar_t* dst = output + (k * bins + i) * g.C + b.c0;
            for (int64_t j = 0; j < b.cn; ++j) dst[j] = static_cast<scalar_t>(pooled[i * L + j]);
          }
        } else {
          for (int64_t j = 0; j < b.cn; ++j) {
            scalar_t* dst = output + (k * g.C + b.c0 + j) * bins;
            for (int64_t i = 0; i < bins; ++i) dst[i] = static_cast<scalar_t>(pooled[i * L + j]);
          }
        }
      }
    }
  });
}

template <typename T>
void backward_blocks(const T* grad, T* grad_input, bool nhwc, const RoiTaps<T>& t, const Geometry& g) {
  constexpr int L = kLanes<T>;
  const int64_t tasks = g.N * ((g.C + L - 1) / L);
  const int64_t bins = g.PH * g.PW;
  at::parallel_for(0, tasks, grain_for(t.samples / g.N * L), [&](int64_t begin, int64_t end) {
    std::vector<T> buffer;
    std::vector<T> gbins(bins * L, T(0));
    for (int64_t task = begin; task < end; ++task) {
      const Block b = block_of<T>(task, g);
      const Window& win = t.window[b.n];
      if (!win.empty()) {
        buffer.assign(win.height() * win.width() * L, T(0));
      }
      const Slab<T> slab{buffer.data(), win};
      for (const int64_t k : t.rois_of_image[b.n]) {
        if (nhwc) {
          for (int64_t i = 0; i < bins; ++i) {
            const T* src = grad + (k * bins + i) * g.C + b.c0;
            for (int64_t j = 0; j < b.cn; ++j) gbins[i * L + j] = src[j];
          }
        } else {
          for (int64_t j = 0; j < b.cn; ++j) {
            const T* src = grad + (k * g.C + b.c0 + j) * bins;
            for (int64_t i = 0; i < bins; ++i) gbins[i * L + j] = src[i];
          }
        }
        scatter_roi(slab, t, k, g.PH, g.PW, gbins.data());
      }
      scatter_block(buffer.data(), nhwc, g, b, win, grad_input);
    }
  });
}

void check_map_size(int64_t H, int64_t W) {
  TORCH_CHECK(H < INT_MAX && W < INT_MAX, "roi_align: input height and width must be below 2^31, got ", H, " x ",
              W);
}

at::Tensor roi_align_forward_kernel(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                    bool aligned) {
  roi_align_detail::check_forward_args(input, rois, pooled_height, pooled_width);
  const Geometry g{input.size(0), input.size(1), input.size(2), input.size(3), pooled_height, pooled_width};
  check_map_size(g.H, g.W);
  const bool nhwc = roi_align_detail::use_channels_last(input);
  const auto format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor in = input.contiguous(format);
  const at::Tensor r = rois.contiguous();
  // Every RoI (in range, NaN or empty) writes all its bins, so no zero fill is needed.
  at::Tensor output = at::empty({r.size(0), g.C, g.PH, g.PW}, input.options().memory_format(format));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (output.numel() == 0) {
      batch_indices<scalar_t>(r, g.N);
      return;
    }
    const RoiTaps<acc_t> taps = build_taps<scalar_t, acc_t>(r, g, spatial_scale, sampling_ratio, aligned);
    forward_blocks<scalar_t, acc_t>(in.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), nhwc, taps, g);
  });
  return output;
}

at::Tensor roi_align_backward_kernel(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                     int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                     int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                     bool aligned) {
  roi_align_detail::check_backward_args(grad, rois, pooled_height, pooled_width, batch_size, channels, height,
                                        width);
  check_map_size(height, width);
  if (grad.scalar_type() == at::kHalf || grad.scalar_type() == at::kBFloat16) {
    // Accumulate the scattered gradient in float and round once.
    return roi_align_backward_kernel(grad.to(at::kFloat), rois.to(at::kFloat), spatial_scale, pooled_height,
                                     pooled_width, batch_size, channels, height, width, sampling_ratio, aligned)
        .to(grad.scalar_type());
  }
  const Geometry g{batch_size, channels, height, width, pooled_height, pooled_width};
  const bool nhwc = roi_align_detail::use_channels_last(grad);
  const auto format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor gr = grad.contiguous(format);
  const at::Tensor r = rois.contiguous();
  // backward_blocks writes every element (each task owns an (image, channel block) slice).
  at::Tensor grad_input = at::empty({g.N, g.C, g.H, g.W}, grad.options().memory_format(format));
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cpu", [&] {
    if (grad.numel() == 0 || grad_input.numel() == 0) {
      batch_indices<scalar_t>(r, g.N);
      grad_input.zero_();
      return;
    }
    const RoiTaps<scalar_t> taps = build_taps<scalar_t, scalar_t>(r, g, spatial_scale, sampling_ratio, aligned);
    backward_blocks<scalar_t>(gr.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>(), nhwc, taps, g);
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, CPU, m) {
  m.impl("roi_align", TORCH_FN(roi_align_forward_kernel));
  m.impl("_roi_align_backward", TORCH_FN(roi_align_backward_kernel));
}

}  // namespace ops
}  // namespace segdet
