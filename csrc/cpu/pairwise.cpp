// Pairwise reward losses: the family's schemas (both namespaces, see op_library.h), its autograd
// (C++, shared by the C++/CUDA and the Triton ops) and its C++/OpenMP CPU kernels.
//
//   pairwise_loss                 Bradley–Terry / margin / label smoothing / centering / ties,
//                                 + accuracy; optionally the (reduction-scaled) grads in the same pass
//   listwise_loss                 all ordered pairs of ranked rows, no [B, K, K]
//   reward_head_pairwise_loss     r = h·w + b fused with the pairwise loss; optionally all grads in
//                                 the forward pass (one pass over h)
// and their `_backward` ops (recompute; used for reduction="none" and by autograd generally).
//
// Determinism: work is split into chunks whose boundaries depend only on the problem size (never
// on the thread count); each chunk writes its partial sums, which are combined in chunk order.
// Accumulation: float for fp32/bf16/fp16 inputs (at::opmath_type), double for double; partial sums
// of chunks, and listwise row sums, are combined in double.
// Non-finite inputs: PairLoss (math.h) makes the loss and gradients of a pair with a NaN / inf
// input NaN; the accuracy is NaN when any pair has one.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "mmreward/buffer_cache.h"
#include "mmreward/math.h"
#include "mmreward/op_library.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <type_traits>

namespace mmreward {
namespace {

constexpr int64_t kPairChunk = 16384;  // pairs per chunk (pairwise_loss)
constexpr int64_t kTile = 256;         // pairs per vectorised tile inside a chunk
constexpr int64_t kLanes = 16;         // independent partial sums (vectorisable reduction)
constexpr int64_t kListChunk = 256;    // rows per chunk (listwise_loss)
constexpr int64_t kHeadChunks = 64;    // max row chunks (reward head; fixed => deterministic)

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename acc_t>
acc_t lane_sum(const acc_t* v, int64_t n) {
  // Sum of v[0..n) with kLanes fixed partial sums (n is padded with zeros to a multiple of kLanes).
  acc_t lanes[kLanes] = {};
  for (int64_t i = 0; i < n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += v[i + l];
  }
  for (int64_t w = kLanes / 2; w > 0; w /= 2) {
    for (int64_t l = 0; l < w; ++l) lanes[l] += lanes[l + w];
  }
  return lanes[0];
}

// ------------------------------------------------------------------------------------------------
// Checks
// ------------------------------------------------------------------------------------------------
void check_pair_args(const char* op, const at::Tensor& rc, const at::Tensor& rr, const std::optional<at::Tensor>& margin,
                     const std::optional<at::Tensor>& tie, int64_t reduction) {
  TORCH_CHECK(rc.dim() == 1 && rr.dim() == 1, op, ": r_chosen / r_rejected must be 1-D");
  TORCH_CHECK(rc.sizes() == rr.sizes(), op, ": r_chosen and r_rejected shapes differ");
  TORCH_CHECK(rc.scalar_type() == rr.scalar_type(), op, ": r_chosen and r_rejected dtypes differ");
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": bad reduction code ", reduction);
  const auto acc = acc_type(rc.scalar_type());
  if (margin.has_value()) {
    TORCH_CHECK(margin->sizes() == rc.sizes(), op, ": margin must have shape [B]");
    TORCH_CHECK(margin->scalar_type() == acc, op, ": margin must be ", acc, " (the accumulation dtype)");
  }
  if (tie.has_value()) {
    TORCH_CHECK(tie->sizes() == rc.sizes(), op, ": tie must have shape [B]");
    TORCH_CHECK(tie->scalar_type() == at::kBool, op, ": tie must be bool");
  }
}

// ------------------------------------------------------------------------------------------------
// pairwise_loss
// ------------------------------------------------------------------------------------------------
// Writes a 0-d CPU result directly (fill_ would go through the dispatcher: ~1 us a call, which
// matters at the batch sizes reward models train with).
template <typename T>
void store_scalar(at::Tensor& t, double v) {
  *t.mutable_data_ptr<T>() = static_cast<T>(v);
}

double accuracy_of(int64_t win, int64_t counted, int64_t nonfinite) {
  if (nonfinite > 0) return std::numeric_limits<double>::quiet_NaN();
  return counted > 0 ? static_cast<double>(win) / static_cast<double>(counted) : 0.0;
}

template <typename acc_t>
PairLoss<acc_t> pair_loss_of(double label_smoothing, double center_coef) {
  return PairLoss<acc_t>{acc_t(1.0 - label_smoothing / 2.0), acc_t(center_coef)};
}

template <typename scalar_t>
void pairwise_fwd_kernel(const at::Tensor& rc_t, const at::Tensor& rr_t, const std::optional<at::Tensor>& margin,
                         const std::optional<at::Tensor>& tie, double eps, double center, int64_t reduction,
                         bool need_grad, at::Tensor& loss_out, at::Tensor& acc_out, at::Tensor& gc_t, at::Tensor& gr_t) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = rc_t.size(0);
  const scalar_t* rc = rc_t.const_data_ptr<scalar_t>();
  const scalar_t* rr = rr_t.const_data_ptr<scalar_t>();
  const acc_t* m = margin.has_value() ? margin->const_data_ptr<acc_t>() : nullptr;
  const bool* tp = tie.has_value() ? tie->const_data_ptr<bool>() : nullptr;
  acc_t* per = reduction == kNone ? loss_out.mutable_data_ptr<acc_t>() : nullptr;
  acc_t* gc = need_grad ? gc_t.mutable_data_ptr<acc_t>() : nullptr;
  acc_t* gr = need_grad ? gr_t.mutable_data_ptr<acc_t>() : nullptr;
  const PairLoss<acc_t> pl = pair_loss_of<acc_t>(eps, center);
  const acc_t s = reduction == kMean ? acc_t(1.0 / static_cast<double>(B)) : acc_t(1);

