// Self-test of the CUDA emulator (csrc/emu): small kernels written for it, run under every
// schedule order, and negative tests for each kind of bug it must detect. Run by ctest
// (test "cuda_emu"); the sanitizer cases run this program again as a child process with
// --child=<case> and expect it to die with the sanitizer's report.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "emu/cuda_emu.h"

#ifndef SEGDET_SHARED  // what csrc/ops/cuda/device.h defines under emulation
#define SEGDET_SHARED(type, name, extents) \
  static type name extents;                \
  ::segdet::emu::shared_region(&name, sizeof(name))
#endif

using segdet::emu::EmulationError;
using segdet::emu::Schedule;

namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK(cond)                                                          \
  do {                                                                       \
    ++g_checks;                                                              \
    if (!(cond)) {                                                           \
      ++g_failures;                                                          \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                        \
  } while (0)

// Runs f and returns the EmulationError message it threw ("" when it threw none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const EmulationError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

const Schedule kOrders[] = {{Schedule::kForward, 0}, {Schedule::kReverse, 0}, {Schedule::kRandom, 1},
                            {Schedule::kRandom, 12345}};

// ---- Kernels --------------------------------------------------------------------------------

constexpr int kReduceThreads = 256;

// Block sum through shared memory, a tree with a barrier per level; one partial per block.
__global__ void block_reduce_kernel(const int* in, int64_t n, int* partial) {
  SEGDET_SHARED(int, buf, [kReduceThreads]);
  int acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    acc += in[i];
  }
  buf[threadIdx.x] = acc;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) {
      buf[threadIdx.x] += buf[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = buf[0];
  }
}

// The same reduction with the barrier after the shared store removed (a planted bug).
__global__ void block_reduce_no_barrier_kernel(const int* in, int64_t n, int* partial) {
  SEGDET_SHARED(int, buf, [kReduceThreads]);
  int acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    acc += in[i];
  }
  buf[threadIdx.x] = acc;
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) {
      buf[threadIdx.x] += buf[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = buf[0];
  }
}

// Each thread reads the value its right neighbour stored; with_barrier = false plants the bug.
__global__ void neighbour_kernel(bool with_barrier, unsigned* out) {
  SEGDET_SHARED(unsigned, buf, [64]);
  buf[threadIdx.x] = threadIdx.x + 1;
  if (with_barrier) {
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = buf[(threadIdx.x + 1) % blockDim.x];
}

// Warp sum by __shfl_down_sync, broadcast by __shfl_sync, butterfly max by __shfl_xor_sync,
// inclusive scan by __shfl_up_sync.
__global__ void warp_kernel(const int* in, int* sum, int* bcast, int* xmax, int* scan) {
  const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
  int v = in[t];
  int s = v;
  for (int off = 16; off > 0; off /= 2) {
    s += __shfl_down_sync(0xffffffffu, s, off);
  }
  sum[t] = __shfl_sync(0xffffffffu, s, 0);
  bcast[t] = __shfl_sync(0xffffffffu, v, 7);
  int m = v;
  for (int off = 1; off < 32; off *= 2) {
    m = max(m, __shfl_xor_sync(0xffffffffu, m, off));
  }
  xmax[t] = m;
  int c = v;
  for (unsigned off = 1; off < 32; off *= 2) {
    const int o = __shfl_up_sync(0xffffffffu, c, off);
    if ((threadIdx.x % 32) >= off) {
      c += o;
    }
  }
  scan[t] = c;
}

__global__ void vote_kernel(const int* pred, unsigned* ballot, int* any, int* all) {
  const unsigned t = threadIdx.x;
  const unsigned mask = __activemask();
  ballot[t] = __ballot_sync(mask, pred[t]);
  any[t] = __any_sync(mask, pred[t]);
  all[t] = __all_sync(mask, pred[t]);
}

// Lanes 0-15 and 16-31 run independent collectives with disjoint masks.
__global__ void half_warp_kernel(int* out, int* down, int* up, int* xr) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned mask = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  int v = static_cast<int>(lane);
  down[threadIdx.x] = __shfl_down_sync(mask, v, 9, 16);
  up[threadIdx.x] = __shfl_up_sync(mask, v, 5, 16);
  xr[threadIdx.x] = __shfl_xor_sync(mask, v, 3, 16);
  for (int off = 8; off > 0; off /= 2) {
    v += __shfl_down_sync(mask, v, off, 16);
  }
  out[threadIdx.x] = __shfl_sync(mask, v, 0, 16);
}

