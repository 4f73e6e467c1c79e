#pragma once

// Device code of segdet::roi_align and segdet::_roi_align_backward (ATen-free, so the CPU emulator
// can run it; the ATen glue is roi_align_kernel.cu).
//
// One thread per output element, grid-stride loops, the per-axis sampling math of
// roi_align_math.h (the same code the CPU kernels run). For channels_last input the thread index
// runs fastest over channels, so a warp reads and writes contiguous channels of one pixel.
// The atomic backward scatters into grad_input; its summation order, hence its last bits, may
// vary between runs.
//
// RoIs whose batch index is outside [0, N) (or NaN) cannot raise on the device without a sync:
// they read nothing, pool to zeros and receive no gradient. The CPU kernels raise instead.
#include "ops/cuda/device.h"

#include <cstdint>

#include "ops/roi_align_math.h"

namespace segdet::cuda::roi_align {

namespace math = ::segdet::roi_align_math;

struct Geometry {
  int64_t N, C, H, W, PH, PW;
};

// Everything a roi_align kernel needs besides the pointers.
struct Params {
  Geometry g;
  double spatial_scale;
  int64_t sampling_ratio;
  bool aligned;
};

// Sampling geometry of RoI k; false when it has no samples or its batch index is out of range.
template <typename scalar_t, typename acc_t>
SEGDET_DEVICE bool roi_axes(const scalar_t* rois, int64_t k, const Params& p, int64_t& batch, math::Axis<acc_t>& ay,
                            math::Axis<acc_t>& ax) {
  const scalar_t* box = rois + k * 5;
  const acc_t b = static_cast<acc_t>(box[0]);
  if (!(b >= acc_t(0) && b < static_cast<acc_t>(p.g.N))) {
    return false;
  }
  batch = static_cast<int64_t>(b);
  const acc_t scale = static_cast<acc_t>(p.spatial_scale);
  const bool fx = math::make_axis<acc_t>(static_cast<acc_t>(box[1]), static_cast<acc_t>(box[3]), scale, p.g.PW,
                                         p.sampling_ratio, p.aligned, ax);
  const bool fy = math::make_axis<acc_t>(static_cast<acc_t>(box[2]), static_cast<acc_t>(box[4]), scale, p.g.PH,
                                         p.sampling_ratio, p.aligned, ay);
  return fx && fy && ax.grid > 0 && ay.grid > 0;
}

// Calls f(offset_within_image_plane_in_pixels, weight) for the four corners of every sample of bin
// (ph, pw), with weights that already include the 1 / (grid_h * grid_w) of the average. The order
// (y samples, x samples, corners lo-lo, lo-hi, hi-lo, hi-hi) and the weight products are those of
// the CPU kernel, so the float32 sums round alike.
template <typename acc_t, typename F>
SEGDET_DEVICE void for_each_corner(const math::Axis<acc_t>& ay, const math::Axis<acc_t>& ax, int64_t ph, int64_t pw,
                                   int H, int W, F&& f) {
  using math::mul_rn;
  const acc_t inv_count = math::div_rn(acc_t(1), static_cast<acc_t>(ay.grid * ax.grid));
  int64_t y_first, y_last, x_first, x_last;
  math::sample_range(ay, ph, H, y_first, y_last);
  math::sample_range(ax, pw, W, x_first, x_last);
  for (int64_t iy = y_first; iy <= y_last; ++iy) {
    math::Tap<acc_t> ty;
    if (!math::make_tap(math::sample_coord(ay, ph, iy), H, ty)) {
      continue;
    }
    const acc_t wy_lo = mul_rn(ty.w_lo, inv_count), wy_hi = mul_rn(ty.w_hi, inv_count);
    for (int64_t ix = x_first; ix <= x_last; ++ix) {
      math::Tap<acc_t> tx;
      if (!math::make_tap(math::sample_coord(ax, pw, ix), W, tx)) {
        continue;
      }
      f(static_cast<int64_t>(ty.lo) * W + tx.lo, mul_rn(wy_lo, tx.w_lo));
      f(static_cast<int64_t>(ty.lo) * W + tx.hi, mul_rn(wy_lo, tx.w_hi));
      f(static_cast<int64_t>(ty.hi) * W + tx.lo, mul_rn(wy_hi, tx.w_lo));
      f(static_cast<int64_t>(ty.hi) * W + tx.hi, mul_rn(wy_hi, tx.w_hi));
    }
  }
}

// Output element `index` in memory order: (k, c, ph, pw) for NCHW, (k, ph, pw, c) for NHWC.
template <bool nhwc>
SEGDET_DEVICE void unravel(int64_t index, const Geometry& g, int64_t& k, int64_t& c, int64_t& ph, int64_t& pw) {
  if (nhwc) {
    c = index % g.C;
    pw = (index / g.C) % g.PW;
    ph = (index / (g.C * g.PW)) % g.PH;
    k = index / (g.C * g.PW * g.PH);
  } else {
    pw = index % g.PW;
    ph = (index / g.PW) % g.PH;
    c = (index / (g.PW * g.PH)) % g.C;
    k = index / (g.PW * g.PH * g.C);
  }
}

// Pointer to channel c of image n's pixel 0; pixels are `plane_stride<nhwc>(g)` elements apart.
template <bool nhwc, typename T>
SEGDET_DEVICE T* plane(T* base, const Geometry& g, int64_t n, int64_t c) {
  return nhwc ? base + n * g.H * g.W * g.C + c : base + (n * g.C + c) * g.H * g.W;
}

template <bool nhwc>
SEGDET_DEVICE int64_t pixel_stride(const Geometry& g) {
  return nhwc ? g.C : 1;
}

// output [K, C, PH, PW] (NCHW or NHWC memory order) from input [N, C, H, W] and rois [K, 5].
template <typename scalar_t, typename acc_t, bool nhwc>
__global__ void roi_align_forward_kernel(int64_t total, const scalar_t* __restrict__ input,
                                         const scalar_t* __restrict__ rois, Params p,
                                         scalar_t* __restrict__ output) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    int64_t k, c, ph, pw, batch;
    unravel<nhwc>(index, p.g, k, c, ph, pw);
    math::Axis<acc_t> ay, ax;
    acc_t acc = 0;
    if (roi_axes<scalar_t, acc_t>(rois, k, p, batch, ay, ax)) {
      const scalar_t* base = plane<nhwc>(input, p.g, batch, c);
      const int64_t stride = pixel_stride<nhwc>(p.g);
      for_each_corner(ay, ax, ph, pw, static_cast<int>(p.g.H), static_cast<int>(p.g.W),
                      [&](int64_t pixel, acc_t w) {
                        acc = math::add_rn(acc, math::mul_rn(w, static_cast<acc_t>(base[pixel * stride])));
                      });
    }
    output[index] = static_cast<scalar_t>(acc);
  }
}

