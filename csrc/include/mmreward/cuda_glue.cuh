// What every CUDA op file (csrc/cuda/<family>.cu) shares: element types and their conversions on
// the device, and the glue of the torch registrations (dtype / device checks, launch errors,
// streams, workspaces). A family file holds its kernels, their host launchers (raw pointers) and
// the TORCH_LIBRARY_IMPL(mmreward, CUDA, m) registration that checks the tensors and calls them.
//
// Torch is reached only through ATen and <c10/cuda/CUDAStream.h> / <c10/cuda/CUDAGuard.h> (not
// ATen/cuda/CUDAContext.h), so CMake's compile check can build these files against a CPU-only
// torch (with an empty cuda_cmake_macros.h stand-in).
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>

#include "mmreward/op_library.h"

namespace mmreward {
namespace cuda {

// ---- element types (device side) ----------------------------------------------------------------
// The element types the raw-pointer launchers take.
enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Accumulation type of an element type: double for double, float otherwise (op_library.h acc_type).
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

// Round-to-nearest-even conversion of an accumulator value to the element type T.
template <typename T>
__device__ __forceinline__ T from_acc(float x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <typename T>
__device__ __forceinline__ T from_acc(double x) { return static_cast<T>(x); }

// Calls f(T*) with a null pointer of the element type of `dt` (a type tag for templated launchers).
template <typename F>
cudaError_t with_element_type(DType dt, F&& f) {
  switch (dt) {
    case DType::kFloat32: return f(static_cast<float*>(nullptr));
    case DType::kFloat64: return f(static_cast<double*>(nullptr));
    case DType::kFloat16: return f(static_cast<__half*>(nullptr));
    case DType::kBFloat16: return f(static_cast<__nv_bfloat16*>(nullptr));
  }
  return cudaErrorInvalidValue;
}

// ---- torch-side glue ----------------------------------------------------------------------------
inline DType dtype_of(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t);
  }
  return DType::kFloat32;
}

inline DType acc_dtype_of(at::ScalarType t, const char* op) { return dtype_of(acc_type(t), op); }

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
}

// `t` is a CUDA tensor on the device of `ref`.
inline void check_on_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref) {
  TORCH_CHECK(t.is_cuda(), op, ": `", name, "` must be a CUDA tensor");
  TORCH_CHECK(t.device() == ref.device(), op, ": `", name, "` is on ", t.device(), " but expected ", ref.device());
}

inline void check_on_device(const char* op, const char* name, const std::optional<at::Tensor>& t,
                            const at::Tensor& ref) {
  if (t.has_value()) check_on_device(op, name, *t, ref);
}

inline std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

template <typename P = void>
const P* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? static_cast<const P*>(t->const_data_ptr()) : nullptr;
}

// Scratch bytes for a launch (per-block partial sums), from the caching allocator.
inline at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 1)}, like.options().dtype(at::kByte));
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace cuda
}  // namespace mmreward
