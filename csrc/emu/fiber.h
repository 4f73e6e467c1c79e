#pragma once

// Fibers for the CUDA emulator: one small stack per emulated CUDA thread and an x86-64 context
// switch. swapcontext() would also work but makes a sigprocmask system call per switch, and an
// emulated block switches once per thread per barrier; this switch is a dozen instructions.
//
// AddressSanitizer must be told about every stack switch (or it reports false stack overflows and
// mis-unwinds on exceptions), hence the __sanitizer_*_switch_fiber calls around each switch.

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SEGDET_EMU_ASAN 1
#else
#define SEGDET_EMU_ASAN 0
#endif

#if !defined(__x86_64__) || !defined(__GNUC__)
#error "the segdet CUDA emulator's context switch is written for x86-64 with GCC or Clang"
#endif

namespace segdet::emu::detail {

// Pushes the callee-saved registers on the current stack, stores the stack pointer in *from,
// switches to the stack pointer `to` and pops the registers saved there. The System V ABI lets a
// callee clobber every other general register; MXCSR and the x87 control word are left alone
// because kernels never change the rounding mode.
[[gnu::naked, gnu::noinline]] inline void switch_stack(void** /*from*/, void* /*to*/) {
  asm("pushq %rbp\n\t"
      "pushq %rbx\n\t"
      "pushq %r12\n\t"
      "pushq %r13\n\t"
      "pushq %r14\n\t"
      "pushq %r15\n\t"
      "movq %rsp, (%rdi)\n\t"
      "movq %rsi, %rsp\n\t"
      "popq %r15\n\t"
      "popq %r14\n\t"
      "popq %r13\n\t"
      "popq %r12\n\t"
      "popq %rbx\n\t"
      "popq %rbp\n\t"
      "ret\n\t");
}

// First code a fresh fiber runs (reached by switch_stack's `ret`): calls r13(r12). The entry
// function never returns; ud2 traps if it ever does.
[[gnu::naked, gnu::noinline]] inline void fiber_trampoline() {
  asm("movq %r12, %rdi\n\t"
      "callq *%r13\n\t"
      "ud2\n\t");
}

// A fiber stack: `size` usable bytes above one inaccessible guard page, so an overflow faults
// instead of silently corrupting the neighbouring fiber's stack.
struct Stack {
  char* mapping = nullptr;
  size_t mapping_size = 0;
  char* bottom = nullptr;  // lowest usable address
  size_t size = 0;
  bool dirty = false;      // abandoned with live frames: ASan shadow must be cleared before reuse

  static Stack allocate(size_t size) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    size = (size + page - 1) / page * page;
    Stack s;
    s.mapping_size = size + page;
    void* p = mmap(nullptr, s.mapping_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                   -1, 0);
    if (p == MAP_FAILED) {
      throw std::bad_alloc();
    }
    s.mapping = static_cast<char*>(p);
    mprotect(s.mapping, page, PROT_NONE);
    s.bottom = s.mapping + page;
    s.size = size;
    return s;
  }

  void release() {
    if (mapping != nullptr) {
      munmap(mapping, mapping_size);
      mapping = nullptr;
    }
  }
};

// Lays out a stack so that switch_stack(&saved, returned_sp) enters fiber_trampoline with
// r12 = arg and r13 = entry, and the entry function starts with the ABI's 16-byte alignment.
// Not instrumented: the words written here may lie in redzones a previous fiber's frames left
// poisoned (frames of a fiber that switched away for good are never popped).
[[gnu::no_sanitize_address]] inline void* prepare_stack(Stack& s, void (*entry)(void*), void* arg) {
  auto top = reinterpret_cast<uintptr_t>(s.bottom + s.size);
  top = (top & ~uintptr_t(15)) - 16;
#if SEGDET_EMU_ASAN
  if (s.dirty) {
    __asan_unpoison_memory_region(s.bottom, s.size);
    s.dirty = false;
  } else {
    __asan_unpoison_memory_region(reinterpret_cast<void*>(top - 256), 256 + 16);
  }
#endif
  void** sp = reinterpret_cast<void**>(top);
  *--sp = reinterpret_cast<void*>(&fiber_trampoline);  // return address of switch_stack
  *--sp = nullptr;                                      // rbp: ends frame-pointer unwinds here
  *--sp = nullptr;                                      // rbx
  *--sp = arg;                                          // r12
  *--sp = reinterpret_cast<void*>(entry);               // r13
  *--sp = nullptr;                                      // r14
  *--sp = nullptr;                                      // r15
  return sp;
}

}  // namespace segdet::emu::detail
