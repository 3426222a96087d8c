// VQ-codebook ops on CUDA: kernels, their raw-pointer host launchers and the CUDA registration of
// the family's ops (same semantics, outputs and gradient layouts as the CPU kernels). Two schedules:
//  * codes contiguous (sK == 1): one warp per token, lanes stride over K (coalesced), warp-merged
//    online-softmax statistics;
//  * otherwise (e.g. VQ-Diffusion's [B, K, L]): one thread per token walking K, consecutive threads
//    on consecutive tokens (coalesced when sL == 1).
// Backward kernels are elementwise over (token, code), ordered so the contiguous dim is fastest.
// fp32 accumulation for fp32 / fp16 / bf16, fp64 for fp64.
// Tensors are [B, L, K] / [B, K, L] read through (sB, sL, sK) element strides. Per-token outputs
// and inputs (o1..o3, grad, lse, mu) are contiguous [B, L] in the accumulation type (float, or
// double for double inputs); target is contiguous int64 [B, L]; mask is contiguous bool [B, L] or
// null. Schemas and autograd: csrc/cpu/codebook.cpp.
#include <cstdint>
#include <type_traits>

#include "mmreward/cuda_glue.cuh"
#include "mmreward/math.h"

namespace mmreward {
namespace cuda {

struct Strided {
  const void* p;
  int64_t sB, sL, sK;
};
struct StridedOut {
  void* p;
  int64_t sB, sL, sK;
};

namespace {

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
      if (target) {  // the target's entry g (p - 1) = g expm1(z - lse), rounded once
        v = r.k == target[r.tok] ? g * expm1(z - lse[r.tok]) : g * p;
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
  using A = typename Acc<T>::type;
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
  using A = typename Acc<T>::type;
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
  using A = typename Acc<T>::type;
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
  using A = typename Acc<T>::type;
  const int64_t n = B * L * K;
  if (n == 0) return cudaSuccess;
  const bool k_fast = !(a.sL == 1 && a.sK != 1);
  pair_bwd_kernel<T, A><<<blocks_for(n, kThreads), kThreads, 0, s>>>(
      is_kl, static_cast<const T*>(a.p), a, static_cast<const T*>(b.p), b, static_cast<T*>(ga.p), ga,
      static_cast<T*>(gb.p), gb, B, L, K, k_fast, static_cast<const A*>(grad), mask);
  return cudaGetLastError();
}

}  // namespace

#define MMR_CB_DISPATCH(dt, FN, ...) \
  return with_element_type(dt, [&](auto* tag) { return FN<std::remove_pointer_t<decltype(tag)>>(__VA_ARGS__); })

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

// ------------------------------------------------------------------------------------------------
// CUDA registration: checks, device guard, outputs from the caching allocator, launch on the
// current stream.
// ------------------------------------------------------------------------------------------------
namespace {

using at::Tensor;

int64_t cb_class_dim(int64_t cd) {
  TORCH_CHECK(cd == 1 || cd == 2 || cd == -1, "class_dim must be 1 or -1, got ", cd);
  return cd == 1 ? 1 : 2;
}

struct CbGeo {
  int64_t B, L, K;
};

CbGeo cb_geo(const Tensor& t, int64_t cd) {
  if (cd == 1) return {t.size(0), t.size(2), t.size(1)};
  return {t.size(0), t.size(1), t.size(2)};
}

Strided cb_in(const Tensor& t, int64_t cd) {
  if (cd == 1) return {t.const_data_ptr(), t.stride(0), t.stride(2), t.stride(1)};
  return {t.const_data_ptr(), t.stride(0), t.stride(1), t.stride(2)};
}

StridedOut cb_out(Tensor& t, int64_t cd) {
  if (cd == 1) return {t.data_ptr(), t.stride(0), t.stride(2), t.stride(1)};
  return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)};
}

void check_on_device(const char* op, const char* name, const Tensor& t, const Tensor& ref) {
  TORCH_CHECK(t.is_cuda(), op, ": `", name, "` must be a CUDA tensor");
  TORCH_CHECK(t.device() == ref.device(), op, ": `", name, "` is on ", t.device(), " but expected ", ref.device());
}

void cb_check_input(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK(t.dim() == 3, op, ": `", name, "` must be 3-D, got ", t.sizes());
  TORCH_CHECK(t.is_cuda(), op, ": `", name, "` must be a CUDA tensor");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": `", name, "` must be floating point");
}

std::optional<Tensor> cb_mask(const char* op, const std::optional<Tensor>& mask, const CbGeo& g, const Tensor& ref) {
  if (!mask.has_value()) return std::nullopt;
  check_on_device(op, "mask", *mask, ref);
  TORCH_CHECK(mask->scalar_type() == at::kBool, op, ": `mask` must be bool");
  TORCH_CHECK(mask->dim() == 2 && mask->size(0) == g.B && mask->size(1) == g.L, op, ": `mask` must be [B, L] = [",
              g.B, ", ", g.L, "], got ", mask->sizes());
  return mask->contiguous();
}

