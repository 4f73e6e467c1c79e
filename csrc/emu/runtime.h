#pragma once

// The emulator's scheduler: runs a grid one block at a time, every CUDA thread of the block a
// fiber, and implements the synchronising primitives (block barriers, warp collectives) on top.
//
// A fiber runs until it reaches a barrier or a warp collective (or exits); then the next runnable
// fiber runs. When no fiber is runnable, either every live thread waits at the same barrier (it
// is released, in the schedule's order), or the block is finished, or the kernel is wrong:
// threads wait at different barriers, some exited while others wait, or a warp collective waits
// for a lane that will never come. Those are reported as EmulationError from launch().
//
// Emulator state is global, and launch() holds a mutex, so launches from several host threads
// run one after another (the CUDA built-ins threadIdx etc. are plain globals swapped per fiber).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <source_location>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "emu/fiber.h"

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

namespace segdet::emu {

// Every misuse of the execution model the emulator detects: launch limits, divergent or
// mismatched barriers, deadlocks, shared memory over budget.
struct EmulationError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Order of the blocks of a grid and of the threads resumed at each barrier. A kernel whose result
// depends on that order has a race (a missing barrier, an unsynchronised read of another thread's
// write); running the tests under several orders exposes it.
struct Schedule {
  enum Order { kForward, kReverse, kRandom };
  Order order = kForward;
  uint64_t seed = 0;
};

// Limits of every CUDA GPU since compute capability 3.0 (static shared memory: per block).
inline constexpr unsigned kMaxThreadsPerBlock = 1024;
inline constexpr unsigned kMaxBlockXY = 1024;
inline constexpr unsigned kMaxBlockZ = 64;
inline constexpr uint64_t kMaxGridX = (uint64_t(1) << 31) - 1;
inline constexpr uint64_t kMaxGridYZ = 65535;
inline constexpr size_t kMaxStaticShared = 48 * 1024;
inline constexpr int kWarpSize = 32;

// The grid argument of launch(). Converting to it records where launch() was called, so errors
// can name the launch site even though a kernel's function pointer carries no name. It takes the
// integer types directly so that a too-large int64 block count is seen before it is truncated.
struct GridArg {
  dim3 dim;
  uint64_t full_x;
  std::source_location site;
  GridArg(dim3 d, std::source_location l = std::source_location::current()) : dim(d), full_x(d.x), site(l) {}
  template <typename I, std::enable_if_t<std::is_integral_v<I>, int> = 0>
  GridArg(I x, std::source_location l = std::source_location::current())
      : dim(static_cast<unsigned>(x)), full_x(x < 0 ? ~uint64_t(0) : static_cast<uint64_t>(x)), site(l) {}
};

namespace detail {

enum class State : uint8_t { kRunnable, kBarrier, kWarp, kDone };

struct Fiber {
  void* sp = nullptr;
  void* fake_stack = nullptr;  // ASan's fake stack of this fiber while it is switched out
  Stack* stack = nullptr;
  uint3 tid{};
  unsigned linear = 0;
  State state = State::kRunnable;
  const char* bar_file = nullptr;
  int bar_line = 0;
  int bar_pred = 0;
  uint64_t warp_out = 0;
};

enum class WarpKind : uint8_t { kSync, kShfl, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll };

inline const char* warp_kind_name(WarpKind k) {
  switch (k) {
    case WarpKind::kSync: return "__syncwarp";
    case WarpKind::kShfl: return "__shfl_sync";
    case WarpKind::kShflUp: return "__shfl_up_sync";
    case WarpKind::kShflDown: return "__shfl_down_sync";
    case WarpKind::kShflXor: return "__shfl_xor_sync";
    case WarpKind::kBallot: return "__ballot_sync";
    case WarpKind::kAny: return "__any_sync";
    case WarpKind::kAll: return "__all_sync";
  }
  return "?";
}

// A warp collective some lanes of `mask` have reached. Lanes of different (disjoint) masks may
// run collectives of their own at the same time, as on Volta and later.
struct WarpOp {
  WarpKind kind;
  unsigned mask;
  unsigned arrived = 0;
  int width = kWarpSize;
  uint64_t in[kWarpSize];
  int arg[kWarpSize];
};

struct Warp {
  unsigned exists = 0;  // lanes that are threads of the block (the last warp may be partial)
  unsigned exited = 0;
  std::vector<WarpOp> pending;
};

struct Runtime {
  std::mutex mutex;
  Schedule schedule;
  std::mt19937_64 rng{0};
  std::map<std::string, uint64_t> launches;  // per launch site

