#pragma once

// Per-element math of RoIAlign shared by the CPU and CUDA kernels.
//
// RoIAlign's bilinear sampling is separable: a sample at (y, x) reads the four pixels
// {y_lo, y_hi} x {x_lo, x_hi} with weight w_y * w_x, and every boundary rule (out-of-map
// samples contribute nothing, coordinates below 0 clamp to 0, the last row/column clamps)
// applies to each axis on its own. So the geometry is computed per axis: an Axis describes
// one RoI along y or x, and a Tap is one sample's two pixel indices and weights on that axis.
//
// The conventions are torchvision's, bit for bit where it matters (the float expression
// of the sample coordinate and the boundary tests), so results match torchvision.ops.roi_align:
//   * RoI corners are scaled by spatial_scale; aligned=True shifts them by -0.5 pixel so a
//     box edge at pixel coordinate x samples at the continuous position x - 0.5.
//   * aligned=False forces RoIs smaller than 1x1 feature pixel to 1x1 (legacy behaviour).
//   * sampling_ratio > 0 uses that many samples per bin and axis; otherwise ceil(bin size).
//   * A sample outside [-1, size] on an axis contributes zero but still counts in the
//     average (the divisor is grid_h * grid_w).
//
// Departures, for inputs torchvision does not define (it crashes or hangs on them):
//   * a RoI with a NaN/Inf coordinate (after scaling) has no samples: output zeros, zero gradient;
//   * the adaptive grid is clamped to kMaxGrid samples per bin and axis, and only samples that
//     can touch the map are visited (sample_range), so no finite box makes a huge loop.
#include <cmath>
#include <cstdint>

#include "macros.h"
#include "ops/rounding_math.h"

