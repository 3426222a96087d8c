// Pairwise reward losses on CUDA: kernels, their raw-pointer host launchers and the CUDA
// registration of the family's ops (schemas and autograd: csrc/cpu/pairwise.cpp).
//
// Conventions shared with the CPU kernels:
//  * `Acc` is float for fp32 / bf16 / fp16 inputs and double for double inputs; margins and bias
//    are passed in Acc, tie as bool, listwise ranks as int64.
//  * reduction: 0 none, 1 mean, 2 sum (mmreward::Reduction).
//  * Upstream grads `g` (Acc): nullptr (forward: the reduction scale only), one scalar, or one per
//    pair (`g_per_pair`), read on the device (no host sync).
//  * Reductions are deterministic: fixed grid for a given problem size, per-block partials in a
//    caller-provided workspace, combined in block order by a single-block kernel.
//  * Non-finite inputs give NaN losses / gradients (PairLoss, math.h) and a NaN accuracy.
#include "mmreward/cuda_glue.cuh"
#include "mmreward/math.h"

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

// ---- per-pair math: PairLoss (math.h), the same as the CPU kernels ------------------------------
template <typename A>
PairLoss<A> make_pl(double eps, double center) {
  return PairLoss<A>{A(1.0 - eps / 2.0), A(center)};
}

constexpr size_t kPartialBytes = 40;  // per block: loss, extra, win, cnt, bad

struct Partials {  // per-block partial sums in the workspace
  double* loss;
  double* extra;  // grad_bias (head) or unused
  unsigned long long* win;
  unsigned long long* cnt;
  unsigned long long* bad;  // pairs with a non-finite input
};

Partials partials_at(void* ws, int64_t nblk) {
  char* p = static_cast<char*>(ws);
  Partials P;
  P.loss = reinterpret_cast<double*>(p);
  P.extra = reinterpret_cast<double*>(p + 8 * nblk);
  P.win = reinterpret_cast<unsigned long long*>(p + 16 * nblk);
  P.cnt = reinterpret_cast<unsigned long long*>(p + 24 * nblk);
  P.bad = reinterpret_cast<unsigned long long*>(p + 32 * nblk);
  return P;
}

// Single block: combine the per-block partials in order; write loss (scalar), accuracy, extra.
template <typename A>
__global__ void finalize_kernel(Partials P, int64_t nblk, double loss_scale, A* loss, float* accuracy, A* extra,
                                int mode /*0 pairs, 1 listwise mean*/) {
  __shared__ double dbuf[kWarps];
  __shared__ unsigned long long ubuf[kWarps];
  double l = 0.0, e = 0.0;
  unsigned long long w = 0, c = 0, bad = 0;
  for (int64_t i = threadIdx.x; i < nblk; i += kThreads) {
    l += P.loss[i];
    e += P.extra[i];
    w += P.win[i];
    c += P.cnt[i];
    bad += P.bad[i];
  }
  l = block_sum_all(l, dbuf);
  e = block_sum_all(e, dbuf);
  w = block_sum_all(w, ubuf);
  c = block_sum_all(c, ubuf);
  bad = block_sum_all(bad, ubuf);
  if (threadIdx.x == 0) {
    if (mode == 1) {  // listwise mean over all pairs (c counts pairs)
      if (loss) *loss = A(c > 0 ? l / static_cast<double>(c) : 0.0);
    } else {
      if (loss) *loss = A(l * loss_scale);
      if (accuracy) {
        *accuracy = bad > 0 ? __int_as_float(0x7fc00000)  // NaN
                            : (c > 0 ? static_cast<float>(static_cast<double>(w) / static_cast<double>(c)) : 0.f);
      }
      if (extra) *extra = A(e);
    }
  }
}