  // The launch in progress.
  bool active = false;
  std::string site;
  dim3 grid, block;
  void (*invoke)(void*) = nullptr;
  void* params = nullptr;
  std::vector<std::pair<const void*, size_t>> launch_regions;
  size_t shared_bytes = 0;

  // The block in progress.
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<unsigned> runnable;
  size_t next_runnable = 0;
  std::vector<std::pair<const void*, size_t>> block_regions;
  Fiber* current = nullptr;
  int bar_count = 0;
  bool failed = false;
  std::string error;
  std::exception_ptr exception;

  // Scheduler context, and the stack bounds ASan needs to switch back to it.
  void* sched_sp = nullptr;
  void* sched_fake_stack = nullptr;
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;

  std::vector<Stack> stacks;
  size_t stack_size = size_t(256) << 10;

  ~Runtime() {
    for (Stack& s : stacks) {
      s.release();
    }
  }
};

inline Runtime& rt() {
  static Runtime r;
  return r;
}

// The CUDA built-in variables: globals, set per block and, for threadIdx, on every switch.
inline uint3 g_thread_idx{};
inline uint3 g_block_idx{};
inline dim3 g_block_dim{};
inline dim3 g_grid_dim{};

inline std::string describe(const uint3& v) {
  return "(" + std::to_string(v.x) + ", " + std::to_string(v.y) + ", " + std::to_string(v.z) + ")";
}

inline std::string where(const Fiber& f) {
  return rt().site + ": block " + describe(g_block_idx) + " thread " + describe(f.tid);
}

inline Fiber* current_fiber() {
  return rt().current;
}

inline Fiber& require_fiber(const char* what) {
  Fiber* f = rt().current;
  if (f == nullptr) {
    throw EmulationError(std::string(what) + " called outside a kernel launched by segdet::emu::launch");
  }
  return *f;
}

// Switches from the running fiber back to the scheduler; returns when the scheduler resumes it.
inline void yield_to_scheduler() {
  Runtime& r = rt();
  Fiber* f = r.current;
#if SEGDET_EMU_ASAN
  __sanitizer_start_switch_fiber(&f->fake_stack, r.sched_stack_bottom, r.sched_stack_size);
#endif
  switch_stack(&f->sp, r.sched_sp);
#if SEGDET_EMU_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, &r.sched_stack_bottom, &r.sched_stack_size);
#endif
  g_thread_idx = f->tid;
}

// Records a kernel error and abandons the calling fiber: the scheduler never resumes it. The
// caller's frame is never unwound, so the message (a temporary of the caller) is emptied here
// rather than by its destructor.
[[noreturn]] inline void fail(std::string&& message) {
  Runtime& r = rt();
  if (!r.failed) {
    r.failed = true;
    r.error = message;  // a copy: a move would hand r.error's old buffer to the abandoned frame
  }
  std::string().swap(message);  // frees the message's buffer now
  yield_to_scheduler();
  __builtin_trap();  // unreachable: a failed block is never resumed
}

inline void make_runnable(Runtime& r, std::vector<unsigned>& ids) {
  switch (r.schedule.order) {
    case Schedule::kForward: std::sort(ids.begin(), ids.end()); break;
    case Schedule::kReverse: std::sort(ids.rbegin(), ids.rend()); break;
    case Schedule::kRandom: std::shuffle(ids.begin(), ids.end(), r.rng); break;
  }
  for (unsigned id : ids) {
    r.fibers[id].state = State::kRunnable;
    r.runnable.push_back(id);
  }
}

inline uint64_t poison_bits() {
  return ~uint64_t(0);
}

// Computes every arrived lane's result of a complete warp collective and makes the waiting lanes
// runnable. Returns the result of lane `self`.
inline uint64_t complete_warp_op(Runtime& r, unsigned warp, size_t op_index, unsigned self) {
  Warp& w = r.warps[warp];
  const WarpOp op = w.pending[op_index];
  w.pending.erase(w.pending.begin() + static_cast<std::ptrdiff_t>(op_index));
  const unsigned present = op.arrived;
  uint64_t ballot = 0;
  for (unsigned l = 0; l < kWarpSize; ++l) {
    if ((present >> l & 1u) && op.in[l] != 0) {
      ballot |= uint64_t(1) << l;
    }
  }
  const unsigned width = static_cast<unsigned>(op.width);
  uint64_t self_out = 0;
  std::vector<unsigned> woken;
  for (unsigned l = 0; l < kWarpSize; ++l) {
    if (!(present >> l & 1u)) {
      continue;
    }
    const unsigned seg = l & ~(width - 1), pos = l & (width - 1);
    const unsigned a = static_cast<unsigned>(op.arg[l]);
    unsigned src = l;
    uint64_t out = 0;
    switch (op.kind) {
      case WarpKind::kSync: break;
      case WarpKind::kShfl: src = seg + (a & (width - 1)); break;
      case WarpKind::kShflUp: src = pos >= a ? l - a : l; break;
      case WarpKind::kShflDown: src = pos + a < width ? l + a : l; break;
      case WarpKind::kShflXor: {
        const unsigned x = l ^ a;
        src = (x < kWarpSize && (x & ~(width - 1)) <= seg) ? x : l;
        break;
      }
      case WarpKind::kBallot: out = ballot; break;
      case WarpKind::kAny: out = ballot != 0; break;
      case WarpKind::kAll: out = ballot == present; break;
    }
    if (op.kind == WarpKind::kShfl || op.kind == WarpKind::kShflUp || op.kind == WarpKind::kShflDown ||
        op.kind == WarpKind::kShflXor) {
      // Reading a lane that takes no part is undefined in CUDA: hand out the poison pattern.
      out = (present >> src & 1u) ? op.in[src] : poison_bits();
    }
    Fiber& f = r.fibers[warp * kWarpSize + l];
    f.warp_out = out;
    if (l == self) {
      self_out = out;
    } else {
      woken.push_back(f.linear);
    }
  }
  make_runnable(r, woken);
  return self_out;
}

// Lanes a collective of `mask` still needs: those of the mask that exist and have not exited.
inline unsigned lanes_needed(const Warp& w, unsigned mask) {
  return mask & w.exists & ~w.exited;
}

inline uint64_t warp_collective(WarpKind kind, unsigned mask, uint64_t value, int arg, int width) {
  Runtime& r = rt();
  Fiber& f = require_fiber(warp_kind_name(kind));
  const unsigned warp = f.linear / kWarpSize, lane = f.linear % kWarpSize;
  Warp& w = r.warps[warp];
  if (!(mask >> lane & 1u)) {
    fail(where(f) + ": " + warp_kind_name(kind) + " with mask 0x" + [&] {
      char b[16];
      std::snprintf(b, sizeof b, "%08x", mask);
      return std::string(b);
    }() + " that does not include the calling lane " + std::to_string(lane));
  }
  if (width <= 0 || width > kWarpSize || (width & (width - 1)) != 0) {
    fail(where(f) + ": " + warp_kind_name(kind) + " width " + std::to_string(width) +
         " is not a power of two <= 32");
  }
  size_t index = w.pending.size();
  for (size_t i = 0; i < w.pending.size(); ++i) {
    const WarpOp& p = w.pending[i];
    if (p.mask >> lane & 1u) {
      if (p.kind != kind || p.mask != mask || p.width != width) {
        char b[160];
        std::snprintf(b, sizeof b, ": %s (mask 0x%08x) while lanes 0x%08x of its warp wait in %s (mask 0x%08x)",
                      warp_kind_name(kind), mask, p.arrived, warp_kind_name(p.kind), p.mask);
        fail(where(f) + b);
      }
      index = i;
      break;
    }
    if (p.mask & mask) {
      char b[160];
      std::snprintf(b, sizeof b, ": %s with mask 0x%08x overlaps the mask 0x%08x of a pending %s", warp_kind_name(kind),
                    mask, p.mask, warp_kind_name(p.kind));
      fail(where(f) + b);
    }
  }
  if (index == w.pending.size()) {
    WarpOp op;
    op.kind = kind;
    op.mask = mask;
    op.width = width;
    w.pending.push_back(op);
  }
  WarpOp& op = w.pending[index];
  op.arrived |= 1u << lane;
  op.in[lane] = value;
  op.arg[lane] = arg;
  const unsigned need = lanes_needed(w, mask);
  if ((op.arrived & need) == need) {
    return complete_warp_op(r, warp, index, lane);
  }
  f.state = State::kWarp;
  yield_to_scheduler();
  return f.warp_out;
}

// A lane exiting may complete collectives that were waiting only for lanes still running.
inline void on_exit(Runtime& r, Fiber& f) {
  const unsigned warp = f.linear / kWarpSize;
  Warp& w = r.warps[warp];
  w.exited |= 1u << (f.linear % kWarpSize);
  for (size_t i = 0; i < w.pending.size();) {
    const unsigned need = lanes_needed(w, w.pending[i].mask);
    if ((w.pending[i].arrived & need) == need) {
      const unsigned self = kWarpSize;  // no lane of the op is the caller
      complete_warp_op(r, warp, i, self);
    } else {
      ++i;
    }
  }
}

inline void fiber_entry(void* arg) {
  Runtime& r = rt();
  Fiber* f = static_cast<Fiber*>(arg);
#if SEGDET_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &r.sched_stack_bottom, &r.sched_stack_size);
#endif
  g_thread_idx = f->tid;
  try {
    r.invoke(r.params);
  } catch (...) {
    if (!r.failed) {
      r.failed = true;
      r.error = where(*f) + ": the kernel threw";
      r.exception = std::current_exception();
    }
  }
  f->state = State::kDone;
  on_exit(r, *f);
#if SEGDET_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, r.sched_stack_bottom, r.sched_stack_size);  // frees the fake stack
#endif
  switch_stack(&f->sp, r.sched_sp);
  __builtin_trap();  // a finished fiber is never resumed
}

inline void resume(Runtime& r, Fiber& f) {
  r.current = &f;
#if SEGDET_EMU_ASAN
  __sanitizer_start_switch_fiber(&r.sched_fake_stack, f.stack->bottom, f.stack->size);
#endif
  switch_stack(&r.sched_sp, f.sp);
#if SEGDET_EMU_ASAN
  __sanitizer_finish_switch_fiber(r.sched_fake_stack, nullptr, nullptr);
#endif
  r.current = nullptr;
}

inline int barrier(const char* file, int line, int pred) {
  Runtime& r = rt();
  Fiber& f = require_fiber("__syncthreads");
  f.state = State::kBarrier;
  f.bar_file = file;
  f.bar_line = line;
  f.bar_pred = pred;
  yield_to_scheduler();
  return r.bar_count;
}

inline std::string site_of(const Fiber& f) {
  return std::string(f.bar_file) + ":" + std::to_string(f.bar_line);
}

// Runs one block to completion; false (with r.error set) when the kernel misbehaved.
inline bool run_block(Runtime& r, uint3 block_idx) {
  g_block_idx = block_idx;
  r.block_regions.clear();
  const dim3 b = r.block;
  const unsigned n = b.x * b.y * b.z;
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = r.fibers[i];
    f = Fiber{};
    f.stack = &r.stacks[i];
    f.linear = i;
    f.tid = {i % b.x, (i / b.x) % b.y, i / (b.x * b.y)};
    f.sp = prepare_stack(*f.stack, &fiber_entry, &f);
  }
  const unsigned num_warps = (n + kWarpSize - 1) / kWarpSize;
  for (unsigned w = 0; w < num_warps; ++w) {
    Warp& warp = r.warps[w];
    const unsigned lanes = std::min<unsigned>(kWarpSize, n - w * kWarpSize);
    warp.exists = lanes == 32 ? ~0u : (1u << lanes) - 1;
    warp.exited = 0;
    warp.pending.clear();
  }
  r.runnable.clear();
  r.next_runnable = 0;
  std::vector<unsigned> ids(n);
  std::iota(ids.begin(), ids.end(), 0u);
  make_runnable(r, ids);
  for (;;) {
    while (r.next_runnable < r.runnable.size()) {
      Fiber& f = r.fibers[r.runnable[r.next_runnable++]];
      resume(r, f);
      if (r.failed) {
        return false;
      }
    }
    r.runnable.clear();
    r.next_runnable = 0;
    const Fiber* exited = nullptr;
    const Fiber* at_barrier = nullptr;
    const Fiber* in_warp = nullptr;
    std::vector<unsigned> waiting;
    for (unsigned i = 0; i < n; ++i) {
      const Fiber& f = r.fibers[i];
      if (f.state == State::kDone) {
        exited = exited ? exited : &f;
      } else if (f.state == State::kBarrier) {
        at_barrier = at_barrier ? at_barrier : &f;
        waiting.push_back(i);
      } else if (f.state == State::kWarp) {
        in_warp = in_warp ? in_warp : &f;
      }
    }
    if (waiting.empty() && in_warp == nullptr) {
      return true;  // every thread exited
    }
    if (in_warp != nullptr) {
      const Warp& w = r.warps[in_warp->linear / kWarpSize];
      const WarpOp* op = nullptr;
      for (const WarpOp& p : w.pending) {
        if (p.arrived >> (in_warp->linear % kWarpSize) & 1u) {
          op = &p;
        }
      }
      std::string missing;
      if (op != nullptr) {
        const unsigned need = lanes_needed(w, op->mask) & ~op->arrived;
        for (unsigned l = 0; l < kWarpSize; ++l) {
          if (need >> l & 1u) {
            const Fiber& o = r.fibers[(in_warp->linear / kWarpSize) * kWarpSize + l];
            missing = "; thread " + describe(o.tid) +
                      (o.state == State::kBarrier ? " waits at __syncthreads " + site_of(o)
                                                  : std::string(" is in another warp collective"));
            break;
          }
        }
      }
      r.error = where(*in_warp) + ": deadlock: waits in " +
                (op ? std::string(warp_kind_name(op->kind)) : std::string("a warp collective")) +
                " for lanes that never arrive" + missing;
      return false;
    }
    if (exited != nullptr) {
      r.error = where(*at_barrier) + ": divergent __syncthreads at " + site_of(*at_barrier) + ": thread " +
                describe(exited->tid) + " of the block has exited and can never reach it";
      return false;
    }
    for (unsigned i : waiting) {
      const Fiber& f = r.fibers[i];
      if (f.bar_line != at_barrier->bar_line || std::strcmp(f.bar_file, at_barrier->bar_file) != 0) {
        r.error = where(f) + ": mismatched barriers: it waits at __syncthreads " + site_of(f) + " while thread " +
                  describe(at_barrier->tid) + " waits at " + site_of(*at_barrier);
        return false;
      }
    }
    int count = 0;
    for (unsigned i : waiting) {
      count += r.fibers[i].bar_pred != 0;
    }
    r.bar_count = count;
    make_runnable(r, waiting);
  }
}

// Order of the blocks: a permutation of [0, total) per the schedule.
struct BlockOrder {
  uint64_t total;
  Schedule::Order order;
  std::vector<uint64_t> shuffled;
  uint64_t mul = 1, add = 0;

