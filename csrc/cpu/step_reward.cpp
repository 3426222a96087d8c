// PRM step-reward ops: the family's schemas (both namespaces, see op_library.h), its autograd (C++,
// shared by the C++/CUDA and the Triton ops) and its CPU kernels.
//
//  step_head            z_s = h[index_s]·(w − w_neg) + bias at step positions only (never a
//                       vocabulary-sized logit), fused with BCE-with-logits / MSE against per-step
//                       targets (−100 = ignore). kind: 0 logits, 1 BCE, 2 MSE.
//  step_pair_loss       −log σ(r[pos_p] − r[neg_p]), optionally weighted and summed (rStar PPM).
//  step_segment_reduce  min / prod / logprod / last / mean / max / sum of packed per-step values.
//  step_first_below     first step of each sequence with value < threshold (−1 if none).
//  step_refine          Clip / Delta reward refinement + discounted returns-to-go.
//
// Accumulation is in fp32 for fp32 / bf16 / fp16 (double for double); every reduction runs in a
// fixed order, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "mmreward/math.h"
#include "mmreward/op_library.h"

namespace mmreward {
namespace {

constexpr double kIgnore = -100.0;
enum StepKind : int64_t { kLogit = 0, kBCE = 1, kMSE = 2 };
enum SegOp : int64_t { kMin = 0, kProd = 1, kLogProd = 2, kLast = 3, kMeanSeg = 4, kMax = 5, kSumSeg = 6 };

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "mmreward step ops: `", name, "` must be a CPU tensor");
}

// Dot product of one hidden row with (w - wn) (wn may be null), 16 independent partial sums so
// the loop vectorises without reassociating a single accumulator; fixed-order final sum.
template <typename scalar_t, typename acc_t>
inline acc_t dot_row(const scalar_t* h, const scalar_t* w, const scalar_t* wn, int64_t H) {
  constexpr int L = 16;
  acc_t part[L];
  for (int l = 0; l < L; ++l) part[l] = acc_t(0);
  int64_t j = 0;
  if (wn != nullptr) {
    for (; j + L <= H; j += L)
      for (int l = 0; l < L; ++l)
        part[l] += static_cast<acc_t>(h[j + l]) * (static_cast<acc_t>(w[j + l]) - static_cast<acc_t>(wn[j + l]));
    for (; j < H; ++j) part[j % L] += static_cast<acc_t>(h[j]) * (static_cast<acc_t>(w[j]) - static_cast<acc_t>(wn[j]));
  } else {
    for (; j + L <= H; j += L)
      for (int l = 0; l < L; ++l) part[l] += static_cast<acc_t>(h[j + l]) * static_cast<acc_t>(w[j + l]);
    for (; j < H; ++j) part[j % L] += static_cast<acc_t>(h[j]) * static_cast<acc_t>(w[j]);
  }
  acc_t s = acc_t(0);
  for (int l = 0; l < L; ++l) s += part[l];
  return s;
}

void check_head_args(const at::Tensor& hidden, const at::Tensor& index, const at::Tensor& w,
                     const std::optional<at::Tensor>& w_neg, const std::optional<at::Tensor>& bias,
                     const std::optional<at::Tensor>& target, int64_t kind) {
  TORCH_CHECK(hidden.dim() == 2, "step_head: `hidden` must be (N, H), got ", hidden.sizes());
  TORCH_CHECK(index.dim() == 1 && index.scalar_type() == at::kLong, "step_head: `index` must be 1-D int64");
  const int64_t H = hidden.size(1);
  TORCH_CHECK(w.dim() == 1 && w.size(0) == H && w.scalar_type() == hidden.scalar_type(),
              "step_head: `w` must be (H,) with hidden's dtype");
  if (w_neg.has_value())
    TORCH_CHECK(w_neg->dim() == 1 && w_neg->size(0) == H && w_neg->scalar_type() == hidden.scalar_type(),
                "step_head: `w_neg` must be (H,) with hidden's dtype");
  const auto acc = acc_type(hidden.scalar_type());
  if (bias.has_value())
    TORCH_CHECK(bias->numel() == 1 && bias->scalar_type() == acc, "step_head: `bias` must be one ", acc, " value");
  TORCH_CHECK(kind >= 0 && kind <= 2, "step_head: unknown kind ", kind);
  if (kind != kLogit) {
    TORCH_CHECK(target.has_value(), "step_head: a loss kind needs `target`");
    TORCH_CHECK(target->dim() == 1 && target->size(0) == index.size(0) && target->scalar_type() == acc,
                "step_head: `target` must be (S,) ", acc);
  }
  check_cpu(hidden, "hidden");
  check_cpu(index, "index");
  check_cpu(w, "w");
}

