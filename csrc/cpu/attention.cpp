// Multi-head attention for small head widths: the family's schemas (both namespaces, see
// op_library.h), its autograd (C++, both namespaces) and its CPU kernels (the backward is ATen ops).
//
//   attention_heads(q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv], scale) -> out [B, Lq, H, Dv]
//   out[b, i, h] = Σ_j softmax_j(scale · q[b, h, i] · k[b, h, j]) · v[b, h, j]
//
// Why a kernel of its own: VQ-Diffusion's official models use 16 heads of width 8. With D = 8 the
// score matrix has 8× (self) to 16× (cross) more entries than q, and PyTorch's CPU attention
// (flash or math) streams it through memory, so its exp costs more than the matmuls. Here 16
// queries of one (b, h) form the SIMD lanes and the kernel walks the keys twice: scores and their
// running max into a [Lk, 16] buffer (64 bytes per key: in L1 up to ~500 keys), then exp and the
// weighted sum of v. Each (b, h) converts its keys / values once to contiguous rows of the
// accumulation dtype that all its query blocks share.
//
// The kernel takes heads of width D ≤ 8 (Dv ≤ 32); wider ones run PyTorch's attention inside the op:
// from D = 16 on the matmuls outweigh the softmax and PyTorch is as fast (bench_attention.py).
// The output is laid out [B, Lq, H, Dv] so that `out.view(B, Lq, H·Dv)` feeds the output
// projection without a copy. Inputs may be strided views (heads split off a fused qkv projection)
// with a contiguous last dimension; others are made contiguous first. Accumulation in fp32 for
// fp32 / bf16 / fp16 inputs and fp64 for fp64; the output has that accumulation dtype. exp is the
// range-reduced polynomial of mmreward/math.h (~1e-7 relative) in fp32. A NaN score (a NaN or
// overflowing input) makes its query's output row NaN, as the reference's softmax does.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include <mmreward/math.h>
#include <mmreward/op_library.h>

namespace mmreward {
namespace attention_cpu {

using at::Tensor;
using std::int64_t;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int kLanes = 16;  // queries per block: one zmm of fp32
constexpr int kMaxD = 32;   // widest value head the kernel takes (acc on the stack)
constexpr int kMaxQK = 8;   // widest query / key head it takes: from 16 on PyTorch's attention is as fast

inline float exp_le0(float x) { return detail::exp_nonpos(x); }
inline double exp_le0(double x) { return std::exp(x); }

// Queries i0 .. i0 + nq − 1 of one (b, h). q points at the (b, h) slice (`sql` elements between
// rows); k [Lk, D] and v [Lk, Dv] are that head's keys / values, contiguous in the accumulation
// dtype; `sbuf` holds Lk × 16 scores; out points at out[b, 0, h, 0] with `so` elements between
// query rows. Every inner loop runs over the 16 lanes (one vector), the loops over d outside them:
// DC > 0 fixes D = Dv = DC at compile time so those unroll.
template <typename S, typename A, int DC>
void attend_block(const S* q, int64_t sql, const A* k, const A* v, A* sbuf, A* out, int64_t so, int64_t i0, int nq,
                  int64_t Lk, int64_t D_, int64_t Dv_, A scale) {
  const int64_t D = DC > 0 ? DC : D_, Dv = DC > 0 ? DC : Dv_;
  alignas(64) A qt[kMaxQK][kLanes];  // the lanes' queries, transposed, times scale
  alignas(64) A acc[kMaxD][kLanes];  // Σ_j p_j v_j
  alignas(64) A m[kLanes], l[kLanes], s[kLanes];
  for (int64_t d = 0; d < D; ++d)
    for (int r = 0; r < kLanes; ++r) qt[d][r] = r < nq ? static_cast<A>(q[(i0 + r) * sql + d]) * scale : A(0);
  for (int64_t d = 0; d < Dv; ++d)
#pragma omp simd
    for (int r = 0; r < kLanes; ++r) acc[d][r] = A(0);
#pragma omp simd
  for (int r = 0; r < kLanes; ++r) { m[r] = -std::numeric_limits<A>::infinity(); l[r] = A(0); }
  // pass 1: scores s_j = q · k_j into sbuf, and each query's largest score
  for (int64_t j = 0; j < Lk; ++j) {
    const A* kj = k + j * D;
#pragma omp simd
    for (int r = 0; r < kLanes; ++r) s[r] = A(0);
    for (int64_t d = 0; d < D; ++d) {
      const A kd = kj[d];
#pragma omp simd
      for (int r = 0; r < kLanes; ++r) s[r] += qt[d][r] * kd;
    }
    A* sj = sbuf + j * kLanes;
#pragma omp simd
    for (int r = 0; r < kLanes; ++r) {
      sj[r] = s[r];
      m[r] = s[r] > m[r] ? s[r] : m[r];
    }
  }
  // pass 2: p = exp(s − max), l = Σ p, acc = Σ p · v. A NaN score gives p = NaN, hence a NaN row;
  // an infinite one gives inf − inf = NaN (as the softmax formula does).
  for (int64_t j = 0; j < Lk; ++j) {
    const A* sj = sbuf + j * kLanes;
#pragma omp simd
    for (int r = 0; r < kLanes; ++r) {
      s[r] = exp_le0(sj[r] - m[r]);
      l[r] += s[r];
    }
    const A* vj = v + j * Dv;
    for (int64_t d = 0; d < Dv; ++d) {
      const A vd = vj[d];
#pragma omp simd
      for (int r = 0; r < kLanes; ++r) acc[d][r] += s[r] * vd;
    }
  }
  for (int r = 0; r < nq; ++r) {
    const A inv = A(1) / l[r];
    A* row = out + (i0 + r) * so;
    for (int64_t d = 0; d < Dv; ++d) row[d] = acc[d][r] * inv;
  }
}

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention_heads: q, k, v must be [B, H, L, D]");
  TORCH_CHECK(k.size(0) == q.size(0) && v.size(0) == q.size(0) && k.size(1) == q.size(1) && v.size(1) == q.size(1),
              "attention_heads: q, k, v must share B and H");
  TORCH_CHECK(k.size(3) == q.size(3), "attention_heads: q and k must have the same head width D");
  TORCH_CHECK(v.size(2) == k.size(2), "attention_heads: k and v must have the same length Lk");
  TORCH_CHECK(k.size(2) > 0 && q.size(3) > 0, "attention_heads: needs at least one key (Lk > 0) and D > 0");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "attention_heads: q, k, v must have one dtype");
}

