// Pairwise reward losses: CUDA kernels + host launchers (no torch headers; see pairwise.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "mmreward/math.h"
#include "pairwise.cuh"

namespace mmreward {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 2048;     // pairwise / listwise grid cap (grid-stride loops)
constexpr int64_t kMaxHeadBlocks = 1024; // reward head: row chunks (one block each)
constexpr size_t kMaxSmemGw = 48 * 1024; // grad_w partial in shared memory when it fits

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t pair_blocks(int64_t B) { return B <= 0 ? 1 : (ceil_div(B, kThreads) < kMaxBlocks ? ceil_div(B, kThreads) : kMaxBlocks); }
int64_t head_blocks(int64_t B) { return B <= 0 ? 1 : (B < kMaxHeadBlocks ? B : kMaxHeadBlocks); }

// ---- dtype plumbing ----------------------------------------------------------------------------
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_acc(float x);
template <> __device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <typename T> __device__ __forceinline__ T from_acc(double x);
template <> __device__ __forceinline__ double from_acc<double>(double x) { return x; }

// ---- deterministic block reductions (fixed shuffle tree, then warps in order) --------------------
template <typename V>
__device__ __forceinline__ V warp_sum(V v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; the result is valid in every thread. `buf` holds kWarps values.
template <typename V>
__device__ __forceinline__ V block_sum_all(V v, V* buf) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  V s = buf[0];
  for (int k = 1; k < kWarps; ++k) s += buf[k];
  __syncthreads();  // buf reusable
  return s;
}

// ---- per-pair math (same as the CPU kernels) ----------------------------------------------------
template <typename A>
struct PairMath {
  A p, c2, cc;
  __device__ __forceinline__ void operator()(A rc, A rr, A m, bool tie, A s, A& loss, A& gc, A& gr) const {
    const A delta = rc - rr;
    const A z = tie ? delta : delta - m;
    const A pp = tie ? A(0.5) : p;
    A l, dz;
    soft_logistic(z, pp, l, dz);
    const A sum = rc + rr;
    loss = l + cc * sum * sum;
    const A cen = s * c2 * sum;
    gc = s * dz + cen;
    gr = cen - s * dz;
  }
};

template <typename A>
PairMath<A> make_pm(double eps, double center) {
  return PairMath<A>{A(1.0 - eps / 2.0), A(2.0 * center), A(center)};
}

struct Partials {  // per-block partial sums in the workspace
  double* loss;
  double* extra;  // grad_bias (head) or unused
  unsigned long long* win;
  unsigned long long* cnt;
};

Partials partials_at(void* ws, int64_t nblk) {
  char* p = static_cast<char*>(ws);
  Partials P;
  P.loss = reinterpret_cast<double*>(p);
  P.extra = reinterpret_cast<double*>(p + 8 * nblk);
  P.win = reinterpret_cast<unsigned long long*>(p + 16 * nblk);
  P.cnt = reinterpret_cast<unsigned long long*>(p + 24 * nblk);
  return P;
}

// Single block: combine the per-block partials in order; write loss (scalar), accuracy, extra.
template <typename A>
__global__ void finalize_kernel(Partials P, int64_t nblk, double loss_scale, A* loss, float* accuracy, A* extra,
                                int mode /*0 pairs, 1 listwise mean*/) {
  __shared__ double dbuf[kWarps];
  __shared__ unsigned long long ubuf[kWarps];
  double l = 0.0, e = 0.0;
  unsigned long long w = 0, c = 0;
  for (int64_t i = threadIdx.x; i < nblk; i += kThreads) {
    l += P.loss[i];
    e += P.extra[i];
    w += P.win[i];
    c += P.cnt[i];
  }
  l = block_sum_all(l, dbuf);
  e = block_sum_all(e, dbuf);
  w = block_sum_all(w, ubuf);
  c = block_sum_all(c, ubuf);
  if (threadIdx.x == 0) {
    if (mode == 1) {  // listwise mean over all pairs (c counts pairs)
      if (loss) *loss = A(c > 0 ? l / static_cast<double>(c) : 0.0);
    } else {
      if (loss) *loss = A(l * loss_scale);
      if (accuracy) *accuracy = c > 0 ? static_cast<float>(static_cast<double>(w) / static_cast<double>(c)) : 0.f;
      if (extra) *extra = A(e);
    }
  }
}

// ---- pairwise_loss -----------------------------------------------------------------------------
template <typename T, typename G>
__global__ void pairwise_kernel(const T* __restrict__ rc, const T* __restrict__ rr,
                                const typename AccOf<T>::type* __restrict__ m, const bool* __restrict__ tie,
                                const typename AccOf<T>::type* __restrict__ g, bool g_per_pair, int64_t B,
                                PairMath<typename AccOf<T>::type> pm, typename AccOf<T>::type scale,
                                typename AccOf<T>::type* __restrict__ per, G* __restrict__ gc_out,
                                G* __restrict__ gr_out, Partials P) {
  using A = typename AccOf<T>::type;
  __shared__ double dbuf[kWarps];
  __shared__ unsigned long long ubuf[kWarps];
  const A g0 = g == nullptr ? A(1) : (g_per_pair ? A(0) : g[0]);
  A lsum = 0;
  unsigned long long win = 0, cnt = 0;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < B; i += int64_t(gridDim.x) * kThreads) {
    const A a = to_acc(rc[i]), b = to_acc(rr[i]);
    const bool ti = tie ? tie[i] : false;
    const A s = g_per_pair ? g[i] : g0 * scale;
    A l, g1, g2;
    pm(a, b, m ? m[i] : A(0), ti, s, l, g1, g2);
    lsum += l;
    if (per) per[i] = l;
    if (gc_out) {
      gc_out[i] = from_acc<G>(g1);
      gr_out[i] = from_acc<G>(g2);
    }
    win += (!ti && a > b) ? 1ull : 0ull;
    cnt += ti ? 0ull : 1ull;
  }
  const double L = block_sum_all(static_cast<double>(lsum), dbuf);
  const unsigned long long W = block_sum_all(win, ubuf);
  const unsigned long long C = block_sum_all(cnt, ubuf);
  if (threadIdx.x == 0) {
    P.loss[blockIdx.x] = L;
    P.extra[blockIdx.x] = 0.0;
    P.win[blockIdx.x] = W;
    P.cnt[blockIdx.x] = C;
  }
}