std::tuple<at::Tensor, at::Tensor> step_head_cpu(const at::Tensor& hidden_, const at::Tensor& index_,
                                                 const at::Tensor& w_, const std::optional<at::Tensor>& w_neg_,
                                                 const std::optional<at::Tensor>& bias_,
                                                 const std::optional<at::Tensor>& target_, int64_t kind,
                                                 int64_t reduction) {
  check_head_args(hidden_, index_, w_, w_neg_, bias_, target_, kind);
  auto hidden = hidden_.contiguous();
  auto index = index_.contiguous();
  auto w = w_.contiguous();
  at::Tensor w_neg = w_neg_.has_value() ? w_neg_->contiguous() : at::Tensor();
  at::Tensor target = (kind != kLogit) ? target_->contiguous() : at::Tensor();
  const int64_t N = hidden.size(0), H = hidden.size(1), S = index.size(0);
  const auto acc = acc_type(hidden.scalar_type());
  auto z = at::empty({S}, hidden.options().dtype(acc));
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hidden.scalar_type(), "step_head_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* hp = hidden.const_data_ptr<scalar_t>();
    const scalar_t* wp = w.const_data_ptr<scalar_t>();
    const scalar_t* wnp = w_neg.defined() ? w_neg.const_data_ptr<scalar_t>() : nullptr;
    const int64_t* ip = index.const_data_ptr<int64_t>();
    const acc_t b = bias_.has_value() ? bias_->item<acc_t>() : acc_t(0);
    acc_t* zp = z.mutable_data_ptr<acc_t>();
    // ~256K multiply-adds per task: small problems stay on the calling thread (a parallel region
    // costs more than the work, especially on a busy machine)
    at::parallel_for(0, S, std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(H, 1)), [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t row = ip[s];
        TORCH_CHECK(row >= 0 && row < N, "step_head: `index` value ", row, " out of range [0, ", N, ")");
        zp[s] = dot_row<scalar_t, acc_t>(hp + row * H, wp, wnp, H) + b;
      }
    });
    if (kind == kLogit) {
      out = z.clone();
      return;
    }
    const acc_t* tp = target.const_data_ptr<acc_t>();
    auto per = at::empty({S}, z.options());
    acc_t* pp = per.mutable_data_ptr<acc_t>();
    int64_t n_valid = 0;
    for (int64_t s = 0; s < S; ++s) {
      const acc_t y = tp[s];
      if (y == acc_t(kIgnore)) {
        pp[s] = acc_t(0);
        continue;
      }
      ++n_valid;
      pp[s] = kind == kBCE ? softplus(zp[s]) - y * zp[s] : (zp[s] - y) * (zp[s] - y);
    }
    if (reduction == kNone) {
      out = per;
      return;
    }
    acc_t total = acc_t(0);
    for (int64_t s = 0; s < S; ++s) total += pp[s];
    if (reduction == kMean) total = n_valid > 0 ? total / static_cast<acc_t>(n_valid) : acc_t(0);
    out = at::scalar_tensor(total, z.options());
  });
  return {out, z};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> step_head_backward_cpu(
    const at::Tensor& grad_out_, const at::Tensor& hidden_, const at::Tensor& index_, const at::Tensor& w_,
    const std::optional<at::Tensor>& w_neg_, const at::Tensor& z_, const std::optional<at::Tensor>& target_,
    int64_t kind, int64_t reduction, bool need_grad_hidden) {
  check_head_args(hidden_, index_, w_, w_neg_, std::nullopt, target_, kind);
  auto hidden = hidden_.contiguous();
  auto index = index_.contiguous();
  auto w = w_.contiguous();
  at::Tensor w_neg = w_neg_.has_value() ? w_neg_->contiguous() : at::Tensor();
  at::Tensor target = (kind != kLogit) ? target_->contiguous() : at::Tensor();
  const auto acc = acc_type(hidden.scalar_type());
  auto z = z_.contiguous();
  auto grad_out = grad_out_.to(acc).contiguous();
  const int64_t N = hidden.size(0), H = hidden.size(1), S = index.size(0);
  TORCH_CHECK(z.numel() == S, "step_head_backward: `z` must be (S,)");
  at::Tensor grad_hidden = need_grad_hidden ? at::zeros({N, H}, hidden.options()) : at::empty({0}, hidden.options());
  at::Tensor grad_w = at::empty({H}, w.options());
  at::Tensor grad_bias = at::empty({}, hidden.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hidden.scalar_type(), "step_head_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* hp = hidden.const_data_ptr<scalar_t>();
    const scalar_t* wp = w.const_data_ptr<scalar_t>();
    const scalar_t* wnp = w_neg.defined() ? w_neg.const_data_ptr<scalar_t>() : nullptr;
    const int64_t* ip = index.const_data_ptr<int64_t>();
    const acc_t* zp = z.const_data_ptr<acc_t>();
    const acc_t* gp = grad_out.const_data_ptr<acc_t>();
    // d loss / d z_s
    std::vector<acc_t> gz(S);
    if (kind == kLogit) {
      TORCH_CHECK(grad_out.numel() == S, "step_head_backward: `grad_out` must be (S,)");
      for (int64_t s = 0; s < S; ++s) gz[s] = gp[s];
    } else {
      const acc_t* tp = target.const_data_ptr<acc_t>();
      int64_t n_valid = 0;
      for (int64_t s = 0; s < S; ++s) n_valid += tp[s] != acc_t(kIgnore);
      TORCH_CHECK(grad_out.numel() == (reduction == kNone ? S : 1), "step_head_backward: bad `grad_out` shape");
      const acc_t scale = reduction == kMean ? (n_valid > 0 ? acc_t(1) / static_cast<acc_t>(n_valid) : acc_t(0))
                                             : acc_t(1);
      for (int64_t s = 0; s < S; ++s) {
        const acc_t y = tp[s];
        if (y == acc_t(kIgnore)) {
          gz[s] = acc_t(0);
          continue;
        }
        const acc_t g = (reduction == kNone ? gp[s] : gp[0]) * scale;
        gz[s] = kind == kBCE ? g * (sigmoid(zp[s]) - y) : g * acc_t(2) * (zp[s] - y);
      }
    }
    acc_t gb = acc_t(0);
    for (int64_t s = 0; s < S; ++s) gb += gz[s];
    *grad_bias.mutable_data_ptr<acc_t>() = gb;
    scalar_t* ghp = need_grad_hidden ? grad_hidden.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gwp = grad_w.mutable_data_ptr<scalar_t>();
    // Parallel over hidden columns: each column sums its S terms in step order (deterministic,
    // duplicate step positions accumulate correctly, no atomics).
    at::parallel_for(0, H, std::max<int64_t>(256, (int64_t{1} << 18) / std::max<int64_t>(S, 1)), [&](int64_t j0, int64_t j1) {
      const int64_t nj = j1 - j0;
      std::vector<acc_t> wd(nj), gw(nj, acc_t(0));
      for (int64_t j = 0; j < nj; ++j)
        wd[j] = static_cast<acc_t>(wp[j0 + j]) - (wnp ? static_cast<acc_t>(wnp[j0 + j]) : acc_t(0));
      for (int64_t s = 0; s < S; ++s) {
        const acc_t g = gz[s];
        if (g == acc_t(0)) continue;
        const int64_t row = ip[s];
        TORCH_CHECK(row >= 0 && row < N, "step_head_backward: `index` value ", row, " out of range");
        const scalar_t* h = hp + row * H + j0;
        for (int64_t j = 0; j < nj; ++j) gw[j] += g * static_cast<acc_t>(h[j]);
        if (ghp != nullptr) {
          scalar_t* gh = ghp + row * H + j0;
          for (int64_t j = 0; j < nj; ++j) gh[j] = static_cast<scalar_t>(static_cast<acc_t>(gh[j]) + g * wd[j]);
        }
      }
      for (int64_t j = 0; j < nj; ++j) gwp[j0 + j] = static_cast<scalar_t>(gw[j]);
    });
  });
  return {grad_hidden, grad_w, grad_bias};
}

