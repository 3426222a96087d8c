// VQ-codebook ops: the family's schemas (both namespaces, see op_library.h), its autograd (C++,
// shared by the C++/CUDA and the Triton ops) and its CPU kernels.
//
// Fused ops of the Diffusion Reward / VQ-Diffusion inner loop: per-token entropy and NLL of
// logits over a K-code codebook, categorical KL and log-categorical between log-space distributions,
// forward and backward, for the channel-last [B, L, K] layout and VQ-Diffusion's [B, K, L] layout.
//
// Layout handling (no copies): every tensor is read through (sB, sL, sK) strides.
//   * row path   (class stride 1):  one token's K codes are contiguous; vectorised over K.
//   * lane path  (token stride 1):   W = 16 consecutive tokens of a frame form SIMD lanes and the
//                                    kernel walks K rows of 16 contiguous values; vectorised over L.
//   * gather path (anything else, and the L % 16 tail of the lane path): one token's codes are
//                                    gathered into a thread-local fp32/fp64 buffer, then the row
//                                    kernel runs on it.
// Softmax statistics use one streaming pass with a running max (online softmax, rescaled per chunk
// of codes), accumulating sum(e) and sum(e * (z - m)) so that the entropy never subtracts two large
// numbers (logits of +-1e4 stay accurate). exp is a range-reduced polynomial (Cephes style,
// ~1e-7 relative in fp32, ~2e-16 in fp64) written so GCC vectorises it under `#pragma omp simd`.
// Accumulation in fp32 for fp32/bf16/fp16 inputs and fp64 for fp64. NaN in any input propagates.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <limits>
#include <vector>

#include <mmreward/math.h>
#include <mmreward/op_library.h>


namespace mmreward {
namespace codebook_cpu {

using at::Tensor;
using std::int64_t;

#define MMR_ALWAYS_INLINE inline __attribute__((always_inline))

// ---------------------------------------------------------------------------------------------
// SIMD: GCC/Clang vector extensions (64-byte vectors: one zmm with AVX-512, split into ymm/xmm
// pairs by the compiler on narrower ISAs), so every hot loop is explicitly vectorised whatever
// the compiler's if-conversion / trapping-math heuristics decide. Scalar code paths (tails) use
// the same templates with V = float / double.
// ---------------------------------------------------------------------------------------------
template <typename A>
struct VT;
template <>
struct VT<float> {
  typedef float V __attribute__((vector_size(64)));
  typedef int32_t VI __attribute__((vector_size(64)));
  static constexpr int N = 16;
};
template <>
struct VT<double> {
  typedef double V __attribute__((vector_size(64)));
  typedef int64_t VI __attribute__((vector_size(64)));
  static constexpr int N = 8;
};
typedef uint16_t U16x16 __attribute__((vector_size(32)));
typedef uint32_t U32x16 __attribute__((vector_size(64)));

template <typename V, typename S>
MMR_ALWAYS_INLINE V bc(S s) {
  return V{} + s;
}

// exp(x) = 2^n exp(r), r = x - n ln2, |r| <= ln2/2. n by the round-to-nearest magic constant
// (its integer also sits in the low mantissa bits), 2^n by exponent bits. Cephes degree-6
// polynomial: < 1e-7 relative error. x < -87.3 -> 0, x > 88.7 -> inf, NaN -> NaN.
// kNeg: caller guarantees x <= ~0 (softmax terms): no overflow clamp, and x < -87.3 gives the
// smallest normal (~1e-38) instead of 0 -- 4 fewer compare/blends in the hottest loops.
template <typename V, typename VI, bool kNeg = false>
MMR_ALWAYS_INLINE V vexp_f32(V x) {
  const V lo = bc<V>(-87.33654f), hi = bc<V>(88.72283f);
  V xc = x < lo ? lo : x;  // NaN stays NaN
  if (!kNeg) xc = xc > hi ? hi : xc;
  V t = xc * 1.44269504088896341f + 12582912.0f;
  V n = t - 12582912.0f;
  V r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = bc<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  VI bits = (__builtin_bit_cast(VI, t) - 0x4B400000 + 127) << 23;
  V y = p * __builtin_bit_cast(V, bits);
  if (kNeg) return y;
  y = x < lo ? bc<V>(0.0f) : y;
  y = x > hi ? bc<V>(std::numeric_limits<float>::infinity()) : y;
  return y;
}

// fp64: magic 1.5 * 2^52, Taylor to degree 13 on |r| <= 0.347 (truncation < 2e-17); 2^n as two
// factors so the clamped ends stay representable.
template <typename V, typename VI, bool kNeg = false>
MMR_ALWAYS_INLINE V vexp_f64(V x) {
  const V lo = bc<V>(-708.39641853226408), hi = bc<V>(709.78271289338397);
  V xc = x < lo ? lo : x;
  if (!kNeg) xc = xc > hi ? hi : xc;
  V t = xc * 1.4426950408889634 + 6755399441055744.0;
  V n = t - 6755399441055744.0;
  V r = xc - n * 6.93147180369123816490e-01;
  r = r - n * 1.90821492927058770002e-10;
  V p = bc<V>(1.0 / 6227020800.0);
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  VI ni = __builtin_bit_cast(VI, t) - __builtin_bit_cast(int64_t, 6755399441055744.0);
  VI n1 = ni >> 1, n2 = ni - n1;
  V y = p * __builtin_bit_cast(V, (n1 + 1023) << 52) * __builtin_bit_cast(V, (n2 + 1023) << 52);
  if (kNeg) return y;
  y = x < lo ? bc<V>(0.0) : y;
  y = x > hi ? bc<V>(std::numeric_limits<double>::infinity()) : y;
  return y;
}

MMR_ALWAYS_INLINE float vexp(float x) { return vexp_f32<float, int32_t>(x); }
MMR_ALWAYS_INLINE double vexp(double x) { return vexp_f64<double, int64_t>(x); }
MMR_ALWAYS_INLINE VT<float>::V vexp(VT<float>::V x) { return vexp_f32<VT<float>::V, VT<float>::VI>(x); }
MMR_ALWAYS_INLINE VT<double>::V vexp(VT<double>::V x) { return vexp_f64<VT<double>::V, VT<double>::VI>(x); }
MMR_ALWAYS_INLINE VT<float>::V vexp_neg(VT<float>::V x) { return vexp_f32<VT<float>::V, VT<float>::VI, true>(x); }
MMR_ALWAYS_INLINE VT<double>::V vexp_neg(VT<double>::V x) { return vexp_f64<VT<double>::V, VT<double>::VI, true>(x); }

template <typename V>
MMR_ALWAYS_INLINE V vmax(V a, V b) {
  return a > b ? a : b;  // NaN in `a` is dropped; NaN reaches the sums through exp instead
}
// Horizontal sum / max by halving (64 -> 32 -> 16 bytes, then scalars).
template <typename A>
MMR_ALWAYS_INLINE A hsum(typename VT<A>::V v) {
  typedef A H2 __attribute__((vector_size(32)));
  typedef A H4 __attribute__((vector_size(16)));
  H2 lo, hi;
  std::memcpy(&lo, &v, 32);
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + 32, 32);
  const H2 s2 = lo + hi;
  H4 l4, h4;
  std::memcpy(&l4, &s2, 16);
  std::memcpy(&h4, reinterpret_cast<const char*>(&s2) + 16, 16);
  const H4 s4 = l4 + h4;
  A s = 0;
  for (int j = 0; j < static_cast<int>(16 / sizeof(A)); ++j) s += s4[j];
  return s;
}
template <typename A>
MMR_ALWAYS_INLINE A hmax(typename VT<A>::V v) {
  typedef A H2 __attribute__((vector_size(32)));
  typedef A H4 __attribute__((vector_size(16)));
  H2 lo, hi;
  std::memcpy(&lo, &v, 32);
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + 32, 32);
  const H2 s2 = lo > hi ? lo : hi;
  H4 l4, h4;
  std::memcpy(&l4, &s2, 16);
  std::memcpy(&h4, reinterpret_cast<const char*>(&s2) + 16, 16);
  const H4 s4 = l4 > h4 ? l4 : h4;
  A s = s4[0];
  for (int j = 1; j < static_cast<int>(16 / sizeof(A)); ++j) s = s4[j] > s ? s4[j] : s;
  return s;
}

