#pragma once

// Where segdet::paste_masks_crops' crop of one detection lies: the part of its paste box (the grown,
// truncated box of paste_masks_math.h, edges inclusive) inside the height x width image. Host/device
// code, shared by the CUDA glue (which plans the crops on the host) and its tests.

#include <cstdint>

#include "macros.h"
#include "ops/paste_masks_math.h"

namespace segdet::ops::paste_masks_math {

// Crop origin (x, y) and size (w, h) in image pixels; (0, 0, 0, 0) when the box misses the image or is
// invalid, so an empty crop has one representation.
struct CropRegion {
  int64_t x, y, w, h;
};

SEGDET_HOST_DEVICE CropRegion crop_region(const PasteBox& box, int64_t height, int64_t width) {
  CropRegion r{0, 0, 0, 0};
  if (!box.valid) {
    return r;
  }
  const int64_t xa = box.x1 > 0 ? box.x1 : 0;
  const int64_t ya = box.y1 > 0 ? box.y1 : 0;
  const int64_t xb = box.x2 + 1 < width ? box.x2 + 1 : width;
  const int64_t yb = box.y2 + 1 < height ? box.y2 + 1 : height;
  if (xa >= xb || ya >= yb) {
    return r;
  }
  r.x = xa;
  r.y = ya;
  r.w = xb - xa;
  r.h = yb - ya;
  return r;
}

// The detection owning pixel `idx` of the concatenated crops: the last d with offsets[d] <= idx, for
// offsets[0 .. num] non-decreasing with offsets[0] = 0 <= idx < offsets[num] (an empty crop shares its
// offset with the next one, which the search then passes over). Binary search; used by the crops
// kernels of paste_masks and paste_masks_aligned.
SEGDET_HOST_DEVICE int64_t crop_owner(const int64_t* offsets, int64_t num, int64_t idx) {
  // Invariant: offsets[lo] <= idx < offsets[hi].
  int64_t lo = 0;
  int64_t hi = num;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (offsets[mid] <= idx) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

}  // namespace segdet::ops::paste_masks_math
