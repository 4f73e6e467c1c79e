// CPU kernel of segdet::decode_boxes: one fused pass over the N reference boxes, parallel over rows.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "ops/box_coder_math.h"
#include "ops/decode_boxes.h"

namespace segdet::ops {
namespace {

// Deltas decoded per block. Each block pays one at::exp call (a few microseconds of dispatch),
// and its scales (2 per delta: 128 KiB in float) stay in L2 between the passes.
constexpr int64_t kBlockDeltas = 16384;

template <typename scalar_t>
void decode_rows(const scalar_t* rel_codes, const scalar_t* boxes, scalar_t* out, int64_t num_boxes,
                 int64_t num_classes, const box_coder::DecodeParams<at::opmath_type<scalar_t>>& params) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows_per_block = std::max<int64_t>(1, kBlockDeltas / num_classes);
  const auto scales_options = at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::parallel_for(0, num_boxes, rows_per_block, [&](int64_t begin, int64_t end) {
    at::Tensor scales = at::empty({2 * std::min(rows_per_block, end - begin) * num_classes}, scales_options);
    acc_t* scale = scales.mutable_data_ptr<acc_t>();
    for (int64_t first = begin; first < end; first += rows_per_block) {
      const int64_t last = std::min(end, first + rows_per_block);
      const int64_t num_deltas = (last - first) * num_classes;
      const scalar_t* delta = rel_codes + 4 * num_classes * first;
      for (int64_t j = 0; j < num_deltas; ++j) {
        scale[2 * j] = box_coder::log_scale<acc_t>(delta[4 * j + 2], params.ww, params.max_log_scale);
        scale[2 * j + 1] = box_coder::log_scale<acc_t>(delta[4 * j + 3], params.wh, params.max_log_scale);
      }
      // exp() is most of the cost of a decode. ATen's exp is vectorised (SLEEF) for the CPU it
      // runs on, which this extension, built for baseline x86-64, cannot be. It is also the exp
      // torchvision's decode runs, so float32 results equal torchvision's bit for bit, except
      // perhaps in the last ulp for the few elements at a block's ragged end that ATen hands to
      // its scalar exp. Inside parallel_for it runs on this thread only.
      scales.narrow(0, 0, 2 * num_deltas).exp_();
      for (int64_t i = first; i < last; ++i) {
        const scalar_t* b = boxes + 4 * i;
        const auto ref = box_coder::make_ref_box<acc_t>(b[0], b[1], b[2], b[3]);
        const int64_t j0 = (i - first) * num_classes;
        for (int64_t k = 0; k < num_classes; ++k) {
          const int64_t j = j0 + k;
          acc_t decoded[4];
          box_coder::decode_scaled<acc_t>(delta[4 * j], delta[4 * j + 1], scale[2 * j], scale[2 * j + 1], ref,
                                          params, decoded);
          scalar_t* o = out + 4 * (num_classes * first + j);
          for (int c = 0; c < 4; ++c) {
            o[c] = static_cast<scalar_t>(decoded[c]);
          }
        }
      }
    }
  });
}

at::Tensor decode_boxes_cpu(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                            double bbox_xform_clip, at::OptionalIntArrayRef image_size) {
  detail::check_decode_boxes_args(rel_codes, boxes, weights, image_size);

  const auto rel = rel_codes.contiguous();
  const auto ref = boxes.contiguous();
  auto out = at::empty_like(rel, at::MemoryFormat::Contiguous);
  const int64_t num_boxes = rel.size(0);
  const int64_t num_classes = rel.size(1) / 4;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rel.scalar_type(), "decode_boxes_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // Before the early return: make_decode_params also checks bbox_xform_clip.
    const auto params = detail::make_decode_params<acc_t>(weights, bbox_xform_clip, image_size);
    if (out.numel() == 0) {
      return;
    }
    decode_rows<scalar_t>(rel.const_data_ptr<scalar_t>(), ref.const_data_ptr<scalar_t>(),
                          out.mutable_data_ptr<scalar_t>(), num_boxes, num_classes, params);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, CPU, m) {
  m.impl("decode_boxes", &decode_boxes_cpu);
}

}  // namespace segdet::ops