// Lanes 0-15 read lane 20, which takes no part in their shuffle: undefined in CUDA, poison here.
__global__ void absent_lane_kernel(int* out) {
  if (threadIdx.x < 16) {
    out[threadIdx.x] = __shfl_sync(0x0000ffffu, 5, 20);
  }
}

__global__ void atomics_kernel(float* fsum, int* isum, unsigned long long* bits, int* imax, int* imin, int* cas_counter,
                               double* dsum) {
  const int t = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(fsum, 0.5f);
  atomicAdd(dsum, 0.25);
  atomicAdd(isum, t);
  atomicOr(bits, 1ULL << (t % 64));
  atomicMax(imax, t);
  atomicMin(imin, -t);
  int old = *cas_counter, seen;
  do {
    seen = old;
    old = atomicCAS(cas_counter, seen, seen + 1);
  } while (old != seen);
}

// Records the global coordinates of every thread of a 3-D grid of 3-D blocks.
__global__ void index_kernel(int* out) {
  const unsigned bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned id = bx * (blockDim.x * blockDim.y * blockDim.z) + tx;
  out[id] = static_cast<int>(id);
}

// Records the order in which blocks start and threads leave a barrier.
__global__ void order_kernel(int* counter, int* block_seq, int* thread_seq) {
  if (threadIdx.x == 0) {
    block_seq[blockIdx.x] = atomicAdd(counter, 1);
  }
  __syncthreads();
  thread_seq[blockIdx.x * blockDim.x + threadIdx.x] = atomicAdd(counter + 1, 1);
}

__global__ void count_kernel(int* out) {
  const int c = __syncthreads_count(threadIdx.x % 3 == 0);
  const int a = __syncthreads_and(threadIdx.x < 1000);
  const int o = __syncthreads_or(threadIdx.x == 5);
  out[threadIdx.x] = c * 100 + a * 10 + o;
}

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void mismatched_barrier_kernel(int* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void early_exit_kernel(int n, int* out) {
  if (static_cast<int>(threadIdx.x) >= n) {
    return;
  }
  __syncthreads();
  out[threadIdx.x] = 1;
}

// Lane 0 waits at a barrier while lanes 1-31 wait in a shuffle that needs lane 0.
__global__ void warp_deadlock_kernel(int* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
  }
}

__global__ void bad_mask_kernel(int* out) {
  out[threadIdx.x] = __shfl_sync(0x1u, 1, 0);
}

__global__ void uninit_shared_kernel(unsigned* out) {
  SEGDET_SHARED(unsigned, buf, [32]);
  out[blockIdx.x * blockDim.x + threadIdx.x] = buf[threadIdx.x];
}

// Block 0 writes shared memory, the others only read it: they must see poison, not block 0's data.
__global__ void stale_shared_kernel(unsigned* out) {
  SEGDET_SHARED(unsigned, buf, [32]);
  if (blockIdx.x == 0) {
    buf[threadIdx.x] = 7;
  }
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = buf[threadIdx.x];
}

__global__ void big_shared_kernel(float* out) {
  SEGDET_SHARED(float, buf, [49 * 1024 / 4]);
  buf[threadIdx.x] = 1.0f;
  out[threadIdx.x] = buf[threadIdx.x];
}