// Scalar loads / stores.
MMR_ALWAYS_INLINE float ld(const float* p) { return *p; }
MMR_ALWAYS_INLINE double ld(const double* p) { return *p; }
MMR_ALWAYS_INLINE float ld(const c10::BFloat16* p) {
  uint32_t b = static_cast<uint32_t>(p->x) << 16;
  return __builtin_bit_cast(float, b);
}
MMR_ALWAYS_INLINE float ld(const c10::Half* p) { return static_cast<float>(*p); }
template <typename T, typename A>
MMR_ALWAYS_INLINE void st(T* p, A v) {
  *p = static_cast<T>(v);
}

// Vector loads / stores of N consecutive values (unaligned).
template <typename T>
struct VIO;
template <>
struct VIO<float> {
  using V = VT<float>::V;
  static MMR_ALWAYS_INLINE V load(const float* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static MMR_ALWAYS_INLINE void store(float* p, V v) { std::memcpy(p, &v, sizeof(V)); }
};
template <>
struct VIO<double> {
  using V = VT<double>::V;
  static MMR_ALWAYS_INLINE V load(const double* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static MMR_ALWAYS_INLINE void store(double* p, V v) { std::memcpy(p, &v, sizeof(V)); }
};
template <>
struct VIO<c10::BFloat16> {
  using V = VT<float>::V;
  static MMR_ALWAYS_INLINE V load(const c10::BFloat16* p) {
    U16x16 h;
    std::memcpy(&h, p, sizeof(h));
    return __builtin_bit_cast(V, __builtin_convertvector(h, U32x16) << 16);
  }
  static MMR_ALWAYS_INLINE void store(c10::BFloat16* p, V v) {
    // round to nearest even, NaN -> canonical quiet NaN (as c10::BFloat16 does)
    U32x16 u = __builtin_bit_cast(U32x16, v);
    U32x16 r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    r = v != v ? bc<U32x16>(0x7FC0u) : r;
    U16x16 h = __builtin_convertvector(r, U16x16);
    std::memcpy(p, &h, sizeof(h));
  }
};
template <>
struct VIO<c10::Half> {
  using V = VT<float>::V;
  static MMR_ALWAYS_INLINE V load(const c10::Half* p) {
    V v;
    for (int j = 0; j < 16; ++j) v[j] = static_cast<float>(p[j]);
    return v;
  }
  static MMR_ALWAYS_INLINE void store(c10::Half* p, V v) {
    for (int j = 0; j < 16; ++j) p[j] = static_cast<c10::Half>(v[j]);
  }
};

constexpr int64_t RCH = 2048;  // codes per online-softmax chunk, row path (multiple of 16; 8 KB in L1)
constexpr int64_t LCH = 32;   // codes per online-softmax chunk, lane path

// ---------------------------------------------------------------------------------------------
// Strided views.
// ---------------------------------------------------------------------------------------------
struct Geo {
  int64_t B, L, K;
};

template <typename T>
struct View {
  T* p;
  int64_t sB, sL, sK;
  T* tok(int64_t b, int64_t l) const { return p + b * sB + l * sL; }
};

template <typename T>
View<T> view_of(const Tensor& t, int64_t class_dim) {
  View<T> v;
  v.p = const_cast<T*>(t.const_data_ptr<std::remove_const_t<T>>());
  v.sB = t.stride(0);
  if (class_dim == 1) {
    v.sK = t.stride(1);
    v.sL = t.stride(2);
  } else {
    v.sL = t.stride(1);
    v.sK = t.stride(2);
  }
  return v;
}

Geo geo_of(const Tensor& t, int64_t class_dim) {
  if (class_dim == 1) return {t.size(0), t.size(2), t.size(1)};
  return {t.size(0), t.size(1), t.size(2)};
}

enum Path { kRow, kLane, kGather };

template <typename A, typename... Vw>
Path choose_path(const Geo& g, const Vw&... v) {
  bool row = ((v.sK == 1) && ...);
  if (row || g.K == 1) return kRow;
  bool lane = ((v.sL == 1) && ...);
  if (lane && g.L >= VT<A>::N) return kLane;
  return kGather;
}

// ---------------------------------------------------------------------------------------------
// Softmax statistics, one streaming pass with a running max:
//   m = max z, s = sum exp(z - m), t = sum exp(z - m) (z - m).
// Per chunk: chunk max (vector), rescale (s, t) if the max grew, then the exp sums.
// -inf codes contribute 0 (their shifted value is clamped to -1000 so 0 * (-inf) never happens).
// ---------------------------------------------------------------------------------------------
template <typename A>
struct Stats {
  A m, s, t;
};

template <typename V, typename A>
MMR_ALWAYS_INLINE void stat_term(V v, V m, V& s, V& t) {
  V d = v - m;
  d = d < A(-1000) ? bc<V>(A(-1000)) : d;  // -inf codes: e ~ 0, e * d finite (NaN stays NaN)
  V e = vexp_neg(d);
  s += e;
  t += e * d;
}
template <typename A>
MMR_ALWAYS_INLINE void stat_term_s(A v, A m, A& s, A& t) {
  A d = v - m;
  d = (d < A(-1000) || v == -std::numeric_limits<A>::infinity()) ? A(-1000) : d;
  A e = vexp(d);
  s += e;
  t += e * d;
}

template <typename T, typename A>
Stats<A> row_stats(const T* x, int64_t K) {
  using V = typename VT<A>::V;
  constexpr int N = VT<A>::N;
  constexpr A NEG = -std::numeric_limits<A>::infinity();
  A m = NEG, s = 0, t = 0;
  for (int64_t k0 = 0; k0 < K; k0 += RCH) {
    const int64_t n = std::min(RCH, K - k0), nv = n / N * N;
    const T* xc = x + k0;
    V c0 = bc<V>(NEG), c1 = c0, c2 = c0, c3 = c0;  // 4 independent chains (vmax latency)
    int64_t i = 0;
    for (; i + 4 * N <= nv; i += 4 * N) {
      c0 = vmax(VIO<T>::load(xc + i), c0);
      c1 = vmax(VIO<T>::load(xc + i + N), c1);
      c2 = vmax(VIO<T>::load(xc + i + 2 * N), c2);
      c3 = vmax(VIO<T>::load(xc + i + 3 * N), c3);
    }
    for (; i < nv; i += N) c0 = vmax(VIO<T>::load(xc + i), c0);
    A cm = hmax<A>(vmax(vmax(c0, c1), vmax(c2, c3)));
    for (int64_t i = nv; i < n; ++i) {
      A v = ld(xc + i);
      cm = v > cm ? v : cm;
    }
    if (cm > m) {
      if (m == NEG) {
        m = cm;
      } else {
        const A d = cm - m, sc = vexp(-d);
        t = sc * (t - d * s);
        s = sc * s;
        m = cm;
      }
    }
    const V mv = bc<V>(m);
    V sv0{}, tv0{}, sv1{}, tv1{};
    i = 0;
    for (; i + 2 * N <= nv; i += 2 * N) {
      stat_term<V, A>(VIO<T>::load(xc + i), mv, sv0, tv0);
      stat_term<V, A>(VIO<T>::load(xc + i + N), mv, sv1, tv1);
    }
    for (; i < nv; i += N) stat_term<V, A>(VIO<T>::load(xc + i), mv, sv0, tv0);
    A cs = hsum<A>(sv0 + sv1), ct = hsum<A>(tv0 + tv1);
    for (; i < n; ++i) stat_term_s<A>(ld(xc + i), m, cs, ct);
    s += cs;
    t += ct;
  }
  // All -inf: NaN, as log_softmax gives.
  if (m == NEG) s = t = std::numeric_limits<A>::quiet_NaN();
  return {m, s, t};
}

// NB * N tokens at x[j] (j < NB * N), code k at x[k * sK + j]; vectorised over the tokens. With
// NB = 4 one k-row of a 64-token frame is a contiguous 256-byte run (4 registers, processed one
// after the other, so the exp temporaries of only one register are live at a time).
template <typename T, typename A, int NB>
void lane_stats(const T* x, int64_t sK, int64_t K, typename VT<A>::V* M, typename VT<A>::V* S,
                typename VT<A>::V* Tt) {
  using V = typename VT<A>::V;
  constexpr int N = VT<A>::N;
  constexpr A NEG = -std::numeric_limits<A>::infinity();
  V m[NB], s[NB], t[NB], cm[NB];
#pragma GCC unroll 4
  for (int v = 0; v < NB; ++v) m[v] = bc<V>(NEG), s[v] = V{}, t[v] = V{};
  for (int64_t k0 = 0; k0 < K; k0 += LCH) {
    const int64_t k1 = std::min(K, k0 + LCH);
#pragma GCC unroll 4
    for (int v = 0; v < NB; ++v) cm[v] = bc<V>(NEG);
    for (int64_t k = k0; k < k1; ++k) {
#pragma GCC unroll 4
      for (int v = 0; v < NB; ++v) cm[v] = vmax(VIO<T>::load(x + k * sK + v * N), cm[v]);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NB; ++v) {
      const V mn = vmax(cm[v], m[v]);
      const auto first = m[v] == NEG;
      const V d = first ? bc<V>(A(0)) : mn - m[v];
      const V sc = vexp(-d);
      t[v] = sc * (t[v] - d * s[v]);
      s[v] = sc * s[v];
      m[v] = mn;
    }
    for (int64_t k = k0; k < k1; ++k) {
#pragma GCC unroll 4
      for (int v = 0; v < NB; ++v) stat_term<V, A>(VIO<T>::load(x + k * sK + v * N), m[v], s[v], t[v]);
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < NB; ++v) {
    const auto none = m[v] == NEG;
    S[v] = none ? bc<V>(std::numeric_limits<A>::quiet_NaN()) : s[v];
    Tt[v] = none ? bc<V>(std::numeric_limits<A>::quiet_NaN()) : t[v];
    M[v] = m[v];
  }
}

// ---------------------------------------------------------------------------------------------
// Pairwise sums: sum_k f(a_k, b_k), f = exp(a)(a - b) (KL) or exp(a) b (log-categorical).
// ---------------------------------------------------------------------------------------------
struct KLTerm {
  template <typename V>
  static MMR_ALWAYS_INLINE V f(V a, V b) {
    return vexp(a) * (a - b);
  }
  // d/da = exp(a)(a - b + 1), d/db = -exp(a)
  template <typename V, typename G>
  static MMR_ALWAYS_INLINE void df(V a, V b, G g, V& ga, V& gb) {
    V e = g * vexp(a);
    ga = e * (a - b + 1);
    gb = -e;
  }
};
struct LogCatTerm {
  template <typename V>
  static MMR_ALWAYS_INLINE V f(V a, V b) {
    return vexp(a) * b;
  }
  template <typename V, typename G>
  static MMR_ALWAYS_INLINE void df(V a, V b, G g, V& ga, V& gb) {
    V e = g * vexp(a);
    ga = e * b;
    gb = e;
  }
};

template <typename F, typename T, typename A>
A row_sum2(const T* a, const T* b, int64_t K) {
  using V = typename VT<A>::V;
  constexpr int N = VT<A>::N;
  V acc0{}, acc1{};
  int64_t k = 0;
  for (; k + 2 * N <= K; k += 2 * N) {
    acc0 += F::f(VIO<T>::load(a + k), VIO<T>::load(b + k));
    acc1 += F::f(VIO<T>::load(a + k + N), VIO<T>::load(b + k + N));
  }
  for (; k + N <= K; k += N) acc0 += F::f(VIO<T>::load(a + k), VIO<T>::load(b + k));
  A acc = hsum<A>(acc0 + acc1);
  for (; k < K; ++k) acc += F::f(A(ld(a + k)), A(ld(b + k)));
  return acc;
}

template <typename F, typename T, typename A, int NB>
void lane_sum2(const T* a, int64_t saK, const T* b, int64_t sbK, int64_t K, typename VT<A>::V* acc) {
  constexpr int N = VT<A>::N;
#pragma GCC unroll 4
  for (int v = 0; v < NB; ++v) acc[v] = typename VT<A>::V{};
  for (int64_t k = 0; k < K; ++k) {
#pragma GCC unroll 4
    for (int v = 0; v < NB; ++v)
      acc[v] += F::f(VIO<T>::load(a + k * saK + v * N), VIO<T>::load(b + k * sbK + v * N));
  }
}

// Lane driver: frames cut into chunks of 4 * N tokens; a full chunk runs blk(NB = 4), a partial
// one blk(NB = 1) per N tokens and then tail(b, l) (gather path) for the last < N tokens.
template <typename A, typename Blk, typename Tail>
void for_lane_blocks(const Geo& g, const Blk& blk, const Tail& tail) {
  constexpr int64_t N = VT<A>::N, NW = 4 * VT<A>::N;
  const int64_t nch = (g.L + NW - 1) / NW;
  at::parallel_for(0, g.B * nch, std::max<int64_t>(1, 32768 / std::max<int64_t>(g.K, 1) / NW),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t i = begin; i < end; ++i) {
                       const int64_t b = i / nch, c0 = (i % nch) * NW, c1 = std::min(g.L, c0 + NW);
                       int64_t l = c0;
                       if (c1 - c0 == NW) {
                         blk(std::integral_constant<int, 4>{}, b, l);
                         l += NW;
                       }
                       for (; l + N <= c1; l += N) blk(std::integral_constant<int, 1>{}, b, l);
                       for (; l < c1; ++l) tail(b, l);
                     }
                   });
}

// ---------------------------------------------------------------------------------------------
// Gather helpers for the general path.
// ---------------------------------------------------------------------------------------------
template <typename T, typename A>
void gather(const T* x, int64_t sK, int64_t K, A* buf) {
  for (int64_t k = 0; k < K; ++k) buf[k] = ld(x + k * sK);
}
template <typename T, typename A>
void scatter(const A* buf, int64_t K, T* y, int64_t sK) {
  for (int64_t k = 0; k < K; ++k) st(y + k * sK, buf[k]);
}

inline int64_t grain_tokens(int64_t K) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(K, 1)); }

