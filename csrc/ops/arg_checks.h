#pragma once

// The error contract of every segdet op. Each op's argument checks are written once, as the
// detail::check_* helpers of csrc/ops/<op>.h; every backend's kernel calls them first, and the fake
// kernels (segdet/ops/*.py) call the same functions through segdet._C.check_* (csrc/init.cpp), so a
// call traced by torch.compile or torch.export fails with the type and message of an eager call.
//
//   rank, shape and value mistakes  TORCH_CHECK_VALUE -> Python ValueError
//   unsupported or mismatched dtype TORCH_CHECK_TYPE  -> Python TypeError
//   tensors on different devices    TORCH_CHECK_VALUE -> Python ValueError
//
// Messages start with the op's name and name the argument and the shape expected of it.
#include <c10/core/SymBool.h>

namespace segdet::ops::detail {

// A size relation. Sizes are SymInts when a fake kernel checks a tensor traced with dynamic shapes:
// expect_true then records a relation it cannot decide at trace time as a runtime assert (as
// torch._check does) rather than specialising the graph on it. On concrete sizes it is a plain bool.
inline bool size_holds(const c10::SymBool& relation) {
  return relation.expect_true(__FILE__, __LINE__);
}

}  // namespace segdet::ops::detail
