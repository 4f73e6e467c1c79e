// CUDA kernel of segdet::decode_boxes: one thread per (box, class) delta, grid-stride loop.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "ops/box_coder_math.h"
#include "ops/decode_boxes.h"

namespace segdet::ops {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void decode_boxes_kernel(const scalar_t* __restrict__ rel_codes, const scalar_t* __restrict__ boxes,
                                    scalar_t* __restrict__ out, int64_t num_deltas, int64_t num_classes,
                                    box_coder::DecodeParams<at::opmath_type<scalar_t>> params) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < num_deltas; j += stride) {
    const scalar_t* b = boxes + 4 * (j / num_classes);
    const auto ref = box_coder::make_ref_box<acc_t>(b[0], b[1], b[2], b[3]);
    const scalar_t* d = rel_codes + 4 * j;
    acc_t decoded[4];
    box_coder::apply_delta<acc_t>(d[0], d[1], d[2], d[3], ref, params, decoded);
    scalar_t* o = out + 4 * j;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      o[c] = static_cast<scalar_t>(decoded[c]);
    }
  }
}

at::Tensor decode_boxes_cuda(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                             double bbox_xform_clip, at::OptionalIntArrayRef image_size) {
  detail::check_decode_boxes_args(rel_codes, boxes, weights, image_size);
  TORCH_CHECK(rel_codes.is_cuda(), "decode_boxes: CUDA kernel got rel_codes on ", rel_codes.device());

  const c10::cuda::CUDAGuard device_guard(rel_codes.device());
  const auto rel = rel_codes.contiguous();
  const auto ref = boxes.contiguous();
  auto out = at::empty_like(rel, at::MemoryFormat::Contiguous);
  const int64_t num_deltas = rel.numel() / 4;
  if (num_deltas == 0) {
    return out;
  }
  const int64_t num_classes = rel.size(1) / 4;

  const int64_t max_blocks = 16LL * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int blocks = static_cast<int>(std::min<int64_t>((num_deltas + kThreads - 1) / kThreads, max_blocks));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rel.scalar_type(), "decode_boxes_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto params = detail::make_decode_params<acc_t>(weights, bbox_xform_clip, image_size);
    decode_boxes_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        rel.const_data_ptr<scalar_t>(), ref.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), num_deltas,
        num_classes, params);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, CUDA, m) {
  m.impl("decode_boxes", &decode_boxes_cuda);
}

}  // namespace segdet::ops
