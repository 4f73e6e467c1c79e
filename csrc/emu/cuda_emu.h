#pragma once

// A CPU emulator of the CUDA execution model, for running the project's real __global__ kernels
// as host C++ (g++, optionally with -fsanitize=address,undefined) in CI machines without a GPU.
//
// What it models: a grid of blocks run one block at a time (in forward, reverse or seeded-random
// order); every thread of a block a fiber; __syncthreads as a real barrier that reports divergent
// and mismatched barriers; warp collectives per 32-lane warp with their masks; static shared
// memory per block, filled with 0xFF before each block; atomics; the launch limits.
// What it does not: the timing of a real GPU (threads between two barriers run one after another,
// so a race shows only when the schedule order exposes it), memory consistency between blocks
// (blocks never run concurrently), dynamic shared memory, streams, dynamic parallelism.
//
// Include it only where __CUDACC__ is not defined (csrc/ops/cuda/device.h decides).

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "emu/runtime.h"

#if defined(__CUDACC__)
#error "emu/cuda_emu.h is the host emulation of CUDA; nvcc builds use the real runtime"
#endif

// ---- Declaration specifiers -----------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// __shared__ is deliberately left undefined: kernels declare shared arrays with SEGDET_SHARED,
// which the emulator needs to poison them per block.

// ---- Built-in variables ---------------------------------------------------------------------
inline constexpr int warpSize = segdet::emu::kWarpSize;
inline const uint3& threadIdx = segdet::emu::detail::g_thread_idx;
inline const uint3& blockIdx = segdet::emu::detail::g_block_idx;
inline const dim3& blockDim = segdet::emu::detail::g_block_dim;
inline const dim3& gridDim = segdet::emu::detail::g_grid_dim;

// ---- Block synchronisation ------------------------------------------------------------------
// Macros so that each barrier knows its call site: two threads waiting at different sites is a
// mismatched barrier.
#define __syncthreads() ((void)::segdet::emu::detail::barrier(__FILE__, __LINE__, 0))
#define __syncthreads_count(pred) (::segdet::emu::detail::barrier(__FILE__, __LINE__, (pred) != 0))
#define __syncthreads_and(pred) \
  (::segdet::emu::detail::barrier(__FILE__, __LINE__, (pred) != 0) == static_cast<int>(blockDim.x * blockDim.y * blockDim.z))
#define __syncthreads_or(pred) (::segdet::emu::detail::barrier(__FILE__, __LINE__, (pred) != 0) > 0)

inline void __threadfence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
inline void __threadfence_block() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

[[noreturn]] inline void __trap() {
  segdet::emu::detail::fail(segdet::emu::detail::where(segdet::emu::detail::require_fiber("__trap")) +
                            ": __trap() called");
}

// ---- Warp collectives -----------------------------------------------------------------------
namespace segdet::emu::detail {
template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
}  // namespace segdet::emu::detail

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  segdet::emu::detail::warp_collective(segdet::emu::detail::WarpKind::kSync, mask, 0, 0, warpSize);
}

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  using namespace segdet::emu::detail;
  return from_bits<T>(warp_collective(WarpKind::kShfl, mask, to_bits(var), src_lane, width));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  using namespace segdet::emu::detail;
  return from_bits<T>(warp_collective(WarpKind::kShflUp, mask, to_bits(var), static_cast<int>(delta), width));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  using namespace segdet::emu::detail;
  return from_bits<T>(warp_collective(WarpKind::kShflDown, mask, to_bits(var), static_cast<int>(delta), width));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  using namespace segdet::emu::detail;
  return from_bits<T>(warp_collective(WarpKind::kShflXor, mask, to_bits(var), lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  using namespace segdet::emu::detail;
  return static_cast<unsigned>(warp_collective(WarpKind::kBallot, mask, pred != 0, 0, warpSize));
}
inline int __any_sync(unsigned mask, int pred) {
  using namespace segdet::emu::detail;
  return static_cast<int>(warp_collective(WarpKind::kAny, mask, pred != 0, 0, warpSize));
}
inline int __all_sync(unsigned mask, int pred) {
  using namespace segdet::emu::detail;
  return static_cast<int>(warp_collective(WarpKind::kAll, mask, pred != 0, 0, warpSize));
}
// Without lockstep execution "active" can only mean the lanes of the warp that have not exited.
inline unsigned __activemask() {
  using namespace segdet::emu::detail;
  const Fiber& f = require_fiber("__activemask");
  const Warp& w = rt().warps[f.linear / segdet::emu::kWarpSize];
  return w.exists & ~w.exited;
}

// ---- Integer intrinsics ---------------------------------------------------------------------
inline int __ffs(int x) {
  return __builtin_ffs(x);
}
inline int __ffsll(long long x) {
  return __builtin_ffsll(x);
}
inline int __popc(unsigned x) {
  return std::popcount(x);
}
inline int __popcll(unsigned long long x) {
  return std::popcount(x);
}
inline int __clz(int x) {
  return std::countl_zero(static_cast<unsigned>(x));
}
inline int __clzll(long long x) {
  return std::countl_zero(static_cast<unsigned long long>(x));
}
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) {
    r |= ((x >> i) & 1u) << (31 - i);
  }
  return r;
}

