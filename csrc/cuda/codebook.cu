// VQ-codebook ops: CUDA kernels (see codebook.cuh). Two schedules:
//  * codes contiguous (sK == 1): one warp per token, lanes stride over K (coalesced), warp-merged
//    online-softmax statistics;
//  * otherwise (e.g. VQ-Diffusion's [B, K, L]): one thread per token walking K, consecutive threads
//    on consecutive tokens (coalesced when sL == 1).
// Backward kernels are elementwise over (token, code), ordered so the contiguous dim is fastest.
// fp32 accumulation for fp32 / fp16 / bf16, fp64 for fp64.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "codebook.cuh"
#include "mmreward/math.h"

namespace mmreward {
namespace codebook_cuda {
namespace {

template <typename T>
struct AccT {
  using type = float;
};
template <>
struct AccT<double> {
  using type = double;
};

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

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

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }

template <typename A>
__device__ __forceinline__ A neg_inf() {
  return -static_cast<A>(INFINITY);
}

// Running (m, s, t): s = sum exp(z - m), t = sum exp(z - m) (z - m).
template <typename A>
struct St {
  A m, s, t;
};

template <typename A>
__device__ __forceinline__ void st_push(St<A>& a, A x) {
  if (x == neg_inf<A>()) return;  // zero-probability code
  if (x > a.m) {
    if (a.m == neg_inf<A>()) {
      // s, t are 0 here unless a NaN code came first (NaN > -inf is false, so it took the else
      // branch and made them NaN): add instead of resetting, so the NaN propagates
      a.m = x;
      a.s += A(1);
      return;
    }
    const A d = x - a.m, sc = exp_(-d);
    a.t = sc * (a.t - d * a.s);
    a.s = sc * a.s + A(1);
    a.m = x;
  } else {
    A d = x - a.m;
    d = d < A(-1000) ? A(-1000) : d;  // NaN stays NaN
    const A e = exp_(d);
    a.s += e;
    a.t += e * d;
  }
}

template <typename A>
__device__ __forceinline__ St<A> st_merge(St<A> a, St<A> b) {
  if (b.m == neg_inf<A>() && !(b.s != b.s)) return a;
  if (a.m == neg_inf<A>() && !(a.s != a.s)) return b;
  const A M = a.m > b.m ? a.m : b.m;
  const A da = a.m - M, db = b.m - M;
  const A ea = exp_(da), eb = exp_(db);
  return {M, ea * a.s + eb * b.s, ea * (a.t + da * a.s) + eb * (b.t + db * b.s)};
}

template <typename A>
__device__ __forceinline__ void emit_stats(St<A> st, int64_t o, const int64_t* target, A zy_valid_z, bool bad_y,
                                           A* o1, A* o2, A* o3) {
  A s = st.s, t = st.t;
  if (st.m == neg_inf<A>()) s = t = static_cast<A>(NAN);  // all -inf
  const A ls = log_(s), tm = t / s;
  if (target) {
    const A lse = st.m + ls;
    o1[o] = bad_y ? static_cast<A>(NAN) : lse - zy_valid_z;
    o2[o] = lse;
  } else {
    o1[o] = ls - tm;
    o2[o] = st.m + ls;
    o3[o] = st.m + tm;
  }
}

template <typename T, typename A>
__global__ void stats_warp_kernel(const T* __restrict__ x, int64_t sB, int64_t sL, int64_t B, int64_t L, int64_t K,
                                  const int64_t* __restrict__ target, const bool* __restrict__ mask, A* o1, A* o2,
                                  A* o3) {
  const int lane = threadIdx.x & 31;
  const int64_t tok = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (tok >= B * L) return;
  const int64_t b = tok / L, l = tok - b * L;
  if (mask && !mask[tok]) {
    if (lane == 0) {
      o1[tok] = 0;
      o2[tok] = 0;
      if (o3) o3[tok] = 0;
    }
    return;
  }
  const T* xt = x + b * sB + l * sL;
  St<A> st{neg_inf<A>(), 0, 0};
  for (int64_t k = lane; k < K; k += 32) st_push(st, to_acc(xt[k]));
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    St<A> o{__shfl_xor_sync(0xffffffffu, st.m, off), __shfl_xor_sync(0xffffffffu, st.s, off),
            __shfl_xor_sync(0xffffffffu, st.t, off)};
    st = st_merge(st, o);
  }
  if (lane == 0) {
    A zy = 0;
    bool bad = false;
    if (target) {
      const int64_t y = target[tok];
      bad = y < 0 || y >= K;
      if (!bad) zy = to_acc(xt[y]);
    }
    emit_stats(st, tok, target, zy, bad, o1, o2, o3);
  }
}

template <typename T, typename A>
__global__ void stats_thread_kernel(const T* __restrict__ x, int64_t sB, int64_t sL, int64_t sK, int64_t B, int64_t L,
                                    int64_t K, const int64_t* __restrict__ target, const bool* __restrict__ mask, A* o1,
                                    A* o2, A* o3) {
  const int64_t tok = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tok >= B * L) return;
  const int64_t b = tok / L, l = tok - b * L;
  if (mask && !mask[tok]) {
    o1[tok] = 0;
    o2[tok] = 0;
    if (o3) o3[tok] = 0;
    return;
  }
  const T* xt = x + b * sB + l * sL;
  St<A> st{neg_inf<A>(), 0, 0};
  for (int64_t k = 0; k < K; ++k) st_push(st, to_acc(xt[k * sK]));
  A zy = 0;
  bool bad = false;
  if (target) {
    const int64_t y = target[tok];
    bad = y < 0 || y >= K;
    if (!bad) zy = to_acc(xt[y * sK]);
  }
  emit_stats(st, tok, target, zy, bad, o1, o2, o3);
}

