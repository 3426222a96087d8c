// PRM step-reward ops on CUDA: kernels, their raw-pointer host launchers and the CUDA registration
// of the family's ops (schemas and autograd: csrc/cpu/step_reward.cpp; semantics as the CPU kernels).
//
// Layout conventions match csrc/cpu/step_reward.cpp:
//   hidden (N, H) contiguous, index (S,) int64 rows, w / w_neg (H,) in the input dtype;
//   bias (1,), target (S,), z (S,), losses and all per-step / per-sequence float outputs in the
//   accumulation dtype `acc` (float for fp32 / bf16 / fp16, double for fp64);
//   offsets (B + 1,) int64 for the segment ops.
// Every reduction has a fixed order (single-block trees, one thread per column / sequence), so the
// results are deterministic.
#include <cstdint>
#include <type_traits>

#include "mmreward/cuda_glue.cuh"
#include "mmreward/math.h"

namespace mmreward {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Fixed-order tree sum over one block (blockDim.x == kThreads); result valid in every thread.
template <typename A>
__device__ A block_sum(A v, A* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  A r = sh[0];
  __syncthreads();
  return r;
}

template <typename A> __device__ __forceinline__ bool ignored(A y) { return y == A(-100); }

// ------------------------------------------------------------------------------------------- head

template <typename T>
__global__ void head_fwd_kernel(const T* __restrict__ hidden, const int64_t* __restrict__ index,
                                const T* __restrict__ w, const T* __restrict__ w_neg,
                                const typename Acc<T>::type* __restrict__ bias,
                                const typename Acc<T>::type* __restrict__ target, typename Acc<T>::type* z,
                                typename Acc<T>::type* loss, int64_t H, int kind) {
  using A = typename Acc<T>::type;
  __shared__ A sh[kThreads];
  const int64_t s = blockIdx.x;
  const T* h = hidden + index[s] * H;
  A acc = A(0);
  for (int64_t j = threadIdx.x; j < H; j += kThreads) {
    A wd = to_acc(w[j]);
    if (w_neg != nullptr) wd -= to_acc(w_neg[j]);
    acc += to_acc(h[j]) * wd;
  }
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) {
    const A zz = acc + (bias != nullptr ? bias[0] : A(0));
    z[s] = zz;
    if (kind != 0) {
      const A y = target[s];
      A l = A(0);
      if (!ignored(y)) l = kind == 1 ? softplus(zz) - y * zz : (zz - y) * (zz - y);
      loss[s] = l;
    }
  }
}

template <typename A>
__global__ void loss_reduce_kernel(const A* loss, const A* target, int64_t S, int reduction, A* out) {
  __shared__ A sh[kThreads];
  __shared__ unsigned long long shc[kThreads];
  A sum = A(0);
  unsigned long long cnt = 0;  // integer count: a float one is exact only up to 2^24 steps
  for (int64_t s = threadIdx.x; s < S; s += kThreads) {
    sum += loss[s];
    cnt += ignored(target[s]) ? 0 : 1;
  }
  sum = block_sum(sum, sh);
  cnt = block_sum(cnt, shc);
  if (threadIdx.x == 0) out[0] = reduction == 1 ? (cnt > 0 ? sum / static_cast<A>(cnt) : A(0)) : sum;
}

template <typename A>
__global__ void grad_z_kernel(const A* grad_out, const A* z, const A* target, int64_t S, int kind, int reduction,
                              A* gz, A* gb) {
  __shared__ A sh[kThreads];
  A scale = A(1);
  if (kind != 0 && reduction == 1) {
    __shared__ unsigned long long shc[kThreads];
    unsigned long long cnt = 0;  // integer count, as in loss_reduce_kernel
    for (int64_t s = threadIdx.x; s < S; s += kThreads) cnt += ignored(target[s]) ? 0 : 1;
    cnt = block_sum(cnt, shc);
    scale = cnt > 0 ? A(1) / static_cast<A>(cnt) : A(0);
  }
  A part = A(0);
  for (int64_t s = threadIdx.x; s < S; s += kThreads) {
    A g;
    if (kind == 0) {
      g = grad_out[s];
    } else {
      const A y = target[s];
      const A go = (reduction == 0 ? grad_out[s] : grad_out[0]) * scale;
      g = ignored(y) ? A(0) : (kind == 1 ? go * (sigmoid(z[s]) - y) : go * A(2) * (z[s] - y));
    }
    gz[s] = g;
    part += g;
  }
  part = block_sum(part, sh);
  if (threadIdx.x == 0) gb[0] = part;
}