inline Tensor last_dim_contiguous(const Tensor& t) { return t.size(3) <= 1 || t.stride(3) == 1 ? t : t.contiguous(); }

Tensor attention_fwd(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, double scale) {
  check_inputs(q_in, k_in, v_in);
  const Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in), v = last_dim_contiguous(v_in);
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Lk = k.size(2), Dv = v.size(3);
  const auto acc = acc_type(q.scalar_type());
  if (D > kMaxQK || Dv > kMaxD) {  // wider heads: PyTorch's CPU attention is as fast there (bench_attention.py)
    return at::scaled_dot_product_attention(q.to(acc), k.to(acc), v.to(acc), std::nullopt, 0.0, false, scale)
        .transpose(1, 2)
        .contiguous();
  }
  Tensor out = at::empty({B, Lq, H, Dv}, q.options().dtype(acc));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "attention_heads", [&] {
    using S = scalar_t;
    using A = std::conditional_t<std::is_same_v<S, double>, double, float>;
    const S* qp = q.const_data_ptr<S>();
    const S* kp = k.const_data_ptr<S>();
    const S* vp = v.const_data_ptr<S>();
    A* op = out.mutable_data_ptr<A>();
    const int64_t qb = q.stride(0), qh = q.stride(1), ql = q.stride(2);
    const int64_t kb = k.stride(0), kh = k.stride(1), kl = k.stride(2);
    const int64_t vb = v.stride(0), vh = v.stride(1), vl = v.stride(2);
    const int64_t so = H * Dv;
    // One task per (b, h): its keys / values are converted once to contiguous rows of the
    // accumulation dtype (bf16 / fp16 inputs would otherwise be widened again for every query
    // block), then its query blocks run over them.
    auto run = [&](auto width) {
      constexpr int DC = decltype(width)::value;
      at::parallel_for(0, B * H, 4, [&](int64_t t0, int64_t t1) {
        std::vector<A> kv(Lk * (D + Dv)), sbuf(Lk * kLanes);
        A* kc = kv.data();
        A* vc = kc + Lk * D;
        for (int64_t bh = t0; bh < t1; ++bh) {
          const int64_t b = bh / H, h = bh % H;
          const S* kbh = kp + b * kb + h * kh;
          const S* vbh = vp + b * vb + h * vh;
          for (int64_t j = 0; j < Lk; ++j) {
            for (int64_t d = 0; d < D; ++d) kc[j * D + d] = static_cast<A>(kbh[j * kl + d]);
            for (int64_t d = 0; d < Dv; ++d) vc[j * Dv + d] = static_cast<A>(vbh[j * vl + d]);
          }
          for (int64_t i0 = 0; i0 < Lq; i0 += kLanes) {
            const int nq = static_cast<int>(std::min<int64_t>(kLanes, Lq - i0));
            attend_block<S, A, DC>(qp + b * qb + h * qh, ql, kc, vc, sbuf.data(), op + (b * Lq * H + h) * Dv, so, i0,
                                   nq, Lk, D, Dv, static_cast<A>(scale));
          }
        }
      });
    };
    if (D == Dv && D == 8) run(std::integral_constant<int, 8>{});
    else if (D == Dv && D == 4) run(std::integral_constant<int, 4>{});
    else run(std::integral_constant<int, 0>{});
  });
  return out;
}