  struct Counts {
    int64_t win = 0, counted = 0, nonfinite = 0;
  };
  const int64_t nchunk = ceil_div(B, kPairChunk);
  std::vector<double> part_loss(nchunk, 0.0);
  std::vector<Counts> part_counts(nchunk);
  // The tile loop is instantiated per option set so that its body is straight-line code and
  // vectorises (PairLoss is branch-free).
  auto tile = [&](auto has_m, auto has_t, auto store_per, auto store_grad, int64_t t0, int64_t n, acc_t* lbuf,
                  Counts& counts) {
    int64_t w = 0, k_cnt = 0, bad = 0;
    // local copies: stores through the float outputs must not force reloads of these
    const PairLoss<acc_t> pll = pl;
    const acc_t sl = s;
    const scalar_t* __restrict__ rcl = rc;
    const scalar_t* __restrict__ rrl = rr;
    const acc_t* __restrict__ ml = m;
    const bool* __restrict__ tl = tp;
    acc_t* __restrict__ perl = per;
    acc_t* __restrict__ gcl = gc;
    acc_t* __restrict__ grl = gr;
    acc_t* __restrict__ lb = lbuf;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = t0 + k;
      const acc_t a = static_cast<acc_t>(rcl[i]), b = static_cast<acc_t>(rrl[i]);
      bool ti = false;
      if constexpr (decltype(has_t)::value) ti = tl[i];
      acc_t mi = acc_t(0);
      if constexpr (decltype(has_m)::value) mi = ml[i];
      acc_t l, g1, g2;
      const bool finite = pll(a, b, mi, ti, sl, l, g1, g2);
      lb[k] = l;
      if constexpr (decltype(store_per)::value) perl[i] = l;
      if constexpr (decltype(store_grad)::value) {
        gcl[i] = g1;
        grl[i] = g2;
      }
      w += (!ti && a > b) ? 1 : 0;
      k_cnt += ti ? 0 : 1;
      bad += finite ? 0 : 1;
    }
    counts.win += w;
    counts.counted += k_cnt;
    counts.nonfinite += bad;
  };
  using T_ = std::true_type;
  using F_ = std::false_type;
  auto run_tile = [&](int64_t t0, int64_t n, acc_t* lbuf, Counts& counts) {
    const int code = (m ? 1 : 0) | (tp ? 2 : 0) | (per ? 4 : 0) | (gc ? 8 : 0);
    switch (code) {
#define MMR_CASE(C, A, B_, C_, D)                       \
  case C:                                               \
    tile(A{}, B_{}, C_{}, D{}, t0, n, lbuf, counts);    \
    break;
      MMR_CASE(0, F_, F_, F_, F_) MMR_CASE(1, T_, F_, F_, F_) MMR_CASE(2, F_, T_, F_, F_) MMR_CASE(3, T_, T_, F_, F_)
      MMR_CASE(4, F_, F_, T_, F_) MMR_CASE(5, T_, F_, T_, F_) MMR_CASE(6, F_, T_, T_, F_) MMR_CASE(7, T_, T_, T_, F_)
      MMR_CASE(8, F_, F_, F_, T_) MMR_CASE(9, T_, F_, F_, T_) MMR_CASE(10, F_, T_, F_, T_) MMR_CASE(11, T_, T_, F_, T_)
      MMR_CASE(12, F_, F_, T_, T_) MMR_CASE(13, T_, F_, T_, T_) MMR_CASE(14, F_, T_, T_, T_) MMR_CASE(15, T_, T_, T_, T_)
#undef MMR_CASE
    }
  };
  at::parallel_for(0, nchunk, 1, [&](int64_t c0, int64_t c1) {
    alignas(64) acc_t lbuf[kTile];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t lo = c * kPairChunk, hi = std::min(B, lo + kPairChunk);
      double chunk_loss = 0.0;
      Counts counts;
      for (int64_t t0 = lo; t0 < hi; t0 += kTile) {
        const int64_t n = std::min(kTile, hi - t0);
        run_tile(t0, n, lbuf, counts);
        if (!per) {
          const int64_t np = ceil_div(n, kLanes) * kLanes;
          for (int64_t k = n; k < np; ++k) lbuf[k] = acc_t(0);
          chunk_loss += static_cast<double>(lane_sum(lbuf, np));
        }
      }
      part_loss[c] = chunk_loss;
      part_counts[c] = counts;
    }
  });
  double total = 0.0;
  Counts all;
  for (int64_t c = 0; c < nchunk; ++c) {
    total += part_loss[c];
    all.win += part_counts[c].win;
    all.counted += part_counts[c].counted;
    all.nonfinite += part_counts[c].nonfinite;
  }
  if (reduction != kNone) {
    store_scalar<acc_t>(loss_out, reduction == kMean ? total / static_cast<double>(B) : total);
  }
  store_scalar<float>(acc_out, accuracy_of(all.win, all.counted, all.nonfinite));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pairwise_loss_cpu(
    const at::Tensor& r_chosen, const at::Tensor& r_rejected, const std::optional<at::Tensor>& margin,
    const std::optional<at::Tensor>& tie, double label_smoothing, double center_coef, int64_t reduction,
    bool need_grad) {
  check_pair_args("pairwise_loss", r_chosen, r_rejected, margin, tie, reduction);
  TORCH_CHECK(!(need_grad && reduction == kNone), "pairwise_loss: need_grad requires reduction mean or sum");
  const auto rc = r_chosen.contiguous(), rr = r_rejected.contiguous();
  const auto m = margin.has_value() ? std::optional<at::Tensor>(margin->contiguous()) : std::nullopt;
  const auto t = tie.has_value() ? std::optional<at::Tensor>(tie->contiguous()) : std::nullopt;
  const int64_t B = rc.size(0);
  auto opts = rc.options().dtype(acc_type(rc.scalar_type()));
  at::Tensor loss = reduction == kNone ? at::empty({B}, opts) : at::empty({}, opts);
  at::Tensor acc = at::empty({}, rc.options().dtype(at::kFloat));
  at::Tensor gc = at::empty({need_grad ? B : 0}, opts);
  at::Tensor gr = at::empty({need_grad ? B : 0}, opts);
  if (B == 0) {
    loss.fill_(0);
    acc.fill_(0);
    return {loss, acc, gc, gr};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, rc.scalar_type(), "pairwise_loss_cpu", [&] {
    pairwise_fwd_kernel<scalar_t>(rc, rr, m, t, label_smoothing, center_coef, reduction, need_grad, loss, acc, gc, gr);
  });
  return {loss, acc, gc, gr};
}