// One thread per hidden column, steps in order: deterministic, repeated rows need no atomics.
template <typename T>
__global__ void head_bwd_kernel(const T* __restrict__ hidden, const int64_t* __restrict__ index,
                                const T* __restrict__ w, const T* __restrict__ w_neg,
                                const typename Acc<T>::type* __restrict__ gz, T* grad_hidden, T* grad_w, int64_t S,
                                int64_t H) {
  using A = typename Acc<T>::type;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= H) return;
  A wd = to_acc(w[j]);
  if (w_neg != nullptr) wd -= to_acc(w_neg[j]);
  A gw = A(0);
  for (int64_t s = 0; s < S; ++s) {
    const A g = gz[s];
    if (g == A(0)) continue;
    const int64_t off = index[s] * H + j;
    gw += g * to_acc(hidden[off]);
    if (grad_hidden != nullptr) grad_hidden[off] = from_acc<T>(to_acc(grad_hidden[off]) + g * wd);
  }
  grad_w[j] = from_acc<T>(gw);
}

// ------------------------------------------------------------------------------------------- pairs

template <typename A>
__global__ void pair_fwd_kernel(const A* r, const int64_t* pos, const int64_t* neg, A* per, int64_t P) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p < P) per[p] = softplus(r[neg[p]] - r[pos[p]]);
}

template <typename A>
__global__ void weighted_sum_kernel(const A* per, const A* weight, int64_t P, A* out) {
  __shared__ A sh[kThreads];
  A part = A(0);
  for (int64_t p = threadIdx.x; p < P; p += kThreads) part += weight != nullptr ? weight[p] * per[p] : per[p];
  part = block_sum(part, sh);
  if (threadIdx.x == 0) out[0] = part;
}

template <typename A>
__global__ void pair_bwd_kernel(const A* grad, const A* r, const int64_t* pos, const int64_t* neg, const A* weight,
                                A* grad_r, int64_t P, bool reduce) {
  // single thread, pairs in order: deterministic scatter (pairs per batch are few)
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  for (int64_t p = 0; p < P; ++p) {
    const A g = reduce ? grad[0] * (weight != nullptr ? weight[p] : A(1)) : grad[p];
    const A d = g * sigmoid(r[neg[p]] - r[pos[p]]);
    grad_r[pos[p]] -= d;
    grad_r[neg[p]] += d;
  }
}

// ------------------------------------------------------------------------------------------- segments
// One thread per sequence (step lists are short).

template <typename T>
__global__ void seg_fwd_kernel(const T* v, const int64_t* offsets, int64_t B, int op, typename Acc<T>::type empty,
                               typename Acc<T>::type* out) {
  using A = typename Acc<T>::type;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const int64_t s0 = offsets[b], n = offsets[b + 1] - s0;
  if (n == 0) {
    out[b] = op == 2 ? log(empty) : empty;
    return;
  }
  const T* x = v + s0;
  A r = to_acc(x[0]);
  if (op == 0 || op == 5) {
    for (int64_t i = 1; i < n; ++i) {
      const A y = to_acc(x[i]);
      r = op == 0 ? (y < r ? y : r) : (y > r ? y : r);
    }
  } else if (op == 1 || op == 2) {
    r = A(0);
    for (int64_t i = 0; i < n; ++i) r += log(to_acc(x[i]));
    if (op == 1) r = exp(r);
  } else if (op == 3) {
    r = to_acc(x[n - 1]);
  } else {
    for (int64_t i = 1; i < n; ++i) r += to_acc(x[i]);
    if (op == 4) r /= static_cast<A>(n);
  }
  out[b] = r;
}

