#pragma once

// Declaration of the paste_masks_crops CUDA glue (paste_masks_crops_kernel.cu), in the namespace of
// glue_functions.h so the emulation harness can register it like the others.
#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

namespace segdet::ops::cuda_glue {

std::tuple<at::Tensor, at::Tensor> paste_masks_crops(const at::Tensor& masks, const at::Tensor& boxes,
                                                     int64_t height, int64_t width, double threshold);

}  // namespace segdet::ops::cuda_glue