// ---- pairwise_loss -----------------------------------------------------------------------------
template <typename T, typename G>
__global__ void pairwise_kernel(const T* __restrict__ rc, const T* __restrict__ rr,
                                const typename Acc<T>::type* __restrict__ m, const bool* __restrict__ tie,
                                const typename Acc<T>::type* __restrict__ g, bool g_per_pair, int64_t B,
                                PairLoss<typename Acc<T>::type> pm, typename Acc<T>::type scale,
                                typename Acc<T>::type* __restrict__ per, G* __restrict__ gc_out,
                                G* __restrict__ gr_out, Partials P) {
  using A = typename Acc<T>::type;
  __shared__ double dbuf[kWarps];
  __shared__ unsigned long long ubuf[kWarps];
  const A g0 = g == nullptr ? A(1) : (g_per_pair ? A(0) : g[0]);
  A lsum = 0;
  unsigned long long win = 0, cnt = 0, bad = 0;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < B; i += int64_t(gridDim.x) * kThreads) {
    const A a = to_acc(rc[i]), b = to_acc(rr[i]);
    const bool ti = tie ? tie[i] : false;
    const A s = g_per_pair ? g[i] : g0 * scale;
    A l, g1, g2;
    bad += pm(a, b, m ? m[i] : A(0), ti, s, l, g1, g2) ? 0ull : 1ull;
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
  const unsigned long long N = block_sum_all(bad, ubuf);
  if (threadIdx.x == 0) {
    P.loss[blockIdx.x] = L;
    P.extra[blockIdx.x] = 0.0;
    P.win[blockIdx.x] = W;
    P.cnt[blockIdx.x] = C;
    P.bad[blockIdx.x] = N;
  }
}