template <typename T>
__global__ void seg_bwd_kernel(const typename Acc<T>::type* grad, const T* v, const int64_t* offsets, int64_t B,
                               int op, T* gv) {
  using A = typename Acc<T>::type;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const int64_t s0 = offsets[b], n = offsets[b + 1] - s0;
  if (n == 0) return;
  const T* x = v + s0;
  T* g = gv + s0;
  const A go = grad[b];
  if (op == 0 || op == 5) {
    int64_t k = 0;
    for (int64_t i = 1; i < n; ++i) {
      const A y = to_acc(x[i]), c = to_acc(x[k]);
      if (op == 0 ? y < c : y > c) k = i;
    }
    g[k] = from_acc<T>(go);
  } else if (op == 3) {
    g[n - 1] = from_acc<T>(go);
  } else if (op == 4 || op == 6) {
    const A d = op == 4 ? go / static_cast<A>(n) : go;
    for (int64_t i = 0; i < n; ++i) g[i] = from_acc<T>(d);
  } else if (op == 2) {
    for (int64_t i = 0; i < n; ++i) g[i] = from_acc<T>(go / to_acc(x[i]));
  } else {
    int64_t zeros = 0;
    A ls = A(0);
    for (int64_t i = 0; i < n; ++i) {
      const A y = to_acc(x[i]);
      if (y == A(0)) ++zeros; else ls += log(y);
    }
    for (int64_t i = 0; i < n; ++i) {
      const A y = to_acc(x[i]);
      A d = A(0);
      if (zeros == 0) d = exp(ls - log(y));
      else if (zeros == 1 && y == A(0)) d = exp(ls);
      g[i] = from_acc<T>(go * d);
    }
  }
}

template <typename T>
__global__ void first_below_kernel(const T* v, const int64_t* offsets, int64_t B, typename Acc<T>::type thr,
                                   int64_t* out) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const int64_t s0 = offsets[b], s1 = offsets[b + 1];
  int64_t k = -1;
  for (int64_t i = s0; i < s1; ++i)
    if (to_acc(v[i]) < thr) {
      k = i - s0;
      break;
    }
  out[b] = k;
}

template <typename T>
__global__ void refine_kernel(const T* rw, const int64_t* offsets, int64_t B, bool clip, typename Acc<T>::type eta,
                              bool delta, typename Acc<T>::type gamma, typename Acc<T>::type* refined,
                              typename Acc<T>::type* returns) {
  using A = typename Acc<T>::type;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const int64_t s0 = offsets[b], s1 = offsets[b + 1];
  A next = A(0), running = A(0);
  for (int64_t i = s1 - 1; i >= s0; --i) {
    A r = to_acc(rw[i]);
    if (clip) r = (r - eta) < A(0) ? (r - eta) : A(0);
    const A rt = (delta && i < s1 - 1) ? r - next : r;
    next = r;
    running = rt + gamma * running;
    refined[i] = rt;
    returns[i] = running;
  }
}

int blocks_for(int64_t n, int threads) { return static_cast<int>((n + threads - 1) / threads); }

// Calls f with a typed null pointer selecting the input dtype / the accumulation dtype.
template <typename F>
cudaError_t dispatch(DType dt, F&& f) {
  return with_element_type(dt, [&](auto* tag) {
    f(tag);
    return cudaGetLastError();
  });
}
template <typename F>
cudaError_t dispatch_acc(DType acc, F&& f) {
  switch (acc) {
    case DType::kFloat32: f(static_cast<float*>(nullptr)); break;
    case DType::kFloat64: f(static_cast<double*>(nullptr)); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t step_head_forward(DType dt, const void* hidden, const int64_t* index, const void* w, const void* w_neg,
                              const void* bias, const void* target, void* z, void* loss, int64_t S, int64_t H,
                              int kind, cudaStream_t stream) {
  if (S == 0) return cudaSuccess;
  return dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using A = typename Acc<T>::type;
    head_fwd_kernel<T><<<static_cast<unsigned>(S), kThreads, 0, stream>>>(
        static_cast<const T*>(hidden), index, static_cast<const T*>(w), static_cast<const T*>(w_neg),
        static_cast<const A*>(bias), static_cast<const A*>(target), static_cast<A*>(z), static_cast<A*>(loss), H,
        kind);
  });
}

