// CPU kernels of segdet::paste_masks_aligned and segdet::paste_masks_aligned_crops.
//
// Each detection is planned once (its region and the taps of the region's columns); the image rows of
// all detections are then pasted in parallel: per row, the two mask rows it reads are blended once
// over the padded mask's width, and each column of the region reads two blended cells. Pixels
// outside a detection's region are zero-filled without touching its mask.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "ops/paste_masks_aligned.h"
#include "ops/paste_masks_aligned_math.h"

namespace segdet::ops {
namespace {

namespace apm = aligned_paste_math;

constexpr const char* kFullOp = "paste_masks_aligned";
constexpr const char* kCropsOp = "paste_masks_aligned_crops";

template <typename T>
struct Plan {
  std::vector<apm::Job<T>> jobs;
  std::vector<int64_t> first_tap;  // [D + 1]: job i's column taps are col_taps[first_tap[i] .. first_tap[i + 1])
  std::vector<apm::Tap<T>> col_taps;
};

template <typename T>
Plan<T> make_plan(const at::Tensor& boxes, int64_t mask_size, int64_t height, int64_t width) {
  const auto box_data = boxes.to(at::kDouble).contiguous();
  const double* b = box_data.const_data_ptr<double>();
  const int64_t num = boxes.size(0);
  Plan<T> plan;
  plan.jobs.resize(num);
  plan.first_tap.assign(num + 1, 0);
  for (int64_t i = 0; i < num; ++i) {
    plan.jobs[i] = apm::make_job<T>(b + 4 * i, mask_size, height, width);
    plan.first_tap[i + 1] = plan.first_tap[i] + plan.jobs[i].region.w;
  }
  plan.col_taps.resize(plan.first_tap[num]);
  at::parallel_for(0, num, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const apm::Job<T>& job = plan.jobs[i];
      apm::Tap<T>* taps = plan.col_taps.data() + plan.first_tap[i];
      for (int64_t c = 0; c < job.region.w; ++c) {
        taps[c] = apm::make_tap<T>(job.ax, job.region.x + c, mask_size);
      }
    }
  });
  return plan;
}

// Image row y of one detection, over its region's columns, to out[0 .. region.w). `blended` holds
// padded_size values of scratch.
template <typename T>
void paste_region_row(const apm::Job<T>& job, const apm::Tap<T>* taps, const T* padded, int64_t mask_size, int64_t y,
                      T threshold, T* blended, bool* out) {
  const int64_t padded_size = mask_size + 2;
  const apm::Tap<T> ty = apm::make_tap<T>(job.ay, y, mask_size);
  if (!ty.hit) {
    std::memset(out, 0, job.region.w);
    return;
  }
  const T* r0 = padded + ty.i0 * padded_size;
  const T* r1 = r0 + padded_size;
  for (int64_t c = 0; c < padded_size; ++c) {
    blended[c] = apm::blend(ty.w0, r0[c], ty.w1, r1[c]);
  }
  for (int64_t c = 0; c < job.region.w; ++c) {
    const apm::Tap<T>& tx = taps[c];
    // A missed column has i0 = 0 and zero weights: reading it is safe, `hit` decides.
    out[c] = tx.hit & (apm::blend(tx.w0, blended[tx.i0], tx.w1, blended[tx.i0 + 1]) > threshold);
  }
}

template <typename T>
void paste_full(const Plan<T>& plan, const at::Tensor& padded, int64_t mask_size, int64_t height, int64_t width,
                T threshold, at::Tensor& out) {
  const int64_t num = static_cast<int64_t>(plan.jobs.size());
  const int64_t mask_stride = (mask_size + 2) * (mask_size + 2);
  const T* padded_data = padded.const_data_ptr<T>();
  bool* out_data = out.mutable_data_ptr<bool>();
  // ~64 KiB of output per task keeps the scheduling overhead small next to the memsets.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(width, 1));
  at::parallel_for(0, num * height, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> blended(mask_size + 2);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r / height;
      const int64_t y = r - i * height;
      const apm::Region& reg = plan.jobs[i].region;
      bool* row = out_data + r * width;
      if (y < reg.y || y >= reg.y + reg.h) {
        std::memset(row, 0, width);
        continue;
      }
      std::memset(row, 0, reg.x);
      paste_region_row<T>(plan.jobs[i], plan.col_taps.data() + plan.first_tap[i], padded_data + i * mask_stride,
                          mask_size, y, threshold, blended.data(), row + reg.x);
      std::memset(row + reg.x + reg.w, 0, width - reg.x - reg.w);
    }
  });
}