std::tuple<at::Tensor, at::Tensor> pairwise_loss_backward_cpu(
    const at::Tensor& grad, const at::Tensor& r_chosen, const at::Tensor& r_rejected,
    const std::optional<at::Tensor>& margin, const std::optional<at::Tensor>& tie, double label_smoothing,
    double center_coef, int64_t reduction) {
  check_pair_args("pairwise_loss_backward", r_chosen, r_rejected, margin, tie, reduction);
  const auto rc = r_chosen.contiguous(), rr = r_rejected.contiguous();
  const int64_t B = rc.size(0);
  TORCH_CHECK(reduction == kNone ? (grad.dim() == 1 && grad.size(0) == B) : grad.numel() == 1,
              "pairwise_loss_backward: grad has shape ", grad.sizes(), ", expected ",
              reduction == kNone ? "[B]" : "[] (a scalar)");
  const auto g = grad.to(acc_type(rc.scalar_type())).contiguous();
  const auto m = margin.has_value() ? std::optional<at::Tensor>(margin->contiguous()) : std::nullopt;
  const auto t = tie.has_value() ? std::optional<at::Tensor>(tie->contiguous()) : std::nullopt;
  at::Tensor gc = at::empty_like(rc), gr = at::empty_like(rr);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, rc.scalar_type(), "pairwise_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* a_p = rc.const_data_ptr<scalar_t>();
    const scalar_t* b_p = rr.const_data_ptr<scalar_t>();
    const acc_t* m_p = m.has_value() ? m->const_data_ptr<acc_t>() : nullptr;
    const bool* t_p = t.has_value() ? t->const_data_ptr<bool>() : nullptr;
    const acc_t* g_p = g.const_data_ptr<acc_t>();
    scalar_t* gc_p = gc.mutable_data_ptr<scalar_t>();
    scalar_t* gr_p = gr.mutable_data_ptr<scalar_t>();
    const PairLoss<acc_t> pl = pair_loss_of<acc_t>(label_smoothing, center_coef);
    const bool per_pair = reduction == kNone;
    const acc_t s0 = g_p[0] * (reduction == kMean ? acc_t(1.0 / static_cast<double>(B)) : acc_t(1));
    at::parallel_for(0, B, 4096, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        acc_t l, g1, g2;
        pl(static_cast<acc_t>(a_p[i]), static_cast<acc_t>(b_p[i]), m_p ? m_p[i] : acc_t(0), t_p ? t_p[i] : false,
           per_pair ? g_p[i] : s0, l, g1, g2);
        gc_p[i] = static_cast<scalar_t>(g1);
        gr_p[i] = static_cast<scalar_t>(g2);
      }
    });
  });
  return {gc, gr};
}

// ------------------------------------------------------------------------------------------------
// listwise_loss
// ------------------------------------------------------------------------------------------------
void check_list_args(const char* op, const at::Tensor& rewards, const at::Tensor& ranks, int64_t reduction) {
  TORCH_CHECK(rewards.dim() == 2, op, ": rewards must be 2-D [B, K]");
  TORCH_CHECK(ranks.sizes() == rewards.sizes(), op, ": ranks must have the shape of rewards");
  TORCH_CHECK(ranks.scalar_type() == at::kLong, op, ": ranks must be int64");
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": bad reduction code ", reduction);
}

// Rewards of a row in the accumulation dtype, divided by 4 (exact) so that the difference of any two
// finite rewards stays finite (soft_logistic_q); NaN in `nan_if_bad` if a ranked entry is not finite.
template <typename scalar_t, typename acc_t>
void load_row_quarters(const scalar_t* rb, const int64_t* kb, int64_t K, acc_t* rq, double& nan_if_bad) {
  nan_if_bad = 0.0;
  for (int64_t i = 0; i < K; ++i) {
    rq[i] = static_cast<acc_t>(rb[i]) * acc_t(0.25);
    if (kb[i] >= 0) nan_if_bad += static_cast<double>(rq[i] - rq[i]);
  }
}

std::tuple<at::Tensor, at::Tensor> listwise_loss_cpu(const at::Tensor& rewards_in, const at::Tensor& ranks_in,
                                                     int64_t reduction) {
  check_list_args("listwise_loss", rewards_in, ranks_in, reduction);
  const auto rewards = rewards_in.contiguous();
  const auto ranks = ranks_in.contiguous();
  const int64_t B = rewards.size(0), K = rewards.size(1);
  auto opts = rewards.options().dtype(acc_type(rewards.scalar_type()));
  at::Tensor loss = reduction == kNone ? at::empty({B}, opts) : at::empty({}, opts);
  at::Tensor counts = at::empty({B}, rewards.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, rewards.scalar_type(), "listwise_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* r = rewards.const_data_ptr<scalar_t>();
    const int64_t* rk = ranks.const_data_ptr<int64_t>();
    int64_t* cnt_p = counts.mutable_data_ptr<int64_t>();
    acc_t* per = reduction == kNone ? loss.mutable_data_ptr<acc_t>() : nullptr;
    const int64_t nchunk = ceil_div(B, kListChunk);
    std::vector<double> part(nchunk, 0.0);
    at::parallel_for(0, nchunk, 1, [&](int64_t c0, int64_t c1) {
      std::vector<acc_t> rq(K);
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t lo = c * kListChunk, hi = std::min(B, lo + kListChunk);
        double chunk = 0.0;
        for (int64_t b = lo; b < hi; ++b) {
          const int64_t* kb = rk + b * K;
          double row = 0.0;  // up to K² / 2 terms: summed in double
          load_row_quarters(r + b * K, kb, K, rq.data(), row);
          int64_t n = 0;
          for (int64_t i = 0; i < K; ++i) {
            if (kb[i] < 0) continue;
            for (int64_t j = 0; j < K; ++j) {
              if (kb[j] < 0 || !(kb[i] < kb[j])) continue;
              acc_t l, dz;
              soft_logistic_q(rq[i] - rq[j], acc_t(1), l, dz);
              row += static_cast<double>(l);
              ++n;
            }
          }
          cnt_p[b] = n;
          if (per) per[b] = static_cast<acc_t>(n > 0 ? row / static_cast<double>(n) : row);
          chunk += row;
        }
        part[c] = chunk;
      }
    });
    if (reduction != kNone) {
      double total = 0.0;
      for (int64_t c = 0; c < nchunk; ++c) total += part[c];
      int64_t npairs = 0;
      for (int64_t b = 0; b < B; ++b) npairs += cnt_p[b];
      if (reduction == kMean && npairs > 0) total /= static_cast<double>(npairs);
      store_scalar<acc_t>(loss, total);
    }
  });
  return {loss, counts};
}