namespace segdet {
namespace roi_align_math {

// Every step is rounded on its own (no fused multiply-add), on the device as on the CPU: a sample
// exactly at -1 or at the map size must not flip between zero and full weight between backends.
using rounding::add_rn;
using rounding::div_rn;
using rounding::mul_rn;
using rounding::sub_rn;

// Boxes wider than kMaxGrid * pooled feature pixels get fewer samples than ceil(bin size).
constexpr int64_t kMaxGrid = int64_t(1) << 30;

// One RoI along one axis, in feature-map pixels.
template <typename T>
struct Axis {
  T start;       // RoI edge after scaling and the aligned offset
  T bin_size;    // extent of one output bin (negative for an inverted aligned box)
  int64_t grid;  // samples per bin; 0 means the RoI has no samples
};

// One sample on one axis: it reads pixels lo and hi with weights w_lo and w_hi.
template <typename T>
struct Tap {
  int lo;
  int hi;
  T w_lo;
  T w_hi;
};

template <typename T>
SEGDET_HOST_DEVICE bool is_finite(T v) {
  // v - v is 0 for finite v and NaN for +-Inf and NaN; written so it works under -ffast-math.
  return v == v && (v - v) == (v - v);
}

// Axis of a RoI whose edges are lo_edge <= hi_edge (input pixel coordinates).
// Returns false (and an Axis with grid 0) when the scaled RoI is not finite.
template <typename T>
SEGDET_HOST_DEVICE bool make_axis(T lo_edge, T hi_edge, T spatial_scale, int64_t pooled, int64_t sampling_ratio,
                                  bool aligned, Axis<T>& axis) {
  const T offset = aligned ? T(0.5) : T(0);
  const T start = sub_rn(mul_rn(lo_edge, spatial_scale), offset);
  const T end = sub_rn(mul_rn(hi_edge, spatial_scale), offset);
  T size = sub_rn(end, start);
  axis.start = start;
  axis.bin_size = T(0);
  axis.grid = 0;
  if (!is_finite(start) || !is_finite(size)) {
    return false;
  }
  if (!aligned && size < T(1)) {
    size = T(1);
  }
  axis.bin_size = div_rn(size, static_cast<T>(pooled));
  if (sampling_ratio > 0) {
    axis.grid = sampling_ratio;
  } else {
    // torchvision: ceil(roi_size / pooled) in T, so an empty or inverted aligned box has no samples.
    const T g = ceil(div_rn(size, static_cast<T>(pooled)));
    axis.grid = g <= T(0) ? 0 : (g >= static_cast<T>(kMaxGrid) ? kMaxGrid : static_cast<int64_t>(g));
  }
  return true;
}

// Continuous coordinate of sample i of bin p, with torchvision's float expression.
template <typename T>
SEGDET_HOST_DEVICE T sample_coord(const Axis<T>& axis, int64_t p, int64_t i) {
  return add_rn(add_rn(axis.start, mul_rn(static_cast<T>(p), axis.bin_size)),
                div_rn(mul_rn(add_rn(static_cast<T>(i), T(0.5)), axis.bin_size), static_cast<T>(axis.grid)));
}

// Inclusive range [first, last] of sample indices of bin p that may land in [lo, hi]; samples
// outside it certainly do not. The bounds are estimated in double and widened by more than the
// rounding error of sample_coord in T (a few ulps of the bin's coordinates, i.e. about
// grid * 1e-7 steps for float); callers still test each visited sample exactly. first > last when
// no sample can land there.
template <typename T>
SEGDET_HOST_DEVICE void sample_range_in(const Axis<T>& axis, int64_t p, double lo, double hi, int64_t& first,
                                        int64_t& last) {
  first = 0;
  last = axis.grid - 1;
  if (axis.grid <= 2 || axis.bin_size == T(0)) {
    return;
  }
  const double step = static_cast<double>(axis.bin_size) / static_cast<double>(axis.grid);
  const double bin_start = static_cast<double>(axis.start) + static_cast<double>(p) * static_cast<double>(axis.bin_size);
  // Sample i sits at bin_start + (i + 0.5) * step; solve for the i that reach lo and hi.
  double a = (lo - bin_start) / step - 0.5;
  double b = (hi - bin_start) / step - 0.5;
  if (a > b) {
    const double t = a;
    a = b;
    b = t;
  }
  const double margin = 2.0 + 1e-6 * static_cast<double>(axis.grid);
  const double i_lo = floor(a) - margin;
  const double i_hi = ceil(b) + margin;
  if (i_hi < 0.0 || i_lo > static_cast<double>(axis.grid - 1)) {
    first = 0;
    last = -1;
    return;
  }
  if (i_lo > 0.0) {
    first = static_cast<int64_t>(i_lo);
  }
  if (i_hi < static_cast<double>(axis.grid - 1)) {
    last = static_cast<int64_t>(i_hi);
  }
}

// The samples of bin p that may land in [-1, size], the only ones make_tap can accept: the loop
// length is then bounded by the map size, not by the (possibly huge) grid, while the set of
// contributing samples stays torchvision's.
template <typename T>
SEGDET_HOST_DEVICE void sample_range(const Axis<T>& axis, int64_t p, int64_t size, int64_t& first, int64_t& last) {
  sample_range_in(axis, p, -1.0, static_cast<double>(size), first, last);
}

// Inclusive range [first, last] of the bins (of `pooled`) whose samples may land in [lo, hi]: bin p
// spans [start + p * bin_size, start + (p + 1) * bin_size], widened here by a whole bin on each
// side, far beyond any rounding. Used by the gathering backward to skip bins that cannot sample
// a given pixel.
template <typename T>
SEGDET_HOST_DEVICE void bin_range_in(const Axis<T>& axis, int64_t pooled, double lo, double hi, int64_t& first,
                                     int64_t& last) {
  first = 0;
  last = pooled - 1;
  if (axis.grid == 0) {
    first = 0;
    last = -1;
    return;
  }
  if (axis.bin_size == T(0)) {
    return;
  }
  const double bin = static_cast<double>(axis.bin_size);
  const double start = static_cast<double>(axis.start);
  double a = (lo - start) / bin;
  double b = (hi - start) / bin;
  if (a > b) {
    const double t = a;
    a = b;
    b = t;
  }
  const double p_lo = floor(a) - 2.0;
  const double p_hi = ceil(b) + 1.0;
  if (p_hi < 0.0 || p_lo > static_cast<double>(pooled - 1)) {
    first = 0;
    last = -1;
    return;
  }
  if (p_lo > 0.0) {
    first = static_cast<int64_t>(p_lo);
  }
  if (p_hi < static_cast<double>(pooled - 1)) {
    last = static_cast<int64_t>(p_hi);
  }
}

// Bilinear tap of a sample at continuous coordinate v on an axis of `size` pixels.
// Returns false when the sample lies outside [-1, size] and contributes nothing, and always on an
// empty axis (size 0): there is no pixel to read, and the clamp below would give index -1.
template <typename T>
SEGDET_HOST_DEVICE bool make_tap(T v, int size, Tap<T>& tap) {
  if (size <= 0 || v < T(-1) || v > static_cast<T>(size) || !(v == v)) {
    return false;
  }
  if (v <= T(0)) {
    v = T(0);
  }
  int lo = static_cast<int>(v);
  int hi;
  if (lo >= size - 1) {
    lo = size - 1;
    hi = size - 1;
    v = static_cast<T>(lo);
  } else {
    hi = lo + 1;
  }
  const T frac = sub_rn(v, static_cast<T>(lo));
  tap.lo = lo;
  tap.hi = hi;
  tap.w_lo = sub_rn(T(1), frac);
  tap.w_hi = frac;
  return true;
}

}  // namespace roi_align_math
}  // namespace segdet