// ---------------------------------------------------------------------------------------------
// Pairwise step loss (rStar PPM): l_p = −log σ(r[pos_p] − r[neg_p]) = softplus(r_neg − r_pos).

void check_pair_args(const at::Tensor& r, const at::Tensor& pos, const at::Tensor& neg,
                     const std::optional<at::Tensor>& weight) {
  TORCH_CHECK(r.dim() == 1 && (r.scalar_type() == at::kFloat || r.scalar_type() == at::kDouble),
              "step_pair_loss: `r` must be 1-D float32/float64");
  TORCH_CHECK(pos.dim() == 1 && neg.dim() == 1 && pos.size(0) == neg.size(0) && pos.scalar_type() == at::kLong &&
                  neg.scalar_type() == at::kLong,
              "step_pair_loss: `pos` / `neg` must be (P,) int64");
  if (weight.has_value())
    TORCH_CHECK(weight->dim() == 1 && weight->size(0) == pos.size(0) && weight->scalar_type() == r.scalar_type(),
                "step_pair_loss: `weight` must be (P,) with r's dtype");
  check_cpu(r, "r");
}

at::Tensor step_pair_loss_cpu(const at::Tensor& r_, const at::Tensor& pos_, const at::Tensor& neg_,
                              const std::optional<at::Tensor>& weight_, bool reduce) {
  check_pair_args(r_, pos_, neg_, weight_);
  auto r = r_.contiguous(), pos = pos_.contiguous(), neg = neg_.contiguous();
  at::Tensor weight = weight_.has_value() ? weight_->contiguous() : at::Tensor();
  const int64_t P = pos.size(0), S = r.size(0);
  auto per = at::empty({P}, r.options());
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "step_pair_loss_cpu", [&] {
    const scalar_t* rp = r.const_data_ptr<scalar_t>();
    const int64_t* pp = pos.const_data_ptr<int64_t>();
    const int64_t* np = neg.const_data_ptr<int64_t>();
    scalar_t* lp = per.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, P, 4096, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        TORCH_CHECK(pp[p] >= 0 && pp[p] < S && np[p] >= 0 && np[p] < S, "step_pair_loss: pair ", p,
                    " indexes a step outside [0, ", S, ")");
        lp[p] = softplus(rp[np[p]] - rp[pp[p]]);
      }
    });
    if (!reduce) {
      out = per;
      return;
    }
    const scalar_t* wt = weight.defined() ? weight.const_data_ptr<scalar_t>() : nullptr;
    scalar_t total = 0;
    for (int64_t p = 0; p < P; ++p) total += wt ? wt[p] * lp[p] : lp[p];
    out = at::scalar_tensor(total, r.options());
  });
  return out;
}

