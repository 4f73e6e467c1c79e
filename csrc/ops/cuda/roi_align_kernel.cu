// CUDA kernels of segdet::roi_align and segdet::_roi_align_backward.
//
// One thread per output element, grid-stride loops, the per-axis sampling math of
// roi_align_math.h (the same code the CPU tests check). For channels_last input the thread index
// runs fastest over channels, so a warp reads and writes contiguous channels of one pixel.
// The backward pass scatters with atomics into grad_input (float accumulation for half types,
// rounded once at the end); its summation order, hence its last bits, may vary between runs.
//
// RoIs whose batch index is outside [0, N) (or NaN) cannot raise on the device without a sync:
// they read nothing, pool to zeros and receive no gradient. The CPU kernels raise instead.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>

#include "ops/roi_align.h"
#include "ops/roi_align_math.h"

namespace segdet {
namespace ops {
namespace {

namespace math = roi_align_math;
using math::Tap;

constexpr int kThreads = 256;

struct Geometry {
  int64_t N, C, H, W, PH, PW;
};

// Sampling geometry of RoI k; false when it has no samples or its batch index is out of range.
template <typename scalar_t, typename acc_t>
__device__ bool roi_axes(const scalar_t* rois, int64_t k, const Geometry& g, acc_t scale, int64_t sampling_ratio,
                         bool aligned, int64_t& batch, math::Axis<acc_t>& ay, math::Axis<acc_t>& ax) {
  const scalar_t* box = rois + k * 5;
  const acc_t b = static_cast<acc_t>(box[0]);
  if (!(b >= acc_t(0) && b < static_cast<acc_t>(g.N))) {
    return false;
  }
  batch = static_cast<int64_t>(b);
  const bool fx = math::make_axis<acc_t>(box[1], box[3], scale, g.PW, sampling_ratio, aligned, ax);
  const bool fy = math::make_axis<acc_t>(box[2], box[4], scale, g.PH, sampling_ratio, aligned, ay);
  return fx && fy && ax.grid > 0 && ay.grid > 0;
}

// Calls f(offset_within_image_plane_in_pixels, weight) for the four corners of every sample of bin
// (ph, pw), with weights that already include the 1 / (grid_h * grid_w) of the average.
template <typename acc_t, typename F>
__device__ void for_each_corner(const math::Axis<acc_t>& ay, const math::Axis<acc_t>& ax, int64_t ph, int64_t pw,
                                int H, int W, F&& f) {
  const acc_t inv_count = acc_t(1) / static_cast<acc_t>(ay.grid * ax.grid);
  int64_t y_first, y_last, x_first, x_last;
  math::sample_range(ay, ph, H, y_first, y_last);
  math::sample_range(ax, pw, W, x_first, x_last);
  for (int64_t iy = y_first; iy <= y_last; ++iy) {
    Tap<acc_t> ty;
    if (!math::make_tap(math::sample_coord(ay, ph, iy), H, ty)) {
      continue;
    }
    const acc_t wy_lo = ty.w_lo * inv_count, wy_hi = ty.w_hi * inv_count;
    for (int64_t ix = x_first; ix <= x_last; ++ix) {
      Tap<acc_t> tx;
      if (!math::make_tap(math::sample_coord(ax, pw, ix), W, tx)) {
        continue;
      }
      f(static_cast<int64_t>(ty.lo) * W + tx.lo, wy_lo * tx.w_lo);
      f(static_cast<int64_t>(ty.lo) * W + tx.hi, wy_lo * tx.w_hi);
      f(static_cast<int64_t>(ty.hi) * W + tx.lo, wy_hi * tx.w_lo);
      f(static_cast<int64_t>(ty.hi) * W + tx.hi, wy_hi * tx.w_hi);
    }
  }
}

// Output element `index` in memory order: (k, c, ph, pw) for NCHW, (k, ph, pw, c) for NHWC.
__device__ void unravel(int64_t index, const Geometry& g, bool nhwc, int64_t& k, int64_t& c, int64_t& ph,
                        int64_t& pw) {
  if (nhwc) {
    c = index % g.C;
    pw = (index / g.C) % g.PW;
    ph = (index / (g.C * g.PW)) % g.PH;
    k = index / (g.C * g.PW * g.PH);
  } else {
    pw = index % g.PW;
    ph = (index / g.PW) % g.PH;
    c = (index / (g.PW * g.PH)) % g.C;
    k = index / (g.PW * g.PH * g.C);
  }
}

template <typename scalar_t, bool nhwc>
__global__ void roi_align_forward_cuda_kernel(int64_t total, const scalar_t* __restrict__ input,
                                              const scalar_t* __restrict__ rois, Geometry g, double spatial_scale,
                                              int64_t sampling_ratio, bool aligned, scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    int64_t k, c, ph, pw, batch;
    unravel(index, g, nhwc, k, c, ph, pw);
    math::Axis<acc_t> ay, ax;
    acc_t acc = 0;
    if (roi_axes<scalar_t, acc_t>(rois, k, g, static_cast<acc_t>(spatial_scale), sampling_ratio, aligned, batch, ay,
                                  ax)) {
      // NCHW: pixels of one plane are 1 apart; NHWC: C apart, starting at channel c.
      const scalar_t* base = nhwc ? input + batch * g.H * g.W * g.C + c : input + (batch * g.C + c) * g.H * g.W;
      const int64_t stride = nhwc ? g.C : 1;
      for_each_corner(ay, ax, ph, pw, static_cast<int>(g.H), static_cast<int>(g.W), [&](int64_t pixel, acc_t w) {
        acc += w * static_cast<acc_t>(base[pixel * stride]);
      });
    }
    output[index] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, bool nhwc>
__global__ void roi_align_backward_cuda_kernel(int64_t total, const scalar_t* __restrict__ grad,
                                               const scalar_t* __restrict__ rois, Geometry g, double spatial_scale,
                                               int64_t sampling_ratio, bool aligned, scalar_t* grad_input) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    int64_t k, c, ph, pw, batch;
    unravel(index, g, nhwc, k, c, ph, pw);
    math::Axis<scalar_t> ay, ax;
    if (!roi_axes<scalar_t, scalar_t>(rois, k, g, static_cast<scalar_t>(spatial_scale), sampling_ratio, aligned, batch,
                                      ay, ax)) {
      continue;
    }
    const scalar_t gv = grad[index];
    scalar_t* base = nhwc ? grad_input + batch * g.H * g.W * g.C + c : grad_input + (batch * g.C + c) * g.H * g.W;
    const int64_t stride = nhwc ? g.C : 1;
    for_each_corner(ay, ax, ph, pw, static_cast<int>(g.H), static_cast<int>(g.W), [&](int64_t pixel, scalar_t w) {
      gpuAtomicAdd(base + pixel * stride, gv * w);
    });
  }
}

int64_t num_blocks(int64_t total) {
  const int64_t needed = (total + kThreads - 1) / kThreads;
  const int64_t resident = int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 16;
  return std::max<int64_t>(1, std::min(needed, resident));
}

void check_map_size(int64_t H, int64_t W) {
  TORCH_CHECK(H < INT_MAX && W < INT_MAX, "roi_align: input height and width must be below 2^31, got ", H, " x ",
              W);
}

at::Tensor roi_align_forward_kernel(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                    bool aligned) {
  roi_align_detail::check_forward_args(input, rois, pooled_height, pooled_width);
  TORCH_CHECK(input.is_cuda(), "roi_align: input must be a CUDA tensor here, got ", input.device());
  const Geometry g{input.size(0), input.size(1), input.size(2), input.size(3), pooled_height, pooled_width};
  check_map_size(g.H, g.W);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const bool nhwc = roi_align_detail::use_channels_last(input);
  const auto format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor in = input.contiguous(format);
  const at::Tensor r = rois.contiguous();
  at::Tensor output = at::empty({r.size(0), g.C, g.PH, g.PW}, input.options().memory_format(format));
  const int64_t total = output.numel();
  if (total == 0) {
    return output;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cuda", [&] {
    const auto launch = nhwc ? roi_align_forward_cuda_kernel<scalar_t, true> : roi_align_forward_cuda_kernel<scalar_t, false>;
    launch<<<num_blocks(total), kThreads, 0, stream>>>(total, in.const_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(),
                                                       g, spatial_scale, sampling_ratio, aligned,
                                                       output.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

at::Tensor roi_align_backward_kernel(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                     int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                     int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                     bool aligned) {
  roi_align_detail::check_backward_args(grad, rois, pooled_height, pooled_width, batch_size, channels, height,
                                        width);
  TORCH_CHECK(grad.is_cuda(), "_roi_align_backward: grad must be a CUDA tensor here, got ", grad.device());
  check_map_size(height, width);
  const c10::cuda::CUDAGuard device_guard(grad.device());
  if (grad.scalar_type() == at::kHalf || grad.scalar_type() == at::kBFloat16) {
    // Atomic adds in half would round every partial sum; accumulate in float and round once.
    return roi_align_backward_kernel(grad.to(at::kFloat), rois.to(at::kFloat), spatial_scale, pooled_height,
                                     pooled_width, batch_size, channels, height, width, sampling_ratio, aligned)
        .to(grad.scalar_type());
  }
  const Geometry g{batch_size, channels, height, width, pooled_height, pooled_width};
  const bool nhwc = roi_align_detail::use_channels_last(grad);
  const auto format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor gr = grad.contiguous(format);
  const at::Tensor r = rois.contiguous();
  at::Tensor grad_input = at::empty({g.N, g.C, g.H, g.W}, grad.options().memory_format(format)).zero_();
  const int64_t total = gr.numel();
  if (total == 0 || grad_input.numel() == 0) {
    return grad_input;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cuda", [&] {
    const auto launch = nhwc ? roi_align_backward_cuda_kernel<scalar_t, true> : roi_align_backward_cuda_kernel<scalar_t, false>;
    launch<<<num_blocks(total), kThreads, 0, stream>>>(total, gr.const_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(),
                                                       g, spatial_scale, sampling_ratio, aligned,
                                                       grad_input.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(segdet, CUDA, m) {
  m.impl("roi_align", TORCH_FN(roi_align_forward_kernel));
  m.impl("_roi_align_backward", TORCH_FN(roi_align_backward_kernel));
}

}  // namespace ops
}  // namespace segdet
