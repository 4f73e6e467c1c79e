// Schema of segdet::decode_boxes and its C++ dispatcher wrapper. Kernels: cpu/, cuda/.

#include "ops/decode_boxes.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace segdet::ops {

at::Tensor decode_boxes(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                        double bbox_xform_clip, at::OptionalSymIntArrayRef image_size) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segdet::decode_boxes", "")
                       .typed<decltype(decode_boxes)>();
  return op.call(rel_codes, boxes, weights, bbox_xform_clip, image_size);
}

TORCH_LIBRARY_FRAGMENT(segdet, m) {
  m.def(
      "decode_boxes(Tensor rel_codes, Tensor boxes, float[] weights, float bbox_xform_clip, "
      "SymInt[]? image_size) -> Tensor");
}

}  // namespace segdet::ops
