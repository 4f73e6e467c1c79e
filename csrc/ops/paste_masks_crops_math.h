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

// The crop of image columns [xa, xb) and rows [ya, yb) (already clipped to the image), or the empty crop.
// Shared with the aligned pasting's regions (paste_masks_aligned_math.h).
SEGDET_HOST_DEVICE CropRegion span_region(int64_t xa, int64_t ya, int64_t xb, int64_t yb) {
  if (xa >= xb || ya >= yb) {
    return CropRegion{0, 0, 0, 0};
  }
  return CropRegion{xa, ya, xb - xa, yb - ya};
}

SEGDET_HOST_DEVICE CropRegion crop_region(const PasteBox& box, int64_t height, int64_t width) {
  if (!box.valid) {
    return CropRegion{0, 0, 0, 0};
  }
  return span_region(box.x1 > 0 ? box.x1 : 0, box.y1 > 0 ? box.y1 : 0, box.x2 + 1 < width ? box.x2 + 1 : width,
                     box.y2 + 1 < height ? box.y2 + 1 : height);
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
