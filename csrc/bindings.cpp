// The mmreward op libraries. Each op family adds its schemas to both (MMREWARD_SCHEMAS, see
// mmreward/op_library.h), its autograd and CPU kernels in csrc/cpu/<family>.cpp and its CUDA kernels
// in csrc/cuda/<family>.cu; this file owns the libraries themselves and the Python module that
// loading `mmreward._C` needs.
#include <Python.h>
#include <torch/library.h>
#include <string>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace mmreward {

// Build facts for `python -m mmreward.env_report`.
std::string ext_info() {
  std::string s = "cxx=" + std::to_string(__cplusplus);
#ifdef _OPENMP
  s += ";openmp=" + std::to_string(_OPENMP) + ";omp_max_threads=" + std::to_string(omp_get_max_threads());
#else
  s += ";openmp=0";
#endif
#ifdef MMREWARD_WITH_CUDA
  s += ";cuda=1";
#else
  s += ";cuda=0";
#endif
  return s;
}

}  // namespace mmreward

TORCH_LIBRARY(mmreward, m) {
  m.def("ext_info() -> str", &mmreward::ext_info);
}

// Same schemas as mmreward::, kernels registered from Python by mmreward/ops/triton/<family>.py.
TORCH_LIBRARY(mmreward_triton, m) {}

// `import mmreward._C` only needs a module object; the ops live in torch.ops.mmreward.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "mmreward C++/CUDA ops", -1, nullptr};
  return PyModule_Create(&module_def);
}
