#pragma once

// The one include every device-code header (csrc/ops/cuda/*_kernels.cuh) starts with. It lets the
// same kernel source compile as CUDA under nvcc and as plain C++ under g++ -DSEGDET_EMULATION,
// where csrc/emu/cuda_emu.h provides threadIdx, __syncthreads(), atomics etc. on CPU fibers, so the
// kernels themselves can be executed (and sanitised) on machines without a GPU.
//
// SEGDET_SHARED(type, name, extents)   static shared memory, e.g. SEGDET_SHARED(T, tile, [64][5]);
//   in emulation a function-local static is per-block storage because blocks run one at a time;
//   shared_region() poisons it before each block and charges it to the block's 48 KiB budget.
// SEGDET_LAUNCH(kernel, grid, block, stream, args...)   the kernel launch; `kernel` must not contain an
//   unparenthesised comma (take `const auto kernel = &k<T, true>;` first).
#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define SEGDET_SHARED(type, name, extents) __shared__ type name extents
#define SEGDET_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#else
#include "emu/cuda_emu.h"
#define SEGDET_SHARED(type, name, extents) \
  static type name extents;                \
  ::segdet::emu::shared_region(&name, sizeof(name))
#define SEGDET_LAUNCH(kernel, grid, block, stream, ...) ::segdet::emu::launch((kernel), (grid), (block), __VA_ARGS__)
#endif

#define SEGDET_DEVICE __device__ __forceinline__

namespace segdet::cuda {

// Accumulation type of a storage type: T itself; the .cu glue specialises it for c10::Half and
// c10::BFloat16 (to float) before instantiating a kernel, so these headers need no c10.
template <typename T>
struct AccType {
  using type = T;
};
template <typename T>
using acc_type = typename AccType<T>::type;

// atomicAdd for the types the kernels scatter in (float, double): the glue widens half types first.
template <typename T>
SEGDET_DEVICE void atomic_add(T* address, T value) {
  atomicAdd(address, value);
}

}  // namespace segdet::cuda
