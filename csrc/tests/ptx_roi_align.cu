// Instantiates the float32 roi_align kernels on their own (no ATen), so a test can compile them to
// PTX in seconds and check that no multiply-add was contracted into an fma.rn.f32: the explicitly
// rounded operations of roi_align_math.h must hold without -fmad=false. Not part of any build.
#include "ops/cuda/roi_align_kernels.cuh"

namespace ra = segdet::cuda::roi_align;

void* segdet_ptx_roi_align_kernels[] = {
    reinterpret_cast<void*>(&ra::roi_align_forward_kernel<float, float, false>),
    reinterpret_cast<void*>(&ra::roi_align_forward_kernel<float, float, true>),
    reinterpret_cast<void*>(&ra::roi_align_backward_kernel<float, false>),
    reinterpret_cast<void*>(&ra::roi_align_backward_kernel<float, true>),
    reinterpret_cast<void*>(&ra::roi_align_order_key_kernel<float>),
    reinterpret_cast<void*>(&ra::roi_align_backward_gather_kernel<float, false>),
    reinterpret_cast<void*>(&ra::roi_align_backward_gather_kernel<float, true>),
};