  BlockOrder(uint64_t n, Schedule::Order o, std::mt19937_64& rng) : total(n), order(o) {
    if (order != Schedule::kRandom) {
      return;
    }
    if (n <= (uint64_t(1) << 20)) {
      shuffled.resize(n);
      std::iota(shuffled.begin(), shuffled.end(), uint64_t(0));
      std::shuffle(shuffled.begin(), shuffled.end(), rng);
    } else {
      // Too many blocks to list: i -> (mul * i + add) mod n with mul coprime to n is a permutation.
      do {
        mul = rng() % n;
      } while (std::gcd(mul, n) != 1);
      add = rng() % n;
    }
  }
  uint64_t operator[](uint64_t i) const {
    switch (order) {
      case Schedule::kForward: return i;
      case Schedule::kReverse: return total - 1 - i;
      case Schedule::kRandom:
        return shuffled.empty() ? static_cast<uint64_t>((static_cast<unsigned __int128>(mul) * i + add) % total)
                                : shuffled[i];
    }
    return i;
  }
};

inline void check_launch(const GridArg& grid, dim3 block) {
  const dim3 g = grid.dim;
  std::string problem;
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.full_x == 0 || g.y == 0 || g.z == 0 || block.x == 0 || block.y == 0 || block.z == 0) {
    problem = "a grid or block dimension is zero";
  } else if (threads > kMaxThreadsPerBlock) {
    problem = std::to_string(threads) + " threads per block exceed the limit of 1024";
  } else if (block.x > kMaxBlockXY || block.y > kMaxBlockXY || block.z > kMaxBlockZ) {
    problem = "block.x/y must be <= 1024 and block.z <= 64";
  } else if (grid.full_x > kMaxGridX) {
    problem = "grid.x = " + std::to_string(grid.full_x) + " exceeds the limit of 2^31 - 1";
  } else if (g.y > kMaxGridYZ || g.z > kMaxGridYZ) {
    problem = "grid.y/z must be <= 65535";
  }
  if (!problem.empty()) {
    throw EmulationError(rt().site + ": invalid launch configuration grid " + describe(g) + " block " +
                         describe(block) + ": " + problem);
  }
}

