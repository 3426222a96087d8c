// Pairwise reward losses: CUDA launchers (raw pointers, no torch headers).
//
// Conventions shared with the C++ CPU kernels (csrc/cpu/pairwise.cpp):
//  * `Acc` is float for fp32 / bf16 / fp16 inputs and double for double inputs; margins and bias
//    are passed in Acc, tie as bool, listwise ranks as int64.
//  * reduction: 0 none, 1 mean, 2 sum (mmreward::Reduction).
//  * Upstream grads `g` (Acc): nullptr (forward: the reduction scale only), one scalar, or one per
//    pair (`g_per_pair`), read on the device (no host sync).
//  * Reductions are deterministic: fixed grid for a given problem size, per-block partials in a
//    caller-provided workspace, combined in block order by a single-block kernel.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "dtype.cuh"

namespace mmreward {
namespace cuda {


// ---- pairwise_loss --------------------------------------------------------------------------------
size_t pairwise_workspace_bytes(int64_t B);

// Loss ([B] when store_per_pair, else a scalar; Acc), accuracy (float scalar), and optionally the
// grads d loss / d r (times the upstream grad; `grad_dt` is Acc for the forward's saved grads or the
// input dtype for the backward op). Any output pointer may be nullptr to skip it.
cudaError_t pairwise_launch(DType dt, DType grad_dt, const void* r_chosen, const void* r_rejected,
                            const void* margin, const bool* tie, const void* g, bool g_per_pair, int64_t B,
                            double label_smoothing, double center_coef, int reduction, void* loss,
                            bool store_per_pair, float* accuracy, void* grad_chosen, void* grad_rejected,
                            void* workspace, cudaStream_t stream);

// ---- listwise_loss -------------------------------------------------------------------------------
size_t listwise_workspace_bytes(int64_t B);

// loss: [B] (reduction none: row means) or a scalar; pair_counts: int64 [B].
cudaError_t listwise_forward(DType dt, const void* rewards, const int64_t* ranks, int64_t B, int64_t K,
                             int reduction, void* loss, int64_t* pair_counts, void* workspace,
                             cudaStream_t stream);

// grad_rewards [B, K] in the input dtype; g: [B] (none) or a scalar (Acc).
cudaError_t listwise_backward(DType dt, const void* g, const void* rewards, const int64_t* ranks,
                              const int64_t* pair_counts, int64_t B, int64_t K, int reduction,
                              void* grad_rewards, void* workspace, cudaStream_t stream);

// ---- reward_head_pairwise_loss -------------------------------------------------------------------
size_t head_workspace_bytes(DType dt, int64_t B, int64_t H);

// r = h·w + b, the pairwise loss, accuracy and optionally all grads in one pass over h
// (grad_h: grad_h_chosen / grad_h_rejected [B, H] in the input dtype; grad_wb: grad_weight [H] in
// the input dtype and grad_bias (Acc scalar)). loss / accuracy may be nullptr (backward op).
cudaError_t head_launch(DType dt, const void* h_chosen, const void* h_rejected, const void* weight,
                        const void* bias, const void* margin, const bool* tie, const void* g, bool g_per_pair,
                        int64_t B, int64_t H, double label_smoothing, double center_coef, int reduction,
                        void* loss, bool store_per_pair, float* accuracy, void* grad_h_chosen,
                        void* grad_h_rejected, void* grad_weight, void* grad_bias, void* workspace,
                        cudaStream_t stream);

}  // namespace cuda
}  // namespace mmreward
