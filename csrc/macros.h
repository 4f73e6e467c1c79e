#pragma once

// Per-element math shared by the CPU and CUDA kernels is written once, in *_math.h headers,
// and marked SEGDET_HOST_DEVICE: callable from device code under nvcc, a plain inline
// function otherwise, so the CPU tests exercise the arithmetic the GPU runs.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define SEGDET_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SEGDET_HOST_DEVICE inline
#endif