inline const bool* mask_ptr(const c10::optional<Tensor>& mask) {
  return mask.has_value() ? mask->const_data_ptr<bool>() : nullptr;
}

// ---------------------------------------------------------------------------------------------
// Softmax-statistics forward driver: calls emit(b, l, m, s, t) for every unmasked token.
// ---------------------------------------------------------------------------------------------
template <typename T, typename A, typename Emit>
void for_stats(const View<const T>& x, const Geo& g, const bool* mask, const Emit& emit) {
  constexpr int N = VT<A>::N;
  const Path path = choose_path<A>(g, x);
  if (path == kLane) {
    for_lane_blocks<A>(
        g,
        [&](auto nb, int64_t b, int64_t l0) {
          constexpr int NB = decltype(nb)::value;
          typename VT<A>::V m[NB], s[NB], t[NB];
          lane_stats<T, A, NB>(x.tok(b, l0), x.sK, g.K, m, s, t);
          for (int j = 0; j < NB * N; ++j) {
            if (mask && !mask[b * g.L + l0 + j]) continue;
            emit(b, l0 + j, m[j / N][j % N], s[j / N][j % N], t[j / N][j % N]);
          }
        },
        [&](int64_t b, int64_t l) {
          if (mask && !mask[b * g.L + l]) return;
          thread_local std::vector<A> buf;
          buf.resize(g.K);
          gather(x.tok(b, l), x.sK, g.K, buf.data());
          Stats<A> st = row_stats<A, A>(buf.data(), g.K);
          emit(b, l, st.m, st.s, st.t);
        });
    return;
  }
  at::parallel_for(0, g.B * g.L, grain_tokens(g.K), [&](int64_t begin, int64_t end) {
    std::vector<A> buf(path == kGather ? g.K : 0);
    for (int64_t i = begin; i < end; ++i) {
      if (mask && !mask[i]) continue;
      const int64_t b = i / g.L, l = i % g.L;
      Stats<A> st;
      if (path == kRow) {
        st = row_stats<T, A>(x.tok(b, l), g.K);
      } else {
        gather(x.tok(b, l), x.sK, g.K, buf.data());
        st = row_stats<A, A>(buf.data(), g.K);
      }
      emit(b, l, st.m, st.s, st.t);
    }
  });
}

