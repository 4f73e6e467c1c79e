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
// Reduced-precision maps (float16, bfloat16) are read and written in their own dtype but pooled in
// float (at::opmath_type): taps, weights and rois are float, gather_block widens the map as it
// gathers a block, bins round once when stored, and in the backward pass each task's window of
// grad_input is accumulated in a float slab and rounded once when scattered. The result is bitwise
// that of the float kernel run on the widened map and rounded afterwards, without a float copy of
// the map or of grad_input.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "ops/roi_align.h"
#include "ops/cpu/roi_align_taps.h"
#include "ops/roi_align_math.h"

namespace segdet {
namespace ops {
namespace {

using namespace roi_align_cpu;
using math::Tap;

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
// buf (rounded to scalar_t) and zeros elsewhere.
template <typename acc_t, typename scalar_t>
void scatter_block(const acc_t* buf, bool nhwc, const Geometry& g, const Block& b, const Window& win,
                   scalar_t* output) {
  constexpr int L = kLanes<acc_t>;
  for (int64_t y = 0; y < g.H; ++y) {
    const bool in_rows = y >= win.y0 && y <= win.y1;
    const acc_t* row = in_rows ? buf + (y - win.y0) * win.width() * L : nullptr;
    if (nhwc) {
      scalar_t* dst = output + (b.n * g.H + y) * g.W * g.C + b.c0;
      for (int64_t x = 0; x < g.W; ++x) {
        const bool inside = in_rows && x >= win.x0 && x <= win.x1;
        for (int64_t j = 0; j < b.cn; ++j) {
          dst[x * g.C + j] = inside ? static_cast<scalar_t>(row[(x - win.x0) * L + j]) : scalar_t(0);
        }
      }
      continue;
    }
    for (int64_t j = 0; j < b.cn; ++j) {
      scalar_t* dst = output + ((b.n * g.C + b.c0 + j) * g.H + y) * g.W;
      for (int64_t x = 0; x < g.W; ++x) {
        dst[x] = (in_rows && x >= win.x0 && x <= win.x1) ? static_cast<scalar_t>(row[(x - win.x0) * L + j])
                                                         : scalar_t(0);
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
    // NCHW output of a reduced type: the bins are transposed in acc_t into `planes` ([L][bins], in
    // L1) and each channel's plane is rounded and stored in one contiguous loop, which vectorises;
    // rounding inside the strided transpose measured slower than the float32 kernel's stores.
    std::vector<acc_t> planes(std::is_same_v<scalar_t, acc_t> || nhwc ? 0 : bins * L);
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
        } else if constexpr (std::is_same_v<scalar_t, acc_t>) {
          for (int64_t j = 0; j < b.cn; ++j) {
            scalar_t* dst = output + (k * g.C + b.c0 + j) * bins;
            for (int64_t i = 0; i < bins; ++i) dst[i] = pooled[i * L + j];
          }
        } else {
          for (int64_t j = 0; j < b.cn; ++j) {
            for (int64_t i = 0; i < bins; ++i) planes[j * bins + i] = pooled[i * L + j];
          }
          for (int64_t j = 0; j < b.cn; ++j) {
            scalar_t* dst = output + (k * g.C + b.c0 + j) * bins;
            const acc_t* src = planes.data() + j * bins;
            for (int64_t i = 0; i < bins; ++i) dst[i] = static_cast<scalar_t>(src[i]);
          }
        }
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void backward_blocks(const scalar_t* grad, scalar_t* grad_input, bool nhwc, const RoiTaps<acc_t>& t,
                     const Geometry& g) {
  constexpr int L = kLanes<acc_t>;
  const int64_t tasks = g.N * ((g.C + L - 1) / L);
  const int64_t bins = g.PH * g.PW;
  at::parallel_for(0, tasks, grain_for(t.samples / g.N * L), [&](int64_t begin, int64_t end) {
    // The slab accumulates in acc_t: summing many RoIs' contributions in bf16 would drop every
    // addend below 2^-8 of the running sum.
    std::vector<acc_t> buffer;
    std::vector<acc_t> gbins(bins * L, acc_t(0));
    for (int64_t task = begin; task < end; ++task) {
      const Block b = block_of<acc_t>(task, g);
      const Window& win = t.window[b.n];
      if (!win.empty()) {
        buffer.assign(win.height() * win.width() * L, acc_t(0));
      }
      const Slab<acc_t> slab{buffer.data(), win};
      for (const int64_t k : t.rois_of_image[b.n]) {
        if (nhwc) {
          for (int64_t i = 0; i < bins; ++i) {
            const scalar_t* src = grad + (k * bins + i) * g.C + b.c0;
            for (int64_t j = 0; j < b.cn; ++j) gbins[i * L + j] = static_cast<acc_t>(src[j]);
          }
        } else {
          for (int64_t j = 0; j < b.cn; ++j) {
            const scalar_t* src = grad + (k * g.C + b.c0 + j) * bins;
            for (int64_t i = 0; i < bins; ++i) gbins[i * L + j] = static_cast<acc_t>(src[i]);
          }
        }
        scatter_roi(slab, t, k, g.PH, g.PW, gbins.data());
      }
      scatter_block(buffer.data(), nhwc, g, b, win, grad_input);
    }
  });
}

// rois (Tensor[K, 5], the map's dtype or float32; see roi_align_detail::takes_float_rois) as contiguous
// acc_t: the taps are computed in acc_t whatever dtype the boxes came in. Widening bf16/half rois is
// exact, so this changes no value.
template <typename acc_t>
at::Tensor acc_rois(const at::Tensor& rois) {
  return rois.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
}

at::Tensor roi_align_forward_kernel(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                    bool aligned) {
  roi_align_detail::check_forward_args(input, rois, pooled_height, pooled_width);
  const Geometry g{input.size(0), input.size(1), input.size(2), input.size(3), pooled_height, pooled_width};
  const bool nhwc = roi_align_detail::use_channels_last(input);
  const auto format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor in = input.contiguous(format);
  // Every RoI (in range, NaN or empty) writes all its bins, so no zero fill is needed.
  at::Tensor output = at::empty({rois.size(0), g.C, g.PH, g.PW}, input.options().memory_format(format));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor r = acc_rois<acc_t>(rois);
    if (output.numel() == 0) {
      check_batch_indices<acc_t>("roi_align", r, g.N);
      return;
    }
    const RoiTaps<acc_t> taps = build_taps<acc_t, acc_t>("roi_align", r, g, spatial_scale, sampling_ratio, aligned);
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
  const Geometry g{batch_size, channels, height, width, pooled_height, pooled_width};
  const bool nhwc = roi_align_detail::use_channels_last(grad);
  const auto format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor gr = grad.contiguous(format);
  // backward_blocks writes every element (each task owns an (image, channel block) slice).
  at::Tensor grad_input = at::empty({g.N, g.C, g.H, g.W}, grad.options().memory_format(format));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor r = acc_rois<acc_t>(rois);
    if (grad.numel() == 0 || grad_input.numel() == 0) {
      check_batch_indices<acc_t>("_roi_align_backward", r, g.N);
      grad_input.zero_();
      return;
    }
    const RoiTaps<acc_t> taps =
        build_taps<acc_t, acc_t>("_roi_align_backward", r, g, spatial_scale, sampling_ratio, aligned);
    backward_blocks<scalar_t, acc_t>(gr.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>(), nhwc,
                                     taps, g);
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
