// Schemas of segdet::paste_masks (and its C++ dispatcher wrapper), paste_masks_crops and the aligned
// pastes. Kernels: cpu/, cuda/.

#include "ops/paste_masks.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace segdet::ops {

at::Tensor paste_masks(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width,
                       double threshold) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segdet::paste_masks", "")
                       .typed<decltype(paste_masks)>();
  return op.call(masks, boxes, height, width, threshold);
}

TORCH_LIBRARY_FRAGMENT(segdet, m) {
  // SymInt sizes: under torch.export the output image size is symbolic (dynamic H, W); an int would
  // specialise the exported graph to the example image. Kernels still receive int64_t.
  m.def("paste_masks(Tensor masks, Tensor boxes, SymInt height, SymInt width, float threshold) -> Tensor");
  // The same pixels as paste_masks, only each box's part inside the image: (crops, regions), crops = bool[N] the
  // row-major crops one after another, regions = int64[D, 4] (x, y, w, h) of crop i in the image.
  m.def("paste_masks_crops(Tensor masks, Tensor boxes, int height, int width, float threshold) -> (Tensor, Tensor)");
  // Pixel-centre ("aligned") pasting, the inverse of aligned RoI Align (ops/paste_masks_aligned_math.h), full image
  // and crops; the crops' regions are each box grown by one mask cell per side, clipped to the image.
  m.def("paste_masks_aligned(Tensor masks, Tensor boxes, SymInt height, SymInt width, float threshold) -> Tensor");
  m.def(
      "paste_masks_aligned_crops(Tensor masks, Tensor boxes, int height, int width, float threshold) -> "
      "(Tensor, Tensor)");
}

}  // namespace segdet::ops