// Pairwise-sum forward driver: out[b * L + l] = sum_k F(a, b) (0 where masked).
template <typename F, typename T, typename A>
void for_sum2(const View<const T>& a, const View<const T>& bb, const Geo& g, const bool* mask, A* out) {
  constexpr int N = VT<A>::N;
  const Path path = choose_path<A>(g, a, bb);
  if (path == kLane) {
    for_lane_blocks<A>(
        g,
        [&](auto nb, int64_t b, int64_t l0) {
          constexpr int NB = decltype(nb)::value;
          typename VT<A>::V acc[NB];
          lane_sum2<F, T, A, NB>(a.tok(b, l0), a.sK, bb.tok(b, l0), bb.sK, g.K, acc);
          for (int j = 0; j < NB * N; ++j) {
            const int64_t o = b * g.L + l0 + j;
            out[o] = (mask && !mask[o]) ? A(0) : acc[j / N][j % N];
          }
        },
        [&](int64_t b, int64_t l) {
          const int64_t o = b * g.L + l;
          if (mask && !mask[o]) {
            out[o] = 0;
            return;
          }
          thread_local std::vector<A> ba, bbuf;
          ba.resize(g.K);
          bbuf.resize(g.K);
          gather(a.tok(b, l), a.sK, g.K, ba.data());
          gather(bb.tok(b, l), bb.sK, g.K, bbuf.data());
          out[o] = row_sum2<F, A, A>(ba.data(), bbuf.data(), g.K);
        });
    return;
  }
  at::parallel_for(0, g.B * g.L, grain_tokens(g.K), [&](int64_t begin, int64_t end) {
    std::vector<A> ba(path == kGather ? g.K : 0), bbuf(path == kGather ? g.K : 0);
    for (int64_t i = begin; i < end; ++i) {
      if (mask && !mask[i]) {
        out[i] = 0;
        continue;
      }
      const int64_t b = i / g.L, l = i % g.L;
      if (path == kRow) {
        out[i] = row_sum2<F, T, A>(a.tok(b, l), bb.tok(b, l), g.K);
      } else {
        gather(a.tok(b, l), a.sK, g.K, ba.data());
        gather(bb.tok(b, l), bb.sK, g.K, bbuf.data());
        out[i] = row_sum2<F, A, A>(ba.data(), bbuf.data(), g.K);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Softmax-type backward: y_k = g exp(z_k - lse) (mu - c3 z_k) - g [k == kt]
//   entropy: (mu, c3) = (mu, 1) -> g p (mu - z);  nll: (mu, c3) = (1, 0), kt = target -> g (p - onehot)
// Masked tokens (and zero upstream grads) get exact zeros.
// ---------------------------------------------------------------------------------------------
template <typename A>
struct TokP {
  A g, lse, mu, c3;
  int64_t kt;  // -1: no one-hot term
};

template <typename A>
MMR_ALWAYS_INLINE typename VT<A>::V softmax_bwd_term(typename VT<A>::V z, typename VT<A>::V g,
                                                     typename VT<A>::V lse, typename VT<A>::V mu,
                                                     typename VT<A>::V c3) {
  typename VT<A>::V y = g * vexp_neg(z - lse) * (mu - c3 * z);
  return g == A(0) ? bc<typename VT<A>::V>(A(0)) : y;
}

// The target code's entry of the NLL gradient, g (p_t - 1) = g expm1(z_t - lse), formed in the
// accumulation dtype and rounded once: subtracting g after rounding g p_t to bf16 would leave an
// error of a bf16 ulp of g where the truth (p_t -> 1) is ~0.
template <typename A>
MMR_ALWAYS_INLINE A target_grad(A z_target, const TokP<A>& p) {
  return p.g * std::expm1(z_target - p.lse);
}

template <typename T, typename U, typename A>
void row_softmax_bwd(const T* x, U* y, int64_t K, const TokP<A>& p) {
  using V = typename VT<A>::V;
  constexpr int N = VT<A>::N;
  if (p.g == A(0)) {
    for (int64_t k = 0; k < K; ++k) st(y + k, A(0));
    return;
  }
  const A z_target = p.kt >= 0 ? A(ld(x + p.kt)) : A(0);  // read first: x and y may be one buffer
  const V g = bc<V>(p.g), lse = bc<V>(p.lse), mu = bc<V>(p.mu), c3 = bc<V>(p.c3);
  int64_t k = 0;
  for (; k + N <= K; k += N) VIO<U>::store(y + k, softmax_bwd_term<A>(VIO<T>::load(x + k), g, lse, mu, c3));
  for (; k < K; ++k) {
    A z = ld(x + k);
    st(y + k, p.g * vexp(z - p.lse) * (p.mu - p.c3 * z));
  }
  if (p.kt >= 0) st(y + p.kt, target_grad(z_target, p));
}

template <typename T, typename A, typename ParamFn>
void for_softmax_bwd(const View<const T>& x, const View<T>& y, const Geo& g, const bool* mask, const ParamFn& param) {
  using V = typename VT<A>::V;
  constexpr int N = VT<A>::N;
  const Path path = choose_path<A>(g, x, y);
  if (path == kLane) {
    const int64_t nblk = (g.L + N - 1) / N;
    at::parallel_for(0, g.B * nblk, std::max<int64_t>(1, grain_tokens(g.K) / N), [&](int64_t begin, int64_t end) {
      std::vector<A> buf(g.K);
      int64_t KT[VT<A>::N];
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / nblk, l0 = (i % nblk) * N;
        if (l0 + N <= g.L) {
          V G{}, LSE{}, MU{}, C3{};
          bool any_kt = false;
          for (int j = 0; j < N; ++j) {
            const int64_t o = b * g.L + l0 + j;
            TokP<A> tp{A(0), A(0), A(0), A(0), -1};
            if (!(mask && !mask[o])) tp = param(b, l0 + j);
            G[j] = tp.g;
            LSE[j] = tp.lse;
            MU[j] = tp.mu;
            C3[j] = tp.c3;
            KT[j] = tp.g == A(0) ? -1 : tp.kt;
            any_kt |= KT[j] >= 0;
          }
          const T* xb = x.tok(b, l0);
          T* yb = y.tok(b, l0);
          for (int64_t k = 0; k < g.K; ++k)
            VIO<T>::store(yb + k * y.sK, softmax_bwd_term<A>(VIO<T>::load(xb + k * x.sK), G, LSE, MU, C3));
          if (any_kt) {
            for (int j = 0; j < N; ++j) {
              if (KT[j] < 0) continue;
              const TokP<A> tp{G[j], LSE[j], MU[j], C3[j], KT[j]};
              st(yb + KT[j] * y.sK + j, target_grad(A(ld(xb + KT[j] * x.sK + j)), tp));
            }
          }
        } else {
          for (int64_t l = l0; l < g.L; ++l) {
            const int64_t o = b * g.L + l;
            T* yt = y.tok(b, l);
            if (mask && !mask[o]) {
              for (int64_t k = 0; k < g.K; ++k) st(yt + k * y.sK, A(0));
              continue;
            }
            gather(x.tok(b, l), x.sK, g.K, buf.data());
            row_softmax_bwd<A, A, A>(buf.data(), buf.data(), g.K, param(b, l));
            scatter(buf.data(), g.K, yt, y.sK);
          }
        }
      }
    });
    return;
  }
  at::parallel_for(0, g.B * g.L, grain_tokens(g.K), [&](int64_t begin, int64_t end) {
    std::vector<A> buf(path == kGather ? g.K : 0);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / g.L, l = i % g.L;
      T* yt = y.tok(b, l);
      if (mask && !mask[i]) {
        for (int64_t k = 0; k < g.K; ++k) st(yt + k * y.sK, A(0));
        continue;
      }
      if (path == kRow) {
        row_softmax_bwd<T, T, A>(x.tok(b, l), yt, g.K, param(b, l));
      } else {
        gather(x.tok(b, l), x.sK, g.K, buf.data());
        row_softmax_bwd<A, A, A>(buf.data(), buf.data(), g.K, param(b, l));
        scatter(buf.data(), g.K, yt, y.sK);
      }
    }
  });
}

// Pairwise backward: (ga_k, gb_k) = F::df(a_k, b_k, g_token); zeros where g_token == 0 / masked.
template <typename F, typename T, typename A>
void row_pair_bwd(const T* a, const T* b, T* ga, T* gb, int64_t K, A g) {
  using V = typename VT<A>::V;
  constexpr int N = VT<A>::N;
  if (g == A(0)) {
    for (int64_t k = 0; k < K; ++k) st(ga + k, A(0)), st(gb + k, A(0));
    return;
  }
  const V gv = bc<V>(g);
  int64_t k = 0;
  for (; k + N <= K; k += N) {
    V x{}, y{};
    F::df(VIO<T>::load(a + k), VIO<T>::load(b + k), gv, x, y);
    VIO<T>::store(ga + k, x);
    VIO<T>::store(gb + k, y);
  }
  for (; k < K; ++k) {
    A x, y;
    F::df(A(ld(a + k)), A(ld(b + k)), g, x, y);
    st(ga + k, x);
    st(gb + k, y);
  }
}

template <typename F, typename T, typename A>
void for_pair_bwd(const View<const T>& a, const View<const T>& bv, const View<T>& ga, const View<T>& gb,
                  const Geo& g, const bool* mask, const A* grad) {
  using V = typename VT<A>::V;
  constexpr int N = VT<A>::N;
  const Path path = choose_path<A>(g, a, bv, ga, gb);
  auto gtok = [&](int64_t o) { return (mask && !mask[o]) ? A(0) : grad[o]; };
  if (path == kLane) {
    const int64_t nblk = (g.L + N - 1) / N;
    at::parallel_for(0, g.B * nblk, std::max<int64_t>(1, grain_tokens(g.K) / N), [&](int64_t begin, int64_t end) {
      std::vector<A> b1(g.K), b2(g.K), b3(g.K), b4(g.K);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / nblk, l0 = (i % nblk) * N;
        if (l0 + N <= g.L) {
          V G{};
          for (int j = 0; j < N; ++j) G[j] = gtok(b * g.L + l0 + j);
          const auto zero = G == A(0);
          const T *pa = a.tok(b, l0), *pb = bv.tok(b, l0);
          T *qa = ga.tok(b, l0), *qb = gb.tok(b, l0);
          for (int64_t k = 0; k < g.K; ++k) {
            V x{}, y{};
            F::df(VIO<T>::load(pa + k * a.sK), VIO<T>::load(pb + k * bv.sK), G, x, y);
            VIO<T>::store(qa + k * ga.sK, zero ? bc<V>(A(0)) : x);
            VIO<T>::store(qb + k * gb.sK, zero ? bc<V>(A(0)) : y);
          }
        } else {
          for (int64_t l = l0; l < g.L; ++l) {
            gather(a.tok(b, l), a.sK, g.K, b1.data());
            gather(bv.tok(b, l), bv.sK, g.K, b2.data());
            row_pair_bwd<F, A, A>(b1.data(), b2.data(), b3.data(), b4.data(), g.K, gtok(b * g.L + l));
            scatter(b3.data(), g.K, ga.tok(b, l), ga.sK);
            scatter(b4.data(), g.K, gb.tok(b, l), gb.sK);
          }
        }
      }
    });
    return;
  }
  at::parallel_for(0, g.B * g.L, grain_tokens(g.K), [&](int64_t begin, int64_t end) {
    const int64_t n = path == kGather ? g.K : 0;
    std::vector<A> b1(n), b2(n), b3(n), b4(n);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / g.L, l = i % g.L;
      if (path == kRow) {
        row_pair_bwd<F, T, A>(a.tok(b, l), bv.tok(b, l), ga.tok(b, l), gb.tok(b, l), g.K, gtok(i));
      } else {
        gather(a.tok(b, l), a.sK, g.K, b1.data());
        gather(bv.tok(b, l), bv.sK, g.K, b2.data());
        row_pair_bwd<F, A, A>(b1.data(), b2.data(), b3.data(), b4.data(), g.K, gtok(i));
        scatter(b3.data(), g.K, ga.tok(b, l), ga.sK);
        scatter(b4.data(), g.K, gb.tok(b, l), gb.sK);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Op entry points (inputs validated in Python; these checks guard direct torch.ops calls).
// ---------------------------------------------------------------------------------------------
int64_t norm_class_dim(int64_t class_dim) {
  TORCH_CHECK(class_dim == 1 || class_dim == 2 || class_dim == -1, "class_dim must be 1 or -1, got ", class_dim);
  return class_dim == 1 ? 1 : 2;
}

void check_input(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK(t.dim() == 3, op, ": `", name, "` must be 3-D, got ", t.sizes());
  TORCH_CHECK(t.device().is_cpu(), op, ": `", name, "` must be a CPU tensor");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": `", name, "` must be floating point");
}

c10::optional<Tensor> prep_mask(const char* op, const c10::optional<Tensor>& mask, const Geo& g) {
  if (!mask.has_value()) return c10::nullopt;
  TORCH_CHECK(mask->scalar_type() == at::kBool, op, ": `mask` must be bool");
  TORCH_CHECK(mask->dim() == 2 && mask->size(0) == g.B && mask->size(1) == g.L, op, ": `mask` must be [B, L] = [",
              g.B, ", ", g.L, "], got ", mask->sizes());
  return mask->contiguous();
}

Tensor token_out(const Tensor& like, const Geo& g) {
  return at::empty({g.B, g.L}, like.options().dtype(acc_type(like.scalar_type())));
}

// Gradient buffer with the input's memory layout when it is one of the two dense layouts.
Tensor grad_like_(const Tensor& x, int64_t cd) {
  if (x.is_non_overlapping_and_dense()) return at::empty_like(x);
  Geo g = geo_of(x, cd);
  int64_t sK = cd == 1 ? x.stride(1) : x.stride(2);
  int64_t sL = cd == 1 ? x.stride(2) : x.stride(1);
  if (sL == 1 && sK != 1) {  // keep the token dim contiguous: memory [B, K, L]
    Tensor t = at::empty({g.B, g.K, g.L}, x.options());
    return cd == 1 ? t : t.transpose(1, 2);
  }
  Tensor t = at::empty({g.B, g.L, g.K}, x.options());
  return cd == 1 ? t.transpose(1, 2) : t;
}

// (Tried: madvise(MADV_HUGEPAGE) on the fresh gradient buffer to cut first-touch page faults; on
// this class of VM, huge-page compaction made the backward ~10x slower. Left to the allocator.)
Tensor grad_like(const Tensor& x, int64_t cd) { return grad_like_(x, cd); }

std::tuple<Tensor, Tensor, Tensor> entropy_fwd(const Tensor& logits, int64_t class_dim, const c10::optional<Tensor>& mask_) {
  const char* op = "codebook_entropy";
  check_input(op, "logits", logits);
  const int64_t cd = norm_class_dim(class_dim);
  const Geo g = geo_of(logits, cd);
  TORCH_CHECK(g.K > 0, op, ": `logits` has an empty class dim");
  auto mask = prep_mask(op, mask_, g);
  Tensor H = token_out(logits, g), lse = token_out(logits, g), mu = token_out(logits, g);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "codebook_entropy", [&] {
    using A = at::opmath_type<scalar_t>;
    auto x = view_of<const scalar_t>(logits, cd);
    A *h = H.data_ptr<A>(), *ls = lse.data_ptr<A>(), *m_ = mu.data_ptr<A>();
    if (mask) {
      H.zero_();
      lse.zero_();
      mu.zero_();
    }
    for_stats<scalar_t, A>(x, g, mask_ptr(mask), [&](int64_t b, int64_t l, A m, A s, A t) {
      const int64_t o = b * g.L + l;
      const A ls_ = std::log(s), tm = t / s;
      h[o] = ls_ - tm;
      ls[o] = m + ls_;
      m_[o] = m + tm;
    });
  });
  return {H, lse, mu};
}

Tensor entropy_bwd(const Tensor& grad, const Tensor& logits, const Tensor& lse, const Tensor& mu, int64_t class_dim,
                   const c10::optional<Tensor>& mask_) {
  const char* op = "codebook_entropy_backward";
  check_input(op, "logits", logits);
  const int64_t cd = norm_class_dim(class_dim);
  const Geo g = geo_of(logits, cd);
  auto mask = prep_mask(op, mask_, g);
  const auto acc_t = acc_type(logits.scalar_type());
  Tensor gr = grad.to(acc_t).contiguous(), ls = lse.to(acc_t).contiguous(), m = mu.to(acc_t).contiguous();
  TORCH_CHECK(gr.numel() == g.B * g.L && ls.numel() == g.B * g.L && m.numel() == g.B * g.L, op,
              ": grad / lse / mu must be [B, L]");
  Tensor out = grad_like(logits, cd);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "codebook_entropy_backward", [&] {
    using A = at::opmath_type<scalar_t>;
    const A *pg = gr.const_data_ptr<A>(), *pl = ls.const_data_ptr<A>(), *pm = m.const_data_ptr<A>();
    for_softmax_bwd<scalar_t, A>(
        view_of<const scalar_t>(logits, cd), view_of<scalar_t>(out, cd), g, mask_ptr(mask),
        [&](int64_t b, int64_t l) {
          const int64_t o = b * g.L + l;
          return TokP<A>{pg[o], pl[o], pm[o], A(1), -1};
        });
  });
  return out;
}

std::tuple<Tensor, Tensor> nll_fwd(const Tensor& logits, const Tensor& target, int64_t class_dim,
                                   const c10::optional<Tensor>& mask_) {
  const char* op = "codebook_nll";
  check_input(op, "logits", logits);
  const int64_t cd = norm_class_dim(class_dim);
  const Geo g = geo_of(logits, cd);
  TORCH_CHECK(g.K > 0, op, ": `logits` has an empty class dim");
  auto mask = prep_mask(op, mask_, g);
  TORCH_CHECK(target.dim() == 2 && target.size(0) == g.B && target.size(1) == g.L, op,
              ": `target` must be [B, L], got ", target.sizes());
  Tensor tg = target.to(at::kLong).contiguous();
  Tensor nll = token_out(logits, g), lse = token_out(logits, g);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "codebook_nll", [&] {
    using A = at::opmath_type<scalar_t>;
    auto x = view_of<const scalar_t>(logits, cd);
    const int64_t* pt = tg.const_data_ptr<int64_t>();
    A *pn = nll.data_ptr<A>(), *pl = lse.data_ptr<A>();
    if (mask) {
      nll.zero_();
      lse.zero_();
    }
    for_stats<scalar_t, A>(x, g, mask_ptr(mask), [&](int64_t b, int64_t l, A m, A s, A) {
      const int64_t o = b * g.L + l;
      const int64_t y = pt[o];
      TORCH_CHECK(y >= 0 && y < g.K, op, ": `target` index ", y, " out of range [0, ", g.K, ")");
      const A ls_ = m + std::log(s);
      pl[o] = ls_;
      pn[o] = ls_ - A(ld(x.tok(b, l) + y * x.sK));
    });
  });
  return {nll, lse};
}

Tensor nll_bwd(const Tensor& grad, const Tensor& logits, const Tensor& target, const Tensor& lse, int64_t class_dim,
               const c10::optional<Tensor>& mask_) {
  const char* op = "codebook_nll_backward";
  check_input(op, "logits", logits);
  const int64_t cd = norm_class_dim(class_dim);
  const Geo g = geo_of(logits, cd);
  auto mask = prep_mask(op, mask_, g);
  const auto acc_t = acc_type(logits.scalar_type());
  Tensor gr = grad.to(acc_t).contiguous(), ls = lse.to(acc_t).contiguous(), tg = target.to(at::kLong).contiguous();
  TORCH_CHECK(gr.numel() == g.B * g.L && ls.numel() == g.B * g.L && tg.numel() == g.B * g.L, op,
              ": grad / target / lse must be [B, L]");
  Tensor out = grad_like(logits, cd);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "codebook_nll_backward", [&] {
    using A = at::opmath_type<scalar_t>;
    const A *pg = gr.const_data_ptr<A>(), *pl = ls.const_data_ptr<A>();
    const int64_t* pt = tg.const_data_ptr<int64_t>();
    for_softmax_bwd<scalar_t, A>(
        view_of<const scalar_t>(logits, cd), view_of<scalar_t>(out, cd), g, mask_ptr(mask),
        [&](int64_t b, int64_t l) {
          const int64_t o = b * g.L + l;
          const int64_t y = pt[o];
          TORCH_CHECK(y >= 0 && y < g.K, op, ": `target` index ", y, " out of range [0, ", g.K, ")");
          // g * p * (1 - 0 * z) - g [k == y]
          return TokP<A>{pg[o], pl[o], A(1), A(0), y};
        });
  });
  return out;
}

template <typename F>
Tensor pair_fwd(const char* op, const char* na, const char* nb, const Tensor& a, const Tensor& b, int64_t class_dim,
                const c10::optional<Tensor>& mask_) {
  check_input(op, na, a);
  check_input(op, nb, b);
  TORCH_CHECK(a.sizes() == b.sizes(), op, ": `", nb, "` has shape ", b.sizes(), " but `", na, "` has ", a.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": `", na, "` and `", nb, "` must have the same dtype");
  const int64_t cd = norm_class_dim(class_dim);
  const Geo g = geo_of(a, cd);
  auto mask = prep_mask(op, mask_, g);
  Tensor out = token_out(a, g);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.scalar_type(), "codebook_pair", [&] {
    using A = at::opmath_type<scalar_t>;
    for_sum2<F, scalar_t, A>(view_of<const scalar_t>(a, cd), view_of<const scalar_t>(b, cd), g, mask_ptr(mask),
                             out.data_ptr<A>());
  });
  return out;
}

