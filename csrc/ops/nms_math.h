#pragma once

// IoU suppression test shared by the CPU and CUDA NMS kernels.
//
// The arithmetic reproduces torchvision's CPU nms bit for bit, so that borderline pairs are
// decided the same way:
//   area  = (x2 - x1) * (y2 - y1)                      (in the box dtype)
//   w     = max(0, min(ax2, bx2) - max(ax1, bx1))      (same for h)
//   iou   = (w * h) / (area_a + area_b - w * h)        (rounded to the box dtype)
//   suppress when (double)iou > iou_threshold
// max/min are std::max/std::min, i.e. `a < b ? b : a`, whose NaN behaviour (the first argument
// wins when the comparison is false) decides what NaN coordinates do; CUDA's fmaxf would not.
// On the device every operation is an explicitly rounded intrinsic because nvcc would
// otherwise contract `area_a + area_b - w * h` into an FMA and change borderline results.

#include <cmath>
#include <cstdint>
#include <limits>

#include "macros.h"
#include "ops/rounding_math.h"

namespace segdet::nms_math {

template <typename T>
SEGDET_HOST_DEVICE T max_first(T a, T b) {
  return a < b ? b : a;
}

template <typename T>
SEGDET_HOST_DEVICE T min_first(T a, T b) {
  return b < a ? b : a;
}

using rounding::add_rn;
using rounding::div_rn;
using rounding::mul_rn;
using rounding::sub_rn;

// Area of an (x1, y1, x2, y2) box; negative or NaN for malformed boxes, as in torchvision.
template <typename T>
SEGDET_HOST_DEVICE T box_area(T x1, T y1, T x2, T y2) {
  return mul_rn(sub_rn(x2, x1), sub_rn(y2, y1));
}

// IoU of box a (the kept, higher-scoring box) with box b, rounded to T. Argument order matters
// for NaN inputs (see the header comment).
template <typename T>
SEGDET_HOST_DEVICE T box_iou(T ax1, T ay1, T ax2, T ay2, T area_a, T bx1, T by1, T bx2, T by2, T area_b) {
  const T w = max_first(T(0), sub_rn(min_first(ax2, bx2), max_first(ax1, bx1)));
  const T h = max_first(T(0), sub_rn(min_first(ay2, by2), max_first(ay1, by1)));
  const T inter = mul_rn(w, h);
  return div_rn(inter, sub_rn(add_rn(area_a, area_b), inter));
}

// The threshold as a value of T such that `iou > threshold_in<T>(t)` equals the reference
// test `(double)iou > t` for every iou of type T (NaN included): t itself for double, the
// largest float not above t for float. Comparing in T keeps the hot loops in one width.
template <typename T>
inline T threshold_in(double t);

template <>
inline double threshold_in<double>(double t) {
  return t;
}

template <>
inline float threshold_in<float>(double t) {
  if (std::isnan(t)) {
    return std::numeric_limits<float>::quiet_NaN();
  }
  constexpr float kMax = std::numeric_limits<float>::max();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  if (t >= static_cast<double>(kInf)) {
    return kInf;
  }
  if (t >= static_cast<double>(kMax)) {
    return kMax;
  }
  if (t < -static_cast<double>(kMax)) {
    return -kInf;
  }
  float f = static_cast<float>(t);  // in range: rounds to nearest, maybe one step above t
  while (static_cast<double>(f) > t) {
    f = std::nextafter(f, -kInf);
  }
  return f;
}

}  // namespace segdet::nms_math