__global__ void max_shared_kernel(float* out) {
  SEGDET_SHARED(float, a, [8 * 1024]);
  SEGDET_SHARED(float, b, [4 * 1024]);
  a[threadIdx.x] = 1.0f;
  b[threadIdx.x] = 2.0f;
  __syncthreads();
  out[threadIdx.x] = a[threadIdx.x] + b[threadIdx.x];
}

__global__ void noop_kernel(int* out) {
  if (out != nullptr) {
    out[0] = 1;
  }
}

__global__ void throwing_kernel(int bad_thread) {
  if (static_cast<int>(threadIdx.x) == bad_thread) {
    throw std::out_of_range("thrown by the kernel");
  }
}

__global__ void trap_kernel() {
  if (threadIdx.x == 3) {
    __trap();
  }
}

__global__ void oob_read_kernel(const float* in, int n, float* out) {
  const int i = static_cast<int>(threadIdx.x);
  out[i] = in[i + n];  // reads past the end of `in` for every thread
}

__global__ void overflow_kernel(int base, int* out) {
  out[threadIdx.x] = base + static_cast<int>(threadIdx.x);  // signed overflow for base = INT_MAX
}

// Deep recursion on a fiber stack (through a __device__ function) reaches the guard page.
__device__ int deep(int d, volatile char* sink) {
  volatile char pad[1024];
  pad[0] = static_cast<char>(d);
  sink[0] = pad[0];
  return d == 0 ? 0 : 1 + deep(d - 1, sink);
}

// ---- Tests ----------------------------------------------------------------------------------

void test_block_reduce() {
  const int64_t n = 100003;
  std::vector<int> in(n);
  int64_t expected = 0;
  for (int64_t i = 0; i < n; ++i) {
    in[i] = static_cast<int>((i * 7919) % 1000) - 500;
    expected += in[i];
  }
  for (const Schedule& s : kOrders) {
    segdet::emu::set_schedule(s);
    const int blocks = 5;
    std::vector<int> partial(blocks, 0);
    segdet::emu::launch(&block_reduce_kernel, blocks, kReduceThreads, in.data(), n, partial.data());
    int64_t total = 0;
    for (int p : partial) {
      total += p;
    }
    CHECK(total == expected);
  }
  // The planted bug: without the barrier a thread adds a partner's slot before it is stored.
  int wrong_orders = 0;
  for (const Schedule& s : kOrders) {
    segdet::emu::set_schedule(s);
    std::vector<int> partial(5, 0);
    segdet::emu::launch(&block_reduce_no_barrier_kernel, 5, kReduceThreads, in.data(), n, partial.data());
    int64_t total = 0;
    for (int p : partial) {
      total += p;
    }
    wrong_orders += total != expected;
  }
  CHECK(wrong_orders >= 1);
}

void test_neighbour_barrier() {
  const unsigned threads = 64, blocks = 3;
  int wrong_orders = 0;
  for (const Schedule& s : kOrders) {
    segdet::emu::set_schedule(s);
    for (bool with_barrier : {true, false}) {
      std::vector<unsigned> out(threads * blocks, 0);
      segdet::emu::launch(&neighbour_kernel, blocks, threads, with_barrier, out.data());
      bool right = true, poison_seen = false;
      for (unsigned i = 0; i < out.size(); ++i) {
        right = right && out[i] == (i % threads + 1) % threads + 1;
        poison_seen = poison_seen || out[i] == 0xffffffffu;
      }
      if (with_barrier) {
        CHECK(right);
      } else {
        wrong_orders += !right;
        CHECK(right || poison_seen);  // what goes wrong is the poison being read
      }
    }
  }
  CHECK(wrong_orders >= 2);  // forward and the random orders at least
}