at::Tensor step_pair_loss_backward_cpu(const at::Tensor& grad_, const at::Tensor& r_, const at::Tensor& pos_,
                                       const at::Tensor& neg_, const std::optional<at::Tensor>& weight_,
                                       bool reduce) {
  check_pair_args(r_, pos_, neg_, weight_);
  auto r = r_.contiguous(), pos = pos_.contiguous(), neg = neg_.contiguous();
  auto grad = grad_.to(r.scalar_type()).contiguous();
  at::Tensor weight = weight_.has_value() ? weight_->contiguous() : at::Tensor();
  const int64_t P = pos.size(0);
  auto grad_r = at::zeros_like(r);
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "step_pair_loss_backward_cpu", [&] {
    const scalar_t* rp = r.const_data_ptr<scalar_t>();
    const int64_t* pp = pos.const_data_ptr<int64_t>();
    const int64_t* np = neg.const_data_ptr<int64_t>();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* wt = weight.defined() ? weight.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gr = grad_r.mutable_data_ptr<scalar_t>();
    // serial scatter: a step is in many pairs; fixed order keeps it deterministic (P is small)
    for (int64_t p = 0; p < P; ++p) {
      scalar_t g = reduce ? gp[0] * (wt ? wt[p] : scalar_t(1)) : gp[p];
      // d/d r_pos softplus(r_neg - r_pos) = -σ(r_neg - r_pos)
      const scalar_t d = g * sigmoid(rp[np[p]] - rp[pp[p]]);
      gr[pp[p]] -= d;
      gr[np[p]] += d;
    }
  });
  return grad_r;
}

