// segdet::check_image: the input check of an exported (AOTInductor) model, run as the graph's first op.
//
// An AOTInductor package checks nothing about its inputs unless the process sets AOTI_RUNTIME_CHECK_INPUTS,
// and a float or 2-D image would be read as if it were the uint8 Tensor[3, H, W] the graph was compiled
// for. This op is in the graph, so the package checks its own input and fails with a message saying what
// it expects. It returns a contiguous copy (a custom op may not return an alias of its input).

#include <ATen/ATen.h>
#include <torch/library.h>

namespace segdet::ops {
namespace {

at::Tensor check_image(const at::Tensor& image, int64_t min_side, int64_t max_side) {
  TORCH_CHECK_VALUE(image.dim() == 3 && image.size(0) == 3,
                    "segdet model: image must be an RGB uint8 Tensor[3, H, W], got a Tensor of shape ",
                    image.sizes());
  TORCH_CHECK_TYPE(image.scalar_type() == at::kByte,
                   "segdet model: image must be an RGB uint8 Tensor[3, H, W] (0..255), got dtype ",
                   image.scalar_type());
  const int64_t h = image.size(1), w = image.size(2);
  TORCH_CHECK_VALUE(h >= min_side && w >= min_side && h <= max_side && w <= max_side,
                    "segdet model: image height and width must be in [", min_side, ", ", max_side,
                    "] (the range it was exported for), got ", h, " x ", w);
  return image.contiguous().clone();
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(segdet, m) {
  m.def("check_image(Tensor image, int min_side, int max_side) -> Tensor");
}

TORCH_LIBRARY_IMPL(segdet, CPU, m) { m.impl("check_image", &check_image); }
TORCH_LIBRARY_IMPL(segdet, CUDA, m) { m.impl("check_image", &check_image); }

}  // namespace segdet::ops