at::Tensor listwise_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& rewards_in, const at::Tensor& ranks_in,
                                      const at::Tensor& pair_counts, int64_t reduction) {
  check_list_args("listwise_loss_backward", rewards_in, ranks_in, reduction);
  const auto rewards = rewards_in.contiguous();
  const auto ranks = ranks_in.contiguous();
  const int64_t B = rewards.size(0), K = rewards.size(1);
  TORCH_CHECK(pair_counts.dim() == 1 && pair_counts.size(0) == B && pair_counts.scalar_type() == at::kLong,
              "listwise_loss_backward: pair_counts must be int64 [B]");
  TORCH_CHECK(reduction == kNone ? (grad.dim() == 1 && grad.size(0) == B) : grad.numel() == 1,
              "listwise_loss_backward: bad grad shape ", grad.sizes());
  const auto g = grad.to(acc_type(rewards.scalar_type())).contiguous();
  const auto cnts = pair_counts.contiguous();
  at::Tensor out = at::empty_like(rewards);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, rewards.scalar_type(), "listwise_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* r = rewards.const_data_ptr<scalar_t>();
    const int64_t* rk = ranks.const_data_ptr<int64_t>();
    const int64_t* cnt_p = cnts.const_data_ptr<int64_t>();
    const acc_t* g_p = g.const_data_ptr<acc_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    double s_all = 0;
    if (reduction != kNone) {
      int64_t npairs = 0;
      for (int64_t b = 0; b < B; ++b) npairs += cnt_p[b];
      s_all = reduction == kSum ? g_p[0] : (npairs > 0 ? g_p[0] / static_cast<double>(npairs) : 0.0);
    }
    at::parallel_for(0, B, kListChunk, [&](int64_t lo, int64_t hi) {
      std::vector<acc_t> rq(K);
      std::vector<double> gv(K);  // each entry sums up to K terms: double
      for (int64_t b = lo; b < hi; ++b) {
        const int64_t* kb = rk + b * K;
        const double s = reduction == kNone ? (cnt_p[b] > 0 ? g_p[b] / static_cast<double>(cnt_p[b]) : 0.0) : s_all;
        double nan_if_bad;
        load_row_quarters(r + b * K, kb, K, rq.data(), nan_if_bad);
        std::fill(gv.begin(), gv.end(), nan_if_bad);
        for (int64_t i = 0; i < K; ++i) {
          if (kb[i] < 0) continue;
          for (int64_t j = 0; j < K; ++j) {
            if (kb[j] < 0 || !(kb[i] < kb[j])) continue;
            acc_t l, dz;
            soft_logistic_q(rq[i] - rq[j], acc_t(1), l, dz);
            gv[i] += static_cast<double>(dz);
            gv[j] -= static_cast<double>(dz);
          }
        }
        for (int64_t i = 0; i < K; ++i) o[b * K + i] = static_cast<scalar_t>(static_cast<acc_t>(s * gv[i]));
      }
    });
  });
  return out;
}

// ------------------------------------------------------------------------------------------------
// reward_head_pairwise_loss
// ------------------------------------------------------------------------------------------------
constexpr int64_t kDotLanes = 32;

template <typename scalar_t, typename acc_t>
inline acc_t dot_row(const scalar_t* x, const acc_t* w, int64_t H) {
  acc_t acc[kDotLanes] = {};
  int64_t j = 0;
  for (; j + kDotLanes <= H; j += kDotLanes) {
    for (int64_t l = 0; l < kDotLanes; ++l) acc[l] += static_cast<acc_t>(x[j + l]) * w[j + l];
  }
  for (int64_t l = 0; j < H; ++j, ++l) acc[l] += static_cast<acc_t>(x[j]) * w[j];
  for (int64_t wdt = kDotLanes / 2; wdt > 0; wdt /= 2) {
    for (int64_t l = 0; l < wdt; ++l) acc[l] += acc[l + wdt];
  }
  return acc[0];
}

// Both dot products of a row pair at once: r_c = x_c·w, r_r = x_r·w. The generic version is
// dot_row twice; the AVX-512 fp32 version keeps 4 independent accumulators per row (8 FMA chains in
// flight, so the loop is bound by memory, not FMA latency) and reads w once for both rows. Its
// summation order depends only on H (deterministic).
template <typename scalar_t, typename acc_t>
inline void dot_pair(const scalar_t* xc, const scalar_t* xr, const acc_t* w, int64_t H, acc_t& a, acc_t& b) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, r0 = c0, r1 = c0, r2 = c0, r3 = c0;
    int64_t j = 0;
    for (; j + 64 <= H; j += 64) {
      const __m512 w0 = _mm512_loadu_ps(w + j), w1 = _mm512_loadu_ps(w + j + 16);
      const __m512 w2 = _mm512_loadu_ps(w + j + 32), w3 = _mm512_loadu_ps(w + j + 48);
      c0 = _mm512_fmadd_ps(_mm512_loadu_ps(xc + j), w0, c0);
      r0 = _mm512_fmadd_ps(_mm512_loadu_ps(xr + j), w0, r0);
      c1 = _mm512_fmadd_ps(_mm512_loadu_ps(xc + j + 16), w1, c1);
      r1 = _mm512_fmadd_ps(_mm512_loadu_ps(xr + j + 16), w1, r1);
      c2 = _mm512_fmadd_ps(_mm512_loadu_ps(xc + j + 32), w2, c2);
      r2 = _mm512_fmadd_ps(_mm512_loadu_ps(xr + j + 32), w2, r2);
      c3 = _mm512_fmadd_ps(_mm512_loadu_ps(xc + j + 48), w3, c3);
      r3 = _mm512_fmadd_ps(_mm512_loadu_ps(xr + j + 48), w3, r3);
    }
    for (; j < H; j += 16) {
      const __mmask16 k = H - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (H - j)) - 1u);
      const __m512 wv = _mm512_maskz_loadu_ps(k, w + j);
      c0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, xc + j), wv, c0);
      r0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, xr + j), wv, r0);
    }
    a = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)));
    b = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(r0, r1), _mm512_add_ps(r2, r3)));
    return;
  }
#endif
  a = dot_row(xc, w, H);
  b = dot_row(xr, w, H);
}

constexpr int64_t kStreamGradBytes = int64_t(32) << 20;  // larger [B, H] grads bypass the caches

