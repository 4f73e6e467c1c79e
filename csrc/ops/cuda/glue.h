#pragma once

// The only parts of the CUDA glue (csrc/ops/cuda/*_kernel.cu) that differ between the real CUDA
// build (nvcc) and the emulated build (g++ -x c++ -DSEGDET_EMULATION, see csrc/emu/), so the same
// glue (checks, layouts, dispatch, launch arithmetic) runs in CI on CPU tensors.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>

#include "ops/cuda/device.h"

#if defined(SEGDET_EMULATION)

namespace segdet::cuda {

using Stream = int;  // the emulator runs every launch synchronously, in call order

inline Stream current_stream() {
  return 0;
}

class DeviceGuard {
 public:
  explicit DeviceGuard(const at::Tensor&) {}
};

// A small fixed count, so grid-stride loops really stride in emulated tests.
inline int num_sms() {
  return 4;
}

// Emulated device memory, small enough that tests of the too-large-allocation errors stay cheap.
inline int64_t device_memory_bytes() {
  return int64_t(16) << 30;
}

// The emulator throws segdet::emu::EmulationError from launch() itself.
inline void check_launch() {}

inline bool is_kernel_device(const at::Tensor& t) {
  return t.is_cpu();
}

}  // namespace segdet::cuda

#define SEGDET_CONCAT_INNER(a, b) a##b
#define SEGDET_CONCAT(a, b) SEGDET_CONCAT_INNER(a, b)
// The emulation harness (csrc/emu/register_emu.cpp) registers the cuda_glue functions itself, as
// ops of the segdet_emu library; this turns the glue's registration block into an unused function.
#define SEGDET_CUDA_IMPL(m) \
  [[maybe_unused]] static void SEGDET_CONCAT(segdet_cuda_impl_unused_, __LINE__)(torch::Library & m)

#else

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace segdet::cuda {

using Stream = cudaStream_t;

inline Stream current_stream() {
  return at::cuda::getCurrentCUDAStream();
}

class DeviceGuard {
 public:
  explicit DeviceGuard(const at::Tensor& t) : guard_(t.device()) {}

 private:
  c10::cuda::CUDAGuard guard_;
};

inline int num_sms() {
  return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}

inline int64_t device_memory_bytes() {
  return static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->totalGlobalMem);
}

inline void check_launch() {
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

inline bool is_kernel_device(const at::Tensor& t) {
  return t.is_cuda();
}

}  // namespace segdet::cuda

#define SEGDET_CUDA_IMPL(m) TORCH_LIBRARY_IMPL(segdet, CUDA, m)

#endif

// Half types accumulate in float, as at::opmath_type says.
namespace segdet::cuda {
template <>
struct AccType<c10::Half> {
  using type = float;
};
template <>
struct AccType<c10::BFloat16> {
  using type = float;
};
}  // namespace segdet::cuda