template <typename Kernel, typename Params>
struct Bound {
  Kernel kernel;
  Params params;
  static void invoke(void* p) {
    auto* self = static_cast<Bound*>(p);
    // Each thread gets its own copies of the by-value kernel parameters, as on the device.
    std::apply(self->kernel, self->params);
  }
};

inline std::string site_name(const std::source_location& l) {
  return std::string(l.file_name()) + ":" + std::to_string(l.line()) + " (" + l.function_name() + ")";
}

inline void run_grid(const GridArg& grid, dim3 block, void (*invoke)(void*), void* params) {
  Runtime& r = rt();
  check_launch(grid, block);
  const unsigned n = block.x * block.y * block.z;
  while (r.stacks.size() < n) {
    r.stacks.push_back(Stack::allocate(r.stack_size));
  }
  if (r.fibers.size() < n) {
    r.fibers.resize(n);
    r.warps.resize((n + kWarpSize - 1) / kWarpSize);
  }
  r.grid = grid.dim;
  r.block = block;
  r.invoke = invoke;
  r.params = params;
  r.launch_regions.clear();
  r.shared_bytes = 0;
  r.failed = false;
  r.error.clear();
  r.exception = nullptr;
  g_grid_dim = grid.dim;
  g_block_dim = block;
  const dim3 g = grid.dim;
  const uint64_t total = uint64_t(g.x) * g.y * g.z;
  const BlockOrder order(total, r.schedule.order, r.rng);
  for (uint64_t i = 0; i < total; ++i) {
    const uint64_t id = order[i];
    const uint3 b{static_cast<unsigned>(id % g.x), static_cast<unsigned>((id / g.x) % g.y),
                  static_cast<unsigned>(id / (uint64_t(g.x) * g.y))};
    if (!run_block(r, b)) {
      // Fibers still suspended are abandoned: their stacks get a clean shadow before reuse.
      for (unsigned t = 0; t < n; ++t) {
        if (r.fibers[t].state != State::kDone) {
          r.fibers[t].stack->dirty = true;
        }
      }
      if (r.exception) {
        std::rethrow_exception(r.exception);
      }
      throw EmulationError("segdet emu: " + r.error);
    }
  }
}

}  // namespace detail