// Gradients of one row pair: grad_h rows = coef·w (if oc), grad_w partial += coef_c·h_c + coef_r·h_r
// (if gw). Restrict-qualified and branch-free inside the loops so they vectorise. `stream`: the grads
// are too big to stay in cache until autograd reads them (kStreamGradBytes).
template <typename scalar_t, typename acc_t>
inline void row_grads(const scalar_t* __restrict__ xc, const scalar_t* __restrict__ xr, const acc_t* __restrict__ w,
                      acc_t cc, acc_t cr, scalar_t* __restrict__ oc, scalar_t* __restrict__ orr,
                      acc_t* __restrict__ gw, int64_t H, bool stream, const scalar_t* pc = nullptr,
                      const scalar_t* pr = nullptr) {
  if (oc != nullptr && gw != nullptr) {
    int64_t j = 0;
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      // Streamed grads are written once and not read back soon: non-temporal stores skip the
      // read-for-ownership of every output line. Same arithmetic (and rounding) as the loop below.
      if (stream && (reinterpret_cast<uintptr_t>(oc) & 63) == (reinterpret_cast<uintptr_t>(orr) & 63) && H >= 64) {
        for (; j < H && (reinterpret_cast<uintptr_t>(oc + j) & 63) != 0; ++j) {
          const acc_t wj = w[j];
          oc[j] = cc * wj;
          orr[j] = cr * wj;
          gw[j] += cc * xc[j] + cr * xr[j];
        }
        const __m512 vc = _mm512_set1_ps(cc), vr = _mm512_set1_ps(cr);
        // While this pair's grads stream out (h, w, gw hit L1/L2), pull the next pair's rows into
        // L2 (one line each per iteration) so the next dot products do not wait on DRAM.
        const char* pfc = pc ? reinterpret_cast<const char*>(pc) : reinterpret_cast<const char*>(xc);
        const char* pfr = pr ? reinterpret_cast<const char*>(pr) : reinterpret_cast<const char*>(xr);
        for (; j + 16 <= H; j += 16) {
          if (pc) {
            _mm_prefetch(pfc + j * 4, _MM_HINT_T1);
            _mm_prefetch(pfr + j * 4, _MM_HINT_T1);
          }
          const __m512 wv = _mm512_loadu_ps(w + j);
          _mm512_stream_ps(oc + j, _mm512_mul_ps(vc, wv));
          _mm512_stream_ps(orr + j, _mm512_mul_ps(vr, wv));
          const __m512 t = _mm512_add_ps(_mm512_mul_ps(vc, _mm512_loadu_ps(xc + j)),
                                         _mm512_mul_ps(vr, _mm512_loadu_ps(xr + j)));
          _mm512_storeu_ps(gw + j, _mm512_add_ps(_mm512_loadu_ps(gw + j), t));
        }
      }
    }
#endif
    for (; j < H; ++j) {
      const acc_t wj = w[j];
      oc[j] = static_cast<scalar_t>(cc * wj);
      orr[j] = static_cast<scalar_t>(cr * wj);
      gw[j] += cc * static_cast<acc_t>(xc[j]) + cr * static_cast<acc_t>(xr[j]);
    }
  } else if (oc != nullptr) {
    for (int64_t j = 0; j < H; ++j) {
      oc[j] = static_cast<scalar_t>(cc * w[j]);
      orr[j] = static_cast<scalar_t>(cr * w[j]);
    }
  } else if (gw != nullptr) {
    for (int64_t j = 0; j < H; ++j) gw[j] += cc * static_cast<acc_t>(xc[j]) + cr * static_cast<acc_t>(xr[j]);
  }
}

void check_head_args(const char* op, const at::Tensor& hc, const at::Tensor& hr, const at::Tensor& w,
                     const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& margin,
                     const std::optional<at::Tensor>& tie, int64_t reduction) {
  TORCH_CHECK(hc.dim() == 2 && hr.dim() == 2, op, ": h_chosen / h_rejected must be 2-D [B, H]");
  TORCH_CHECK(hc.sizes() == hr.sizes(), op, ": h_chosen and h_rejected shapes differ");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == hc.size(1), op, ": weight must be [H]");
  TORCH_CHECK(hc.scalar_type() == hr.scalar_type() && hc.scalar_type() == w.scalar_type(), op,
              ": h_chosen, h_rejected and weight must share a dtype");
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": bad reduction code ", reduction);
  const auto acc = acc_type(hc.scalar_type());
  if (bias.has_value()) {
    TORCH_CHECK(bias->numel() == 1 && bias->dim() == 0, op, ": bias must be a 0-d tensor");
    TORCH_CHECK(bias->scalar_type() == acc, op, ": bias must be ", acc, " (the accumulation dtype)");
  }
  const int64_t B = hc.size(0);
  if (margin.has_value()) {
    TORCH_CHECK(margin->dim() == 1 && margin->size(0) == B, op, ": margin must have shape [B]");
    TORCH_CHECK(margin->scalar_type() == acc, op, ": margin must be ", acc, " (the accumulation dtype)");
  }
  if (tie.has_value()) {
    TORCH_CHECK(tie->dim() == 1 && tie->size(0) == B && tie->scalar_type() == at::kBool, op,
                ": tie must be bool [B]");
  }
}

