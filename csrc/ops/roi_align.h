#pragma once

// segdet::roi_align and segdet::_roi_align_backward: dispatcher entry points (defined in
// roi_align.cpp) and the argument checks every backend runs first, so CPU, CUDA and the fake
// kernels reject bad input with the same errors (the contract: ops/arg_checks.h).
#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>
#include <c10/core/SymInt.h>
#include <c10/util/Exception.h>

#include <climits>

#include "ops/arg_checks.h"

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

// float32 rois with a float16/bfloat16 map (input or grad): accepted by the CPU kernels only, which
// read the map in its own dtype and the rois as float. Box coordinates need float's mantissa (a
// 1000 px coordinate has a step of 4 px in bf16), and CPU autocast passes bf16 maps through with
// float32 rois (autocast/roi_align_autocast.cpp). The CUDA kernels read rois in the map's dtype; so
// does their glue compiled for the emulator (SEGDET_EMULATION), which runs on CPU tensors.
inline bool takes_float_rois(const at::Tensor& map) {
#ifdef SEGDET_EMULATION
  (void)map;
  return false;
#else
  return map.device().is_cpu() && (map.scalar_type() == at::kHalf || map.scalar_type() == at::kBFloat16);
#endif
}

// `op` names the op in the message; `other` is the tensor rois must agree with (input or grad).
inline void check_rois(const char* op, const at::Tensor& rois, const at::Tensor& other, const char* other_name) {
  TORCH_CHECK_VALUE(rois.dim() == 2 && detail::size_holds(rois.sym_size(1).sym_eq(5)), op,
                    ": rois must be a Tensor[K, 5] of (batch_index, x1, y1, x2, y2), got shape ", rois.sym_sizes());
  TORCH_CHECK_TYPE(rois.scalar_type() == other.scalar_type() ||
                       (rois.scalar_type() == at::kFloat && takes_float_rois(other)),
                   op, ": rois dtype (", rois.scalar_type(), ") must match ", other_name, " dtype (",
                   other.scalar_type(), ")", takes_float_rois(other) ? " or be float32" : "");
  TORCH_CHECK_VALUE(rois.device() == other.device(), op, ": rois device (", rois.device(), ") must match ",
                    other_name, " device (", other.device(), ")");
}

inline void check_output_size(const char* op, const c10::SymInt& pooled_height, const c10::SymInt& pooled_width) {
  TORCH_CHECK_VALUE(pooled_height > 0 && pooled_width > 0, op,
                    ": output_size must be positive, got (pooled_height=", pooled_height,
                    ", pooled_width=", pooled_width, ")");
}

// The kernels index map rows and columns with int.
inline void check_map_size(const char* op, const c10::SymInt& height, const c10::SymInt& width) {
  TORCH_CHECK_VALUE(height < INT_MAX && width < INT_MAX, op, ": input height and width must be below 2^31, got ",
                    height, " x ", width);
}

// Sizes are SymInts so that the fake kernel can run this check on traced tensors; the kernels pass
// plain integers.
inline void check_forward_args(const at::Tensor& input, const at::Tensor& rois, const c10::SymInt& pooled_height,
                               const c10::SymInt& pooled_width) {
  TORCH_CHECK_VALUE(input.dim() == 4, "roi_align: input must be a Tensor[N, C, H, W], got shape ", input.sym_sizes());
  TORCH_CHECK_TYPE(is_supported_dtype(input.scalar_type()),
                   "roi_align: input must be float32, float64, float16 or bfloat16, got ", input.scalar_type());
  check_rois("roi_align", rois, input, "input");
  check_output_size("roi_align", pooled_height, pooled_width);
  check_map_size("roi_align", input.sym_size(2), input.sym_size(3));
}

// batch_size, channels, height, width: the shape [N, C, H, W] of the forward input, which is the
// shape of the gradient returned.
inline void check_backward_args(const at::Tensor& grad, const at::Tensor& rois, const c10::SymInt& pooled_height,
                                const c10::SymInt& pooled_width, const c10::SymInt& batch_size,
                                const c10::SymInt& channels, const c10::SymInt& height, const c10::SymInt& width) {
  TORCH_CHECK_TYPE(is_supported_dtype(grad.scalar_type()),
                   "_roi_align_backward: grad must be float32, float64, float16 or bfloat16, got ", grad.scalar_type());
  check_rois("_roi_align_backward", rois, grad, "grad");
  check_output_size("_roi_align_backward", pooled_height, pooled_width);
  TORCH_CHECK_VALUE(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0,
                    "_roi_align_backward: input sizes (batch_size, channels, height, width) must be non-negative, "
                    "got (", batch_size, ", ", channels, ", ", height, ", ", width, ")");
  check_map_size("_roi_align_backward", height, width);
  TORCH_CHECK_VALUE(grad.dim() == 4 && detail::size_holds(grad.sym_size(0).sym_eq(rois.sym_size(0))) &&
                        detail::size_holds(grad.sym_size(1).sym_eq(channels)) &&
                        detail::size_holds(grad.sym_size(2).sym_eq(pooled_height)) &&
                        detail::size_holds(grad.sym_size(3).sym_eq(pooled_width)),
                    "_roi_align_backward: grad must be a Tensor[K, C, pooled_height, pooled_width] = [",
                    rois.sym_size(0), ", ", channels, ", ", pooled_height, ", ", pooled_width, "], got shape ",
                    grad.sym_sizes());
}

}  // namespace roi_align_detail
}  // namespace ops
}  // namespace segdet