template <typename T, typename G>
cudaError_t pairwise_typed(const void* rc, const void* rr, const void* m, const bool* tie, const void* g,
                           bool g_per_pair, int64_t B, double eps, double center, int reduction, void* loss,
                           bool store_per_pair, float* accuracy, void* gc, void* gr, void* ws, cudaStream_t st) {
  using A = typename AccOf<T>::type;
  const int64_t nblk = pair_blocks(B);
  Partials P = partials_at(ws, nblk);
  const A scale = reduction == kMean ? A(1.0 / static_cast<double>(B)) : A(1);
  pairwise_kernel<T, G><<<static_cast<unsigned>(nblk), kThreads, 0, st>>>(
      static_cast<const T*>(rc), static_cast<const T*>(rr), static_cast<const A*>(m), tie, static_cast<const A*>(g),
      g_per_pair, B, make_pm<A>(eps, center), scale, store_per_pair ? static_cast<A*>(loss) : nullptr,
      static_cast<G*>(gc), static_cast<G*>(gr), P);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (!store_per_pair && loss == nullptr && accuracy == nullptr) return cudaSuccess;
  finalize_kernel<A><<<1, kThreads, 0, st>>>(P, nblk, reduction == kMean ? 1.0 / static_cast<double>(B) : 1.0,
                                             store_per_pair ? nullptr : static_cast<A*>(loss), accuracy, nullptr, 0);
  return cudaGetLastError();
}