// Sets the order of blocks and of threads resumed at barriers for the following launches; a
// random order draws from a generator seeded here (so a sequence of launches is reproducible).
inline void set_schedule(Schedule s) {
  detail::Runtime& r = detail::rt();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.schedule = s;
  r.rng.seed(s.seed);
}

inline Schedule schedule() {
  return detail::rt().schedule;
}

// Number of launches so far per launch site ("file:line (function)").
inline std::map<std::string, uint64_t> launch_counts() {
  detail::Runtime& r = detail::rt();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.launches;
}

inline void reset_launch_counts() {
  detail::Runtime& r = detail::rt();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.launches.clear();
}

// Registers the static shared array at p (SEGDET_SHARED): filled with 0xFF the first time each
// block reaches it, so a read before any thread wrote it yields NaN / all-ones, and counted once
// per launch against the 48 KiB static shared memory limit.
inline void shared_region(void* p, size_t bytes) {
  detail::Runtime& r = detail::rt();
  detail::Fiber& f = detail::require_fiber("SEGDET_SHARED");
  for (const auto& region : r.block_regions) {
    if (region.first == p) {
      return;
    }
  }
  r.block_regions.emplace_back(p, bytes);
  std::memset(p, 0xFF, bytes);
  for (const auto& region : r.launch_regions) {
    if (region.first == p) {
      return;
    }
  }
  r.launch_regions.emplace_back(p, bytes);
  r.shared_bytes += bytes;
  if (r.shared_bytes > kMaxStaticShared) {
    detail::fail(detail::where(f) + ": " + std::to_string(r.shared_bytes) +
                 " bytes of static shared memory exceed the limit of 49152 (48 KiB) per block");
  }
}

// Runs kernel<<<grid, block>>>(args...) to completion on the calling host thread, blocks one at a
// time. Throws EmulationError for an invalid configuration or a kernel that breaks the execution
// model; the block's fibers are abandoned first (their stacks are reused by later launches).
template <typename... P, typename... A>
void launch(void (*kernel)(P...), GridArg grid, dim3 block, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "segdet::emu::launch: wrong number of kernel arguments");
  detail::Runtime& r = detail::rt();
  if (r.current != nullptr) {
    throw EmulationError("segdet emu: " + detail::site_name(grid.site) +
                         ": launch from inside a kernel (dynamic parallelism) is not emulated");
  }
  std::lock_guard<std::mutex> lock(r.mutex);
  r.site = detail::site_name(grid.site);
  ++r.launches[r.site];
  detail::Bound<void (*)(P...), std::tuple<std::decay_t<P>...>> bound{kernel,
                                                                       std::tuple<std::decay_t<P>...>(
                                                                           std::forward<A>(args)...)};
  detail::run_grid(grid, block, &decltype(bound)::invoke, &bound);
}

}  // namespace segdet::emu