template <typename F>
std::tuple<Tensor, Tensor> pair_bwd(const char* op, const Tensor& grad, const Tensor& a, const Tensor& b,
                                    int64_t class_dim, const c10::optional<Tensor>& mask_) {
  check_input(op, "a", a);
  check_input(op, "b", b);
  TORCH_CHECK(a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type(), op, ": inputs must match");
  const int64_t cd = norm_class_dim(class_dim);
  const Geo g = geo_of(a, cd);
  auto mask = prep_mask(op, mask_, g);
  Tensor gr = grad.to(acc_type(a.scalar_type())).contiguous();
  TORCH_CHECK(gr.numel() == g.B * g.L, op, ": grad must be [B, L]");
  Tensor ga = grad_like(a, cd), gb = grad_like(b, cd);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.scalar_type(), "codebook_pair", [&] {
    using A = at::opmath_type<scalar_t>;
    for_pair_bwd<F, scalar_t, A>(view_of<const scalar_t>(a, cd), view_of<const scalar_t>(b, cd), view_of<scalar_t>(ga, cd),
                                 view_of<scalar_t>(gb, cd), g, mask_ptr(mask), gr.const_data_ptr<A>());
  });
  return {ga, gb};
}

Tensor kl_fwd(const Tensor& a, const Tensor& b, int64_t cd, const c10::optional<Tensor>& mask) {
  return pair_fwd<KLTerm>("categorical_kl", "log_a", "log_b", a, b, cd, mask);
}
std::tuple<Tensor, Tensor> kl_bwd(const Tensor& grad, const Tensor& a, const Tensor& b, int64_t cd,
                                  const c10::optional<Tensor>& mask) {
  return pair_bwd<KLTerm>("categorical_kl_backward", grad, a, b, cd, mask);
}
Tensor logcat_fwd(const Tensor& a, const Tensor& b, int64_t cd, const c10::optional<Tensor>& mask) {
  return pair_fwd<LogCatTerm>("log_categorical", "log_x0", "log_prob", a, b, cd, mask);
}
std::tuple<Tensor, Tensor> logcat_bwd(const Tensor& grad, const Tensor& a, const Tensor& b, int64_t cd,
                                      const c10::optional<Tensor>& mask) {
  return pair_bwd<LogCatTerm>("log_categorical_backward", grad, a, b, cd, mask);
}

