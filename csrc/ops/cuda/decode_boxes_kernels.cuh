#pragma once

// Device code of segdet::decode_boxes (ATen-free; the glue is decode_boxes_kernel.cu): one thread
// per (box, class) delta, grid-stride loop, the per-box math of box_coder_math.h.
#include "ops/cuda/device.h"

#include <cstdint>

#include "ops/box_coder_math.h"

namespace segdet::cuda::decode_boxes {

// out [n, 4 * num_classes] from rel_codes [n, 4 * num_classes] and boxes [n, 4]; num_deltas is
// n * num_classes. acc_t is the arithmetic type (float for half types).
template <typename scalar_t, typename acc_t>
__global__ void decode_boxes_kernel(const scalar_t* __restrict__ rel_codes, const scalar_t* __restrict__ boxes,
                                    scalar_t* __restrict__ out, int64_t num_deltas, int64_t num_classes,
                                    box_coder::DecodeParams<acc_t> params) {
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

}  // namespace segdet::cuda::decode_boxes