void test_warp() {
  const int threads = 64, blocks = 2, n = threads * blocks;
  std::vector<int> in(n), sum(n), bcast(n), xmax(n), scan(n);
  for (int i = 0; i < n; ++i) {
    in[i] = (i * 37) % 101;
  }
  for (const Schedule& s : kOrders) {
    segdet::emu::set_schedule(s);
    segdet::emu::launch(&warp_kernel, blocks, threads, in.data(), sum.data(), bcast.data(), xmax.data(), scan.data());
    for (int w = 0; w < n / 32; ++w) {
      int wsum = 0, wmax = 0, run = 0;
      for (int l = 0; l < 32; ++l) {
        wsum += in[w * 32 + l];
        wmax = std::max(wmax, in[w * 32 + l]);
      }
      for (int l = 0; l < 32; ++l) {
        const int t = w * 32 + l;
        run += in[t];
        CHECK(sum[t] == wsum);
        CHECK(bcast[t] == in[w * 32 + 7]);
        CHECK(xmax[t] == wmax);
        CHECK(scan[t] == run);
      }
    }
  }
}

void test_vote_partial_warp() {
  // 40 threads: one full warp and a warp of 8 lanes.
  const int threads = 40;
  std::vector<int> pred(threads), any(threads), all(threads);
  std::vector<unsigned> ballot(threads);
  for (int i = 0; i < threads; ++i) {
    pred[i] = (i % 5 == 0) || i >= 32;
  }
  for (const Schedule& s : kOrders) {
    segdet::emu::set_schedule(s);
    segdet::emu::launch(&vote_kernel, 1, threads, pred.data(), ballot.data(), any.data(), all.data());
    unsigned expected0 = 0;
    for (int l = 0; l < 32; ++l) {
      expected0 |= unsigned(pred[l] != 0) << l;
    }
    for (int t = 0; t < 32; ++t) {
      CHECK(ballot[t] == expected0);
      CHECK(any[t] == 1);
      CHECK(all[t] == 0);
    }
    for (int t = 32; t < threads; ++t) {
      CHECK(ballot[t] == 0xffu);
      CHECK(all[t] == 1);
    }
  }
  std::vector<int> out(64), down(64), up(64), xr(64);
  segdet::emu::launch(&half_warp_kernel, 1, 64, out.data(), down.data(), up.data(), xr.data());
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32, pos = lane % 16;
    CHECK(out[t] == (lane < 16 ? 120 : 376));  // 0+...+15 and 16+...+31
    CHECK(down[t] == (pos + 9 < 16 ? lane + 9 : lane));  // no lane reads across its 16-lane segment
    CHECK(up[t] == (pos >= 5 ? lane - 5 : lane));
    CHECK(xr[t] == (lane ^ 3));
  }
  std::vector<int> absent(32, 0);
  segdet::emu::launch(&absent_lane_kernel, 1, 32, absent.data());
  CHECK(absent[0] == -1 && absent[15] == -1 && absent[16] == 0);
}

void test_atomics() {
  for (const Schedule& s : kOrders) {
    segdet::emu::set_schedule(s);
    float fsum = 0;
    double dsum = 0;
    int isum = 0, imax = -1, imin = 1, counter = 0;
    unsigned long long bits = 0;
    const int blocks = 3, threads = 96, n = blocks * threads;
    segdet::emu::launch(&atomics_kernel, blocks, threads, &fsum, &isum, &bits, &imax, &imin, &counter, &dsum);
    CHECK(fsum == 0.5f * n);
    CHECK(dsum == 0.25 * n);
    CHECK(isum == n * (n - 1) / 2);
    CHECK(bits == ~0ULL);
    CHECK(imax == n - 1);
    CHECK(imin == -(n - 1));
    CHECK(counter == n);
  }
}

void test_indices() {
  const dim3 grid(2, 3, 2), block(4, 2, 3);
  const int n = 2 * 3 * 2 * 4 * 2 * 3;
  for (const Schedule& s : kOrders) {
    segdet::emu::set_schedule(s);
    std::vector<int> out(n, -1);
    segdet::emu::launch(&index_kernel, grid, block, out.data());
    bool all_right = true;
    for (int i = 0; i < n; ++i) {
      all_right = all_right && out[i] == i;
    }
    CHECK(all_right);
  }
}