// ---------------------------------------------------------------------------------------------
// Autograd, for the C++/CUDA ops and the Triton ops alike (see op_library.h).
// ---------------------------------------------------------------------------------------------
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<Tensor>;

template <int NS>
struct EntropyFn : public torch::autograd::Function<EntropyFn<NS>> {
  static const c10::TypedOperatorHandle<decltype(entropy_fwd)>& op() {
    static const auto handle = find_op<decltype(entropy_fwd)>(NS, "codebook_entropy");
    return handle;
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& logits, int64_t class_dim, const OptionalTensor& mask) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [h, lse, mu] = op().call(logits, class_dim, mask);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({lse, mu});
    ctx->saved_data["class_dim"] = class_dim;
    ctx->save_for_backward({logits, lse, mu, mask.value_or(Tensor())});
    return {h, lse, mu};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_first_order("codebook entropy");
    variable_list out(3);
    if (!grads[0].defined()) return out;
    static const auto bwd = find_op<decltype(entropy_bwd)>(NS, "codebook_entropy_backward");
    const auto s = ctx->get_saved_variables();
    out[0] = bwd.call(grads[0], s[0], s[1], s[2], ctx->saved_data["class_dim"].toInt(), optional_of(s[3]));
    return out;
  }
};

template <int NS>
std::tuple<Tensor, Tensor, Tensor> entropy_autograd(const Tensor& logits, int64_t class_dim, const OptionalTensor& mask) {
  if (!records_grad(logits)) return call_below_autograd(EntropyFn<NS>::op(), logits, class_dim, mask);
  auto o = EntropyFn<NS>::apply(logits, class_dim, mask);
  return {o[0], o[1], o[2]};
}