// ---- listwise_loss -----------------------------------------------------------------------------
template <typename T>
__global__ void listwise_fwd_kernel(const T* __restrict__ r, const int64_t* __restrict__ rk, int64_t B, int64_t K,
                                    typename AccOf<T>::type* __restrict__ per, int64_t* __restrict__ counts,
                                    Partials P) {
  using A = typename AccOf<T>::type;
  __shared__ double dbuf[kWarps];
  __shared__ unsigned long long ubuf[kWarps];
  double tot = 0.0;
  unsigned long long npairs = 0;
  for (int64_t b = blockIdx.x * int64_t(kThreads) + threadIdx.x; b < B; b += int64_t(gridDim.x) * kThreads) {
    const T* rb = r + b * K;
    const int64_t* kb = rk + b * K;
    A row = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < K; ++i) {
      const int64_t ki = kb[i];
      if (ki < 0) continue;
      const A ri = to_acc(rb[i]);
      for (int64_t j = 0; j < K; ++j) {
        const int64_t kj = kb[j];
        if (kj < 0 || !(ki < kj)) continue;
        A l, dz;
        soft_logistic(ri - to_acc(rb[j]), A(1), l, dz);
        row += l;
        ++n;
      }
    }
    counts[b] = n;
    if (per) per[b] = n > 0 ? row / static_cast<A>(n) : A(0);
    tot += static_cast<double>(row);
    npairs += static_cast<unsigned long long>(n);
  }
  const double L = block_sum_all(tot, dbuf);
  const unsigned long long N = block_sum_all(npairs, ubuf);
  if (threadIdx.x == 0) {
    P.loss[blockIdx.x] = L;
    P.extra[blockIdx.x] = 0.0;
    P.win[blockIdx.x] = 0;
    P.cnt[blockIdx.x] = N;
  }
}

// Single block: the upstream scale of every pair for mean / sum (sum of pair_counts for mean).
template <typename A>
__global__ void listwise_scale_kernel(const A* g, const int64_t* counts, int64_t B, int reduction, A* out) {
  __shared__ unsigned long long ubuf[kWarps];
  unsigned long long n = 0;
  for (int64_t b = threadIdx.x; b < B; b += kThreads) n += static_cast<unsigned long long>(counts[b]);
  n = block_sum_all(n, ubuf);
  if (threadIdx.x == 0) {
    *out = reduction == kSum ? g[0] : (n > 0 ? g[0] / static_cast<A>(n) : A(0));
  }
}

template <typename T>
__global__ void listwise_bwd_kernel(const typename AccOf<T>::type* __restrict__ g,
                                    const typename AccOf<T>::type* __restrict__ s_all, const T* __restrict__ r,
                                    const int64_t* __restrict__ rk, const int64_t* __restrict__ counts, int64_t B,
                                    int64_t K, int reduction, T* __restrict__ out) {
  using A = typename AccOf<T>::type;
  for (int64_t b = blockIdx.x * int64_t(kThreads) + threadIdx.x; b < B; b += int64_t(gridDim.x) * kThreads) {
    const T* rb = r + b * K;
    const int64_t* kb = rk + b * K;
    const A s = reduction == kNone ? (counts[b] > 0 ? g[b] / static_cast<A>(counts[b]) : A(0)) : *s_all;
    for (int64_t i = 0; i < K; ++i) {
      const int64_t ki = kb[i];
      A gi = 0;
      if (ki >= 0) {
        const A ri = to_acc(rb[i]);
        for (int64_t j = 0; j < K; ++j) {
          const int64_t kj = kb[j];
          if (kj < 0 || kj == ki) continue;
          A l, dz;
          if (ki < kj) {  // pair (i, j): d/dr_i of -log σ(r_i - r_j) = σ(r_i - r_j) - 1
            soft_logistic(ri - to_acc(rb[j]), A(1), l, dz);
            gi += dz;
          } else {  // pair (j, i): d/dr_i of -log σ(r_j - r_i) = -(σ(r_j - r_i) - 1)
            soft_logistic(to_acc(rb[j]) - ri, A(1), l, dz);
            gi -= dz;
          }
        }
      }
      out[b * K + i] = from_acc<T>(s * gi);
    }
  }
}