cudaError_t step_loss_reduce(DType acc, const void* loss, const void* target, int64_t S, int reduction, void* out,
                             cudaStream_t stream) {
  return dispatch_acc(acc, [&](auto* tag) {
    using A = std::remove_pointer_t<decltype(tag)>;
    loss_reduce_kernel<A><<<1, kThreads, 0, stream>>>(static_cast<const A*>(loss), static_cast<const A*>(target), S,
                                                       reduction, static_cast<A*>(out));
  });
}

cudaError_t step_head_grad_z(DType acc, const void* grad_out, const void* z, const void* target, int64_t S,
                             int kind, int reduction, void* gz, void* gb, cudaStream_t stream) {
  return dispatch_acc(acc, [&](auto* tag) {
    using A = std::remove_pointer_t<decltype(tag)>;
    grad_z_kernel<A><<<1, kThreads, 0, stream>>>(static_cast<const A*>(grad_out), static_cast<const A*>(z),
                                                  static_cast<const A*>(target), S, kind, reduction,
                                                  static_cast<A*>(gz), static_cast<A*>(gb));
  });
}

cudaError_t step_head_backward(DType dt, const void* hidden, const int64_t* index, const void* w, const void* w_neg,
                               const void* gz, void* grad_hidden, void* grad_w, int64_t S, int64_t H,
                               cudaStream_t stream) {
  if (H == 0) return cudaSuccess;
  return dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using A = typename Acc<T>::type;
    head_bwd_kernel<T><<<blocks_for(H, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(hidden), index, static_cast<const T*>(w), static_cast<const T*>(w_neg),
        static_cast<const A*>(gz), static_cast<T*>(grad_hidden), static_cast<T*>(grad_w), S, H);
  });
}

cudaError_t step_pair_forward(DType acc, const void* r, const int64_t* pos, const int64_t* neg, const void* weight,
                              void* per, void* out, int64_t P, bool reduce, cudaStream_t stream) {
  return dispatch_acc(acc, [&](auto* tag) {
    using A = std::remove_pointer_t<decltype(tag)>;
    if (P > 0)
      pair_fwd_kernel<A><<<blocks_for(P, kThreads), kThreads, 0, stream>>>(static_cast<const A*>(r), pos, neg,
                                                                          static_cast<A*>(per), P);
    if (reduce)
      weighted_sum_kernel<A><<<1, kThreads, 0, stream>>>(static_cast<const A*>(per), static_cast<const A*>(weight),
                                                          P, static_cast<A*>(out));
  });
}

cudaError_t step_pair_backward(DType acc, const void* grad, const void* r, const int64_t* pos, const int64_t* neg,
                               const void* weight, void* grad_r, int64_t P, bool reduce, cudaStream_t stream) {
  if (P == 0) return cudaSuccess;
  return dispatch_acc(acc, [&](auto* tag) {
    using A = std::remove_pointer_t<decltype(tag)>;
    pair_bwd_kernel<A><<<1, 1, 0, stream>>>(static_cast<const A*>(grad), static_cast<const A*>(r), pos, neg,
                                             static_cast<const A*>(weight), static_cast<A*>(grad_r), P, reduce);
  });
}

cudaError_t step_segment_forward(DType dt, const void* values, const int64_t* offsets, int64_t B, int op,
                                 double empty_value, void* out, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  return dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using A = typename Acc<T>::type;
    seg_fwd_kernel<T><<<blocks_for(B, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(values), offsets, B, op, static_cast<A>(empty_value), static_cast<A*>(out));
  });
}

cudaError_t step_segment_backward(DType dt, const void* grad, const void* values, const int64_t* offsets, int64_t B,
                                  int op, void* grad_values, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  return dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using A = typename Acc<T>::type;
    seg_bwd_kernel<T><<<blocks_for(B, kThreads), kThreads, 0, stream>>>(
        static_cast<const A*>(grad), static_cast<const T*>(values), offsets, B, op, static_cast<T*>(grad_values));
  });
}

cudaError_t step_first_below(DType dt, const void* values, const int64_t* offsets, int64_t B, double threshold,
                             int64_t* out, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  return dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using A = typename Acc<T>::type;
    first_below_kernel<T><<<blocks_for(B, kThreads), kThreads, 0, stream>>>(static_cast<const T*>(values), offsets,
                                                                           B, static_cast<A>(threshold), out);
  });
}

