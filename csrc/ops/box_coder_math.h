#pragma once

// Faster R-CNN box decoding for one reference box and one (dx, dy, dw, dh) delta, shared by the
// CPU and CUDA kernels of segdet::decode_boxes. Torch-free so the C++ host tests can include it.
//
// Boxes are (x1, y1, x2, y2) in absolute pixels. T is the arithmetic type: float for float,
// half and bfloat16 tensors, double for double tensors.

#include <math.h>

#include <cmath>
#include <type_traits>

#include "macros.h"
#include "ops/rounding_math.h"

namespace segdet::box_coder {

// torchvision evaluates each step of the decode as its own tensor op (one rounding each); see
// rounding_math.h for why the steps are spelled out.
using rounding::add_rn;
using rounding::mul_rn;
using rounding::sub_rn;

template <typename T>
SEGDET_HOST_DEVICE T exp_of(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return expf(v);
  } else {
    return exp(v);
  }
}

// Written with comparisons rather than fmin/fmax so that NaN passes through unchanged, as it
// does through torch.clamp: a NaN delta must give a NaN box, not a box at the clamp bound.
template <typename T>
SEGDET_HOST_DEVICE T clamp_max(T v, T hi) {
  return v > hi ? hi : v;
}

template <typename T>
SEGDET_HOST_DEVICE T clamp(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

template <typename T>
struct DecodeParams {
  T wx, wy, ww, wh;  // weights dividing dx, dy, dw, dh (e.g. 10, 10, 5, 5 in the box head)
  T max_log_scale;   // dw, dh (after weighting) are clamped to this before exp()
  bool clip;         // clip the decoded box to [0, width] x [0, height]
  T width, height;   // image size in pixels, used only when clip is set
};

// Width, height and centre of a reference box: computed once per box, reused for its K deltas.
template <typename T>
struct RefBox {
  T width, height, ctr_x, ctr_y;
};

template <typename T>
SEGDET_HOST_DEVICE RefBox<T> make_ref_box(T x1, T y1, T x2, T y2) {
  RefBox<T> r;
  r.width = sub_rn(x2, x1);
  r.height = sub_rn(y2, y1);
  r.ctr_x = add_rn(x1, mul_rn(T(0.5), r.width));
  r.ctr_y = add_rn(y1, mul_rn(T(0.5), r.height));
  return r;
}

// dw or dh after weighting and clamping: the log of the factor that scales the reference width or
// height. The clamp keeps exp() finite (log(1000 / 16) by default: at most 62.5x the reference).
template <typename T>
SEGDET_HOST_DEVICE T log_scale(T d, T weight, T max_log_scale) {
  return clamp_max(d / weight, max_log_scale);
}

// Writes the decoded box (x1, y1, x2, y2) to out[0..3], given the raw dx, dy and the already
// exponentiated scales exp(log_scale(dw)), exp(log_scale(dh)). Split from the exp() so the CPU
// kernel can exponentiate a whole block with a vectorised exp. Same order of operations as
// torchvision's BoxCoder.decode_single: x2 is ctr + half width (not x1 + width), true divisions.
template <typename T>
SEGDET_HOST_DEVICE void decode_scaled(T dx, T dy, T scale_w, T scale_h, const RefBox<T>& ref,
                                      const DecodeParams<T>& p, T* out) {
  const T ctr_x = add_rn(mul_rn(dx / p.wx, ref.width), ref.ctr_x);
  const T ctr_y = add_rn(mul_rn(dy / p.wy, ref.height), ref.ctr_y);
  const T half_w = mul_rn(T(0.5), mul_rn(scale_w, ref.width));
  const T half_h = mul_rn(T(0.5), mul_rn(scale_h, ref.height));

  T x1 = sub_rn(ctr_x, half_w);
  T y1 = sub_rn(ctr_y, half_h);
  T x2 = add_rn(ctr_x, half_w);
  T y2 = add_rn(ctr_y, half_h);
  if (p.clip) {
    x1 = clamp(x1, T(0), p.width);
    y1 = clamp(y1, T(0), p.height);
    x2 = clamp(x2, T(0), p.width);
    y2 = clamp(y2, T(0), p.height);
  }
  out[0] = x1;
  out[1] = y1;
  out[2] = x2;
  out[3] = y2;
}

// One delta (dx, dy, dw, dh) applied to one reference box; the decoded box goes to out[0..3].
template <typename T>
SEGDET_HOST_DEVICE void apply_delta(T dx, T dy, T dw, T dh, const RefBox<T>& ref, const DecodeParams<T>& p,
                                    T* out) {
  const T scale_w = exp_of(log_scale(dw, p.ww, p.max_log_scale));
  const T scale_h = exp_of(log_scale(dh, p.wh, p.max_log_scale));
  decode_scaled(dx, dy, scale_w, scale_h, ref, p, out);
}

}  // namespace segdet::box_coder