at::Tensor paste_masks_aligned_cpu(const at::Tensor& masks, const at::Tensor& boxes, int64_t height, int64_t width,
                                   double threshold) {
  detail::check_paste_masks_aligned_args(kFullOp, masks, boxes, height, width, threshold);
  auto out = at::empty({masks.size(0), height, width}, masks.options().dtype(at::kBool));
  if (out.numel() == 0) {
    return out;
  }
  const int64_t mask_size = masks.size(1);
  const at::Tensor padded = detail::aligned_paste_padded(masks);
  AT_DISPATCH_FLOATING_TYPES(padded.scalar_type(), "paste_masks_aligned_cpu", [&] {
    const Plan<scalar_t> plan = make_plan<scalar_t>(boxes, mask_size, height, width);
    paste_full<scalar_t>(plan, padded, mask_size, height, width, static_cast<scalar_t>(threshold), out);
  });
  return out;
}

// Crops: detection i's region, row-major, at data[first_pixel[i] ..]; work is split over all crop rows of
// all detections, so one large box does not serialise the paste.
template <typename T>
void paste_crops(const Plan<T>& plan, const at::Tensor& padded, int64_t mask_size, T threshold,
                 const std::vector<int64_t>& first_pixel, const std::vector<int64_t>& first_row, at::Tensor& data) {
  const int64_t mask_stride = (mask_size + 2) * (mask_size + 2);
  const T* padded_data = padded.const_data_ptr<T>();
  bool* out = data.mutable_data_ptr<bool>();
  const int64_t total_rows = first_row.back();
  const int64_t mean_width = std::max<int64_t>(1, data.numel() / std::max<int64_t>(total_rows, 1));
  at::parallel_for(0, total_rows, std::max<int64_t>(1, 65536 / mean_width), [&](int64_t begin, int64_t end) {
    std::vector<T> blended(mask_size + 2);
    // The detection owning crop row `begin`: the last one whose first row is <= begin (empty crops share
    // their first row with the next detection and are passed over).
    int64_t i = std::upper_bound(first_row.begin(), first_row.end(), begin) - first_row.begin() - 1;
    for (int64_t r = begin; r < end; ++r) {
      while (r >= first_row[i + 1]) {
        ++i;
      }
      const apm::Job<T>& job = plan.jobs[i];
      const int64_t local_row = r - first_row[i];
      paste_region_row<T>(job, plan.col_taps.data() + plan.first_tap[i], padded_data + i * mask_stride, mask_size,
                          job.region.y + local_row, threshold, blended.data(),
                          out + first_pixel[i] + local_row * job.region.w);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> paste_masks_aligned_crops_cpu(const at::Tensor& masks, const at::Tensor& boxes,
                                                                 int64_t height, int64_t width, double threshold) {
  detail::check_paste_masks_aligned_args(kCropsOp, masks, boxes, height, width, threshold);
  const int64_t num = masks.size(0);
  const int64_t mask_size = masks.size(1);
  auto regions = at::zeros({num, 4}, masks.options().dtype(at::kLong));
  std::tuple<at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(detail::aligned_paste_compute_type(masks), "paste_masks_aligned_crops_cpu", [&] {
    const Plan<scalar_t> plan = make_plan<scalar_t>(boxes, mask_size, height, width);
    std::vector<int64_t> first_pixel(num + 1, 0), first_row(num + 1, 0);
    int64_t* reg = regions.mutable_data_ptr<int64_t>();
    for (int64_t i = 0; i < num; ++i) {
      const apm::Region& r = plan.jobs[i].region;
      reg[4 * i] = r.x;
      reg[4 * i + 1] = r.y;
      reg[4 * i + 2] = r.w;
      reg[4 * i + 3] = r.h;
      first_pixel[i + 1] = first_pixel[i] + r.w * r.h;
      first_row[i + 1] = first_row[i] + r.h;
    }
    auto data = at::empty({first_pixel[num]}, masks.options().dtype(at::kBool));
    if (data.numel() > 0) {
      const at::Tensor padded = detail::aligned_paste_padded(masks);
      paste_crops<scalar_t>(plan, padded, mask_size, static_cast<scalar_t>(threshold), first_pixel, first_row, data);
    }
    result = {data, regions};
  });
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, CPU, m) {
  m.impl("paste_masks_aligned", &paste_masks_aligned_cpu);
  m.impl("paste_masks_aligned_crops", &paste_masks_aligned_crops_cpu);
}

}  // namespace segdet::ops