// One pass over the rows: rewards, loss, accuracy and (optionally) all gradients.
// grad_mode: 0 = forward without grads; 1 = grads with per-pair upstream `g_pair` (nullable, then
// the scalar `g_scalar` times the reduction scale).
template <typename scalar_t>
void head_kernel(const at::Tensor& hc_t, const at::Tensor& hr_t, const at::Tensor& w_t,
                 const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& margin,
                 const std::optional<at::Tensor>& tie, double eps, double center, int64_t reduction,
                 bool grad_h, bool grad_wb, const at::opmath_type<scalar_t>* g_pair, at::opmath_type<scalar_t> g_scalar,
                 at::Tensor* loss_out, at::Tensor* acc_out, at::Tensor& ghc_t, at::Tensor& ghr_t, at::Tensor& gw_t,
                 at::Tensor& gb_t) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = hc_t.size(0), H = hc_t.size(1);
  const scalar_t* hc = hc_t.const_data_ptr<scalar_t>();
  const scalar_t* hr = hr_t.const_data_ptr<scalar_t>();
  const acc_t bval = bias.has_value() ? bias->const_data_ptr<acc_t>()[0] : acc_t(0);
  const acc_t* m = margin.has_value() ? margin->const_data_ptr<acc_t>() : nullptr;
  const bool* tp = tie.has_value() ? tie->const_data_ptr<bool>() : nullptr;
  // weight in the accumulation dtype, once
  std::vector<acc_t> wf(H);
  {
    const scalar_t* wp = w_t.const_data_ptr<scalar_t>();
    for (int64_t j = 0; j < H; ++j) wf[j] = static_cast<acc_t>(wp[j]);
  }
  const acc_t* w = wf.data();
  scalar_t* ghc = grad_h ? ghc_t.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* ghr = grad_h ? ghr_t.mutable_data_ptr<scalar_t>() : nullptr;
  acc_t* per = (loss_out && reduction == kNone) ? loss_out->mutable_data_ptr<acc_t>() : nullptr;
  const PairLoss<acc_t> pl = pair_loss_of<acc_t>(eps, center);
  const acc_t s_red = g_scalar * (reduction == kMean ? acc_t(1.0 / static_cast<double>(B)) : acc_t(1));
  const bool any_grad = grad_h || grad_wb;
  const bool stream_grads = grad_h && 2 * B * H * static_cast<int64_t>(sizeof(scalar_t)) >= kStreamGradBytes;

  const int64_t nchunk = std::min<int64_t>(ceil_div(B, 16), kHeadChunks);  // >= 16 rows per chunk
  const int64_t rows = ceil_div(B, nchunk);
  std::vector<double> part_loss(nchunk, 0.0), part_gb(nchunk, 0.0);
  std::vector<int64_t> part_win(nchunk, 0), part_cnt(nchunk, 0), part_bad(nchunk, 0);
  std::vector<acc_t> part_gw(grad_wb ? nchunk * H : 0);
  at::parallel_for(0, nchunk, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t lo = c * rows, hi = std::min(B, lo + rows);
      acc_t* gw = grad_wb ? part_gw.data() + c * H : nullptr;
      if (gw) std::fill(gw, gw + H, acc_t(0));
      double lsum = 0.0, gbsum = 0.0;
      int64_t win = 0, cnt = 0, bad = 0;
      for (int64_t i = lo; i < hi; ++i) {
        const scalar_t* xc = hc + i * H;
        const scalar_t* xr = hr + i * H;
        acc_t a, b;
        dot_pair(xc, xr, w, H, a, b);
        a += bval;
        b += bval;
        const bool ti = tp ? tp[i] : false;
        acc_t l, cc, cr;
        bad += pl(a, b, m ? m[i] : acc_t(0), ti, g_pair ? g_pair[i] : s_red, l, cc, cr) ? 0 : 1;
        lsum += static_cast<double>(l);
        if (per) per[i] = l;
        win += (!ti && a > b) ? 1 : 0;
        cnt += ti ? 0 : 1;
        if (!any_grad) continue;
        gbsum += static_cast<double>(cc + cr);
        const bool more = i + 1 < hi;
        row_grads(xc, xr, w, cc, cr, grad_h ? ghc + i * H : nullptr, grad_h ? ghr + i * H : nullptr, gw, H,
                  stream_grads, more ? xc + H : nullptr, more ? xr + H : nullptr);
      }
#if defined(__AVX512F__)
      _mm_sfence();  // order the non-temporal grad stores
#endif
      part_loss[c] = lsum;
      part_gb[c] = gbsum;
      part_win[c] = win;
      part_cnt[c] = cnt;
      part_bad[c] = bad;
    }
  });
  double total = 0.0, gb = 0.0;
  int64_t win = 0, cnt = 0, bad = 0;
  for (int64_t c = 0; c < nchunk; ++c) {
    total += part_loss[c];
    gb += part_gb[c];
    win += part_win[c];
    cnt += part_cnt[c];
    bad += part_bad[c];
  }
  if (loss_out && reduction != kNone) {
    store_scalar<acc_t>(*loss_out, reduction == kMean ? total / static_cast<double>(B) : total);
  }
  if (acc_out) store_scalar<float>(*acc_out, accuracy_of(win, cnt, bad));
  if (grad_wb) {
    scalar_t* gwo = gw_t.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, H, 1024, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        acc_t s = 0;
        for (int64_t c = 0; c < nchunk; ++c) s += part_gw[c * H + j];
        gwo[j] = static_cast<scalar_t>(s);
      }
    });
    store_scalar<acc_t>(gb_t, gb);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> reward_head_pairwise_loss_cpu(
    const at::Tensor& h_chosen, const at::Tensor& h_rejected, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& margin,
    const std::optional<at::Tensor>& tie, double label_smoothing, double center_coef, int64_t reduction, bool grad_h,
    bool grad_wb) {
  check_head_args("reward_head_pairwise_loss", h_chosen, h_rejected, weight, bias, margin, tie, reduction);
  TORCH_CHECK(!((grad_h || grad_wb) && reduction == kNone),
              "reward_head_pairwise_loss: grads in the forward need reduction mean or sum");
  const auto hc = h_chosen.contiguous(), hr = h_rejected.contiguous(), w = weight.contiguous();
  const int64_t B = hc.size(0), H = hc.size(1);
  auto opts = hc.options().dtype(acc_type(hc.scalar_type()));
  at::Tensor loss = reduction == kNone ? at::empty({B}, opts) : at::empty({}, opts);
  at::Tensor acc = at::empty({}, hc.options().dtype(at::kFloat));
  at::Tensor ghc = grad_h ? empty_output_buffer({B, H}, hc.options()) : at::empty({0}, hc.options());
  at::Tensor ghr = grad_h ? empty_output_buffer({B, H}, hc.options()) : at::empty({0}, hc.options());
  at::Tensor gw = grad_wb ? at::empty({H}, w.options()) : at::empty({0}, w.options());
  at::Tensor gb = grad_wb ? at::empty({}, opts) : at::empty({0}, opts);
  if (B == 0) {
    loss.fill_(0);
    acc.fill_(0);
    if (grad_wb) { gw.zero_(); gb.zero_(); }
    return {loss, acc, ghc, ghr, gw, gb};
  }
  const auto m = margin.has_value() ? std::optional<at::Tensor>(margin->contiguous()) : std::nullopt;
  const auto t = tie.has_value() ? std::optional<at::Tensor>(tie->contiguous()) : std::nullopt;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hc.scalar_type(), "reward_head_pairwise_loss_cpu", [&] {
    head_kernel<scalar_t>(hc, hr, w, bias, m, t, label_smoothing, center_coef, reduction, grad_h, grad_wb, nullptr,
                          at::opmath_type<scalar_t>(1), &loss, &acc, ghc, ghr, gw, gb);
  });
  return {loss, acc, ghc, ghr, gw, gb};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> reward_head_pairwise_loss_backward_cpu(
    const at::Tensor& grad, const at::Tensor& h_chosen, const at::Tensor& h_rejected, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& margin,
    const std::optional<at::Tensor>& tie, double label_smoothing, double center_coef, int64_t reduction, bool grad_h,
    bool grad_wb) {
  check_head_args("reward_head_pairwise_loss_backward", h_chosen, h_rejected, weight, bias, margin, tie, reduction);
  const auto hc = h_chosen.contiguous(), hr = h_rejected.contiguous(), w = weight.contiguous();
  const int64_t B = hc.size(0), H = hc.size(1);
  TORCH_CHECK(reduction == kNone ? (grad.dim() == 1 && grad.size(0) == B) : grad.numel() == 1,
              "reward_head_pairwise_loss_backward: bad grad shape ", grad.sizes());
  auto opts = hc.options().dtype(acc_type(hc.scalar_type()));
  const auto g = grad.to(acc_type(hc.scalar_type())).contiguous();
  at::Tensor ghc = grad_h ? empty_output_buffer({B, H}, hc.options()) : at::empty({0}, hc.options());
  at::Tensor ghr = grad_h ? empty_output_buffer({B, H}, hc.options()) : at::empty({0}, hc.options());
  at::Tensor gw = grad_wb ? at::empty({H}, w.options()) : at::empty({0}, w.options());
  at::Tensor gb = grad_wb ? at::empty({}, opts) : at::empty({0}, opts);
  if (B == 0 || !(grad_h || grad_wb)) {
    if (grad_wb) { gw.zero_(); gb.zero_(); }
    return {ghc, ghr, gw, gb};
  }
  const auto m = margin.has_value() ? std::optional<at::Tensor>(margin->contiguous()) : std::nullopt;
  const auto t = tie.has_value() ? std::optional<at::Tensor>(tie->contiguous()) : std::nullopt;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hc.scalar_type(), "reward_head_pairwise_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* gp = g.const_data_ptr<acc_t>();
    head_kernel<scalar_t>(hc, hr, w, bias, m, t, label_smoothing, center_coef, reduction, grad_h, grad_wb,
                          reduction == kNone ? gp : nullptr, reduction == kNone ? acc_t(1) : gp[0], nullptr, nullptr,
                          ghc, ghr, gw, gb);
  });
  return {ghc, ghr, gw, gb};
}