template <int NS>
struct NllFn : public torch::autograd::Function<NllFn<NS>> {
  static const c10::TypedOperatorHandle<decltype(nll_fwd)>& op() {
    static const auto handle = find_op<decltype(nll_fwd)>(NS, "codebook_nll");
    return handle;
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target, int64_t class_dim,
                               const OptionalTensor& mask) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [nll, lse] = op().call(logits, target, class_dim, mask);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({lse});
    ctx->saved_data["class_dim"] = class_dim;
    ctx->save_for_backward({logits, target, lse, mask.value_or(Tensor())});
    return {nll, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_first_order("codebook nll");
    variable_list out(4);
    if (!grads[0].defined()) return out;
    static const auto bwd = find_op<decltype(nll_bwd)>(NS, "codebook_nll_backward");
    const auto s = ctx->get_saved_variables();
    out[0] = bwd.call(grads[0], s[0], s[1], s[2], ctx->saved_data["class_dim"].toInt(), optional_of(s[3]));
    return out;
  }
};

template <int NS>
std::tuple<Tensor, Tensor> nll_autograd(const Tensor& logits, const Tensor& target, int64_t class_dim,
                                        const OptionalTensor& mask) {
  if (!records_grad(logits)) return call_below_autograd(NllFn<NS>::op(), logits, target, class_dim, mask);
  auto o = NllFn<NS>::apply(logits, target, class_dim, mask);
  return {o[0], o[1]};
}

