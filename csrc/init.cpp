// Python module entry point of segdet._C. Operators register themselves with the dispatcher
// (TORCH_LIBRARY_FRAGMENT in csrc/ops/*.cpp) when this library is loaded; the module only
// reports how it was built.
#include <torch/extension.h>

namespace {

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "segdet compiled operators (registered under torch.ops.segdet)";
  m.def("with_cuda", &with_cuda, "True when the CUDA kernels were compiled in");
}
