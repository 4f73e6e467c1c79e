#pragma once

// segdet::roi_align and segdet::_roi_align_backward: dispatcher entry points (defined in
// roi_align.cpp) and the argument checks every backend runs first, so CPU and CUDA reject bad
// input with the same messages.
#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>
#include <c10/core/SymInt.h>
#include <c10/util/Exception.h>

namespace segdet {
namespace ops {

at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                     c10::SymInt pooled_height, c10::SymInt pooled_width, int64_t sampling_ratio, bool aligned);

at::Tensor _roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                               c10::SymInt pooled_height, c10::SymInt pooled_width, c10::SymInt batch_size,
                               c10::SymInt channels, c10::SymInt height, c10::SymInt width, int64_t sampling_ratio,
                               bool aligned);

namespace roi_align_detail {

// A tensor takes the NHWC kernels when it is channels_last and not also plain contiguous
// (C == 1 or H * W == 1 tensors are both; they take the NCHW kernels). segdet/ops/roi_align.py
// applies the same rule to pick the memory format of the fake kernels' outputs.
inline bool use_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_rois(const at::Tensor& rois, const at::Tensor& other, const char* other_name) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5,
              "roi_align: rois must be a Tensor[K, 5] of (batch_index, x1, y1, x2, y2), got shape ", rois.sizes());
  TORCH_CHECK(rois.scalar_type() == other.scalar_type(), "roi_align: rois dtype (", rois.scalar_type(),
              ") must match ", other_name, " dtype (", other.scalar_type(), ")");
  TORCH_CHECK(rois.device() == other.device(), "roi_align: rois device (", rois.device(), ") must match ",
              other_name, " device (", other.device(), ")");
}

inline void check_forward_args(const at::Tensor& input, const at::Tensor& rois, int64_t pooled_height,
                               int64_t pooled_width) {
  TORCH_CHECK(input.dim() == 4, "roi_align: input must be a Tensor[N, C, H, W], got ", input.dim(),
              " dimensions with shape ", input.sizes());
  TORCH_CHECK(is_supported_dtype(input.scalar_type()),
              "roi_align: input must be float32, float64, float16 or bfloat16, got ", input.scalar_type());
  check_rois(rois, input, "input");
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0,
              "roi_align: output_size must be positive, got (pooled_height=", pooled_height,
              ", pooled_width=", pooled_width, ")");
}

inline void check_backward_args(const at::Tensor& grad, const at::Tensor& rois, int64_t pooled_height,
                                int64_t pooled_width, int64_t batch_size, int64_t channels, int64_t height,
                                int64_t width) {
  TORCH_CHECK(is_supported_dtype(grad.scalar_type()),
              "_roi_align_backward: grad must be float32, float64, float16 or bfloat16, got ", grad.scalar_type());
  check_rois(rois, grad, "grad");
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0,
              "_roi_align_backward: output_size must be positive, got (pooled_height=", pooled_height,
              ", pooled_width=", pooled_width, ")");
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0,
              "_roi_align_backward: input sizes must be non-negative, got (", batch_size, ", ", channels, ", ",
              height, ", ", width, ")");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "_roi_align_backward: grad must be a Tensor[K, C, pooled_height, pooled_width] = [", rois.size(0), ", ",
              channels, ", ", pooled_height, ", ", pooled_width, "], got ", grad.sizes());
}

}  // namespace roi_align_detail
}  // namespace ops
}  // namespace segdet