void test_orders() {
  const int blocks = 6, threads = 40;
  auto run = [&](Schedule s, std::vector<int>& bseq, std::vector<int>& tseq) {
    segdet::emu::set_schedule(s);
    int counter[2] = {0, 0};
    bseq.assign(blocks, -1);
    tseq.assign(blocks * threads, -1);
    segdet::emu::launch(&order_kernel, blocks, threads, counter, bseq.data(), tseq.data());
  };
  std::vector<int> b, t, b2, t2;
  run({Schedule::kForward, 0}, b, t);
  for (int i = 0; i < blocks; ++i) {
    CHECK(b[i] == i);
  }
  CHECK(t[0] == 0 && t[threads - 1] == threads - 1);
  run({Schedule::kReverse, 0}, b, t);
  for (int i = 0; i < blocks; ++i) {
    CHECK(b[i] == blocks - 1 - i);
  }
  CHECK(t[(blocks - 1) * threads + threads - 1] == 0);  // the last thread of the first block resumes first
  run({Schedule::kRandom, 7}, b, t);
  run({Schedule::kRandom, 7}, b2, t2);
  CHECK(b == b2 && t == t2);  // reproducible from the seed
  bool shuffled = false;
  for (int i = 0; i < blocks * threads; ++i) {
    shuffled = shuffled || t[i] != i;
  }
  CHECK(shuffled);
  run({Schedule::kRandom, 8}, b2, t2);
  CHECK(t != t2);
}

void test_syncthreads_count() {
  std::vector<int> out(64);
  segdet::emu::set_schedule({Schedule::kForward, 0});
  segdet::emu::launch(&count_kernel, 1, 64, out.data());
  for (int t = 0; t < 64; ++t) {
    CHECK(out[t] == 22 * 100 + 10 + 1);
  }
}

void test_barrier_errors() {
  std::vector<int> out(64);
  for (const Schedule& s : kOrders) {
    segdet::emu::set_schedule(s);
    std::string e = error_of([&] { segdet::emu::launch(&divergent_barrier_kernel, 1, 32, out.data()); });
    CHECK(contains(e, "divergent __syncthreads"));
    CHECK(contains(e, "test_cuda_emu.cpp"));  // names the barrier's source line
    e = error_of([&] { segdet::emu::launch(&mismatched_barrier_kernel, 2, 32, out.data()); });
    CHECK(contains(e, "mismatched barriers"));
    e = error_of([&] { segdet::emu::launch(&early_exit_kernel, 1, 64, 40, out.data()); });
    CHECK(contains(e, "has exited"));
    CHECK(error_of([&] { segdet::emu::launch(&early_exit_kernel, 1, 64, 64, out.data()); }).empty());
    e = error_of([&] { segdet::emu::launch(&warp_deadlock_kernel, 1, 32, out.data()); });
    CHECK(contains(e, "deadlock"));
    e = error_of([&] { segdet::emu::launch(&bad_mask_kernel, 1, 32, out.data()); });
    CHECK(contains(e, "does not include the calling lane"));
  }
}

void test_shared_poison() {
  std::vector<unsigned> out(96, 0);
  segdet::emu::set_schedule({Schedule::kForward, 0});
  segdet::emu::launch(&uninit_shared_kernel, 3, 32, out.data());
  for (unsigned v : out) {
    CHECK(v == 0xffffffffu);
  }
  for (const Schedule& s : kOrders) {
    segdet::emu::set_schedule(s);
    segdet::emu::launch(&stale_shared_kernel, 3, 32, out.data());
    for (unsigned i = 0; i < out.size(); ++i) {
      CHECK(out[i] == (i < 32 ? 7u : 0xffffffffu));
    }
  }
}

