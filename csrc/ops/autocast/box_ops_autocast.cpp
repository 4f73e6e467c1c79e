// Autocast for the box ops segdet::nms, segdet::batched_nms, segdet::decode_boxes and
// segdet::paste_masks: all of them run in float32 under CPU and CUDA autocast.
//
// Why float32 and not the autocast dtype:
// - nms / batched_nms: scores decide the processing order and bf16 keeps 8 bits of mantissa, so
//   distinct float32 scores collapse into ties and the kept set changes; the IoU test compares
//   against a threshold where one rounding of the coordinates flips decisions. Both kernels are
//   cheap next to the network.
// - decode_boxes: box coordinates in pixels need more than bf16's 8 bits (a 1000 px coordinate
//   has a step of 4 px in bf16), and exp() of the size deltas amplifies input rounding. The result
//   stays float32: boxes are an output of the model and go on to matching, NMS and the user.
// - paste_masks: its output is bool; the kernels read float32 and float64 (the CPU one also bf16,
//   widened the same way), so half/bf16 mask probabilities are widened (exactly) and boxes are
//   taken in float32.
// Under autocast the RPN and box head emit bf16/fp16 logits and deltas while anchors and
// proposals are float32; without these casts the ops' dtype checks reject the mix.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "ops/decode_boxes.h"
#include "ops/nms.h"
#include "ops/paste_masks.h"

namespace segdet::ops {
namespace {

template <c10::DispatchKey key, c10::DeviceType device>
at::Tensor nms_autocast(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  return nms(at::autocast::cached_cast(at::kFloat, dets, device), at::autocast::cached_cast(at::kFloat, scores, device),
             iou_threshold);
}

template <c10::DispatchKey key, c10::DeviceType device>
at::Tensor batched_nms_autocast(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double iou_threshold) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  return batched_nms(at::autocast::cached_cast(at::kFloat, boxes, device),
                     at::autocast::cached_cast(at::kFloat, scores, device), idxs, iou_threshold);
}

template <c10::DispatchKey key, c10::DeviceType device>
at::Tensor decode_boxes_autocast(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                                 double bbox_xform_clip, at::OptionalSymIntArrayRef image_size) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  return decode_boxes(at::autocast::cached_cast(at::kFloat, rel_codes, device),
                      at::autocast::cached_cast(at::kFloat, boxes, device), weights, bbox_xform_clip, image_size);
}

// SymInt sizes, called through the dispatcher with them: an int64_t signature here would turn a symbolic image
// size (torch.compile / torch.export with dynamic H, W under autocast) into a constant, as the schema's comment
// in paste_masks.cpp warns.
template <c10::DispatchKey key, c10::DeviceType device>
at::Tensor paste_masks_autocast(const at::Tensor& masks, const at::Tensor& boxes, c10::SymInt height,
                                c10::SymInt width, double threshold) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segdet::paste_masks", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt, c10::SymInt, double)>();
  return op.call(at::autocast::cached_cast(at::kFloat, masks, device),
                 at::autocast::cached_cast(at::kFloat, boxes, device), std::move(height), std::move(width), threshold);
}

template <c10::DispatchKey key, c10::DeviceType device>
void register_box_ops(torch::Library& m) {
  m.impl("nms", TORCH_FN((nms_autocast<key, device>)));
  m.impl("batched_nms", TORCH_FN((batched_nms_autocast<key, device>)));
  m.impl("decode_boxes", TORCH_FN((decode_boxes_autocast<key, device>)));
  m.impl("paste_masks", TORCH_FN((paste_masks_autocast<key, device>)));
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, AutocastCUDA, m) {
  register_box_ops<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>(m);
}

TORCH_LIBRARY_IMPL(segdet, AutocastCPU, m) {
  register_box_ops<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>(m);
}

}  // namespace segdet::ops