cudaError_t step_refine(DType dt, const void* rewards, const int64_t* offsets, int64_t B, bool clip, double eta,
                        bool delta, double gamma, void* refined, void* returns, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  return dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using A = typename Acc<T>::type;
    refine_kernel<T><<<blocks_for(B, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(rewards), offsets, B, clip, static_cast<A>(eta), delta, static_cast<A>(gamma),
        static_cast<A*>(refined), static_cast<A*>(returns));
  });
}

// ------------------------------------------------------------------------------------------------
// CUDA registration: checks, device guard, outputs from the caching allocator, launch on the
// current stream.
// ------------------------------------------------------------------------------------------------
namespace {

std::tuple<at::Tensor, at::Tensor> step_head_cuda(const at::Tensor& hidden_, const at::Tensor& index_,
                                                  const at::Tensor& w_, const std::optional<at::Tensor>& w_neg_,
                                                  const std::optional<at::Tensor>& bias_,
                                                  const std::optional<at::Tensor>& target_, int64_t kind,
                                                  int64_t reduction) {
  const char* op_name = "step_head";
  TORCH_CHECK(hidden_.dim() == 2 && index_.dim() == 1 && index_.scalar_type() == at::kLong, "step_head: bad shapes");
  TORCH_CHECK(kind >= 0 && kind <= 2, "step_head: unknown kind ", kind);
  c10::cuda::CUDAGuard guard(hidden_.device());
  check_on_device(op_name, "index", index_, hidden_);
  check_on_device(op_name, "w", w_, hidden_);
  auto hidden = hidden_.contiguous(), index = index_.contiguous(), w = w_.contiguous();
  std::optional<at::Tensor> w_neg, bias, target;
  if (w_neg_.has_value()) w_neg = w_neg_->contiguous();
  if (bias_.has_value()) bias = bias_->contiguous();
  if (kind != 0) {
    TORCH_CHECK(target_.has_value(), "step_head: a loss kind needs `target`");
    target = target_->contiguous();
  }
  const int64_t S = index.size(0), H = hidden.size(1);
  const auto acc = acc_type(hidden.scalar_type());
  auto z = at::empty({S}, hidden.options().dtype(acc));
  auto per = at::empty({kind != 0 ? S : 0}, z.options());
  const DType dt = dtype_of(hidden.scalar_type(), op_name), acc_dt = acc_dtype_of(hidden.scalar_type(), op_name);
  check_launch(step_head_forward(dt, hidden.const_data_ptr(), index.const_data_ptr<int64_t>(), w.const_data_ptr(),
                                 data_or_null(w_neg), data_or_null(bias), data_or_null(target), z.mutable_data_ptr(),
                                 kind != 0 ? per.mutable_data_ptr() : nullptr, S, H, static_cast<int>(kind),
                                 current_stream()),
               op_name);
  if (kind == 0) return {z.clone(), z};
  if (reduction == 0) return {per, z};
  auto out = at::empty({}, z.options());
  check_launch(step_loss_reduce(acc_dt, per.const_data_ptr(), target->const_data_ptr(), S, static_cast<int>(reduction),
                                out.mutable_data_ptr(), current_stream()),
               op_name);
  return {out, z};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> step_head_backward_cuda(
    const at::Tensor& grad_out_, const at::Tensor& hidden_, const at::Tensor& index_, const at::Tensor& w_,
    const std::optional<at::Tensor>& w_neg_, const at::Tensor& z_, const std::optional<at::Tensor>& target_,
    int64_t kind, int64_t reduction, bool need_grad_hidden) {
  const char* op_name = "step_head_backward";
  c10::cuda::CUDAGuard guard(hidden_.device());
  auto hidden = hidden_.contiguous(), index = index_.contiguous(), w = w_.contiguous(), z = z_.contiguous();
  const auto acc = acc_type(hidden.scalar_type());
  auto grad_out = grad_out_.to(acc).contiguous();
  std::optional<at::Tensor> w_neg, target;
  if (w_neg_.has_value()) w_neg = w_neg_->contiguous();
  if (kind != 0) {
    TORCH_CHECK(target_.has_value(), "step_head_backward: a loss kind needs `target`");
    target = target_->contiguous();
  }
  const int64_t N = hidden.size(0), H = hidden.size(1), S = index.size(0);
  auto gz = at::empty({S}, z.options());
  auto gb = at::empty({}, z.options());
  const DType dt = dtype_of(hidden.scalar_type(), op_name), acc_dt = acc_dtype_of(hidden.scalar_type(), op_name);
  check_launch(step_head_grad_z(acc_dt, grad_out.const_data_ptr(), z.const_data_ptr(), data_or_null(target), S,
                                static_cast<int>(kind), static_cast<int>(reduction), gz.mutable_data_ptr(),
                                gb.mutable_data_ptr(), current_stream()),
               op_name);
  auto grad_hidden = need_grad_hidden ? at::zeros({N, H}, hidden.options()) : at::empty({0}, hidden.options());
  auto grad_w = at::empty({H}, w.options());
  check_launch(step_head_backward(dt, hidden.const_data_ptr(), index.const_data_ptr<int64_t>(), w.const_data_ptr(),
                                  data_or_null(w_neg), gz.const_data_ptr(),
                                  need_grad_hidden ? grad_hidden.mutable_data_ptr() : nullptr,
                                  grad_w.mutable_data_ptr(), S, H, current_stream()),
               op_name);
  return {grad_hidden, grad_w, gb};
}

at::Tensor step_pair_loss_cuda(const at::Tensor& r_, const at::Tensor& pos_, const at::Tensor& neg_,
                               const std::optional<at::Tensor>& weight_, bool reduce) {
  const char* op_name = "step_pair_loss";
  TORCH_CHECK(r_.scalar_type() == at::kFloat || r_.scalar_type() == at::kDouble, "step_pair_loss: `r` must be fp32/fp64");
  c10::cuda::CUDAGuard guard(r_.device());
  check_on_device(op_name, "pos", pos_, r_);
  check_on_device(op_name, "neg", neg_, r_);
  if (weight_.has_value()) check_on_device(op_name, "weight", *weight_, r_);
  auto r = r_.contiguous(), pos = pos_.contiguous(), neg = neg_.contiguous();
  std::optional<at::Tensor> weight;
  if (weight_.has_value()) weight = weight_->contiguous();
  const int64_t P = pos.size(0);
  auto per = at::empty({P}, r.options());
  auto out = at::empty({}, r.options());
  check_launch(step_pair_forward(acc_dtype_of(r.scalar_type(), op_name), r.const_data_ptr(),
                                 pos.const_data_ptr<int64_t>(), neg.const_data_ptr<int64_t>(), data_or_null(weight),
                                 per.mutable_data_ptr(), out.mutable_data_ptr(), P, reduce, current_stream()),
               op_name);
  return reduce ? out : per;
}

at::Tensor step_pair_loss_backward_cuda(const at::Tensor& grad_, const at::Tensor& r_, const at::Tensor& pos_,
                                        const at::Tensor& neg_, const std::optional<at::Tensor>& weight_,
                                        bool reduce) {
  const char* op_name = "step_pair_loss_backward";
  c10::cuda::CUDAGuard guard(r_.device());
  check_on_device(op_name, "grad", grad_, r_);
  check_on_device(op_name, "pos", pos_, r_);
  check_on_device(op_name, "neg", neg_, r_);
  if (weight_.has_value()) check_on_device(op_name, "weight", *weight_, r_);
  auto r = r_.contiguous(), pos = pos_.contiguous(), neg = neg_.contiguous();
  auto grad = grad_.to(r.scalar_type()).contiguous();
  std::optional<at::Tensor> weight;
  if (weight_.has_value()) weight = weight_->contiguous();
  auto grad_r = at::zeros_like(r);
  check_launch(step_pair_backward(acc_dtype_of(r.scalar_type(), op_name), grad.const_data_ptr(), r.const_data_ptr(),
                                  pos.const_data_ptr<int64_t>(), neg.const_data_ptr<int64_t>(), data_or_null(weight),
                                  grad_r.mutable_data_ptr(), pos.size(0), reduce, current_stream()),
               op_name);
  return grad_r;
}

at::Tensor step_segment_reduce_cuda(const at::Tensor& values_, const at::Tensor& offsets_, int64_t op,
                                    double empty_value) {
  const char* op_name = "step_segment_reduce";
  TORCH_CHECK(op >= 0 && op <= 6, "step_segment_reduce: unknown op ", op);
  c10::cuda::CUDAGuard guard(values_.device());
  check_on_device(op_name, "offsets", offsets_, values_);
  auto values = values_.contiguous(), offsets = offsets_.contiguous();
  const int64_t B = offsets.size(0) - 1;
  auto out = at::empty({B}, values.options().dtype(acc_type(values.scalar_type())));
  check_launch(step_segment_forward(dtype_of(values.scalar_type(), op_name), values.const_data_ptr(),
                                    offsets.const_data_ptr<int64_t>(), B, static_cast<int>(op), empty_value,
                                    out.mutable_data_ptr(), current_stream()),
               op_name);
  return out;
}

at::Tensor step_segment_reduce_backward_cuda(const at::Tensor& grad_, const at::Tensor& values_,
                                             const at::Tensor& offsets_, int64_t op) {
  const char* op_name = "step_segment_reduce_backward";
  c10::cuda::CUDAGuard guard(values_.device());
  auto values = values_.contiguous(), offsets = offsets_.contiguous();
  auto grad = grad_.to(acc_type(values.scalar_type())).contiguous();
  auto grad_values = at::zeros_like(values);
  check_launch(step_segment_backward(dtype_of(values.scalar_type(), op_name), grad.const_data_ptr(),
                                     values.const_data_ptr(), offsets.const_data_ptr<int64_t>(), offsets.size(0) - 1,
                                     static_cast<int>(op), grad_values.mutable_data_ptr(), current_stream()),
               op_name);
  return grad_values;
}

at::Tensor step_first_below_cuda(const at::Tensor& values_, const at::Tensor& offsets_, double threshold) {
  const char* op_name = "step_first_below";
  c10::cuda::CUDAGuard guard(values_.device());
  check_on_device(op_name, "offsets", offsets_, values_);
  auto values = values_.contiguous(), offsets = offsets_.contiguous();
  const int64_t B = offsets.size(0) - 1;
  auto out = at::empty({B}, offsets.options());
  check_launch(step_first_below(dtype_of(values.scalar_type(), op_name), values.const_data_ptr(),
                                offsets.const_data_ptr<int64_t>(), B, threshold, out.mutable_data_ptr<int64_t>(),
                                current_stream()),
               op_name);
  return out;
}

std::tuple<at::Tensor, at::Tensor> step_refine_cuda(const at::Tensor& rewards_, const at::Tensor& offsets_, bool clip,
                                                    double eta, bool delta, double gamma) {
  const char* op_name = "step_refine";
  c10::cuda::CUDAGuard guard(rewards_.device());
  check_on_device(op_name, "offsets", offsets_, rewards_);
  auto rewards = rewards_.contiguous(), offsets = offsets_.contiguous();
  const auto acc = acc_type(rewards.scalar_type());
  auto refined = at::empty(rewards.sizes(), rewards.options().dtype(acc));
  auto returns = at::empty(rewards.sizes(), rewards.options().dtype(acc));
  check_launch(step_refine(dtype_of(rewards.scalar_type(), op_name), rewards.const_data_ptr(),
                           offsets.const_data_ptr<int64_t>(), offsets.size(0) - 1, clip, eta, delta, gamma,
                           refined.mutable_data_ptr(), returns.mutable_data_ptr(), current_stream()),
               op_name);
  return {refined, returns};
}

}  // namespace
}  // namespace cuda
}  // namespace mmreward

TORCH_LIBRARY_IMPL(mmreward, CUDA, m) {
  m.impl("step_head", &mmreward::cuda::step_head_cuda);
  m.impl("step_head_backward", &mmreward::cuda::step_head_backward_cuda);
  m.impl("step_pair_loss", &mmreward::cuda::step_pair_loss_cuda);
  m.impl("step_pair_loss_backward", &mmreward::cuda::step_pair_loss_backward_cuda);
  m.impl("step_segment_reduce", &mmreward::cuda::step_segment_reduce_cuda);
  m.impl("step_segment_reduce_backward", &mmreward::cuda::step_segment_reduce_backward_cuda);
  m.impl("step_first_below", &mmreward::cuda::step_first_below_cuda);
  m.impl("step_refine", &mmreward::cuda::step_refine_cuda);
}
