#pragma once

// The CUDA glue functions (one per op and kernel variant), defined in csrc/ops/cuda/*_kernel.cu.
// The CUDA build registers them with TORCH_LIBRARY_IMPL(segdet, CUDA); the emulated build
// (SEGDET_EMULATION) registers them as ops of the segdet_emu library on CPU tensors
// (csrc/emu/register_emu.cpp). Signatures are the segdet op schemas'.
#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

namespace segdet::ops::cuda_glue {

at::Tensor roi_align_forward(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                             int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned);

// Picks roi_align_backward_deterministic when at::globalContext().deterministicAlgorithms(), else
// roi_align_backward_atomic (which then calls alertNotDeterministic).
at::Tensor roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                              int64_t height, int64_t width, int64_t sampling_ratio, bool aligned);

// The two backward kernels, callable directly so both can be tested whatever the global flag.
at::Tensor roi_align_backward_atomic(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                     int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                     int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                     bool aligned);
at::Tensor roi_align_backward_deterministic(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                            int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                            int64_t channels, int64_t height, int64_t width,
                                            int64_t sampling_ratio, bool aligned);

at::Tensor nms(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold);

at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold);

at::Tensor decode_boxes(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                        double bbox_xform_clip, at::OptionalIntArrayRef image_size);

at::Tensor paste_masks(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width,
                       double threshold);

at::Tensor paste_masks_aligned(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width,
                               double threshold);

std::tuple<at::Tensor, at::Tensor> paste_masks_aligned_crops(const at::Tensor& masks, const at::Tensor& boxes,
                                                             int64_t height, int64_t width, double threshold);

}  // namespace segdet::ops::cuda_glue