Tensor cb_tok(const Tensor& like, const CbGeo& g) {
  return at::empty({g.B, g.L}, like.options().dtype(acc_type(like.scalar_type())));
}

Tensor cb_tok_in(const char* op, const char* name, const Tensor& t, const CbGeo& g, at::ScalarType dt,
                 const Tensor& ref) {
  check_on_device(op, name, t, ref);
  TORCH_CHECK(t.numel() == g.B * g.L, op, ": `", name, "` must be [B, L] = [", g.B, ", ", g.L, "]");
  return t.to(dt).contiguous();
}

Tensor cb_grad_like(const Tensor& x, int64_t cd) {
  if (x.is_non_overlapping_and_dense()) return at::empty_like(x);
  const CbGeo g = cb_geo(x, cd);
  const int64_t sK = cd == 1 ? x.stride(1) : x.stride(2);
  const int64_t sL = cd == 1 ? x.stride(2) : x.stride(1);
  if (sL == 1 && sK != 1) {
    Tensor t = at::empty({g.B, g.K, g.L}, x.options());
    return cd == 1 ? t : t.transpose(1, 2);
  }
  Tensor t = at::empty({g.B, g.L, g.K}, x.options());
  return cd == 1 ? t.transpose(1, 2) : t;
}

std::tuple<Tensor, Tensor, Tensor> cb_entropy(const Tensor& logits, int64_t class_dim, const std::optional<Tensor>& mask_) {
  const char* op = "codebook_entropy";
  cb_check_input(op, "logits", logits);
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_geo(logits, cd);
  TORCH_CHECK(g.K > 0, op, ": `logits` has an empty class dim");
  c10::cuda::CUDAGuard guard(logits.device());
  auto mask = cb_mask(op, mask_, g, logits);
  Tensor H = cb_tok(logits, g), lse = cb_tok(logits, g), mu = cb_tok(logits, g);
  check_launch(launch_stats(dtype_of(logits.scalar_type(), op), cb_in(logits, cd), g.B, g.L, g.K, nullptr,
                                data_or_null<bool>(mask), H.data_ptr(), lse.data_ptr(), mu.data_ptr(),
                                current_stream()),
               op);
  return {H, lse, mu};
}

Tensor cb_entropy_bwd(const Tensor& grad, const Tensor& logits, const Tensor& lse, const Tensor& mu, int64_t class_dim,
                      const std::optional<Tensor>& mask_) {
  const char* op = "codebook_entropy_backward";
  cb_check_input(op, "logits", logits);
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_geo(logits, cd);
  c10::cuda::CUDAGuard guard(logits.device());
  auto mask = cb_mask(op, mask_, g, logits);
  const auto acc = acc_type(logits.scalar_type());
  Tensor gr = cb_tok_in(op, "grad", grad, g, acc, logits), ls = cb_tok_in(op, "lse", lse, g, acc, logits),
         m = cb_tok_in(op, "mu", mu, g, acc, logits);
  Tensor out = cb_grad_like(logits, cd);
  check_launch(launch_softmax_bwd(dtype_of(logits.scalar_type(), op), cb_in(logits, cd), cb_out(out, cd), g.B, g.L,
                                      g.K, gr.const_data_ptr(), ls.const_data_ptr(), m.const_data_ptr(), nullptr,
                                      data_or_null<bool>(mask), current_stream()),
               op);
  return out;
}

std::tuple<Tensor, Tensor> cb_nll(const Tensor& logits, const Tensor& target, int64_t class_dim,
                                  const std::optional<Tensor>& mask_) {
  const char* op = "codebook_nll";
  cb_check_input(op, "logits", logits);
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_geo(logits, cd);
  TORCH_CHECK(g.K > 0, op, ": `logits` has an empty class dim");
  c10::cuda::CUDAGuard guard(logits.device());
  auto mask = cb_mask(op, mask_, g, logits);
  Tensor tg = cb_tok_in(op, "target", target, g, at::kLong, logits);  // range checked in Python (no sync here)
  Tensor nll = cb_tok(logits, g), lse = cb_tok(logits, g);
  check_launch(launch_stats(dtype_of(logits.scalar_type(), op), cb_in(logits, cd), g.B, g.L, g.K,
                                tg.const_data_ptr<int64_t>(), data_or_null<bool>(mask), nll.data_ptr(), lse.data_ptr(),
                                nullptr, current_stream()),
               op);
  return {nll, lse};
}