// ---------------------------------------------------------------------------------------------
// Segment reductions over packed per-step values; sequence b owns [offsets[b], offsets[b+1]).

void check_seg_args(const at::Tensor& values, const at::Tensor& offsets, const char* op) {
  TORCH_CHECK(values.dim() == 1, op, ": `values` must be 1-D");
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) >= 1 && offsets.scalar_type() == at::kLong, op,
              ": `offsets` must be (B + 1,) int64");
  check_cpu(values, "values");
  check_cpu(offsets, "offsets");
}

template <typename acc_t, typename scalar_t>
acc_t seg_reduce_one(const scalar_t* v, int64_t n, int64_t op, acc_t empty_value) {
  if (n == 0) return op == kLogProd ? std::log(empty_value) : empty_value;
  switch (op) {
    case kMin: {
      acc_t m = static_cast<acc_t>(v[0]);
      for (int64_t i = 1; i < n; ++i) m = std::min(m, static_cast<acc_t>(v[i]));
      return m;
    }
    case kMax: {
      acc_t m = static_cast<acc_t>(v[0]);
      for (int64_t i = 1; i < n; ++i) m = std::max(m, static_cast<acc_t>(v[i]));
      return m;
    }
    case kProd:
    case kLogProd: {
      acc_t ls = 0;  // log space: no underflow in the running product
      for (int64_t i = 0; i < n; ++i) ls += std::log(static_cast<acc_t>(v[i]));
      return op == kProd ? std::exp(ls) : ls;
    }
    case kLast:
      return static_cast<acc_t>(v[n - 1]);
    default: {  // mean / sum
      acc_t s = 0;
      for (int64_t i = 0; i < n; ++i) s += static_cast<acc_t>(v[i]);
      return op == kMeanSeg ? s / static_cast<acc_t>(n) : s;
    }
  }
}

at::Tensor step_segment_reduce_cpu(const at::Tensor& values_, const at::Tensor& offsets_, int64_t op,
                                   double empty_value) {
  check_seg_args(values_, offsets_, "step_segment_reduce");
  TORCH_CHECK(op >= 0 && op <= 6, "step_segment_reduce: unknown op ", op);
  auto values = values_.contiguous(), offsets = offsets_.contiguous();
  const int64_t B = offsets.size(0) - 1, S = values.size(0);
  auto out = at::empty({B}, values.options().dtype(acc_type(values.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, values.scalar_type(), "step_segment_reduce_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* vp = values.const_data_ptr<scalar_t>();
    const int64_t* op_ = offsets.const_data_ptr<int64_t>();
    acc_t* outp = out.mutable_data_ptr<acc_t>();
    at::parallel_for(0, B, 8192, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t s0 = op_[b], s1 = op_[b + 1];
        TORCH_CHECK(0 <= s0 && s0 <= s1 && s1 <= S, "step_segment_reduce: bad `offsets` at ", b);
        outp[b] = seg_reduce_one<acc_t>(vp + s0, s1 - s0, op, static_cast<acc_t>(empty_value));
      }
    });
  });
  return out;
}

