// VQ-codebook ops (entropy, NLL, categorical KL, log-categorical): raw-pointer CUDA launchers.
// No torch headers: `nvcc -c -std=c++17 -Icsrc/include csrc/cuda/codebook.cu` compiles alone.
//
// Tensors are [B, L, K] / [B, K, L] read through (sB, sL, sK) element strides. Per-token outputs
// and inputs (o1..o3, grad, lse, mu) are contiguous [B, L] in the accumulation type (float, or
// double for double inputs); target is contiguous int64 [B, L]; mask is contiguous bool [B, L] or
// null. Launchers return the launch error (cudaSuccess on success).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "dtype.cuh"

namespace mmreward {
namespace codebook_cuda {

using DType = ::mmreward::cuda::DType;


struct Strided {
  const void* p;
  int64_t sB, sL, sK;
};
struct StridedOut {
  void* p;
  int64_t sB, sL, sK;
};

// Softmax statistics per token. target == null: entropy (o1 = H, o2 = lse, o3 = mu = E_p[z]);
// else NLL (o1 = lse - z[target], o2 = lse; o3 unused). Masked tokens get 0.
cudaError_t launch_stats(DType dt, Strided x, int64_t B, int64_t L, int64_t K, const int64_t* target,
                         const bool* mask, void* o1, void* o2, void* o3, cudaStream_t stream);

// dz = g exp(z - lse) (mu - z)  (entropy, target == null)  or  g (exp(z - lse) - [k == target])  (NLL).
cudaError_t launch_softmax_bwd(DType dt, Strided x, StridedOut y, int64_t B, int64_t L, int64_t K,
                               const void* grad, const void* lse, const void* mu, const int64_t* target,
                               const bool* mask, cudaStream_t stream);

// out = sum_k exp(a)(a - b) (is_kl) or sum_k exp(a) b, per token.
cudaError_t launch_pair_fwd(DType dt, bool is_kl, Strided a, Strided b, int64_t B, int64_t L, int64_t K,
                            const bool* mask, void* out, cudaStream_t stream);

// (ga, gb) = g (exp(a)(a - b + 1), -exp(a)) (is_kl) or g (exp(a) b, exp(a)).
cudaError_t launch_pair_bwd(DType dt, bool is_kl, Strided a, Strided b, StridedOut ga, StridedOut gb, int64_t B,
                            int64_t L, int64_t K, const void* grad, const bool* mask, cudaStream_t stream);

}  // namespace codebook_cuda
}  // namespace mmreward