void test_launch_limits() {
  std::vector<float> out(1024);
  int dummy = 0;
  std::string e = error_of([&] { segdet::emu::launch(&noop_kernel, 1, 1025, &dummy); });
  CHECK(contains(e, "1025 threads per block"));
  CHECK(contains(e, "test_cuda_emu.cpp"));  // names the launch site
  e = error_of([&] { segdet::emu::launch(&noop_kernel, 1, dim3(32, 32, 2), &dummy); });
  CHECK(contains(e, "2048 threads per block"));
  e = error_of([&] { segdet::emu::launch(&noop_kernel, 1, dim3(1, 1, 65), &dummy); });
  CHECK(contains(e, "block.z"));
  e = error_of([&] { segdet::emu::launch(&noop_kernel, dim3(1, 65536), 32, &dummy); });
  CHECK(contains(e, "grid.y/z"));
  e = error_of([&] { segdet::emu::launch(&noop_kernel, dim3(1, 1, 65536), 32, &dummy); });
  CHECK(contains(e, "grid.y/z"));
  e = error_of([&] { segdet::emu::launch(&noop_kernel, int64_t(1) << 31, 32, &dummy); });
  CHECK(contains(e, "grid.x = 2147483648"));
  e = error_of([&] { segdet::emu::launch(&noop_kernel, 0, 32, &dummy); });
  CHECK(contains(e, "zero"));
  e = error_of([&] { segdet::emu::launch(&big_shared_kernel, 1, 32, out.data()); });
  CHECK(contains(e, "50176 bytes of static shared memory"));
  // Exactly 48 KiB in two arrays is allowed; the limits themselves are fine.
  CHECK(error_of([&] { segdet::emu::launch(&max_shared_kernel, 2, 64, out.data()); }).empty());
  CHECK(out[5] == 3.0f);
  CHECK(error_of([&] { segdet::emu::launch(&noop_kernel, 1, 1024, &dummy); }).empty());
  CHECK(error_of([&] { segdet::emu::launch(&noop_kernel, dim3(3, 65535), 1, nullptr); }).empty());
}

void test_kernel_exceptions() {
  bool caught = false;
  try {
    segdet::emu::launch(&throwing_kernel, 2, 64, 17);
  } catch (const std::out_of_range& e) {
    caught = contains(e.what(), "thrown by the kernel");
  }
  CHECK(caught);
  CHECK(contains(error_of([&] { segdet::emu::launch(&trap_kernel, 1, 32); }), "__trap"));
}

// After every kind of failure the emulator must still run kernels correctly (abandoned fibers'
// stacks are reused): repeat the reduction with all 1024 threads of a block.
void test_recovery_full_block() {
  std::vector<int> in(5000, 1), partial(1, 0);
  for (const Schedule& s : kOrders) {
    segdet::emu::set_schedule(s);
    std::vector<int> out(1024);
    CHECK(!error_of([&] { segdet::emu::launch(&divergent_barrier_kernel, 1, 1024, out.data()); }).empty());
    // block_reduce_kernel's shared buffer has 256 slots: use a 256-thread block, then a
    // 1024-thread kernel with barriers.
    segdet::emu::launch(&block_reduce_kernel, 1, kReduceThreads, in.data(), int64_t(5000), partial.data());
    CHECK(partial[0] == 5000);
    std::vector<int> counts(1024);
    segdet::emu::launch(&count_kernel, 1, 1024, counts.data());
    CHECK(counts[0] == 342 * 100 + 0 + 1);  // not all of 1024 threads are < 1000
  }
  CHECK(segdet::emu::launch_counts().size() > 5);
}

// ---- Child processes for the sanitizer cases ------------------------------------------------