at::Tensor step_segment_reduce_backward_cpu(const at::Tensor& grad_, const at::Tensor& values_,
                                            const at::Tensor& offsets_, int64_t op) {
  check_seg_args(values_, offsets_, "step_segment_reduce_backward");
  auto values = values_.contiguous(), offsets = offsets_.contiguous();
  const int64_t B = offsets.size(0) - 1;
  auto grad = grad_.to(acc_type(values.scalar_type())).contiguous();
  TORCH_CHECK(grad.numel() == B, "step_segment_reduce_backward: `grad` must be (B,)");
  auto grad_values = at::zeros_like(values);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, values.scalar_type(), "step_segment_reduce_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* vp = values.const_data_ptr<scalar_t>();
    const int64_t* op_ = offsets.const_data_ptr<int64_t>();
    const acc_t* gp = grad.const_data_ptr<acc_t>();
    scalar_t* gv = grad_values.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, 8192, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t s0 = op_[b], n = op_[b + 1] - s0;
        if (n == 0) continue;
        const scalar_t* v = vp + s0;
        scalar_t* g = gv + s0;
        const acc_t go = gp[b];
        if (op == kMin || op == kMax) {  // first arg-extremum gets the gradient
          int64_t k = 0;
          for (int64_t i = 1; i < n; ++i)
            if (op == kMin ? static_cast<acc_t>(v[i]) < static_cast<acc_t>(v[k])
                           : static_cast<acc_t>(v[i]) > static_cast<acc_t>(v[k]))
              k = i;
          g[k] = static_cast<scalar_t>(go);
        } else if (op == kLast) {
          g[n - 1] = static_cast<scalar_t>(go);
        } else if (op == kMeanSeg || op == kSumSeg) {
          const acc_t d = op == kMeanSeg ? go / static_cast<acc_t>(n) : go;
          for (int64_t i = 0; i < n; ++i) g[i] = static_cast<scalar_t>(d);
        } else if (op == kLogProd) {
          for (int64_t i = 0; i < n; ++i) g[i] = static_cast<scalar_t>(go / static_cast<acc_t>(v[i]));
        } else {  // prod: d/dv_i = prod_{j != i} v_j, exact with zeros
          int64_t zeros = 0;
          acc_t ls = 0;
          for (int64_t i = 0; i < n; ++i) {
            const acc_t x = static_cast<acc_t>(v[i]);
            if (x == acc_t(0)) ++zeros; else ls += std::log(x);
          }
          for (int64_t i = 0; i < n; ++i) {
            const acc_t x = static_cast<acc_t>(v[i]);
            acc_t d = 0;
            if (zeros == 0) d = std::exp(ls - std::log(x));
            else if (zeros == 1 && x == acc_t(0)) d = std::exp(ls);
            g[i] = static_cast<scalar_t>(go * d);
          }
        }
      }
    });
  });
  return grad_values;
}

at::Tensor step_first_below_cpu(const at::Tensor& values_, const at::Tensor& offsets_, double threshold) {
  check_seg_args(values_, offsets_, "step_first_below");
  auto values = values_.contiguous(), offsets = offsets_.contiguous();
  const int64_t B = offsets.size(0) - 1, S = values.size(0);
  auto out = at::empty({B}, offsets.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, values.scalar_type(), "step_first_below_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* vp = values.const_data_ptr<scalar_t>();
    const int64_t* op_ = offsets.const_data_ptr<int64_t>();
    int64_t* outp = out.mutable_data_ptr<int64_t>();
    const acc_t thr = static_cast<acc_t>(threshold);
    at::parallel_for(0, B, 8192, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t s0 = op_[b], s1 = op_[b + 1];
        TORCH_CHECK(0 <= s0 && s0 <= s1 && s1 <= S, "step_first_below: bad `offsets` at ", b);
        int64_t k = -1;
        for (int64_t i = s0; i < s1; ++i)
          if (static_cast<acc_t>(vp[i]) < thr) {
            k = i - s0;
            break;
          }
        outp[b] = k;
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> step_refine_cpu(const at::Tensor& rewards_, const at::Tensor& offsets_, bool clip,
                                                   double eta, bool delta, double gamma) {
  check_seg_args(rewards_, offsets_, "step_refine");
  auto rewards = rewards_.contiguous(), offsets = offsets_.contiguous();
  const int64_t B = offsets.size(0) - 1, S = rewards.size(0);
  const auto acc = acc_type(rewards.scalar_type());
  auto refined = at::empty({S}, rewards.options().dtype(acc));
  auto returns = at::empty({S}, rewards.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, rewards.scalar_type(), "step_refine_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* rp = rewards.const_data_ptr<scalar_t>();
    const int64_t* op_ = offsets.const_data_ptr<int64_t>();
    acc_t* fp = refined.mutable_data_ptr<acc_t>();
    acc_t* gp = returns.mutable_data_ptr<acc_t>();
    const acc_t e = static_cast<acc_t>(eta), gm = static_cast<acc_t>(gamma);
    at::parallel_for(0, B, 8192, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t s0 = op_[b], s1 = op_[b + 1];
        TORCH_CHECK(0 <= s0 && s0 <= s1 && s1 <= S, "step_refine: bad `offsets` at ", b);
        acc_t next = 0, running = 0;
        for (int64_t i = s1 - 1; i >= s0; --i) {  // reverse: Delta needs r_{k+1}, returns scan backwards
          acc_t r = static_cast<acc_t>(rp[i]);
          if (clip) r = std::min(r - e, acc_t(0));
          const acc_t rt = (delta && i < s1 - 1) ? r - next : r;
          next = r;
          running = rt + gm * running;
          fp[i] = rt;
          gp[i] = running;
        }
      }
    });
  });
  return {refined, returns};
}

