#pragma once

// Per-pixel math of segdet::paste_masks_aligned, shared by the CPU kernel, the CUDA kernels and the
// CUDA glue's host planning.
//
// Aligned pasting is the inverse of the aligned RoI Align that makes Mask R-CNN's mask targets: image
// pixel (x, y), whose centre is (x + 0.5, y + 0.5), reads the S x S mask bilinearly at
//   u = (x + 0.5 - x1) * S / (x2 - x1) - 0.5,   v = (y + 0.5 - y1) * S / (y2 - y1) - 0.5,
// with zeros outside the mask, and is foreground where that value is > threshold. A mask of all ones
// then covers exactly the pixels whose centres lie inside the box (torchvision's pasting grows it by
// about a pixel per side).
//
// Every step is rounded on its own (the _rn helpers; the host builds use -ffp-contract=off), so the
// CPU and CUDA kernels give the same bits. Values are computed in T = float for float32, bfloat16 and
// float16 masks and in double for float64 masks.

#include <cmath>
#include <cstdint>

#include "macros.h"
#include "ops/paste_masks_crops_math.h"
#include "ops/rounding_math.h"

namespace segdet::ops::aligned_paste_math {

using segdet::rounding::add_rn;
using segdet::rounding::div_rn;
using segdet::rounding::mul_rn;
using segdet::rounding::sub_rn;

// One axis of a box: mask coordinate u = (p + 0.5 - lo) * scale - 0.5 for pixel p.
template <typename T>
struct Axis {
  T lo;
  T scale;     // S / (hi - lo)
  bool valid;  // false for a non-positive or non-finite extent: nothing is pasted
};

template <typename T>
SEGDET_HOST_DEVICE Axis<T> make_axis(T lo, T hi, int64_t mask_size) {
  Axis<T> a{T(0), T(0), false};
  const T extent = sub_rn(hi, lo);
  // x - x is 0 for finite x and NaN for +-inf and NaN; `!(extent > 0)` also catches NaN.
  if (!(extent > T(0)) || !(sub_rn(lo, lo) == T(0)) || !(sub_rn(hi, hi) == T(0))) {
    return a;
  }
  a.lo = lo;
  a.scale = div_rn(static_cast<T>(mask_size), extent);
  a.valid = true;
  return a;
}

// The two cells pixel p reads, as indices i0 and i0 + 1 of the mask padded with one zero cell per
// side (padded index = mask index + 1), and their weights. `hit` is false where the pixel's
// coordinate lies outside (-1, S): both cells are padding and the pixel is background.
template <typename T>
struct Tap {
  int64_t i0;
  T w0, w1;
  bool hit;
};

template <typename T>
SEGDET_HOST_DEVICE Tap<T> make_tap(const Axis<T>& a, int64_t pixel, int64_t mask_size) {
  Tap<T> t{0, T(0), T(0), false};
  if (!a.valid) {
    return t;
  }
  const T u = sub_rn(mul_rn(sub_rn(add_rn(static_cast<T>(pixel), T(0.5)), a.lo), a.scale), T(0.5));
  const T cell = std::floor(u);
  // Written so that NaN fails too.
  if (!(cell >= T(-1) && cell < static_cast<T>(mask_size))) {
    return t;
  }
  t.i0 = static_cast<int64_t>(cell) + 1;
  t.w1 = sub_rn(u, cell);
  t.w0 = sub_rn(T(1), t.w1);
  t.hit = true;
  return t;
}

// w0 * a + w1 * b, two products and a sum, each rounded.
template <typename T>
SEGDET_HOST_DEVICE T blend(T w0, T a, T w1, T b) {
  return add_rn(mul_rn(w0, a), mul_rn(w1, b));
}

// The pasted value of one pixel from the padded (S + 2) x (S + 2) mask: rows blended first, then the
// two blended columns. The CPU kernel blends a whole padded row once per image row and then reads it
// per column; that is the same arithmetic in the same order.
template <typename T>
SEGDET_HOST_DEVICE T sample(const T* padded, int64_t padded_size, const Tap<T>& ty, const Tap<T>& tx) {
  const T* r0 = padded + ty.i0 * padded_size;
  const T* r1 = r0 + padded_size;
  const T left = blend(ty.w0, r0[tx.i0], ty.w1, r1[tx.i0]);
  const T right = blend(ty.w0, r0[tx.i0 + 1], ty.w1, r1[tx.i0 + 1]);
  return blend(tx.w0, left, tx.w1, right);
}

// The part of the image where a detection's mask can be foreground: its box grown by one mask cell
// per side, floor/ceil to whole pixels, clipped to the image; (0, 0, 0, 0) when that is empty or the box
// is invalid (non-finite, x2 <= x1 or y2 <= y1). Computed in double from the box as given. Every pixel
// a tap hits lies inside it: outside, |u| exceeds the mask's span by at least half a cell.
using Region = paste_masks_math::CropRegion;

SEGDET_HOST_DEVICE double clamp_to(double v, int64_t size) {
  return v < 0.0 ? 0.0 : (v > static_cast<double>(size) ? static_cast<double>(size) : v);
}

SEGDET_HOST_DEVICE Region make_region(double x1, double y1, double x2, double y2, int64_t mask_size, int64_t height,
                                      int64_t width) {
  const bool finite = (x1 - x1 == 0.0) && (y1 - y1 == 0.0) && (x2 - x2 == 0.0) && (y2 - y2 == 0.0);
  if (!finite || !(x2 > x1) || !(y2 > y1)) {
    return Region{0, 0, 0, 0};
  }
  const double cell_w = (x2 - x1) / static_cast<double>(mask_size);
  const double cell_h = (y2 - y1) / static_cast<double>(mask_size);
  return paste_masks_math::span_region(static_cast<int64_t>(clamp_to(std::floor(x1 - cell_w), width)),
                                       static_cast<int64_t>(clamp_to(std::floor(y1 - cell_h), height)),
                                       static_cast<int64_t>(clamp_to(std::ceil(x2 + cell_w), width)),
                                       static_cast<int64_t>(clamp_to(std::ceil(y2 + cell_h), height)));
}

// Everything a kernel needs of one detection, planned once per detection (on the host for the CPU
// kernel and the crops, by a one-thread-per-detection kernel for the full-image CUDA paste). `box` is
// (x1, y1, x2, y2) in double; the axes take it rounded to T, as the masks' compute type.
template <typename T>
struct Job {
  Region region;
  Axis<T> ax, ay;
};

template <typename T>
SEGDET_HOST_DEVICE Job<T> make_job(const double* box, int64_t mask_size, int64_t height, int64_t width) {
  Job<T> job;
  job.region = make_region(box[0], box[1], box[2], box[3], mask_size, height, width);
  job.ax = make_axis<T>(static_cast<T>(box[0]), static_cast<T>(box[2]), mask_size);
  job.ay = make_axis<T>(static_cast<T>(box[1]), static_cast<T>(box[3]), mask_size);
  return job;
}

SEGDET_HOST_DEVICE bool in_region(const Region& r, int64_t x, int64_t y) {
  return x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + r.h;
}

}  // namespace segdet::ops::aligned_paste_math