// ---- reward_head_pairwise_loss -----------------------------------------------------------------
template <typename T>
__global__ void head_kernel(const T* __restrict__ hc, const T* __restrict__ hr, const T* __restrict__ w,
                            const typename AccOf<T>::type* __restrict__ bias,
                            const typename AccOf<T>::type* __restrict__ m, const bool* __restrict__ tie,
                            const typename AccOf<T>::type* __restrict__ g, bool g_per_pair, int64_t B, int64_t H,
                            int64_t rows_per_block, PairMath<typename AccOf<T>::type> pm,
                            typename AccOf<T>::type scale, typename AccOf<T>::type* __restrict__ per,
                            T* __restrict__ ghc, T* __restrict__ ghr, bool grad_wb, bool smem_gw,
                            typename AccOf<T>::type* __restrict__ gw_part, Partials P) {
  using A = typename AccOf<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ A abuf[kWarps];
  A* gw = smem_gw ? reinterpret_cast<A*>(smem_raw) : gw_part + blockIdx.x * H;
  if (grad_wb) {
    for (int64_t j = threadIdx.x; j < H; j += kThreads) gw[j] = A(0);
  }
  const A bval = bias ? *bias : A(0);
  const A g0 = g == nullptr ? A(1) : (g_per_pair ? A(0) : g[0]);
  const int64_t lo = blockIdx.x * rows_per_block;
  const int64_t hi = lo + rows_per_block < B ? lo + rows_per_block : B;
  double lsum = 0.0, gbsum = 0.0;  // meaningful in thread 0
  unsigned long long win = 0, cnt = 0;
  for (int64_t i = lo; i < hi; ++i) {
    const T* xc = hc + i * H;
    const T* xr = hr + i * H;
    A a = 0, b = 0;
    for (int64_t j = threadIdx.x; j < H; j += kThreads) {
      const A wj = to_acc(w[j]);
      a += to_acc(xc[j]) * wj;
      b += to_acc(xr[j]) * wj;
    }
    a = block_sum_all(a, abuf) + bval;
    b = block_sum_all(b, abuf) + bval;
    const bool ti = tie ? tie[i] : false;
    A l, cc, cr;
    pm(a, b, m ? m[i] : A(0), ti, g_per_pair ? g[i] : g0 * scale, l, cc, cr);
    if (threadIdx.x == 0) {
      lsum += static_cast<double>(l);
      gbsum += static_cast<double>(cc + cr);
      win += (!ti && a > b) ? 1ull : 0ull;
      cnt += ti ? 0ull : 1ull;
      if (per) per[i] = l;
    }
    if (ghc != nullptr || grad_wb) {
      for (int64_t j = threadIdx.x; j < H; j += kThreads) {  // rows are in L1 / L2 from the dot above
        const A wj = to_acc(w[j]);
        if (ghc != nullptr) {
          ghc[i * H + j] = from_acc<T>(cc * wj);
          ghr[i * H + j] = from_acc<T>(cr * wj);
        }
        if (grad_wb) gw[j] += cc * to_acc(xc[j]) + cr * to_acc(xr[j]);  // column j: this thread only
      }
    }
  }
  if (grad_wb && smem_gw) {
    for (int64_t j = threadIdx.x; j < H; j += kThreads) gw_part[blockIdx.x * H + j] = gw[j];
  }
  if (threadIdx.x == 0) {
    P.loss[blockIdx.x] = lsum;
    P.extra[blockIdx.x] = gbsum;
    P.win[blockIdx.x] = win;
    P.cnt[blockIdx.x] = cnt;
  }
}

template <typename T>
__global__ void head_gw_kernel(const typename AccOf<T>::type* __restrict__ gw_part, int64_t nblk, int64_t H,
                               T* __restrict__ gw) {
  using A = typename AccOf<T>::type;
  for (int64_t j = blockIdx.x * int64_t(kThreads) + threadIdx.x; j < H; j += int64_t(gridDim.x) * kThreads) {
    A s = 0;
    for (int64_t c = 0; c < nblk; ++c) s += gw_part[c * H + j];
    gw[j] = from_acc<T>(s);
  }
}

template <typename T>
size_t head_ws_typed(int64_t B, int64_t H) {
  using A = typename AccOf<T>::type;
  const int64_t nblk = head_blocks(B);
  return static_cast<size_t>(nblk) * 32 + static_cast<size_t>(nblk) * static_cast<size_t>(H) * sizeof(A);
}