// ---------------------------------------------------------------------------------------------
// Autograd, for the C++/CUDA ops and the Triton ops alike (see op_library.h).

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<at::Tensor>;

template <int NS>
struct StepHeadFn : public torch::autograd::Function<StepHeadFn<NS>> {
  static const c10::TypedOperatorHandle<decltype(step_head_cpu)>& op() {
    static const auto handle = find_op<decltype(step_head_cpu)>(NS, "step_head");
    return handle;
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& hidden, const Tensor& index, const Tensor& w,
                               const OptionalTensor& w_neg, const OptionalTensor& bias, const OptionalTensor& target,
                               int64_t kind, int64_t reduction) {
    const bool need_hidden = hidden.requires_grad();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [out, z] = op().call(hidden, index, w, w_neg, bias, target, kind, reduction);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({z});
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["need_hidden"] = need_hidden;
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->save_for_backward({hidden, index, w, w_neg.value_or(Tensor()), z, target.value_or(Tensor())});
    return {out, z};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_first_order("step head");
    variable_list out(8);
    if (!grads[0].defined()) return out;
    static const auto bwd = find_op<decltype(step_head_backward_cpu)>(NS, "step_head_backward");
    const auto s = ctx->get_saved_variables();
    const bool need_hidden = ctx->saved_data["need_hidden"].toBool();
    auto [gh, gw, gb] = bwd.call(grads[0], s[0], s[1], s[2], optional_of(s[3]), s[4], optional_of(s[5]),
                                 ctx->saved_data["kind"].toInt(), ctx->saved_data["reduction"].toInt(), need_hidden);
    if (need_hidden) out[0] = gh;
    out[2] = gw;
    if (s[3].defined()) out[3] = -gw;  // the score uses w - w_neg
    if (ctx->saved_data["has_bias"].toBool()) out[4] = gb;
    return out;
  }
};

template <int NS>
std::tuple<Tensor, Tensor> step_head_autograd(const Tensor& hidden, const Tensor& index, const Tensor& w,
                                              const OptionalTensor& w_neg, const OptionalTensor& bias,
                                              const OptionalTensor& target, int64_t kind, int64_t reduction) {
  if (!records_grad(hidden, w, w_neg, bias))
    return call_below_autograd(StepHeadFn<NS>::op(), hidden, index, w, w_neg, bias, target, kind, reduction);
  auto o = StepHeadFn<NS>::apply(hidden, index, w, w_neg, bias, target, kind, reduction);
  return {o[0], o[1]};
}

template <int NS>
struct StepPairLossFn : public torch::autograd::Function<StepPairLossFn<NS>> {
  static const c10::TypedOperatorHandle<decltype(step_pair_loss_cpu)>& op() {
    static const auto handle = find_op<decltype(step_pair_loss_cpu)>(NS, "step_pair_loss");
    return handle;
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& r, const Tensor& pos, const Tensor& neg,
                               const OptionalTensor& weight, bool reduce) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Tensor out = op().call(r, pos, neg, weight, reduce);
    ctx->set_materialize_grads(false);
    ctx->saved_data["reduce"] = reduce;
    ctx->save_for_backward({r, pos, neg, weight.value_or(Tensor())});
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_first_order("step_pair_loss");
    variable_list out(5);
    if (!grads[0].defined()) return out;
    static const auto bwd = find_op<decltype(step_pair_loss_backward_cpu)>(NS, "step_pair_loss_backward");
    const auto s = ctx->get_saved_variables();
    out[0] = bwd.call(grads[0], s[0], s[1], s[2], optional_of(s[3]), ctx->saved_data["reduce"].toBool());
    return out;
  }
};