// ------------------------------------------------------------------------------------------------
// Autograd, for the C++/CUDA ops and the Triton ops alike. A forward op may return the gradients it
// computed in the same pass (need_grad / grad_h / grad_wb): backward hands them over once, times the
// upstream gradient; otherwise (reduction "none", or a second backward) the `_backward` op
// recomputes them.
// ------------------------------------------------------------------------------------------------
using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<at::Tensor>;

// The gradients a forward op computed, stored under `key`; empty if there are none. `hand_over`
// takes them out of the context, so that autograd can adopt them as .grad without a copy (a second
// backward through the graph then recomputes them, equal up to rounding).
std::vector<Tensor> forward_grads(AutogradContext* ctx, const char* key, bool hand_over) {
  auto it = ctx->saved_data.find(key);
  if (it == ctx->saved_data.end()) return {};
  std::vector<Tensor> out = it->second.toTensorVector();
  if (hand_over) ctx->saved_data.erase(it);
  return out;
}

template <int NS>
struct PairwiseLossFn : public torch::autograd::Function<PairwiseLossFn<NS>> {
  static const c10::TypedOperatorHandle<decltype(pairwise_loss_cpu)>& op() {
    static const auto handle = find_op<decltype(pairwise_loss_cpu)>(NS, "pairwise_loss");
    return handle;
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& rc, const Tensor& rr, const OptionalTensor& margin,
                               const OptionalTensor& tie, double ls, double cc, int64_t red, bool need_grad) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, acc, gc, gr] = op().call(rc, rr, margin, tie, ls, cc, red, need_grad);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({acc, gc, gr});
    if (need_grad) {  // [B] gradients: kept (not handed over), so every backward uses them
      ctx->saved_data["forward_grads"] = std::vector<Tensor>{gc, gr};
      ctx->saved_data["dtypes"] = std::vector<int64_t>{static_cast<int64_t>(rc.scalar_type()),
                                                       static_cast<int64_t>(rr.scalar_type())};
    } else {
      ctx->saved_data["options"] = std::vector<double>{ls, cc, static_cast<double>(red)};
      ctx->save_for_backward({rc, rr, margin.value_or(Tensor()), tie.value_or(Tensor())});
    }
    return {loss, acc, gc, gr};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_first_order("pairwise_loss");
    variable_list out(8);
    const Tensor& g = grads[0];
    if (!g.defined()) return out;
    const auto fwd = forward_grads(ctx, "forward_grads", /*hand_over=*/false);
    if (!fwd.empty()) {
      const bool one = upstream_is_one(g);
      const auto dtypes = ctx->saved_data["dtypes"].toIntVector();
      out[0] = times_upstream(fwd[0], g, one, static_cast<at::ScalarType>(dtypes[0]));
      out[1] = times_upstream(fwd[1], g, one, static_cast<at::ScalarType>(dtypes[1]));
      return out;
    }
    static const auto bwd = find_op<decltype(pairwise_loss_backward_cpu)>(NS, "pairwise_loss_backward");
    const auto saved = ctx->get_saved_variables();
    const auto o = ctx->saved_data["options"].toDoubleVector();
    std::tie(out[0], out[1]) = bwd.call(g, saved[0], saved[1], optional_of(saved[2]), optional_of(saved[3]), o[0],
                                        o[1], static_cast<int64_t>(o[2]));
    return out;
  }
};

template <int NS>
std::tuple<Tensor, Tensor, Tensor, Tensor> pairwise_loss_autograd(const Tensor& rc, const Tensor& rr,
                                                                  const OptionalTensor& margin,
                                                                  const OptionalTensor& tie, double ls, double cc,
                                                                  int64_t red, bool need_grad) {
  if (!records_grad(rc, rr))
    return call_below_autograd(PairwiseLossFn<NS>::op(), rc, rr, margin, tie, ls, cc, red, need_grad);
  auto o = PairwiseLossFn<NS>::apply(rc, rr, margin, tie, ls, cc, red, need_grad);
  return {o[0], o[1], o[2], o[3]};
}

template <int NS>
struct ListwiseLossFn : public torch::autograd::Function<ListwiseLossFn<NS>> {
  static const c10::TypedOperatorHandle<decltype(listwise_loss_cpu)>& op() {
    static const auto handle = find_op<decltype(listwise_loss_cpu)>(NS, "listwise_loss");
    return handle;
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& rewards, const Tensor& ranks, int64_t red) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, counts] = op().call(rewards, ranks, red);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({counts});
    ctx->saved_data["reduction"] = red;
    ctx->save_for_backward({rewards, ranks, counts});
    return {loss, counts};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_first_order("listwise_loss");
    variable_list out(3);
    if (!grads[0].defined()) return out;
    static const auto bwd = find_op<decltype(listwise_loss_backward_cpu)>(NS, "listwise_loss_backward");
    const auto saved = ctx->get_saved_variables();
    out[0] = bwd.call(grads[0], saved[0], saved[1], saved[2], ctx->saved_data["reduction"].toInt());
    return out;
  }
};

template <int NS>
std::tuple<Tensor, Tensor> listwise_loss_autograd(const Tensor& rewards, const Tensor& ranks, int64_t red) {
  if (!records_grad(rewards)) return call_below_autograd(ListwiseLossFn<NS>::op(), rewards, ranks, red);
  auto o = ListwiseLossFn<NS>::apply(rewards, ranks, red);
  return {o[0], o[1]};
}