// Atomic backward: grad_input [N, C, H, W] (zero-filled by the caller) += the adjoint of the
// forward pass for grad [K, C, PH, PW]. float/double only (the glue widens half types).
template <typename T, bool nhwc>
__global__ void roi_align_backward_kernel(int64_t total, const T* __restrict__ grad, const T* __restrict__ rois,
                                          Params p, T* grad_input) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    int64_t k, c, ph, pw, batch;
    unravel<nhwc>(index, p.g, k, c, ph, pw);
    math::Axis<T> ay, ax;
    if (!roi_axes<T, T>(rois, k, p, batch, ay, ax)) {
      continue;
    }
    const T gv = grad[index];
    T* base = plane<nhwc>(grad_input, p.g, batch, c);
    const int64_t stride = pixel_stride<nhwc>(p.g);
    for_each_corner(ay, ax, ph, pw, static_cast<int>(p.g.H), static_cast<int>(p.g.W),
                    [&](int64_t pixel, T w) { atomic_add(base + pixel * stride, math::mul_rn(gv, w)); });
  }
}

// --- Deterministic backward: a gather without atomics -------------------------------------------
//
// Bit-identical to the CPU backward (cpu/roi_align_kernel.cpp) in float32: there, each grad_input
// element starts at +0 and receives w * grad for every corner that reads it, in the order
// (RoIs of its image sorted stably by their first y tap, bin row ph, bin column pw, y sample,
// x sample, corner lo-lo, lo-hi, hi-lo, hi-hi). Here one thread owns one grad_input element and
// adds the same products in the same order; it only visits the bins and samples that can read
// its pixel (those within one pixel of it), which leaves the sum unchanged because the others add
// nothing to this element.