// Elementwise index -> (token, k) with the contiguous dim fastest.
struct Idx {
  int64_t tok, b, l, k;
};
__device__ __forceinline__ Idx decode(int64_t i, bool k_fast, int64_t L, int64_t K) {
  Idx r;
  if (k_fast) {  // i = (b * L + l) * K + k
    r.tok = i / K;
    r.k = i - r.tok * K;
    r.b = r.tok / L;
    r.l = r.tok - r.b * L;
  } else {  // i = (b * K + k) * L + l
    const int64_t bk = i / L;
    r.l = i - bk * L;
    r.b = bk / K;
    r.k = bk - r.b * K;
    r.tok = r.b * L + r.l;
  }
  return r;
}

template <typename T, typename A>
__global__ void softmax_bwd_kernel(const T* __restrict__ x, int64_t sB, int64_t sL, int64_t sK, T* __restrict__ y,
                                   int64_t oB, int64_t oL, int64_t oK, int64_t B, int64_t L, int64_t K, bool k_fast,
                                   const A* __restrict__ grad, const A* __restrict__ lse, const A* __restrict__ mu,
                                   const int64_t* __restrict__ target, const bool* __restrict__ mask) {
  const int64_t n = B * L * K;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Idx r = decode(i, k_fast, L, K);
    A v = 0;
    if (!(mask && !mask[r.tok])) {
      const A g = grad[r.tok];
      const A z = to_acc(x[r.b * sB + r.l * sL + r.k * sK]);
      const A p = exp_(z - lse[r.tok]);
      if (target) {
        v = g * (p - (r.k == target[r.tok] ? A(1) : A(0)));
      } else {
        v = g * p * (mu[r.tok] - z);
      }
      if (g == A(0)) v = 0;
    }
    y[r.b * oB + r.l * oL + r.k * oK] = from_acc<T>(v);
  }
}

template <typename A>
__device__ __forceinline__ A pair_term(bool is_kl, A a, A b) {
  return is_kl ? exp_(a) * (a - b) : exp_(a) * b;
}

template <typename T, typename A>
__global__ void pair_warp_kernel(bool is_kl, const T* __restrict__ a, int64_t aB, int64_t aL, const T* __restrict__ b,
                                 int64_t bB, int64_t bL, int64_t B, int64_t L, int64_t K, const bool* __restrict__ mask,
                                 A* out) {
  const int lane = threadIdx.x & 31;
  const int64_t tok = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (tok >= B * L) return;
  const int64_t bi = tok / L, l = tok - bi * L;
  if (mask && !mask[tok]) {
    if (lane == 0) out[tok] = 0;
    return;
  }
  const T* at = a + bi * aB + l * aL;
  const T* bt = b + bi * bB + l * bL;
  A acc = 0;
  for (int64_t k = lane; k < K; k += 32) acc += pair_term<A>(is_kl, to_acc(at[k]), to_acc(bt[k]));
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) out[tok] = acc;
}