template <int NS>
struct RewardHeadPairwiseLossFn : public torch::autograd::Function<RewardHeadPairwiseLossFn<NS>> {
  static const c10::TypedOperatorHandle<decltype(reward_head_pairwise_loss_cpu)>& op() {
    static const auto handle = find_op<decltype(reward_head_pairwise_loss_cpu)>(NS, "reward_head_pairwise_loss");
    return handle;
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& hc, const Tensor& hr, const Tensor& w,
                               const OptionalTensor& bias, const OptionalTensor& margin, const OptionalTensor& tie,
                               double ls, double cc, int64_t red, bool grad_h, bool grad_wb) {
    // bit i: input i (h_chosen, h_rejected, weight, bias) wants a gradient
    const int64_t needs = (hc.requires_grad() ? 1 : 0) | (hr.requires_grad() ? 2 : 0) | (w.requires_grad() ? 4 : 0) |
                          (bias.has_value() && bias->requires_grad() ? 8 : 0);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, acc, ghc, ghr, gw, gb] = op().call(hc, hr, w, bias, margin, tie, ls, cc, red, grad_h, grad_wb);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({acc, ghc, ghr, gw, gb});
    ctx->saved_data["options"] = std::vector<double>{ls, cc, static_cast<double>(red)};
    ctx->saved_data["needs"] = needs;
    ctx->saved_data["forward_flags"] = static_cast<int64_t>((grad_h ? 1 : 0) | (grad_wb ? 2 : 0));
    if (grad_h || grad_wb) ctx->saved_data["forward_grads"] = std::vector<Tensor>{ghc, ghr, gw, gb};
    ctx->save_for_backward({hc, hr, w, bias.value_or(Tensor()), margin.value_or(Tensor()), tie.value_or(Tensor())});
    return {loss, acc, ghc, ghr, gw, gb};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_first_order("reward_head_pairwise_loss");
    variable_list out(11);
    const Tensor& g = grads[0];
    if (!g.defined()) return out;
    const auto saved = ctx->get_saved_variables();
    const int64_t needs = ctx->saved_data["needs"].toInt();
    const auto needs_grad = [needs](int i) { return ((needs >> i) & 1) != 0; };
    auto fwd = forward_grads(ctx, "forward_grads", /*hand_over=*/true);  // [B, H]: no copy into .grad
    bool grad_h, grad_wb;
    if (!fwd.empty()) {
      const int64_t flags = ctx->saved_data["forward_flags"].toInt();
      grad_h = (flags & 1) != 0;
      grad_wb = (flags & 2) != 0;
      const bool one = upstream_is_one(g);
      if (grad_h) {
        fwd[0] = times_upstream(fwd[0], g, one, saved[0].scalar_type());
        fwd[1] = times_upstream(fwd[1], g, one, saved[1].scalar_type());
      }
      if (grad_wb) {
        fwd[2] = times_upstream(fwd[2], g, one, saved[2].scalar_type());
        fwd[3] = times_upstream(fwd[3], g, one, fwd[3].scalar_type());
      }
    } else {
      static const auto bwd =
          find_op<decltype(reward_head_pairwise_loss_backward_cpu)>(NS, "reward_head_pairwise_loss_backward");
      const auto o = ctx->saved_data["options"].toDoubleVector();
      grad_h = needs_grad(0) || needs_grad(1);
      grad_wb = needs_grad(2) || needs_grad(3);
      auto [ghc, ghr, gw, gb] = bwd.call(g, saved[0], saved[1], saved[2], optional_of(saved[3]), optional_of(saved[4]),
                                         optional_of(saved[5]), o[0], o[1], static_cast<int64_t>(o[2]), grad_h,
                                         grad_wb);
      fwd = {ghc, ghr, gw, gb};
    }
    for (int i = 0; i < 4; ++i) {
      if (needs_grad(i) && (i < 2 ? grad_h : grad_wb)) out[i] = fwd[i];
    }
    return out;
  }
};

template <int NS>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> reward_head_pairwise_loss_autograd(
    const Tensor& hc, const Tensor& hr, const Tensor& w, const OptionalTensor& bias, const OptionalTensor& margin,
    const OptionalTensor& tie, double ls, double cc, int64_t red, bool grad_h, bool grad_wb) {
  if (!records_grad(hc, hr, w, bias))
    return call_below_autograd(RewardHeadPairwiseLossFn<NS>::op(), hc, hr, w, bias, margin, tie, ls, cc, red, grad_h,
                               grad_wb);
  auto o = RewardHeadPairwiseLossFn<NS>::apply(hc, hr, w, bias, margin, tie, ls, cc, red, grad_h, grad_wb);
  return {o[0], o[1], o[2], o[3], o[4], o[5]};
}

void define_pairwise_schemas(torch::Library& m) {
  m.def(
      "pairwise_loss(Tensor r_chosen, Tensor r_rejected, Tensor? margin, Tensor? tie, float label_smoothing, "
      "float center_coef, int reduction, bool need_grad) -> (Tensor loss, Tensor accuracy, Tensor grad_chosen, "
      "Tensor grad_rejected)");
  m.def(
      "pairwise_loss_backward(Tensor grad, Tensor r_chosen, Tensor r_rejected, Tensor? margin, Tensor? tie, "
      "float label_smoothing, float center_coef, int reduction) -> (Tensor grad_chosen, Tensor grad_rejected)");
  m.def("listwise_loss(Tensor rewards, Tensor ranks, int reduction) -> (Tensor loss, Tensor pair_counts)");
  m.def(
      "listwise_loss_backward(Tensor grad, Tensor rewards, Tensor ranks, Tensor pair_counts, int reduction) -> "
      "Tensor");
  m.def(
      "reward_head_pairwise_loss(Tensor h_chosen, Tensor h_rejected, Tensor weight, Tensor? bias, Tensor? margin, "
      "Tensor? tie, float label_smoothing, float center_coef, int reduction, bool grad_h, bool grad_wb) -> "
      "(Tensor loss, Tensor accuracy, Tensor grad_h_chosen, Tensor grad_h_rejected, Tensor grad_weight, "
      "Tensor grad_bias)");
  m.def(
      "reward_head_pairwise_loss_backward(Tensor grad, Tensor h_chosen, Tensor h_rejected, Tensor weight, "
      "Tensor? bias, Tensor? margin, Tensor? tie, float label_smoothing, float center_coef, int reduction, "
      "bool grad_h, bool grad_wb) -> (Tensor grad_h_chosen, Tensor grad_h_rejected, Tensor grad_weight, "
      "Tensor grad_bias)");
}

template <int NS>
void register_pairwise_autograd(torch::Library& m) {
  m.impl("pairwise_loss", &pairwise_loss_autograd<NS>);
  m.impl("listwise_loss", &listwise_loss_autograd<NS>);
  m.impl("reward_head_pairwise_loss", &reward_head_pairwise_loss_autograd<NS>);
}

}  // namespace
}  // namespace mmreward

MMREWARD_SCHEMAS(mmreward::define_pairwise_schemas)
MMREWARD_AUTOGRAD(mmreward::register_pairwise_autograd)

TORCH_LIBRARY_IMPL(mmreward, CPU, m) {
  m.impl("pairwise_loss", &mmreward::pairwise_loss_cpu);
  m.impl("pairwise_loss_backward", &mmreward::pairwise_loss_backward_cpu);
  m.impl("listwise_loss", &mmreward::listwise_loss_cpu);
  m.impl("listwise_loss_backward", &mmreward::listwise_loss_backward_cpu);
  m.impl("reward_head_pairwise_loss", &mmreward::reward_head_pairwise_loss_cpu);
  m.impl("reward_head_pairwise_loss_backward", &mmreward::reward_head_pairwise_loss_backward_cpu);
}