// ---- Floating-point intrinsics: IEEE round-to-nearest, one rounding per operation -----------
// (the host build compiles with -ffp-contract=off, so plain operators round each step too).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }

// ---- min / max as CUDA declares them for device code (global namespace) ---------------------
#define SEGDET_EMU_MINMAX(T)                  \
  inline T min(T a, T b) { return b < a ? b : a; } \
  inline T max(T a, T b) { return a < b ? b : a; }
SEGDET_EMU_MINMAX(int)
SEGDET_EMU_MINMAX(unsigned int)
SEGDET_EMU_MINMAX(long)
SEGDET_EMU_MINMAX(unsigned long)
SEGDET_EMU_MINMAX(long long)
SEGDET_EMU_MINMAX(unsigned long long)
#undef SEGDET_EMU_MINMAX
// CUDA's float/double min and max are fminf/fmax: a NaN operand yields the other operand.
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double min(float a, double b) { return std::fmin(static_cast<double>(a), b); }
inline double max(float a, double b) { return std::fmax(static_cast<double>(a), b); }
inline double min(double a, float b) { return std::fmin(a, static_cast<double>(b)); }
inline double max(double a, float b) { return std::fmax(a, static_cast<double>(b)); }

// ---- Memory ---------------------------------------------------------------------------------
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

// Atomics. Blocks and threads of the emulator never run at the same time, so these are atomic
// anyway; std::atomic_ref keeps them correct should a kernel ever share memory with host threads.
namespace segdet::emu::detail {
template <typename T, typename F>
inline T atomic_update(T* address, F&& f) {
  std::atomic_ref<T> ref(*address);
  T old = ref.load();
  while (!ref.compare_exchange_weak(old, f(old))) {
  }
  return old;
}
}  // namespace segdet::emu::detail

inline float atomicAdd(float* a, float v) { return std::atomic_ref<float>(*a).fetch_add(v); }
inline double atomicAdd(double* a, double v) { return std::atomic_ref<double>(*a).fetch_add(v); }
inline int atomicAdd(int* a, int v) { return std::atomic_ref<int>(*a).fetch_add(v); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*a).fetch_add(v);
}
inline int atomicSub(int* a, int v) { return std::atomic_ref<int>(*a).fetch_sub(v); }
inline unsigned atomicSub(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_sub(v); }

#define SEGDET_EMU_INT_ATOMICS(T)                                                                      \
  inline T atomicMax(T* a, T v) {                                                                      \
    return segdet::emu::detail::atomic_update(a, [v](T o) { return o < v ? v : o; });                  \
  }                                                                                                    \
  inline T atomicMin(T* a, T v) {                                                                      \
    return segdet::emu::detail::atomic_update(a, [v](T o) { return v < o ? v : o; });                  \
  }                                                                                                    \
  inline T atomicExch(T* a, T v) { return std::atomic_ref<T>(*a).exchange(v); }                        \
  inline T atomicCAS(T* a, T compare, T v) {                                                           \
    std::atomic_ref<T>(*a).compare_exchange_strong(compare, v);                                        \
    return compare;                                                                                    \
  }
SEGDET_EMU_INT_ATOMICS(int)
SEGDET_EMU_INT_ATOMICS(unsigned)
SEGDET_EMU_INT_ATOMICS(unsigned long long)
SEGDET_EMU_INT_ATOMICS(long long)
#undef SEGDET_EMU_INT_ATOMICS
#define SEGDET_EMU_BIT_ATOMICS(T)                                                            \
  inline T atomicOr(T* a, T v) { return std::atomic_ref<T>(*a).fetch_or(v); }                \
  inline T atomicAnd(T* a, T v) { return std::atomic_ref<T>(*a).fetch_and(v); }             \
  inline T atomicXor(T* a, T v) { return std::atomic_ref<T>(*a).fetch_xor(v); }
SEGDET_EMU_BIT_ATOMICS(int)
SEGDET_EMU_BIT_ATOMICS(unsigned)
SEGDET_EMU_BIT_ATOMICS(unsigned long long)
#undef SEGDET_EMU_BIT_ATOMICS
inline unsigned short atomicCAS(unsigned short* a, unsigned short compare, unsigned short v) {
  std::atomic_ref<unsigned short>(*a).compare_exchange_strong(compare, v);
  return compare;
}
inline float atomicExch(float* a, float v) { return std::atomic_ref<float>(*a).exchange(v); }