template <typename T, typename A>
__global__ void pair_thread_kernel(bool is_kl, const T* __restrict__ a, int64_t aB, int64_t aL, int64_t aK,
                                   const T* __restrict__ b, int64_t bB, int64_t bL, int64_t bK, int64_t B, int64_t L,
                                   int64_t K, const bool* __restrict__ mask, A* out) {
  const int64_t tok = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tok >= B * L) return;
  const int64_t bi = tok / L, l = tok - bi * L;
  if (mask && !mask[tok]) {
    out[tok] = 0;
    return;
  }
  const T* at = a + bi * aB + l * aL;
  const T* bt = b + bi * bB + l * bL;
  A acc = 0;
  for (int64_t k = 0; k < K; ++k) acc += pair_term<A>(is_kl, to_acc(at[k * aK]), to_acc(bt[k * bK]));
  out[tok] = acc;
}

template <typename T, typename A>
__global__ void pair_bwd_kernel(bool is_kl, const T* __restrict__ a, Strided as, const T* __restrict__ b, Strided bs,
                                T* __restrict__ ga, StridedOut gas, T* __restrict__ gb, StridedOut gbs, int64_t B,
                                int64_t L, int64_t K, bool k_fast, const A* __restrict__ grad,
                                const bool* __restrict__ mask) {
  const int64_t n = B * L * K;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Idx r = decode(i, k_fast, L, K);
    A da = 0, db = 0;
    const A g = (mask && !mask[r.tok]) ? A(0) : grad[r.tok];
    if (g != A(0)) {
      const A av = to_acc(a[r.b * as.sB + r.l * as.sL + r.k * as.sK]);
      const A bv = to_acc(b[r.b * bs.sB + r.l * bs.sL + r.k * bs.sK]);
      const A e = g * exp_(av);
      if (is_kl) {
        da = e * (av - bv + A(1));
        db = -e;
      } else {
        da = e * bv;
        db = e;
      }
    }
    ga[r.b * gas.sB + r.l * gas.sL + r.k * gas.sK] = from_acc<T>(da);
    gb[r.b * gbs.sB + r.l * gbs.sL + r.k * gbs.sK] = from_acc<T>(db);
  }
}

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n, int64_t per_block) {
  int64_t b = (n + per_block - 1) / per_block;
  if (b < 1) b = 1;
  const int64_t cap = int64_t(1) << 20;  // grid-stride loops beyond this
  return static_cast<unsigned>(b < cap ? b : cap);
}

template <typename T>
cudaError_t stats_t(Strided x, int64_t B, int64_t L, int64_t K, const int64_t* target, const bool* mask, void* o1,
                    void* o2, void* o3, cudaStream_t s) {
  using A = typename AccT<T>::type;
  const int64_t N = B * L;
  if (N == 0) return cudaSuccess;
  const T* xp = static_cast<const T*>(x.p);
  if (x.sK == 1) {
    const int64_t blocks = (N * 32 + kThreads - 1) / kThreads;
    stats_warp_kernel<T, A><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
        xp, x.sB, x.sL, B, L, K, target, mask, static_cast<A*>(o1), static_cast<A*>(o2), static_cast<A*>(o3));
  } else {
    const int64_t blocks = (N + kThreads - 1) / kThreads;
    stats_thread_kernel<T, A><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
        xp, x.sB, x.sL, x.sK, B, L, K, target, mask, static_cast<A*>(o1), static_cast<A*>(o2), static_cast<A*>(o3));
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t softmax_bwd_t(Strided x, StridedOut y, int64_t B, int64_t L, int64_t K, const void* grad, const void* lse,
                          const void* mu, const int64_t* target, const bool* mask, cudaStream_t s) {
  using A = typename AccT<T>::type;
  const int64_t n = B * L * K;
  if (n == 0) return cudaSuccess;
  const bool k_fast = !(x.sL == 1 && x.sK != 1);
  softmax_bwd_kernel<T, A><<<blocks_for(n, kThreads), kThreads, 0, s>>>(
      static_cast<const T*>(x.p), x.sB, x.sL, x.sK, static_cast<T*>(y.p), y.sB, y.sL, y.sK, B, L, K, k_fast,
      static_cast<const A*>(grad), static_cast<const A*>(lse), static_cast<const A*>(mu), target, mask);
  return cudaGetLastError();
}

