// The emulated CUDA ops: library segdet_emu, with the schemas of segdet's ops, bound on CPU
// tensors to the CUDA glue functions (csrc/ops/cuda/*_kernel.cu compiled by g++ with
// -DSEGDET_EMULATION), whose kernels run in the CPU emulator (csrc/emu/cuda_emu.h). Built by
// scripts/build_cuda_emulation.py into build/emu/; tests/emu compare these ops with torch.ops.segdet.
//
// Extra ops for the tests: set_schedule (block / barrier order of the following launches),
// _roi_align_backward_atomic / _roi_align_backward_deterministic (each backward kernel whatever
// torch.are_deterministic_algorithms_enabled() says), launch_sites / reset_launch_counts (which
// kernels actually ran).
#include <torch/library.h>

#include <sstream>
#include <string>

#include "emu/cuda_emu.h"
#include "ops/cuda/glue_functions.h"
#include "ops/cuda/paste_masks_crops_glue.h"

namespace segdet::emu {
namespace {

void set_schedule_op(c10::string_view order, int64_t seed) {
  Schedule s;
  if (order == "forward") {
    s.order = Schedule::kForward;
  } else if (order == "reverse") {
    s.order = Schedule::kReverse;
  } else if (order == "random") {
    s.order = Schedule::kRandom;
  } else {
    TORCH_CHECK_VALUE(false, "segdet_emu::set_schedule: order must be 'forward', 'reverse' or 'random', got '",
                      std::string(order), "'");
  }
  s.seed = static_cast<uint64_t>(seed);
  set_schedule(s);
}

// "site<TAB>count" lines, one per launch site since the last reset.
std::string launch_sites_op() {
  std::ostringstream out;
  for (const auto& [site, count] : launch_counts()) {
    out << site << '\t' << count << '\n';
  }
  return out.str();
}

void reset_launch_counts_op() {
  reset_launch_counts();
}

}  // namespace

TORCH_LIBRARY(segdet_emu, m) {
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  const char* backward_args =
      "(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, "
      "SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor";
  m.def((std::string("_roi_align_backward") + backward_args).c_str());
  m.def((std::string("_roi_align_backward_atomic") + backward_args).c_str());
  m.def((std::string("_roi_align_backward_deterministic") + backward_args).c_str());
  m.def("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  m.def(
      "decode_boxes(Tensor rel_codes, Tensor boxes, float[] weights, float bbox_xform_clip, "
      "SymInt[]? image_size) -> Tensor");
  m.def("paste_masks(Tensor masks, Tensor boxes, int height, int width, float threshold) -> Tensor");
  m.def("paste_masks_crops(Tensor masks, Tensor boxes, int height, int width, float threshold) -> (Tensor, Tensor)");
  m.def("paste_masks_aligned(Tensor masks, Tensor boxes, int height, int width, float threshold) -> Tensor");
  m.def(
      "paste_masks_aligned_crops(Tensor masks, Tensor boxes, int height, int width, float threshold) -> "
      "(Tensor, Tensor)");
  m.def("set_schedule(str order, int seed) -> ()", &set_schedule_op);
  m.def("launch_sites() -> str", &launch_sites_op);
  m.def("reset_launch_counts() -> ()", &reset_launch_counts_op);
}

TORCH_LIBRARY_IMPL(segdet_emu, CPU, m) {
  namespace glue = segdet::ops::cuda_glue;
  m.impl("roi_align", TORCH_FN(glue::roi_align_forward));
  m.impl("_roi_align_backward", TORCH_FN(glue::roi_align_backward));
  m.impl("_roi_align_backward_atomic", TORCH_FN(glue::roi_align_backward_atomic));
  m.impl("_roi_align_backward_deterministic", TORCH_FN(glue::roi_align_backward_deterministic));
  m.impl("nms", TORCH_FN(glue::nms));
  m.impl("batched_nms", TORCH_FN(glue::batched_nms));
  m.impl("decode_boxes", TORCH_FN(glue::decode_boxes));
  m.impl("paste_masks", TORCH_FN(glue::paste_masks));
  m.impl("paste_masks_crops", TORCH_FN(glue::paste_masks_crops));
  m.impl("paste_masks_aligned", TORCH_FN(glue::paste_masks_aligned));
  m.impl("paste_masks_aligned_crops", TORCH_FN(glue::paste_masks_aligned_crops));
}

}  // namespace segdet::emu
