// CPU kernels of segdet::roi_align and segdet::_roi_align_backward.
//
// Layout of the work, chosen for speed on many RoIs x many channels:
//   * The bilinear taps of every RoI (pixel indices and weights per sample, per axis; see
//     roi_align_math.h) are computed once and shared by all channels.
//   * NCHW: one task per (image, channel) plane visits every RoI of that image, so the plane stays
//     in cache while all its RoIs are pooled, and in the backward pass each task owns its plane of
//     grad_input: race-free and deterministic without atomics.
//   * NHWC (channels_last input): the innermost loop runs over contiguous channels and vectorises;
//     the forward pass splits over (RoI, bin row), the backward pass over (image, channel block),
//     again so each task owns a disjoint slice of grad_input.
// Reduced-precision types accumulate in float (at::opmath_type); their backward pass runs the float
// kernel and rounds grad_input once at the end.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <numeric>
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
};

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
  at::parallel_for(0, K, 64, [&](int64_t begin, int64_t end) {
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
  at::parallel_for(0, K, 64, [&](int64_t begin, int64_t end) {
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
  return t;
}

template <typename scalar_t, typename acc_t>
void forward_nchw(const scalar_t* input, scalar_t* output, const RoiTaps<acc_t>& t, const Geometry& g) {
  at::parallel_for(0, g.N * g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / g.C;
      const int64_t c = plane % g.C;
      const scalar_t* src = input + plane * g.H * g.W;
      for (const int64_t k : t.rois_of_image[n]) {
        scalar_t* dst = output + (k * g.C + c) * g.PH * g.PW;
        for (int64_t ph = 0; ph < g.PH; ++ph) {
          const Tap<acc_t>* y_begin = t.y_taps.data() + t.y_offset[k * g.PH + ph];
          const Tap<acc_t>* y_end = t.y_taps.data() + t.y_offset[k * g.PH + ph + 1];
          for (int64_t pw = 0; pw < g.PW; ++pw) {
            const Tap<acc_t>* x_begin = t.x_taps.data() + t.x_offset[k * g.PW + pw];
            const Tap<acc_t>* x_end = t.x_taps.data() + t.x_offset[k * g.PW + pw + 1];
            acc_t acc = 0;
            for (const Tap<acc_t>* yt = y_begin; yt != y_end; ++yt) {
              const scalar_t* row_lo = src + static_cast<int64_t>(yt->lo) * g.W;
              const scalar_t* row_hi = src + static_cast<int64_t>(yt->hi) * g.W;
              acc_t s_lo = 0, s_hi = 0;
              for (const Tap<acc_t>* xt = x_begin; xt != x_end; ++xt) {
                s_lo += xt->w_lo * static_cast<acc_t>(row_lo[xt->lo]) + xt->w_hi * static_cast<acc_t>(row_lo[xt->hi]);
                s_hi += xt->w_lo * static_cast<acc_t>(row_hi[xt->lo]) + xt->w_hi * static_cast<acc_t>(row_hi[xt->hi]);
              }
              acc += yt->w_lo * s_lo + yt->w_hi * s_hi;
            }
            dst[ph * g.PW + pw] = static_cast<scalar_t>(acc);
          }
        }
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void forward_nhwc(const scalar_t* input, scalar_t* output, const RoiTaps<acc_t>& t, const Geometry& g) {
  const int64_t K = static_cast<int64_t>(t.batch.size());
  const int64_t C = g.C;
  at::parallel_for(0, K * g.PH, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(C);
    for (int64_t kp = begin; kp < end; ++kp) {
      const int64_t k = kp / g.PH;
      const int64_t ph = kp % g.PH;
      const scalar_t* image = input + t.batch[k] * g.H * g.W * C;
      const Tap<acc_t>* y_begin = t.y_taps.data() + t.y_offset[k * g.PH + ph];
      const Tap<acc_t>* y_end = t.y_taps.data() + t.y_offset[k * g.PH + ph + 1];
      for (int64_t pw = 0; pw < g.PW; ++pw) {
        const Tap<acc_t>* x_begin = t.x_taps.data() + t.x_offset[k * g.PW + pw];
        const Tap<acc_t>* x_end = t.x_taps.data() + t.x_offset[k * g.PW + pw + 1];
        std::fill(acc.begin(), acc.end(), acc_t(0));
        acc_t* a = acc.data();
        for (const Tap<acc_t>* yt = y_begin; yt != y_end; ++yt) {
          const scalar_t* row_lo = image + static_cast<int64_t>(yt->lo) * g.W * C;
          const scalar_t* row_hi = image + static_cast<int64_t>(yt->hi) * g.W * C;
          for (const Tap<acc_t>* xt = x_begin; xt != x_end; ++xt) {
            const scalar_t* p00 = row_lo + static_cast<int64_t>(xt->lo) * C;
            const scalar_t* p01 = row_lo + static_cast<int64_t>(xt->hi) * C;
            const scalar_t* p10 = row_hi + static_cast<int64_t>(xt->lo) * C;
            const scalar_t* p11 = row_hi + static_cast<int64_t>(xt->hi) * C;
            const acc_t w00 = yt->w_lo * xt->w_lo, w01 = yt->w_lo * xt->w_hi;
            const acc_t w10 = yt->w_hi * xt->w_lo, w11 = yt->w_hi * xt->w_hi;
            for (int64_t c = 0; c < C; ++c) {
              a[c] += w00 * static_cast<acc_t>(p00[c]) + w01 * static_cast<acc_t>(p01[c]) +
                      w10 * static_cast<acc_t>(p10[c]) + w11 * static_cast<acc_t>(p11[c]);
            }
          }
        }
        scalar_t* dst = output + ((k * g.PH + ph) * g.PW + pw) * C;
        for (int64_t c = 0; c < C; ++c) {
          dst[c] = static_cast<scalar_t>(a[c]);
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_nchw(const scalar_t* grad, scalar_t* grad_input, const RoiTaps<scalar_t>& t, const Geometry& g) {
  at::parallel_for(0, g.N * g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / g.C;
      const int64_t c = plane % g.C;
      scalar_t* dst = grad_input + plane * g.H * g.W;
      for (const int64_t k : t.rois_of_image[n]) {
        const scalar_t* src = grad + (k * g.C + c) * g.PH * g.PW;
        for (int64_t ph = 0; ph < g.PH; ++ph) {
          const Tap<scalar_t>* y_begin = t.y_taps.data() + t.y_offset[k * g.PH + ph];
          const Tap<scalar_t>* y_end = t.y_taps.data() + t.y_offset[k * g.PH + ph + 1];
          for (int64_t pw = 0; pw < g.PW; ++pw) {
            const Tap<scalar_t>* x_begin = t.x_taps.data() + t.x_offset[k * g.PW + pw];
            const Tap<scalar_t>* x_end = t.x_taps.data() + t.x_offset[k * g.PW + pw + 1];
            const scalar_t gv = src[ph * g.PW + pw];
            for (const Tap<scalar_t>* yt = y_begin; yt != y_end; ++yt) {
              scalar_t* row_lo = dst + static_cast<int64_t>(yt->lo) * g.W;
              scalar_t* row_hi = dst + static_cast<int64_t>(yt->hi) * g.W;
              const scalar_t g_lo = gv * yt->w_lo, g_hi = gv * yt->w_hi;
              for (const Tap<scalar_t>* xt = x_begin; xt != x_end; ++xt) {
                row_lo[xt->lo] += g_lo * xt->w_lo;
                row_lo[xt->hi] += g_lo * xt->w_hi;
                row_hi[xt->lo] += g_hi * xt->w_lo;
                row_hi[xt->hi] += g_hi * xt->w_hi;
              }
            }
          }
        }
      }
    }
  });
}

// Channels per backward task in NHWC: wide enough to vectorise and to amortise walking the taps,
// a multiple of 16 floats so neighbouring tasks do not share cache lines.
constexpr int64_t kChannelBlock = 64;

template <typename scalar_t>
void backward_nhwc(const scalar_t* grad, scalar_t* grad_input, const RoiTaps<scalar_t>& t, const Geometry& g) {
  const int64_t C = g.C;
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, g.N * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks;
      const int64_t c0 = (task % blocks) * kChannelBlock;
      const int64_t cn = std::min(kChannelBlock, C - c0);
      scalar_t* image = grad_input + n * g.H * g.W * C + c0;
      for (const int64_t k : t.rois_of_image[n]) {
        for (int64_t ph = 0; ph < g.PH; ++ph) {
          const Tap<scalar_t>* y_begin = t.y_taps.data() + t.y_offset[k * g.PH + ph];
          const Tap<scalar_t>* y_end = t.y_taps.data() + t.y_offset[k * g.PH + ph + 1];
          for (int64_t pw = 0; pw < g.PW; ++pw) {
            const Tap<scalar_t>* x_begin = t.x_taps.data() + t.x_offset[k * g.PW + pw];
            const Tap<scalar_t>* x_end = t.x_taps.data() + t.x_offset[k * g.PW + pw + 1];
            const scalar_t* gv = grad + ((k * g.PH + ph) * g.PW + pw) * C + c0;
            for (const Tap<scalar_t>* yt = y_begin; yt != y_end; ++yt) {
              scalar_t* row_lo = image + static_cast<int64_t>(yt->lo) * g.W * C;
              scalar_t* row_hi = image + static_cast<int64_t>(yt->hi) * g.W * C;
              for (const Tap<scalar_t>* xt = x_begin; xt != x_end; ++xt) {
                // p00 and p01 (or p00 and p10) coincide at the clamped last column (row), so the
                // four updates stay separate loops.
                scalar_t* p00 = row_lo + static_cast<int64_t>(xt->lo) * C;
                scalar_t* p01 = row_lo + static_cast<int64_t>(xt->hi) * C;
                scalar_t* p10 = row_hi + static_cast<int64_t>(xt->lo) * C;
                scalar_t* p11 = row_hi + static_cast<int64_t>(xt->hi) * C;
                const scalar_t w00 = yt->w_lo * xt->w_lo, w01 = yt->w_lo * xt->w_hi;
                const scalar_t w10 = yt->w_hi * xt->w_lo, w11 = yt->w_hi * xt->w_hi;
                for (int64_t c = 0; c < cn; ++c) p00[c] += w00 * gv[c];
                for (int64_t c = 0; c < cn; ++c) p01[c] += w01 * gv[c];
                for (int64_t c = 0; c < cn; ++c) p10[c] += w10 * gv[c];
                for (int64_t c = 0; c < cn; ++c) p11[c] += w11 * gv[c];
              }
            }
          }
        }
      }
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
    if (nhwc) {
      forward_nhwc<scalar_t, acc_t>(in.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), taps, g);
    } else {
      forward_nchw<scalar_t, acc_t>(in.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), taps, g);
    }
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
  at::Tensor grad_input = at::empty({g.N, g.C, g.H, g.W}, grad.options().memory_format(format)).zero_();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cpu", [&] {
    if (grad.numel() == 0 || grad_input.numel() == 0) {
      batch_indices<scalar_t>(r, g.N);
      return;
    }
    const RoiTaps<scalar_t> taps = build_taps<scalar_t, scalar_t>(r, g, spatial_scale, sampling_ratio, aligned);
    if (nhwc) {
      backward_nhwc<scalar_t>(gr.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(), taps, g);
    } else {
      backward_nchw<scalar_t>(gr.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(), taps, g);
    }
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
