#pragma once

// Per-pixel math of segdet::paste_masks, shared by the CPU and CUDA kernels.
//
// The op reproduces, bit for bit, Mask R-CNN's reference pasting: each S x S mask is padded
// with one zero pixel per side, its box grown by (S + 2) / S about the centre and truncated to
// integers, and the padded mask resized to the (inclusive) integer box with bilinear
// interpolation, align_corners=False, exactly as F.interpolate computes it. Matching
// F.interpolate to the last bit means following its arithmetic order and its use of fused
// multiply-adds: ATen's CPU kernels are compiled with FMA contraction for AVX2/AVX-512, and
// they pick one of two formulas by output size (see use_four_tap_order below).

#include <cmath>
#include <cstdint>

#include "macros.h"
#include "ops/rounding_math.h"

namespace segdet::ops::paste_masks_math {

// The integer box a mask is resized into, in image pixels, edges inclusive.
struct PasteBox {
  int64_t x1, y1, x2, y2;
  bool valid;  // false: the grown box is NaN/inf or absurdly large; the mask stays empty
};

// Grown box coordinates beyond +-2^31 px are treated as invalid: the reference would try to
// allocate a resized mask of that size, and int64 conversion of such floats is undefined in C++.
constexpr double kMaxCoordinate = 2147483648.0;

// The additions and multiplications here are separate tensor ops in the reference, so each
// result is rounded on its own: under nvcc the _rn intrinsics keep the compiler from fusing
// them; the CPU caller compiles this for a target without FMA, where no contraction can happen.
using segdet::rounding::add_rn;
using segdet::rounding::mul_rn;
using segdet::rounding::sub_rn;

// Grow the box (x1, y1, x2, y2) by `scale` about its centre and truncate it to integers
// (toward zero, as Tensor.to(torch.int64)). `scale` is (S + 2) / S rounded to T, as a Python
// float multiplying a T tensor is.
template <typename T>
SEGDET_HOST_DEVICE PasteBox grow_box(T x1, T y1, T x2, T y2, T scale) {
  const T half = T(0.5);
  const T half_w = mul_rn(mul_rn(sub_rn(x2, x1), half), scale);
  const T half_h = mul_rn(mul_rn(sub_rn(y2, y1), half), scale);
  const T cx = mul_rn(add_rn(x2, x1), half);
  const T cy = mul_rn(add_rn(y2, y1), half);
  const T grown[4] = {sub_rn(cx, half_w), sub_rn(cy, half_h), add_rn(cx, half_w), add_rn(cy, half_h)};
  PasteBox box{0, 0, -1, -1, true};
  int64_t out[4];
  for (int k = 0; k < 4; ++k) {
    const double v = static_cast<double>(grown[k]);
    // Written so that NaN fails the test too.
    if (!(v > -kMaxCoordinate && v < kMaxCoordinate)) {
      box.valid = false;
      return box;
    }
    out[k] = static_cast<int64_t>(grown[k]);
  }
  box.x1 = out[0];
  box.y1 = out[1];
  box.x2 = out[2];
  box.y2 = out[3];
  return box;
}

// Size in pixels of the resized mask along one axis: inclusive integer edges, at least 1.
SEGDET_HOST_DEVICE int64_t resized_extent(int64_t lo, int64_t hi) {
  const int64_t n = hi - lo + 1;
  return n > 1 ? n : 1;
}

// ATen's CPU bilinear resize uses its four-tap kernel (out = v00*w00 + v01*w01 + v10*w10 +
// v11*w11 with w00 = h0*w0 ...) when the output's height + width is at most 128, and its
// separable kernel (rows first, then columns) otherwise. The two round differently.
SEGDET_HOST_DEVICE bool use_four_tap_order(int64_t out_h, int64_t out_w) {
  return out_h + out_w <= 128;
}

// Multiply-add, fused (one rounding) when the reference's compiled code fuses it.
template <bool kFused, typename T>
SEGDET_HOST_DEVICE T madd(T a, T b, T c) {
  if constexpr (kFused) {
#if defined(__CUDA_ARCH__)
    return fma(a, b, c);
#else
    return std::fma(a, b, c);
#endif
  } else {
    return mul_rn(a, b) + c;
  }
}

// One output coordinate's two source taps and weights along an axis.
template <typename T>
struct Taps {
  int64_t i0, i1;
  T l0, l1;
};

// Source taps of output index `o` when resizing `in_size` samples to `out_size` with
// align_corners=False: src = (o + 0.5) * in/out - 0.5, clamped at 0; `scale` = in/out rounded to T.
template <bool kFused, typename T>
SEGDET_HOST_DEVICE Taps<T> linear_taps(T scale, int64_t o, int64_t in_size, int64_t out_size) {
  Taps<T> t;
  if (in_size == out_size) {
    t.i0 = o;
    t.i1 = o;
    t.l0 = T(1);
    t.l1 = T(0);
    return t;
  }
  T src = madd<kFused>(scale, static_cast<T>(o) + T(0.5), T(-0.5));
  src = src < T(0) ? T(0) : src;
  const int64_t i0f = static_cast<int64_t>(std::floor(src));
  t.i0 = i0f < in_size - 1 ? i0f : in_size - 1;
  T l1 = src - static_cast<T>(t.i0);
  l1 = l1 < T(0) ? T(0) : (l1 > T(1) ? T(1) : l1);
  t.i1 = t.i0 + (t.i0 < in_size - 1 ? 1 : 0);
  t.l1 = l1;
  t.l0 = T(1) - l1;
  return t;
}

// One interpolated value from the four source samples v[row][col] (row taps y, column taps x),
// in the CPU reference's order for this output size.
template <bool kFused, typename T>
SEGDET_HOST_DEVICE T bilinear_cpu_order(T v00, T v01, T v10, T v11, const Taps<T>& y, const Taps<T>& x,
                                        bool four_tap) {
  if (four_tap) {
    const T w00 = mul_rn(y.l0, x.l0);
    const T w01 = mul_rn(y.l0, x.l1);
    const T w10 = mul_rn(y.l1, x.l0);
    const T w11 = mul_rn(y.l1, x.l1);
    T acc = madd<kFused>(v00, w00, mul_rn(v01, w01));
    acc = madd<kFused>(v10, w10, acc);
    return madd<kFused>(v11, w11, acc);
  }
  const T top = madd<kFused>(v00, x.l0, mul_rn(v01, x.l1));
  const T bottom = madd<kFused>(v10, x.l0, mul_rn(v11, x.l1));
  return madd<kFused>(top, y.l0, mul_rn(bottom, y.l1));
}

// The same value in the order of ATen's CUDA bilinear kernel,
// h0 * (w0 * v00 + w1 * v01) + h1 * (w0 * v10 + w1 * v11), left for nvcc to contract as it
// contracts that kernel.
template <typename T>
SEGDET_HOST_DEVICE T bilinear_cuda_order(T v00, T v01, T v10, T v11, const Taps<T>& y, const Taps<T>& x) {
  return y.l0 * (x.l0 * v00 + x.l1 * v01) + y.l1 * (x.l0 * v10 + x.l1 * v11);
}

// Sample (r, c) of the mask padded with one zero pixel per side: r, c index the (S+2) x (S+2)
// padded grid; `mask` is the unpadded S x S mask, row-major.
template <typename T>
SEGDET_HOST_DEVICE T padded_sample(const T* mask, int64_t size, int64_t r, int64_t c) {
  return (r >= 1 && r <= size && c >= 1 && c <= size) ? mask[(r - 1) * size + (c - 1)] : T(0);
}

}  // namespace segdet::ops::paste_masks_math
