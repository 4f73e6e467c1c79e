#pragma once

// Arithmetic rounded after every single operation, on the CPU and the GPU alike.
//
// Several kernels reproduce torchvision/ATen results bit for bit, and those compute each step of
// a formula as its own tensor op, i.e. with one rounding per step. nvcc contracts `a * b + c` into
// one fused multiply-add by default, which changes borderline results (an IoU at the threshold, a
// mask value at 0.5); the _rn intrinsics forbid that. On the host (and in the emulated CUDA
// build) plain operators round each step because the build files pass -ffp-contract=off
// (setup.py, CMakeLists.txt); nvcc also gets -fmad=false there, but these helpers do not rely on it.

#include <type_traits>

#include "macros.h"

namespace segdet::rounding {

template <typename T>
SEGDET_HOST_DEVICE T add_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) {
    return __fadd_rn(a, b);
  } else {
    return __dadd_rn(a, b);
  }
#else
  return a + b;
#endif
}

template <typename T>
SEGDET_HOST_DEVICE T sub_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) {
    return __fsub_rn(a, b);
  } else {
    return __dsub_rn(a, b);
  }
#else
  return a - b;
#endif
}

template <typename T>
SEGDET_HOST_DEVICE T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) {
    return __fmul_rn(a, b);
  } else {
    return __dmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

template <typename T>
SEGDET_HOST_DEVICE T div_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) {
    return __fdiv_rn(a, b);
  } else {
    return __ddiv_rn(a, b);
  }
#else
  return a / b;
#endif
}

}  // namespace segdet::rounding