template <int NS>
Tensor step_pair_loss_autograd(const Tensor& r, const Tensor& pos, const Tensor& neg, const OptionalTensor& weight,
                               bool reduce) {
  if (!records_grad(r)) return call_below_autograd(StepPairLossFn<NS>::op(), r, pos, neg, weight, reduce);
  return StepPairLossFn<NS>::apply(r, pos, neg, weight, reduce)[0];
}

template <int NS>
struct StepSegmentReduceFn : public torch::autograd::Function<StepSegmentReduceFn<NS>> {
  static const c10::TypedOperatorHandle<decltype(step_segment_reduce_cpu)>& op() {
    static const auto handle = find_op<decltype(step_segment_reduce_cpu)>(NS, "step_segment_reduce");
    return handle;
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& values, const Tensor& offsets, int64_t op_code,
                               double empty_value) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Tensor out = op().call(values, offsets, op_code, empty_value);
    ctx->set_materialize_grads(false);
    ctx->saved_data["op"] = op_code;
    ctx->save_for_backward({values, offsets});
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_first_order("segment_reduce");
    variable_list out(4);
    if (!grads[0].defined()) return out;
    static const auto bwd = find_op<decltype(step_segment_reduce_backward_cpu)>(NS, "step_segment_reduce_backward");
    const auto s = ctx->get_saved_variables();
    out[0] = bwd.call(grads[0], s[0], s[1], ctx->saved_data["op"].toInt());
    return out;
  }
};

template <int NS>
Tensor step_segment_reduce_autograd(const Tensor& values, const Tensor& offsets, int64_t op, double empty_value) {
  if (!records_grad(values))
    return call_below_autograd(StepSegmentReduceFn<NS>::op(), values, offsets, op, empty_value);
  return StepSegmentReduceFn<NS>::apply(values, offsets, op, empty_value)[0];
}

void define_step_reward_schemas(torch::Library& m) {
  m.def("step_head(Tensor hidden, Tensor index, Tensor w, Tensor? w_neg, Tensor? bias, Tensor? target, int kind, "
        "int reduction) -> (Tensor, Tensor)");
  m.def("step_head_backward(Tensor grad_out, Tensor hidden, Tensor index, Tensor w, Tensor? w_neg, Tensor z, "
        "Tensor? target, int kind, int reduction, bool need_grad_hidden) -> (Tensor, Tensor, Tensor)");
  m.def("step_pair_loss(Tensor r, Tensor pos, Tensor neg, Tensor? weight, bool reduce) -> Tensor");
  m.def("step_pair_loss_backward(Tensor grad, Tensor r, Tensor pos, Tensor neg, Tensor? weight, bool reduce) "
        "-> Tensor");
  m.def("step_segment_reduce(Tensor values, Tensor offsets, int op, float empty_value) -> Tensor");
  m.def("step_segment_reduce_backward(Tensor grad, Tensor values, Tensor offsets, int op) -> Tensor");
  m.def("step_first_below(Tensor values, Tensor offsets, float threshold) -> Tensor");
  m.def("step_refine(Tensor rewards, Tensor offsets, bool clip, float eta, bool delta, float gamma) "
        "-> (Tensor, Tensor)");
}

template <int NS>
void register_step_reward_autograd(torch::Library& m) {
  m.impl("step_head", &step_head_autograd<NS>);
  m.impl("step_pair_loss", &step_pair_loss_autograd<NS>);
  m.impl("step_segment_reduce", &step_segment_reduce_autograd<NS>);
}

}  // namespace
}  // namespace mmreward

MMREWARD_SCHEMAS(mmreward::define_step_reward_schemas)
MMREWARD_AUTOGRAD(mmreward::register_step_reward_autograd)

TORCH_LIBRARY_IMPL(mmreward, CPU, m) {
  m.impl("step_head", &mmreward::step_head_cpu);
  m.impl("step_head_backward", &mmreward::step_head_backward_cpu);
  m.impl("step_pair_loss", &mmreward::step_pair_loss_cpu);
  m.impl("step_pair_loss_backward", &mmreward::step_pair_loss_backward_cpu);
  m.impl("step_segment_reduce", &mmreward::step_segment_reduce_cpu);
  m.impl("step_segment_reduce_backward", &mmreward::step_segment_reduce_backward_cpu);
  m.impl("step_first_below", &mmreward::step_first_below_cpu);
  m.impl("step_refine", &mmreward::step_refine_cpu);
}