// Pixels [lo, hi] that the taps of one RoI read along one axis (lo > hi: none), and the lo pixel of
// its first tap (the CPU's sort key along y).
template <typename T>
SEGDET_DEVICE void axis_window(const math::Axis<T>& axis, int64_t pooled, int64_t size, int32_t& lo, int32_t& hi,
                               int64_t& first_lo) {
  lo = 1;
  hi = 0;
  first_lo = -1;
  for (int64_t p = 0; p < pooled; ++p) {
    int64_t first, last;
    math::sample_range(axis, p, size, first, last);
    for (int64_t i = first; i <= last; ++i) {
      math::Tap<T> tap;
      if (!math::make_tap(math::sample_coord(axis, p, i), static_cast<int>(size), tap)) {
        continue;
      }
      if (first_lo < 0) {
        first_lo = tap.lo;
        lo = tap.lo;
        hi = tap.hi;
      }
      lo = tap.lo < lo ? tap.lo : lo;
      hi = tap.hi > hi ? tap.hi : hi;
    }
  }
}

// Per RoI k: its sort key, key[k] = images in order, then the CPU's "top" (the lo pixel of the first
// y tap of the RoI, H when it has none), RoIs with an invalid batch index past every image; and the
// pixel window its taps read, window[4k .. 4k + 3] = (y_lo, y_hi, x_lo, x_hi), empty (lo > hi) when
// it reads nothing. The window lets the gather skip, with four compares, RoIs that cannot touch a
// pixel.
template <typename T>
__global__ void roi_align_order_key_kernel(int64_t num_rois, const T* __restrict__ rois, Params p,
                                           int64_t* __restrict__ key, int32_t* __restrict__ window) {
  const int64_t H = p.g.H;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < num_rois;
       k += int64_t(blockDim.x) * gridDim.x) {
    int64_t batch = 0;
    math::Axis<T> ay, ax;
    int32_t* win = window + 4 * k;
    if (!roi_axes<T, T>(rois, k, p, batch, ay, ax)) {
      const T b = rois[k * 5];
      // Valid batch, no samples: it contributes nothing, any place in its image will do.
      key[k] = (b >= T(0) && b < static_cast<T>(p.g.N)) ? batch * (H + 1) + H : p.g.N * (H + 1);
      win[0] = 1;
      win[1] = 0;
      win[2] = 1;
      win[3] = 0;
      continue;
    }
    int64_t top, unused;
    axis_window(ay, p.g.PH, H, win[0], win[1], top);
    axis_window(ax, p.g.PW, p.g.W, win[2], win[3], unused);
    key[k] = batch * (H + 1) + (top < 0 ? H : top);
  }
}

// Samples of bin p on one axis that the CPU visits (sample_range over the map) and that may read
// pixel q (coordinates within [q - 1, q + 1]).
template <typename T>
SEGDET_DEVICE void samples_near(const math::Axis<T>& axis, int64_t p, int64_t size, int64_t q, int64_t& first,
                                int64_t& last) {
  int64_t f0, l0, f1, l1;
  math::sample_range(axis, p, size, f0, l0);
  math::sample_range_in(axis, p, static_cast<double>(q) - 1.0, static_cast<double>(q) + 1.0, f1, l1);
  first = f0 > f1 ? f0 : f1;
  last = l0 < l1 ? l0 : l1;
}