template <typename T>
cudaError_t head_typed(const void* hc, const void* hr, const void* w, const void* bias, const void* m,
                       const bool* tie, const void* g, bool g_per_pair, int64_t B, int64_t H, double eps,
                       double center, int reduction, void* loss, bool store_per_pair, float* accuracy, void* ghc,
                       void* ghr, void* gw, void* gb, void* ws, cudaStream_t st) {
  using A = typename AccOf<T>::type;
  const int64_t nblk = head_blocks(B);
  const int64_t rows = ceil_div(B, nblk);
  Partials P = partials_at(ws, nblk);
  A* gw_part = reinterpret_cast<A*>(static_cast<char*>(ws) + 32 * nblk);
  const bool grad_wb = gw != nullptr;
  const size_t gw_bytes = static_cast<size_t>(H) * sizeof(A);
  // dynamic + static shared memory (abuf: kWarps accumulators) must fit the 48 KB a block gets
  // without opting in to more
  const bool smem_gw = grad_wb && gw_bytes + kWarps * sizeof(A) <= kMaxSmemGw;
  const A scale = reduction == kMean ? A(1.0 / static_cast<double>(B)) : A(1);
  head_kernel<T><<<static_cast<unsigned>(nblk), kThreads, smem_gw ? gw_bytes : 0, st>>>(
      static_cast<const T*>(hc), static_cast<const T*>(hr), static_cast<const T*>(w), static_cast<const A*>(bias),
      static_cast<const A*>(m), tie, static_cast<const A*>(g), g_per_pair, B, H, rows, make_pm<A>(eps, center), scale,
      store_per_pair ? static_cast<A*>(loss) : nullptr, static_cast<T*>(ghc), static_cast<T*>(ghr), grad_wb, smem_gw,
      gw_part, P);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (grad_wb && H > 0) {  // H = 0: no weight grad, but the bias grad still comes from finalize below
    const int64_t gblk = ceil_div(H, kThreads) < 4096 ? ceil_div(H, kThreads) : 4096;
    head_gw_kernel<T><<<static_cast<unsigned>(gblk), kThreads, 0, st>>>(gw_part, nblk, H, static_cast<T*>(gw));
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  finalize_kernel<A><<<1, kThreads, 0, st>>>(P, nblk, reduction == kMean ? 1.0 / static_cast<double>(B) : 1.0,
                                             store_per_pair ? nullptr : static_cast<A*>(loss), accuracy,
                                             static_cast<A*>(gb), 0);
  return cudaGetLastError();
}

}  // namespace

// ---- public launchers --------------------------------------------------------------------------
size_t pairwise_workspace_bytes(int64_t B) { return static_cast<size_t>(pair_blocks(B)) * 32; }
size_t listwise_workspace_bytes(int64_t B) { return static_cast<size_t>(pair_blocks(B)) * 32 + 16; }

size_t head_workspace_bytes(DType dt, int64_t B, int64_t H) {
  return dt == DType::kFloat64 ? head_ws_typed<double>(B, H) : head_ws_typed<float>(B, H);
}

cudaError_t pairwise_launch(DType dt, DType grad_dt, const void* rc, const void* rr, const void* m, const bool* tie,
                            const void* g, bool g_per_pair, int64_t B, double eps, double center, int reduction,
                            void* loss, bool store_per_pair, float* accuracy, void* gc, void* gr, void* ws,
                            cudaStream_t st) {
  if (B <= 0) return cudaErrorInvalidValue;
  const bool grad_is_acc = grad_dt == DType::kFloat32 || grad_dt == DType::kFloat64;
#define MMR_PAIR(T, G) \
  pairwise_typed<T, G>(rc, rr, m, tie, g, g_per_pair, B, eps, center, reduction, loss, store_per_pair, accuracy, gc, gr, ws, st)
  switch (dt) {
    case DType::kFloat32: return MMR_PAIR(float, float);
    case DType::kFloat64: return MMR_PAIR(double, double);
    case DType::kBFloat16: return grad_is_acc ? MMR_PAIR(__nv_bfloat16, float) : MMR_PAIR(__nv_bfloat16, __nv_bfloat16);
    case DType::kFloat16: return grad_is_acc ? MMR_PAIR(__half, float) : MMR_PAIR(__half, __half);
  }
#undef MMR_PAIR
  return cudaErrorInvalidValue;
}

