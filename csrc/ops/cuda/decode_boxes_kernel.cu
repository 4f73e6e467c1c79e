// ATen glue of segdet::decode_boxes on CUDA; the device code is decode_boxes_kernels.cuh. Also
// compiles as C++ under SEGDET_EMULATION, where the same glue drives the CPU emulator.
#include "ops/cuda/glue.h"

#include <ATen/Dispatch.h>

#include "ops/cuda/decode_boxes_kernels.cuh"
#include "ops/cuda/decode_boxes_launch.h"
#include "ops/cuda/glue_functions.h"
#include "ops/decode_boxes.h"

namespace segdet::ops::cuda_glue {

namespace kern = segdet::cuda::decode_boxes;

at::Tensor decode_boxes(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                        double bbox_xform_clip, at::OptionalIntArrayRef image_size) {
  detail::check_decode_boxes_args(rel_codes, boxes, weights, image_size);
  detail::check_bbox_xform_clip(bbox_xform_clip);  // before the early return, as on the CPU

  const segdet::cuda::DeviceGuard device_guard(rel_codes);
  const auto rel = rel_codes.contiguous();
  const auto ref = boxes.contiguous();
  auto out = at::empty_like(rel, at::MemoryFormat::Contiguous);
  const int64_t num_deltas = rel.numel() / 4;
  if (num_deltas == 0) {
    return out;
  }
  const int64_t num_classes = rel.size(1) / 4;
  const dim3 grid(static_cast<unsigned>(kern::num_blocks(num_deltas, segdet::cuda::num_sms())));
  const auto stream = segdet::cuda::current_stream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rel.scalar_type(), "decode_boxes_cuda", [&] {
    using acc_t = segdet::cuda::acc_type<scalar_t>;
    const auto params = detail::make_decode_params<acc_t>(weights, bbox_xform_clip, image_size);
    const auto kernel = &kern::decode_boxes_kernel<scalar_t, acc_t>;
    SEGDET_LAUNCH(kernel, grid, kern::kThreads, stream, rel.const_data_ptr<scalar_t>(),
                  ref.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), num_deltas, num_classes, params);
    segdet::cuda::check_launch();
  });
  return out;
}

SEGDET_CUDA_IMPL(m) {
  m.impl("decode_boxes", &decode_boxes);
}

}  // namespace segdet::ops::cuda_glue