template <typename T, typename G>
cudaError_t pairwise_typed(const void* rc, const void* rr, const void* m, const bool* tie, const void* g,
                           bool g_per_pair, int64_t B, double eps, double center, int reduction, void* loss,
                           bool store_per_pair, float* accuracy, void* gc, void* gr, void* ws, cudaStream_t st) {
  using A = typename Acc<T>::type;
  const int64_t nblk = pair_blocks(B);
  Partials P = partials_at(ws, nblk);
  const A scale = reduction == kMean ? A(1.0 / static_cast<double>(B)) : A(1);
  pairwise_kernel<T, G><<<static_cast<unsigned>(nblk), kThreads, 0, st>>>(
      static_cast<const T*>(rc), static_cast<const T*>(rr), static_cast<const A*>(m), tie, static_cast<const A*>(g),
      g_per_pair, B, make_pl<A>(eps, center), scale, store_per_pair ? static_cast<A*>(loss) : nullptr,
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
                                    typename Acc<T>::type* __restrict__ per, int64_t* __restrict__ counts,
                                    Partials P) {
  using A = typename Acc<T>::type;
  __shared__ double dbuf[kWarps];
  __shared__ unsigned long long ubuf[kWarps];
  double tot = 0.0;
  unsigned long long npairs = 0;
  for (int64_t b = blockIdx.x * int64_t(kThreads) + threadIdx.x; b < B; b += int64_t(gridDim.x) * kThreads) {
    const T* rb = r + b * K;
    const int64_t* kb = rk + b * K;
    double row = 0.0;  // up to K² / 2 terms: summed in double
    int64_t n = 0;
    for (int64_t i = 0; i < K; ++i) {
      const int64_t ki = kb[i];
      if (ki < 0) continue;
      const A qi = to_acc(rb[i]) * A(0.25);
      row += static_cast<double>(qi - qi);  // NaN for a non-finite ranked reward
      for (int64_t j = 0; j < K; ++j) {
        const int64_t kj = kb[j];
        if (kj < 0 || !(ki < kj)) continue;
        A l, dz;
        soft_logistic_q(qi - to_acc(rb[j]) * A(0.25), A(1), l, dz);
        row += static_cast<double>(l);
        ++n;
      }
    }
    counts[b] = n;
    if (per) per[b] = static_cast<A>(n > 0 ? row / static_cast<double>(n) : row);
    tot += row;
    npairs += static_cast<unsigned long long>(n);
  }
  const double L = block_sum_all(tot, dbuf);
  const unsigned long long N = block_sum_all(npairs, ubuf);
  if (threadIdx.x == 0) {
    P.loss[blockIdx.x] = L;
    P.extra[blockIdx.x] = 0.0;
    P.win[blockIdx.x] = 0;
    P.cnt[blockIdx.x] = N;
    P.bad[blockIdx.x] = 0;
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
__global__ void listwise_bwd_kernel(const typename Acc<T>::type* __restrict__ g,
                                    const typename Acc<T>::type* __restrict__ s_all, const T* __restrict__ r,
                                    const int64_t* __restrict__ rk, const int64_t* __restrict__ counts, int64_t B,
                                    int64_t K, int reduction, T* __restrict__ out) {
  using A = typename Acc<T>::type;
  for (int64_t b = blockIdx.x * int64_t(kThreads) + threadIdx.x; b < B; b += int64_t(gridDim.x) * kThreads) {
    const T* rb = r + b * K;
    const int64_t* kb = rk + b * K;
    const A s = reduction == kNone ? (counts[b] > 0 ? g[b] / static_cast<A>(counts[b]) : A(0)) : *s_all;
    double nan_if_bad = 0.0;  // NaN for a row with a non-finite ranked reward
    for (int64_t i = 0; i < K; ++i) {
      const A qi = to_acc(rb[i]) * A(0.25);
      if (kb[i] >= 0) nan_if_bad += static_cast<double>(qi - qi);
    }
    for (int64_t i = 0; i < K; ++i) {
      const int64_t ki = kb[i];
      double gi = nan_if_bad;  // sums up to K terms: double
      if (ki >= 0) {
        const A qi = to_acc(rb[i]) * A(0.25);
        for (int64_t j = 0; j < K; ++j) {
          const int64_t kj = kb[j];
          if (kj < 0 || kj == ki) continue;
          A l, dz;
          if (ki < kj) {  // pair (i, j): d/dr_i of -log σ(r_i - r_j) = σ(r_i - r_j) - 1
            soft_logistic_q(qi - to_acc(rb[j]) * A(0.25), A(1), l, dz);
            gi += static_cast<double>(dz);
          } else {  // pair (j, i): d/dr_i of -log σ(r_j - r_i) = -(σ(r_j - r_i) - 1)
            soft_logistic_q(to_acc(rb[j]) * A(0.25) - qi, A(1), l, dz);
            gi -= static_cast<double>(dz);
          }
        }
      }
      out[b * K + i] = from_acc<T>(static_cast<A>(static_cast<double>(s) * gi));
    }
  }
}

// ---- reward_head_pairwise_loss -----------------------------------------------------------------
template <typename T>
__global__ void head_kernel(const T* __restrict__ hc, const T* __restrict__ hr, const T* __restrict__ w,
                            const typename Acc<T>::type* __restrict__ bias,
                            const typename Acc<T>::type* __restrict__ m, const bool* __restrict__ tie,
                            const typename Acc<T>::type* __restrict__ g, bool g_per_pair, int64_t B, int64_t H,
                            int64_t rows_per_block, PairLoss<typename Acc<T>::type> pm,
                            typename Acc<T>::type scale, typename Acc<T>::type* __restrict__ per,
                            T* __restrict__ ghc, T* __restrict__ ghr, bool grad_wb, bool smem_gw,
                            typename Acc<T>::type* __restrict__ gw_part, Partials P) {
  using A = typename Acc<T>::type;
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
  unsigned long long win = 0, cnt = 0, bad = 0;
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
    const bool finite = pm(a, b, m ? m[i] : A(0), ti, g_per_pair ? g[i] : g0 * scale, l, cc, cr);
    if (threadIdx.x == 0) {
      lsum += static_cast<double>(l);
      gbsum += static_cast<double>(cc + cr);
      win += (!ti && a > b) ? 1ull : 0ull;
      cnt += ti ? 0ull : 1ull;
      bad += finite ? 0ull : 1ull;
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
    P.bad[blockIdx.x] = bad;
  }
}

template <typename T>
__global__ void head_gw_kernel(const typename Acc<T>::type* __restrict__ gw_part, int64_t nblk, int64_t H,
                               T* __restrict__ gw) {
  using A = typename Acc<T>::type;
  for (int64_t j = blockIdx.x * int64_t(kThreads) + threadIdx.x; j < H; j += int64_t(gridDim.x) * kThreads) {
    A s = 0;
    for (int64_t c = 0; c < nblk; ++c) s += gw_part[c * H + j];
    gw[j] = from_acc<T>(s);
  }
}

template <typename T>
size_t head_ws_typed(int64_t B, int64_t H) {
  using A = typename Acc<T>::type;
  const int64_t nblk = head_blocks(B);
  return static_cast<size_t>(nblk) * kPartialBytes + static_cast<size_t>(nblk) * static_cast<size_t>(H) * sizeof(A);
}

template <typename T>
cudaError_t head_typed(const void* hc, const void* hr, const void* w, const void* bias, const void* m,
                       const bool* tie, const void* g, bool g_per_pair, int64_t B, int64_t H, double eps,
                       double center, int reduction, void* loss, bool store_per_pair, float* accuracy, void* ghc,
                       void* ghr, void* gw, void* gb, void* ws, cudaStream_t st) {
  using A = typename Acc<T>::type;
  const int64_t nblk = head_blocks(B);
  const int64_t rows = ceil_div(B, nblk);
  Partials P = partials_at(ws, nblk);
  A* gw_part = reinterpret_cast<A*>(static_cast<char*>(ws) + kPartialBytes * nblk);
  const bool grad_wb = gw != nullptr;
  const size_t gw_bytes = static_cast<size_t>(H) * sizeof(A);
  // dynamic + static shared memory (abuf: kWarps accumulators) must fit the 48 KB a block gets
  // without opting in to more
  const bool smem_gw = grad_wb && gw_bytes + kWarps * sizeof(A) <= kMaxSmemGw;
  const A scale = reduction == kMean ? A(1.0 / static_cast<double>(B)) : A(1);
  head_kernel<T><<<static_cast<unsigned>(nblk), kThreads, smem_gw ? gw_bytes : 0, st>>>(
      static_cast<const T*>(hc), static_cast<const T*>(hr), static_cast<const T*>(w), static_cast<const A*>(bias),
      static_cast<const A*>(m), tie, static_cast<const A*>(g), g_per_pair, B, H, rows, make_pl<A>(eps, center), scale,
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
size_t pairwise_workspace_bytes(int64_t B) { return static_cast<size_t>(pair_blocks(B)) * kPartialBytes; }
size_t listwise_workspace_bytes(int64_t B) { return static_cast<size_t>(pair_blocks(B)) * kPartialBytes + 16; }

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
  using A = typename Acc<T>::type;
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
  using A = typename Acc<T>::type;
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

// ------------------------------------------------------------------------------------------------
// CUDA registration: checks, device guard, outputs and workspace from the caching allocator, launch
// on the current stream. Same outputs as the CPU kernels.
// ------------------------------------------------------------------------------------------------
namespace {

void check_pair(const char* op, const at::Tensor& rc, const at::Tensor& rr, const std::optional<at::Tensor>& margin,
                const std::optional<at::Tensor>& tie, int64_t reduction) {
  check_on_device(op, "r_chosen", rc, rc);
  check_on_device(op, "r_rejected", rr, rc);
  TORCH_CHECK(rc.dim() == 1 && rc.sizes() == rr.sizes(), op, ": r_chosen / r_rejected must be 1-D of equal shape");
  TORCH_CHECK(rc.scalar_type() == rr.scalar_type(), op, ": r_chosen and r_rejected dtypes differ");
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": bad reduction code ", reduction);
  if (margin.has_value()) {
    check_on_device(op, "margin", *margin, rc);
    TORCH_CHECK(margin->sizes() == rc.sizes() && margin->scalar_type() == acc_type(rc.scalar_type()), op,
                ": margin must be [B] in the accumulation dtype");
  }
  if (tie.has_value()) {
    check_on_device(op, "tie", *tie, rc);
    TORCH_CHECK(tie->sizes() == rc.sizes() && tie->scalar_type() == at::kBool, op, ": tie must be bool [B]");
  }
}

// ---- pairwise_loss -----------------------------------------------------------------------------
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pairwise_loss_cuda(
    const at::Tensor& r_chosen, const at::Tensor& r_rejected, const std::optional<at::Tensor>& margin,
    const std::optional<at::Tensor>& tie, double label_smoothing, double center_coef, int64_t reduction,
    bool need_grad) {
  const char* op = "pairwise_loss";
  check_pair(op, r_chosen, r_rejected, margin, tie, reduction);
  TORCH_CHECK(!(need_grad && reduction == kNone), op, ": need_grad requires reduction mean or sum");
  c10::cuda::CUDAGuard guard(r_chosen.device());
  const auto rc = r_chosen.contiguous(), rr = r_rejected.contiguous();
  const auto m = contiguous(margin), t = contiguous(tie);
  const int64_t B = rc.size(0);
  const auto acc_dt = acc_type(rc.scalar_type());
  auto opts = rc.options().dtype(acc_dt);
  at::Tensor loss = reduction == kNone ? at::empty({B}, opts) : at::empty({}, opts);
  at::Tensor acc = at::empty({}, rc.options().dtype(at::kFloat));
  at::Tensor gc = at::empty({need_grad ? B : 0}, opts), gr = at::empty({need_grad ? B : 0}, opts);
  if (B == 0) {
    loss.zero_();
    acc.zero_();
    return {loss, acc, gc, gr};
  }
  at::Tensor ws = workspace(pairwise_workspace_bytes(B), rc);
    check_launch(pairwise_launch(dtype_of(rc.scalar_type(), op), dtype_of(acc_dt, op), rc.const_data_ptr(),
                                   rr.const_data_ptr(), data_or_null(m), data_or_null<bool>(t), nullptr, false, B,
                                   label_smoothing, center_coef, static_cast<int>(reduction), loss.mutable_data_ptr(),
                                   reduction == kNone, acc.mutable_data_ptr<float>(),
                                   need_grad ? gc.mutable_data_ptr() : nullptr,
                                   need_grad ? gr.mutable_data_ptr() : nullptr, ws.mutable_data_ptr(), current_stream()),
               op);
  return {loss, acc, gc, gr};
}

std::tuple<at::Tensor, at::Tensor> pairwise_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& r_chosen, const at::Tensor& r_rejected,
    const std::optional<at::Tensor>& margin, const std::optional<at::Tensor>& tie, double label_smoothing,
    double center_coef, int64_t reduction) {
  const char* op = "pairwise_loss_backward";
  check_pair(op, r_chosen, r_rejected, margin, tie, reduction);
  check_on_device(op, "grad", grad, r_chosen);
  c10::cuda::CUDAGuard guard(r_chosen.device());
  const auto rc = r_chosen.contiguous(), rr = r_rejected.contiguous();
  const auto m = contiguous(margin), t = contiguous(tie);
  const int64_t B = rc.size(0);
  TORCH_CHECK(reduction == kNone ? (grad.dim() == 1 && grad.size(0) == B) : grad.numel() == 1, op,
              ": bad grad shape ", grad.sizes());
  const auto g = grad.to(acc_type(rc.scalar_type())).contiguous();
  at::Tensor gc = at::empty_like(rc), gr = at::empty_like(rr);
  if (B == 0) return {gc, gr};
  at::Tensor ws = workspace(pairwise_workspace_bytes(B), rc);
    const auto dt = dtype_of(rc.scalar_type(), op);
  check_launch(pairwise_launch(dt, dt, rc.const_data_ptr(), rr.const_data_ptr(), data_or_null(m),
                                   data_or_null<bool>(t), g.const_data_ptr(), reduction == kNone, B, label_smoothing,
                                   center_coef, static_cast<int>(reduction), nullptr, false, nullptr,
                                   gc.mutable_data_ptr(), gr.mutable_data_ptr(), ws.mutable_data_ptr(),
                                   current_stream()),
               op);
  return {gc, gr};
}

// ---- listwise_loss -----------------------------------------------------------------------------
void check_list(const char* op, const at::Tensor& rewards, const at::Tensor& ranks, int64_t reduction) {
  check_on_device(op, "rewards", rewards, rewards);
  check_on_device(op, "ranks", ranks, rewards);
  TORCH_CHECK(rewards.dim() == 2 && ranks.sizes() == rewards.sizes(), op, ": rewards / ranks must be [B, K]");
  TORCH_CHECK(ranks.scalar_type() == at::kLong, op, ": ranks must be int64");
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": bad reduction code ", reduction);
}

std::tuple<at::Tensor, at::Tensor> listwise_loss_cuda(const at::Tensor& rewards_in, const at::Tensor& ranks_in,
                                                      int64_t reduction) {
  const char* op = "listwise_loss";
  check_list(op, rewards_in, ranks_in, reduction);
  c10::cuda::CUDAGuard guard(rewards_in.device());
  const auto rewards = rewards_in.contiguous(), ranks = ranks_in.contiguous();
  const int64_t B = rewards.size(0), K = rewards.size(1);
  auto opts = rewards.options().dtype(acc_type(rewards.scalar_type()));
  at::Tensor loss = reduction == kNone ? at::empty({B}, opts) : at::empty({}, opts);
  at::Tensor counts = at::empty({B}, rewards.options().dtype(at::kLong));
  if (B == 0) {
    loss.zero_();
    return {loss, counts};
  }
  at::Tensor ws = workspace(listwise_workspace_bytes(B), rewards);
  check_launch(listwise_forward(dtype_of(rewards.scalar_type(), op), rewards.const_data_ptr(),
                                    ranks.const_data_ptr<int64_t>(), B, K, static_cast<int>(reduction),
                                    loss.mutable_data_ptr(), counts.mutable_data_ptr<int64_t>(), ws.mutable_data_ptr(),
                                    current_stream()),
               op);
  return {loss, counts};
}

at::Tensor listwise_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& rewards_in,
                                       const at::Tensor& ranks_in, const at::Tensor& pair_counts, int64_t reduction) {
  const char* op = "listwise_loss_backward";
  check_list(op, rewards_in, ranks_in, reduction);
  check_on_device(op, "grad", grad, rewards_in);
  check_on_device(op, "pair_counts", pair_counts, rewards_in);
  c10::cuda::CUDAGuard guard(rewards_in.device());
  const auto rewards = rewards_in.contiguous(), ranks = ranks_in.contiguous();
  const int64_t B = rewards.size(0), K = rewards.size(1);
  TORCH_CHECK(pair_counts.dim() == 1 && pair_counts.size(0) == B && pair_counts.scalar_type() == at::kLong, op,
              ": pair_counts must be int64 [B]");
  TORCH_CHECK(reduction == kNone ? (grad.dim() == 1 && grad.size(0) == B) : grad.numel() == 1, op,
              ": bad grad shape ", grad.sizes());
  const auto g = grad.to(acc_type(rewards.scalar_type())).contiguous();
  const auto cnt = pair_counts.contiguous();
  at::Tensor out = at::empty_like(rewards);
  if (B == 0) return out;
  at::Tensor ws = workspace(listwise_workspace_bytes(B), rewards);
  check_launch(listwise_backward(dtype_of(rewards.scalar_type(), op), g.const_data_ptr(), rewards.const_data_ptr(),
                                     ranks.const_data_ptr<int64_t>(), cnt.const_data_ptr<int64_t>(), B, K,
                                     static_cast<int>(reduction), out.mutable_data_ptr(), ws.mutable_data_ptr(),
                                     current_stream()),
               op);
  return out;
}

// ---- reward_head_pairwise_loss -----------------------------------------------------------------
void check_head(const char* op, const at::Tensor& hc, const at::Tensor& hr, const at::Tensor& w,
                const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& margin,
                const std::optional<at::Tensor>& tie, int64_t reduction) {
  check_on_device(op, "h_chosen", hc, hc);
  check_on_device(op, "h_rejected", hr, hc);
  check_on_device(op, "weight", w, hc);
  TORCH_CHECK(hc.dim() == 2 && hc.sizes() == hr.sizes(), op, ": h_chosen / h_rejected must be [B, H]");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == hc.size(1), op, ": weight must be [H]");
  TORCH_CHECK(hc.scalar_type() == hr.scalar_type() && hc.scalar_type() == w.scalar_type(), op,
              ": h_chosen, h_rejected and weight must share a dtype");
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": bad reduction code ", reduction);
  const auto acc = acc_type(hc.scalar_type());
  const int64_t B = hc.size(0);
  if (bias.has_value()) {
    check_on_device(op, "bias", *bias, hc);
    TORCH_CHECK(bias->dim() == 0 && bias->scalar_type() == acc, op, ": bias must be 0-d in the accumulation dtype");
  }
  if (margin.has_value()) {
    check_on_device(op, "margin", *margin, hc);
    TORCH_CHECK(margin->dim() == 1 && margin->size(0) == B && margin->scalar_type() == acc, op,
                ": margin must be [B] in the accumulation dtype");
  }
  if (tie.has_value()) {
    check_on_device(op, "tie", *tie, hc);
    TORCH_CHECK(tie->dim() == 1 && tie->size(0) == B && tie->scalar_type() == at::kBool, op, ": tie must be bool [B]");
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> head_grads_alloc(const at::Tensor& hc, const at::Tensor& w,
                                                                            bool grad_h, bool grad_wb) {
  const int64_t B = hc.size(0), H = hc.size(1);
  auto accopts = hc.options().dtype(acc_type(hc.scalar_type()));
  return {grad_h ? at::empty({B, H}, hc.options()) : at::empty({0}, hc.options()),
          grad_h ? at::empty({B, H}, hc.options()) : at::empty({0}, hc.options()),
          grad_wb ? at::empty({H}, w.options()) : at::empty({0}, w.options()),
          grad_wb ? at::empty({}, accopts) : at::empty({0}, accopts)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> reward_head_pairwise_loss_cuda(
    const at::Tensor& h_chosen, const at::Tensor& h_rejected, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& margin,
    const std::optional<at::Tensor>& tie, double label_smoothing, double center_coef, int64_t reduction, bool grad_h,
    bool grad_wb) {
  const char* op = "reward_head_pairwise_loss";
  check_head(op, h_chosen, h_rejected, weight, bias, margin, tie, reduction);
  TORCH_CHECK(!((grad_h || grad_wb) && reduction == kNone), op, ": grads in the forward need reduction mean or sum");
  c10::cuda::CUDAGuard guard(h_chosen.device());
  const auto hc = h_chosen.contiguous(), hr = h_rejected.contiguous(), w = weight.contiguous();
  const auto b = contiguous(bias), m = contiguous(margin), t = contiguous(tie);
  const int64_t B = hc.size(0), H = hc.size(1);
  auto opts = hc.options().dtype(acc_type(hc.scalar_type()));
  at::Tensor loss = reduction == kNone ? at::empty({B}, opts) : at::empty({}, opts);
  at::Tensor acc = at::empty({}, hc.options().dtype(at::kFloat));
  auto [ghc, ghr, gw, gb] = head_grads_alloc(hc, w, grad_h, grad_wb);
  if (B == 0) {  // H = 0 still has a loss: the bias alone scores both responses
    loss.zero_();
    acc.zero_();
    if (grad_h) { ghc.zero_(); ghr.zero_(); }
    if (grad_wb) { gw.zero_(); gb.zero_(); }
    return {loss, acc, ghc, ghr, gw, gb};
  }
  const auto dt = dtype_of(hc.scalar_type(), op);
  at::Tensor ws = workspace(head_workspace_bytes(dt, B, grad_wb ? H : 0), hc);
  check_launch(head_launch(dt, hc.const_data_ptr(), hr.const_data_ptr(), w.const_data_ptr(), data_or_null(b),
                               data_or_null(m), data_or_null<bool>(t), nullptr, false, B, H, label_smoothing,
                               center_coef, static_cast<int>(reduction), loss.mutable_data_ptr(), reduction == kNone,
                               acc.mutable_data_ptr<float>(), grad_h ? ghc.mutable_data_ptr() : nullptr,
                               grad_h ? ghr.mutable_data_ptr() : nullptr, grad_wb ? gw.mutable_data_ptr() : nullptr,
                               grad_wb ? gb.mutable_data_ptr() : nullptr, ws.mutable_data_ptr(),
                               current_stream()),
               op);
  return {loss, acc, ghc, ghr, gw, gb};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> reward_head_pairwise_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& h_chosen, const at::Tensor& h_rejected, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& margin,
    const std::optional<at::Tensor>& tie, double label_smoothing, double center_coef, int64_t reduction, bool grad_h,
    bool grad_wb) {
  const char* op = "reward_head_pairwise_loss_backward";
  check_head(op, h_chosen, h_rejected, weight, bias, margin, tie, reduction);
  check_on_device(op, "grad", grad, h_chosen);
  c10::cuda::CUDAGuard guard(h_chosen.device());
  const auto hc = h_chosen.contiguous(), hr = h_rejected.contiguous(), w = weight.contiguous();
  const auto b = contiguous(bias), m = contiguous(margin), t = contiguous(tie);
  const int64_t B = hc.size(0), H = hc.size(1);
  TORCH_CHECK(reduction == kNone ? (grad.dim() == 1 && grad.size(0) == B) : grad.numel() == 1, op,
              ": bad grad shape ", grad.sizes());
  const auto g = grad.to(acc_type(hc.scalar_type())).contiguous();
  auto [ghc, ghr, gw, gb] = head_grads_alloc(hc, w, grad_h, grad_wb);
  if (B == 0 || !(grad_h || grad_wb)) {
    if (grad_h) { ghc.zero_(); ghr.zero_(); }
    if (grad_wb) { gw.zero_(); gb.zero_(); }
    return {ghc, ghr, gw, gb};
  }
  const auto dt = dtype_of(hc.scalar_type(), op);
  at::Tensor ws = workspace(head_workspace_bytes(dt, B, grad_wb ? H : 0), hc);
  check_launch(head_launch(dt, hc.const_data_ptr(), hr.const_data_ptr(), w.const_data_ptr(), data_or_null(b),
                               data_or_null(m), data_or_null<bool>(t), g.const_data_ptr(), reduction == kNone, B, H,
                               label_smoothing, center_coef, static_cast<int>(reduction), nullptr, false, nullptr,
                               grad_h ? ghc.mutable_data_ptr() : nullptr, grad_h ? ghr.mutable_data_ptr() : nullptr,
                               grad_wb ? gw.mutable_data_ptr() : nullptr, grad_wb ? gb.mutable_data_ptr() : nullptr,
                               ws.mutable_data_ptr(), current_stream()),
               op);
  return {ghc, ghr, gw, gb};
}

}  // namespace
}  // namespace cuda
}  // namespace mmreward

TORCH_LIBRARY_IMPL(mmreward, CUDA, m) {
  m.impl("pairwise_loss", &mmreward::cuda::pairwise_loss_cuda);
  m.impl("pairwise_loss_backward", &mmreward::cuda::pairwise_loss_backward_cuda);
  m.impl("listwise_loss", &mmreward::cuda::listwise_loss_cuda);
  m.impl("listwise_loss_backward", &mmreward::cuda::listwise_loss_backward_cuda);
  m.impl("reward_head_pairwise_loss", &mmreward::cuda::reward_head_pairwise_loss_cuda);
  m.impl("reward_head_pairwise_loss_backward", &mmreward::cuda::reward_head_pairwise_loss_backward_cuda);
}