namespace {
template <typename T>
cudaError_t listwise_fwd_typed(const void* r, const int64_t* rk, int64_t B, int64_t K, int reduction, void* loss,
                               int64_t* counts, void* ws, cudaStream_t st) {
  using A = typename AccOf<T>::type;
  const int64_t nblk = pair_blocks(B);
  Partials P = partials_at(ws, nblk);
  listwise_fwd_kernel<T><<<static_cast<unsigned>(nblk), kThreads, 0, st>>>(
      static_cast<const T*>(r), rk, B, K, reduction == kNone ? static_cast<A*>(loss) : nullptr, counts, P);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || reduction == kNone) return err;
  finalize_kernel<A><<<1, kThreads, 0, st>>>(P, nblk, 1.0, static_cast<A*>(loss), nullptr, nullptr,
                                             reduction == kMean ? 1 : 0);
  return cudaGetLastError();
}

template <typename T>
cudaError_t listwise_bwd_typed(const void* g, const void* r, const int64_t* rk, const int64_t* counts, int64_t B,
                               int64_t K, int reduction, void* out, void* ws, cudaStream_t st) {
  using A = typename AccOf<T>::type;
  A* s_all = reinterpret_cast<A*>(ws);
  if (reduction != kNone) {
    listwise_scale_kernel<A><<<1, kThreads, 0, st>>>(static_cast<const A*>(g), counts, B, reduction, s_all);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  listwise_bwd_kernel<T><<<static_cast<unsigned>(pair_blocks(B)), kThreads, 0, st>>>(
      static_cast<const A*>(g), s_all, static_cast<const T*>(r), rk, counts, B, K, reduction, static_cast<T*>(out));
  return cudaGetLastError();
}
}  // namespace

cudaError_t listwise_forward(DType dt, const void* rewards, const int64_t* ranks, int64_t B, int64_t K, int reduction,
                             void* loss, int64_t* counts, void* ws, cudaStream_t st) {
  if (B <= 0) return cudaErrorInvalidValue;
  switch (dt) {
    case DType::kFloat32: return listwise_fwd_typed<float>(rewards, ranks, B, K, reduction, loss, counts, ws, st);
    case DType::kFloat64: return listwise_fwd_typed<double>(rewards, ranks, B, K, reduction, loss, counts, ws, st);
    case DType::kBFloat16: return listwise_fwd_typed<__nv_bfloat16>(rewards, ranks, B, K, reduction, loss, counts, ws, st);
    case DType::kFloat16: return listwise_fwd_typed<__half>(rewards, ranks, B, K, reduction, loss, counts, ws, st);
  }
  return cudaErrorInvalidValue;
}

cudaError_t listwise_backward(DType dt, const void* g, const void* rewards, const int64_t* ranks,
                              const int64_t* counts, int64_t B, int64_t K, int reduction, void* out, void* ws,
                              cudaStream_t st) {
  if (B <= 0) return cudaErrorInvalidValue;
  switch (dt) {
    case DType::kFloat32: return listwise_bwd_typed<float>(g, rewards, ranks, counts, B, K, reduction, out, ws, st);
    case DType::kFloat64: return listwise_bwd_typed<double>(g, rewards, ranks, counts, B, K, reduction, out, ws, st);
    case DType::kBFloat16: return listwise_bwd_typed<__nv_bfloat16>(g, rewards, ranks, counts, B, K, reduction, out, ws, st);
    case DType::kFloat16: return listwise_bwd_typed<__half>(g, rewards, ranks, counts, B, K, reduction, out, ws, st);
  }
  return cudaErrorInvalidValue;
}

cudaError_t head_launch(DType dt, const void* hc, const void* hr, const void* w, const void* bias, const void* m,
                        const bool* tie, const void* g, bool g_per_pair, int64_t B, int64_t H, double eps,
                        double center, int reduction, void* loss, bool store_per_pair, float* accuracy, void* ghc,
                        void* ghr, void* gw, void* gb, void* ws, cudaStream_t st) {
  if (B <= 0 || H < 0) return cudaErrorInvalidValue;
#define MMR_HEAD(T) \
  head_typed<T>(hc, hr, w, bias, m, tie, g, g_per_pair, B, H, eps, center, reduction, loss, store_per_pair, accuracy, ghc, ghr, gw, gb, ws, st)
  switch (dt) {
    case DType::kFloat32: return MMR_HEAD(float);
    case DType::kFloat64: return MMR_HEAD(double);
    case DType::kBFloat16: return MMR_HEAD(__nv_bfloat16);
    case DType::kFloat16: return MMR_HEAD(__half);
  }
#undef MMR_HEAD
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace mmreward