int run_child(const std::string& which) {
  if (which == "oob") {
    std::vector<float> in(32, 1.0f), out(32);
    segdet::emu::launch(&oob_read_kernel, 1, 32, in.data(), 32, out.data());
    return 0;  // only reached when nothing caught the read
  }
  if (which == "overflow") {
    std::vector<int> out(32);
    segdet::emu::launch(&overflow_kernel, 1, 32, 2147483647 - 5, out.data());
    return 0;
  }
  if (which == "stack_overflow") {
    char sink[1];
    segdet::emu::launch(&noop_kernel, 1, 1, nullptr);
    std::vector<int> dummy(1);
    // 4096 frames of >= 1 KiB exceed the 256 KiB fiber stack.
    struct K {
      static void kernel(char* s) { deep(4096, s); }
    };
    segdet::emu::launch(&K::kernel, 1, 2, sink);
    return 0;
  }
  return 3;
}

// Runs this program with --child=<which>; returns its exit status and puts its stderr in *err.
[[maybe_unused]] int spawn_child(const char* self, const std::string& which, std::string* err) {
  const std::string path = "/tmp/segdet_emu_child_" + std::to_string(getpid()) + "_" + which + ".txt";
  const std::string cmd = std::string("'") + self + "' --child=" + which + " 2>'" + path + "' >/dev/null";
  const int status = std::system(cmd.c_str());
  FILE* f = std::fopen(path.c_str(), "r");
  err->clear();
  if (f != nullptr) {
    char buf[4096];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) {
      err->append(buf, got);
    }
    std::fclose(f);
  }
  std::remove(path.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void test_sanitizers([[maybe_unused]] const char* self) {
  std::string err;
#if SEGDET_EMU_ASAN
  int rc = spawn_child(self, "oob", &err);
  CHECK(rc != 0);
  CHECK(contains(err, "AddressSanitizer: heap-buffer-overflow"));
  CHECK(contains(err, "oob_read_kernel"));  // reported at the kernel's line
  rc = spawn_child(self, "stack_overflow", &err);
  CHECK(rc != 0);
  CHECK(contains(err, "AddressSanitizer"));
#else
  std::fprintf(stderr, "note: built without AddressSanitizer; out-of-bounds case skipped\n");
#endif
#if defined(__has_feature)
#if __has_feature(undefined_behavior_sanitizer)
#define SEGDET_EMU_UBSAN 1
#endif
#endif
#if defined(SEGDET_EMU_UBSAN) || defined(SEGDET_EMU_EXPECT_UBSAN)
  rc = spawn_child(self, "overflow", &err);
  CHECK(rc != 0);
  CHECK(contains(err, "signed integer overflow"));
#else
  std::fprintf(stderr, "note: built without UndefinedBehaviorSanitizer; overflow case skipped\n");
#endif
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strncmp(argv[1], "--child=", 8) == 0) {
    return run_child(argv[1] + 8);
  }
  const struct {
    const char* name;
    std::function<void()> run;
  } tests[] = {
      {"block_reduce", test_block_reduce},
      {"neighbour_barrier", test_neighbour_barrier},
      {"warp", test_warp},
      {"vote_partial_warp", test_vote_partial_warp},
      {"atomics", test_atomics},
      {"indices", test_indices},
      {"orders", test_orders},
      {"syncthreads_count", test_syncthreads_count},
      {"barrier_errors", test_barrier_errors},
      {"shared_poison", test_shared_poison},
      {"launch_limits", test_launch_limits},
      {"kernel_exceptions", test_kernel_exceptions},
      {"recovery_full_block", test_recovery_full_block},
      {"sanitizers", [&] { test_sanitizers(argv[0]); }},
  };
  for (const auto& t : tests) {
    const int before = g_failures;
    try {
      t.run();
    } catch (const std::exception& e) {
      ++g_failures;
      std::fprintf(stderr, "%s: unexpected exception: %s\n", t.name, e.what());
    }
    std::printf("%-22s %s\n", t.name, g_failures == before ? "ok" : "FAILED");
  }
  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