// categorical_kl and log_categorical: out = sum_k f(a_k, b_k) per token, both inputs differentiable.
template <int NS, const char* kName, const char* kBackwardName>
struct PairSumFn : public torch::autograd::Function<PairSumFn<NS, kName, kBackwardName>> {
  static const c10::TypedOperatorHandle<decltype(kl_fwd)>& op() {
    static const auto handle = find_op<decltype(kl_fwd)>(NS, kName);
    return handle;
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& a, const Tensor& b, int64_t class_dim,
                               const OptionalTensor& mask) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Tensor out = op().call(a, b, class_dim, mask);
    ctx->set_materialize_grads(false);
    ctx->saved_data["class_dim"] = class_dim;
    ctx->save_for_backward({a, b, mask.value_or(Tensor())});
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_first_order("codebook pair sum");
    variable_list out(4);
    if (!grads[0].defined()) return out;
    static const auto bwd = find_op<decltype(kl_bwd)>(NS, kBackwardName);
    const auto s = ctx->get_saved_variables();
    std::tie(out[0], out[1]) = bwd.call(grads[0], s[0], s[1], ctx->saved_data["class_dim"].toInt(), optional_of(s[2]));
    return out;
  }
};

constexpr char kKl[] = "categorical_kl", kKlBackward[] = "categorical_kl_backward";
constexpr char kLogCat[] = "log_categorical", kLogCatBackward[] = "log_categorical_backward";

template <int NS, const char* kName, const char* kBackwardName>
Tensor pair_sum_autograd(const Tensor& a, const Tensor& b, int64_t class_dim, const OptionalTensor& mask) {
  if (!records_grad(a, b)) return call_below_autograd(PairSumFn<NS, kName, kBackwardName>::op(), a, b, class_dim, mask);
  return PairSumFn<NS, kName, kBackwardName>::apply(a, b, class_dim, mask)[0];
}

void define_codebook_schemas(torch::Library& m) {
  m.def("codebook_entropy(Tensor logits, int class_dim, Tensor? mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "codebook_entropy_backward(Tensor grad, Tensor logits, Tensor lse, Tensor mu, int class_dim, Tensor? mask) "
      "-> Tensor");
  m.def("codebook_nll(Tensor logits, Tensor target, int class_dim, Tensor? mask) -> (Tensor, Tensor)");
  m.def(
      "codebook_nll_backward(Tensor grad, Tensor logits, Tensor target, Tensor lse, int class_dim, Tensor? mask) "
      "-> Tensor");
  m.def("categorical_kl(Tensor log_a, Tensor log_b, int class_dim, Tensor? mask) -> Tensor");
  m.def(
      "categorical_kl_backward(Tensor grad, Tensor log_a, Tensor log_b, int class_dim, Tensor? mask) "
      "-> (Tensor, Tensor)");
  m.def("log_categorical(Tensor log_x0, Tensor log_prob, int class_dim, Tensor? mask) -> Tensor");
  m.def(
      "log_categorical_backward(Tensor grad, Tensor log_x0, Tensor log_prob, int class_dim, Tensor? mask) "
      "-> (Tensor, Tensor)");
}

template <int NS>
void register_codebook_autograd(torch::Library& m) {
  m.impl("codebook_entropy", &entropy_autograd<NS>);
  m.impl("codebook_nll", &nll_autograd<NS>);
  m.impl("categorical_kl", &pair_sum_autograd<NS, kKl, kKlBackward>);
  m.impl("log_categorical", &pair_sum_autograd<NS, kLogCat, kLogCatBackward>);
}

}  // namespace codebook_cpu
}  // namespace mmreward

MMREWARD_SCHEMAS(mmreward::codebook_cpu::define_codebook_schemas)
MMREWARD_AUTOGRAD(mmreward::codebook_cpu::register_codebook_autograd)

TORCH_LIBRARY_IMPL(mmreward, CPU, m) {
  using namespace mmreward::codebook_cpu;
  m.impl("codebook_entropy", &entropy_fwd);
  m.impl("codebook_entropy_backward", &entropy_bwd);
  m.impl("codebook_nll", &nll_fwd);
  m.impl("codebook_nll_backward", &nll_bwd);
  m.impl("categorical_kl", &kl_fwd);
  m.impl("categorical_kl_backward", &kl_bwd);
  m.impl("log_categorical", &logcat_fwd);
  m.impl("log_categorical_backward", &logcat_bwd);
}