// Gradients (any device, ATen ops), recomputing the probabilities in the accumulation dtype:
//   P = softmax(scale·Q Kᵀ), dO = grad (as [B, H, Lq, Dv]), dV = Pᵀ dO, dP = dO Vᵀ,
//   dS = P ⊙ (dP − rowsum(dO ⊙ O)) with rowsum(dO ⊙ O) = rowsum(dP ⊙ P), dQ = scale·dS K, dK = scale·dSᵀ Q.
std::tuple<Tensor, Tensor, Tensor> attention_bwd(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& v,
                                                 double scale) {
  check_inputs(q, k, v);
  const auto acc = acc_type(q.scalar_type());
  const Tensor qa = q.to(acc), ka = k.to(acc), va = v.to(acc);
  const Tensor p = at::softmax(at::matmul(qa, ka.transpose(-1, -2)) * scale, -1);  // (B, H, Lq, Lk)
  const Tensor go = grad.to(acc).transpose(1, 2);                                  // (B, H, Lq, Dv)
  const Tensor dv = at::matmul(p.transpose(-1, -2), go);
  const Tensor dp = at::matmul(go, va.transpose(-1, -2));
  const Tensor ds = p * (dp - (dp * p).sum(-1, true));
  const Tensor dq = at::matmul(ds, ka) * scale;
  const Tensor dk = at::matmul(ds.transpose(-1, -2), qa) * scale;
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

template <int NS>
struct AttentionFn : public torch::autograd::Function<AttentionFn<NS>> {
  static const c10::TypedOperatorHandle<decltype(attention_fwd)>& op() {
    static const auto handle = find_op<decltype(attention_fwd)>(NS, "attention_heads");
    return handle;
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Tensor out = op().call(q, k, v, scale);
    ctx->set_materialize_grads(false);
    ctx->saved_data["scale"] = scale;
    ctx->save_for_backward({q, k, v});
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_first_order("attention");
    variable_list out(4);
    if (!grads[0].defined()) return out;
    static const auto bwd = find_op<decltype(attention_bwd)>(NS, "attention_heads_backward");
    const auto s = ctx->get_saved_variables();
    std::tie(out[0], out[1], out[2]) = bwd.call(grads[0], s[0], s[1], s[2], ctx->saved_data["scale"].toDouble());
    return out;
  }
};

template <int NS>
Tensor attention_autograd(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
  if (!records_grad(q, k, v)) return call_below_autograd(AttentionFn<NS>::op(), q, k, v, scale);
  return AttentionFn<NS>::apply(q, k, v, scale)[0];
}

void define_attention_schemas(torch::Library& m) {
  m.def("attention_heads(Tensor q, Tensor k, Tensor v, float scale) -> Tensor");
  m.def("attention_heads_backward(Tensor grad, Tensor q, Tensor k, Tensor v, float scale) -> (Tensor, Tensor, Tensor)");
}

template <int NS>
void register_attention_autograd(torch::Library& m) {
  m.impl("attention_heads", &attention_autograd<NS>);
}

}  // namespace attention_cpu
}  // namespace mmreward

MMREWARD_SCHEMAS(mmreward::attention_cpu::define_attention_schemas)
MMREWARD_AUTOGRAD(mmreward::attention_cpu::register_attention_autograd)

TORCH_LIBRARY_IMPL(mmreward, CPU, m) {
  m.impl("attention_heads", &mmreward::attention_cpu::attention_fwd);
  m.impl("attention_heads_backward", &mmreward::attention_cpu::attention_bwd);
}

// No CUDA or Triton kernels: on a GPU the op runs its reference, PyTorch's fused
// scaled_dot_product_attention (mmreward/ops/library/attention.py), which is already what a GPU
// kernel of this family would be.