template <typename T>
cudaError_t pair_fwd_t(bool is_kl, Strided a, Strided b, int64_t B, int64_t L, int64_t K, const bool* mask, void* out,
                       cudaStream_t s) {
  using A = typename AccT<T>::type;
  const int64_t N = B * L;
  if (N == 0) return cudaSuccess;
  if (a.sK == 1 && b.sK == 1) {
    const int64_t blocks = (N * 32 + kThreads - 1) / kThreads;
    pair_warp_kernel<T, A><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
        is_kl, static_cast<const T*>(a.p), a.sB, a.sL, static_cast<const T*>(b.p), b.sB, b.sL, B, L, K, mask,
        static_cast<A*>(out));
  } else {
    const int64_t blocks = (N + kThreads - 1) / kThreads;
    pair_thread_kernel<T, A><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
        is_kl, static_cast<const T*>(a.p), a.sB, a.sL, a.sK, static_cast<const T*>(b.p), b.sB, b.sL, b.sK, B, L, K,
        mask, static_cast<A*>(out));
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t pair_bwd_t(bool is_kl, Strided a, Strided b, StridedOut ga, StridedOut gb, int64_t B, int64_t L,
                       int64_t K, const void* grad, const bool* mask, cudaStream_t s) {
  using A = typename AccT<T>::type;
  const int64_t n = B * L * K;
  if (n == 0) return cudaSuccess;
  const bool k_fast = !(a.sL == 1 && a.sK != 1);
  pair_bwd_kernel<T, A><<<blocks_for(n, kThreads), kThreads, 0, s>>>(
      is_kl, static_cast<const T*>(a.p), a, static_cast<const T*>(b.p), b, static_cast<T*>(ga.p), ga,
      static_cast<T*>(gb.p), gb, B, L, K, k_fast, static_cast<const A*>(grad), mask);
  return cudaGetLastError();
}

}  // namespace

#define MMR_CB_DISPATCH(dt, FN, ...)                          \
  switch (dt) {                                               \
    case DType::kFloat32: return FN<float>(__VA_ARGS__);      \
    case DType::kFloat64: return FN<double>(__VA_ARGS__);     \
    case DType::kFloat16: return FN<__half>(__VA_ARGS__);     \
    case DType::kBFloat16: return FN<__nv_bfloat16>(__VA_ARGS__); \
  }                                                           \
  return cudaErrorInvalidValue

cudaError_t launch_stats(DType dt, Strided x, int64_t B, int64_t L, int64_t K, const int64_t* target,
                         const bool* mask, void* o1, void* o2, void* o3, cudaStream_t stream) {
  MMR_CB_DISPATCH(dt, stats_t, x, B, L, K, target, mask, o1, o2, o3, stream);
}

cudaError_t launch_softmax_bwd(DType dt, Strided x, StridedOut y, int64_t B, int64_t L, int64_t K, const void* grad,
                               const void* lse, const void* mu, const int64_t* target, const bool* mask,
                               cudaStream_t stream) {
  MMR_CB_DISPATCH(dt, softmax_bwd_t, x, y, B, L, K, grad, lse, mu, target, mask, stream);
}

cudaError_t launch_pair_fwd(DType dt, bool is_kl, Strided a, Strided b, int64_t B, int64_t L, int64_t K,
                            const bool* mask, void* out, cudaStream_t stream) {
  MMR_CB_DISPATCH(dt, pair_fwd_t, is_kl, a, b, B, L, K, mask, out, stream);
}

cudaError_t launch_pair_bwd(DType dt, bool is_kl, Strided a, Strided b, StridedOut ga, StridedOut gb, int64_t B,
                            int64_t L, int64_t K, const void* grad, const bool* mask, cudaStream_t stream) {
  MMR_CB_DISPATCH(dt, pair_bwd_t, is_kl, a, b, ga, gb, B, L, K, grad, mask, stream);
}

#undef MMR_CB_DISPATCH

}  // namespace codebook_cuda
}  // namespace mmreward
