// PRM step-reward ops: raw-pointer CUDA kernels' host launchers (no torch headers).
//
// Layout conventions match csrc/cpu/step_reward.cpp:
//   hidden (N, H) contiguous, index (S,) int64 rows, w / w_neg (H,) in the input dtype;
//   bias (1,), target (S,), z (S,), losses and all per-step / per-sequence float outputs in the
//   accumulation dtype `acc` (float for fp32 / bf16 / fp16, double for fp64);
//   offsets (B + 1,) int64 for the segment ops.
// Every reduction has a fixed order (single-block trees, one thread per column / sequence), so the
// results are deterministic. Launchers return the launch error (cudaSuccess when fine).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "dtype.cuh"

namespace mmreward {
namespace cuda {


// z_s = hidden[index_s]·(w − w_neg) + bias; kind 1/2 also writes per-step BCE / MSE loss (0 at −100).
cudaError_t step_head_forward(DType dt, const void* hidden, const int64_t* index, const void* w, const void* w_neg,
                              const void* bias, const void* target, void* z, void* loss, int64_t S, int64_t H,
                              int kind, cudaStream_t stream);
// out = Σ loss (reduction 2) or Σ loss / max(#valid, 1) (reduction 1); acc dtype, one value.
cudaError_t step_loss_reduce(DType acc, const void* loss, const void* target, int64_t S, int reduction, void* out,
                             cudaStream_t stream);
// gz (S,) = d out / d z_s scaled by grad_out; gb (1,) = Σ gz. acc dtype throughout.
cudaError_t step_head_grad_z(DType acc, const void* grad_out, const void* z, const void* target, int64_t S,
                             int kind, int reduction, void* gz, void* gb, cudaStream_t stream);
// grad_w = Σ_s gz_s h[index_s]; grad_hidden[index_s] += gz_s (w − w_neg) (grad_hidden zero-filled
// by the caller, or null to skip).
cudaError_t step_head_backward(DType dt, const void* hidden, const int64_t* index, const void* w, const void* w_neg,
                               const void* gz, void* grad_hidden, void* grad_w, int64_t S, int64_t H,
                               cudaStream_t stream);

// per-pair −log σ(r[pos] − r[neg]) (P,), and Σ weight·loss into out (weight may be null = 1).
cudaError_t step_pair_forward(DType acc, const void* r, const int64_t* pos, const int64_t* neg, const void* weight,
                              void* per, void* out, int64_t P, bool reduce, cudaStream_t stream);
// grad_r (S,) zero-filled by the caller.
cudaError_t step_pair_backward(DType acc, const void* grad, const void* r, const int64_t* pos, const int64_t* neg,
                               const void* weight, void* grad_r, int64_t P, bool reduce, cudaStream_t stream);

// op: 0 min, 1 prod, 2 logprod, 3 last, 4 mean, 5 max, 6 sum. values in dt, out (B,) in acc.
cudaError_t step_segment_forward(DType dt, const void* values, const int64_t* offsets, int64_t B, int op,
                                 double empty_value, void* out, cudaStream_t stream);
// grad (B,) acc, grad_values (S,) dt zero-filled by the caller.
cudaError_t step_segment_backward(DType dt, const void* grad, const void* values, const int64_t* offsets, int64_t B,
                                  int op, void* grad_values, cudaStream_t stream);
cudaError_t step_first_below(DType dt, const void* values, const int64_t* offsets, int64_t B, double threshold,
                             int64_t* out, cudaStream_t stream);
// refined / returns (S,) acc.
cudaError_t step_refine(DType dt, const void* rewards, const int64_t* offsets, int64_t B, bool clip, double eta,
                        bool delta, double gamma, void* refined, void* returns, cudaStream_t stream);

}  // namespace cuda
}  // namespace mmreward