// grad_input [N, C, H, W] (every element written) from grad [K, C, PH, PW]. `order` lists the RoIs
// sorted by roi_align_order_key_kernel's key; those of image n are order[image_begin[n] ..
// image_begin[n + 1]); `window` is that kernel's per-RoI pixel window.
template <typename T, bool nhwc>
__global__ void roi_align_backward_gather_kernel(int64_t total, const T* __restrict__ grad,
                                                 const T* __restrict__ rois, const int64_t* __restrict__ order,
                                                 const int64_t* __restrict__ image_begin,
                                                 const int32_t* __restrict__ window, Params p,
                                                 T* __restrict__ grad_input) {
  using math::mul_rn;
  const Geometry& g = p.g;
  const int H = static_cast<int>(g.H), W = static_cast<int>(g.W);
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    int64_t n, c, y, x;
    if (nhwc) {
      c = index % g.C;
      x = (index / g.C) % g.W;
      y = (index / (g.C * g.W)) % g.H;
      n = index / (g.C * g.W * g.H);
    } else {
      x = index % g.W;
      y = (index / g.W) % g.H;
      c = (index / (g.W * g.H)) % g.C;
      n = index / (g.W * g.H * g.C);
    }
    T acc = 0;
    for (int64_t s = image_begin[n]; s < image_begin[n + 1]; ++s) {
      const int64_t k = order[s];
      const int32_t* win = window + 4 * k;
      if (y < win[0] || y > win[1] || x < win[2] || x > win[3]) {
        continue;
      }
      int64_t batch;
      math::Axis<T> ay, ax;
      if (!roi_axes<T, T>(rois, k, p, batch, ay, ax)) {
        continue;
      }
      int64_t ph0, ph1, pw0, pw1;
      math::bin_range_in(ay, g.PH, static_cast<double>(y) - 1.0, static_cast<double>(y) + 1.0, ph0, ph1);
      math::bin_range_in(ax, g.PW, static_cast<double>(x) - 1.0, static_cast<double>(x) + 1.0, pw0, pw1);
      if (ph0 > ph1 || pw0 > pw1) {
        continue;
      }
      const T inv_count = math::div_rn(T(1), static_cast<T>(ay.grid * ax.grid));
      const T* grad_k = nhwc ? grad + k * g.PH * g.PW * g.C + c : grad + (k * g.C + c) * g.PH * g.PW;
      for (int64_t ph = ph0; ph <= ph1; ++ph) {
        int64_t iy0, iy1;
        samples_near(ay, ph, g.H, y, iy0, iy1);
        if (iy0 > iy1) {
          continue;
        }
        for (int64_t pw = pw0; pw <= pw1; ++pw) {
          int64_t ix0, ix1;
          samples_near(ax, pw, g.W, x, ix0, ix1);
          if (ix0 > ix1) {
            continue;
          }
          const T gv = nhwc ? grad_k[(ph * g.PW + pw) * g.C] : grad_k[ph * g.PW + pw];
          for (int64_t iy = iy0; iy <= iy1; ++iy) {
            math::Tap<T> ty;
            if (!math::make_tap(math::sample_coord(ay, ph, iy), H, ty) || (ty.lo != y && ty.hi != y)) {
              continue;
            }
            const T wy_lo = mul_rn(ty.w_lo, inv_count), wy_hi = mul_rn(ty.w_hi, inv_count);
            for (int64_t ix = ix0; ix <= ix1; ++ix) {
              math::Tap<T> tx;
              if (!math::make_tap(math::sample_coord(ax, pw, ix), W, tx) || (tx.lo != x && tx.hi != x)) {
                continue;
              }
              if (ty.lo == y && tx.lo == x) acc = math::add_rn(acc, mul_rn(mul_rn(wy_lo, tx.w_lo), gv));
              if (ty.lo == y && tx.hi == x) acc = math::add_rn(acc, mul_rn(mul_rn(wy_lo, tx.w_hi), gv));
              if (ty.hi == y && tx.lo == x) acc = math::add_rn(acc, mul_rn(mul_rn(wy_hi, tx.w_lo), gv));
              if (ty.hi == y && tx.hi == x) acc = math::add_rn(acc, mul_rn(mul_rn(wy_hi, tx.w_hi), gv));
            }
          }
        }
      }
    }
    grad_input[index] = acc;
  }
}

}  // namespace segdet::cuda::roi_align