Tensor cb_nll_bwd(const Tensor& grad, const Tensor& logits, const Tensor& target, const Tensor& lse, int64_t class_dim,
                  const std::optional<Tensor>& mask_) {
  const char* op = "codebook_nll_backward";
  cb_check_input(op, "logits", logits);
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_geo(logits, cd);
  c10::cuda::CUDAGuard guard(logits.device());
  auto mask = cb_mask(op, mask_, g, logits);
  const auto acc = acc_type(logits.scalar_type());
  Tensor gr = cb_tok_in(op, "grad", grad, g, acc, logits), ls = cb_tok_in(op, "lse", lse, g, acc, logits);
  Tensor tg = cb_tok_in(op, "target", target, g, at::kLong, logits);
  Tensor out = cb_grad_like(logits, cd);
  check_launch(launch_softmax_bwd(dtype_of(logits.scalar_type(), op), cb_in(logits, cd), cb_out(out, cd), g.B, g.L,
                                      g.K, gr.const_data_ptr(), ls.const_data_ptr(), nullptr,
                                      tg.const_data_ptr<int64_t>(), data_or_null<bool>(mask),
                                      current_stream()),
               op);
  return out;
}

CbGeo cb_pair_check(const char* op, const Tensor& a, const Tensor& b, int64_t cd) {
  cb_check_input(op, "a", a);
  cb_check_input(op, "b", b);
  TORCH_CHECK(a.sizes() == b.sizes(), op, ": inputs have shapes ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": inputs must have the same dtype");
  check_on_device(op, "b", b, a);
  return cb_geo(a, cd);
}

Tensor cb_pair_fwd(const char* op, bool is_kl, const Tensor& a, const Tensor& b, int64_t class_dim,
                   const std::optional<Tensor>& mask_) {
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_pair_check(op, a, b, cd);
  c10::cuda::CUDAGuard guard(a.device());
  auto mask = cb_mask(op, mask_, g, a);
  Tensor out = cb_tok(a, g);
  check_launch(launch_pair_fwd(dtype_of(a.scalar_type(), op), is_kl, cb_in(a, cd), cb_in(b, cd), g.B, g.L, g.K,
                                   data_or_null<bool>(mask), out.data_ptr(), current_stream()),
               op);
  return out;
}

std::tuple<Tensor, Tensor> cb_pair_bwd(const char* op, bool is_kl, const Tensor& grad, const Tensor& a,
                                       const Tensor& b, int64_t class_dim, const std::optional<Tensor>& mask_) {
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_pair_check(op, a, b, cd);
  c10::cuda::CUDAGuard guard(a.device());
  auto mask = cb_mask(op, mask_, g, a);
  Tensor gr = cb_tok_in(op, "grad", grad, g, acc_type(a.scalar_type()), a);
  Tensor ga = cb_grad_like(a, cd), gb = cb_grad_like(b, cd);
  check_launch(launch_pair_bwd(dtype_of(a.scalar_type(), op), is_kl, cb_in(a, cd), cb_in(b, cd), cb_out(ga, cd),
                                   cb_out(gb, cd), g.B, g.L, g.K, gr.const_data_ptr(), data_or_null<bool>(mask),
                                   current_stream()),
               op);
  return {ga, gb};
}

Tensor cb_kl(const Tensor& a, const Tensor& b, int64_t cd, const std::optional<Tensor>& m) {
  return cb_pair_fwd("categorical_kl", true, a, b, cd, m);
}
std::tuple<Tensor, Tensor> cb_kl_bwd(const Tensor& g, const Tensor& a, const Tensor& b, int64_t cd,
                                     const std::optional<Tensor>& m) {
  return cb_pair_bwd("categorical_kl_backward", true, g, a, b, cd, m);
}
Tensor cb_logcat(const Tensor& a, const Tensor& b, int64_t cd, const std::optional<Tensor>& m) {
  return cb_pair_fwd("log_categorical", false, a, b, cd, m);
}
std::tuple<Tensor, Tensor> cb_logcat_bwd(const Tensor& g, const Tensor& a, const Tensor& b, int64_t cd,
                                         const std::optional<Tensor>& m) {
  return cb_pair_bwd("log_categorical_backward", false, g, a, b, cd, m);
}

}  // namespace
}  // namespace cuda
}  // namespace mmreward

TORCH_LIBRARY_IMPL(mmreward, CUDA, m) {
  m.impl("codebook_entropy", &mmreward::cuda::cb_entropy);
  m.impl("codebook_entropy_backward", &mmreward::cuda::cb_entropy_bwd);
  m.impl("codebook_nll", &mmreward::cuda::cb_nll);
  m.impl("codebook_nll_backward", &mmreward::cuda::cb_nll_bwd);
  m.impl("categorical_kl", &mmreward::cuda::cb_kl);
  m.impl("categorical_kl_backward", &mmreward::cuda::cb_kl_bwd);
  m.impl("log_categorical", &mmreward::cuda::cb_logcat);
  m.impl("log_categorical_backward", &mmreward::cuda::cb_logcat_bwd);
}
