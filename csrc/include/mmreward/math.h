// Numerically stable scalar helpers shared by the C++ and CUDA kernels.
// Header-only and free of torch headers so nvcc can compile it on its own.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define MMR_HD __host__ __device__ __forceinline__
#else
#define MMR_HD inline
#endif

namespace mmreward {

// sigmoid without overflow for large |x|.
MMR_HD float sigmoid(float x) {
  if (x >= 0.f) { return 1.f / (1.f + expf(-x)); }
  float e = expf(x);
  return e / (1.f + e);
}
MMR_HD double sigmoid(double x) {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  double e = exp(x);
  return e / (1.0 + e);
}

// Reduction codes shared with mmreward/ops/_validate.py::REDUCTIONS.
enum Reduction : int { kNone = 0, kMean = 1, kSum = 2 };

// ---- Soft-target logistic loss (pairwise reward losses) -----------------------------------------
// loss(z, p) = -p·log σ(z) - (1-p)·log σ(-z) = softplus(-z) + (1-p)·z,  d loss / dz = σ(z) - p.
// The float versions are branch-free (selects only) with their own exp / log1p polynomials, so
// loops calling them auto-vectorise on the CPU; accuracy is a few ulp.
namespace detail {
// exp(x) for x <= 0 (Cephes expf polynomial, Cody–Waite reduction); clamps at exp(-87).
MMR_HD float exp_nonpos(float x) {
  x = x < -87.0f ? -87.0f : x;
  float n = rintf(x * 1.44269504088896341f);
  float r = n * -0.693145751953125f + x;
  r = n * -1.428606765330187045e-06f + r;
  float q = 1.9875691500e-4f;
  q = q * r + 1.3981999507e-3f;
  q = q * r + 8.3334519073e-3f;
  q = q * r + 4.1665795894e-2f;
  q = q * r + 1.6666665459e-1f;
  q = q * r + 5.0000001201e-1f;
  float er = q * (r * r) + r + 1.0f;
  int bits = (static_cast<int>(n) + 127) << 23;
#if defined(__CUDA_ARCH__)
  float scale = __int_as_float(bits);
#else
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(float));
#endif
  return er * scale;
}
// log(1 + t) for t in [0, 1]: 2·atanh(s), s = t / (2 + t) <= 1/3 (series to s^13, < 2e-8 rel).
MMR_HD float log1p_unit(float t) {
  float s = t / (2.0f + t);
  float u = s * s;
  float q = 1.0f / 13.0f;
  q = q * u + 1.0f / 11.0f;
  q = q * u + 1.0f / 9.0f;
  q = q * u + 1.0f / 7.0f;
  q = q * u + 1.0f / 5.0f;
  q = q * u + 1.0f / 3.0f;
  q = q * u + 1.0f;
  return 2.0f * s * q;
}
}  // namespace detail

// Loss and d loss / dz of the soft-target logistic loss (see above) at z = 4·q. Passing q = z / 4
// keeps z representable for every pair of finite rewards (r_c − r_r can exceed the float range,
// r_c/4 − r_r/4 − m/4 cannot); the loss is formed from q, and its (1 − p)·z term is an exact 0 (not
// 0·∞) for the Bradley–Terry target p = 1.
MMR_HD void soft_logistic_q(float q, float p, float& loss, float& dz) {
  const float e = detail::exp_nonpos(-4.0f * fabsf(q));  // exp(-|z|) in (0, 1]
  const float lin = q < 0.f ? -p * q : (1.0f - p) * q;     // max(-z, 0) + (1 - p)·z, over 4
  loss = 4.0f * lin + detail::log1p_unit(e);
  dz = (q >= 0.f ? 1.0f : e) / (1.0f + e) - p;
}
MMR_HD void soft_logistic_q(double q, double p, double& loss, double& dz) {
  const double e = exp(-4.0 * fabs(q));
  const double lin = q < 0.0 ? -p * q : (1.0 - p) * q;
  loss = 4.0 * lin + log1p(e);
  dz = (q >= 0.0 ? 1.0 : e) / (1.0 + e) - p;
}

// One pair of the pairwise reward loss (mmreward/ops/pairwise.py):
//   loss = softplus(-z) + (1 - p)·z + c·(r_c + r_r)²,  z = r_c - r_r - m  (ties: z = r_c - r_r, p = ½)
// and its gradients w.r.t. r_c, r_r times the upstream gradient s. Exact for all finite inputs
// (see soft_logistic_q; the centering term is skipped, not multiplied by 0, when c = 0). A
// non-finite input makes the loss and both gradients NaN (q - q is NaN exactly when q is not
// finite), never a finite number; the return value says whether the pair was finite.
template <typename A>
struct PairLoss {
  A p;   // target probability of a non-tie pair: 1 - label_smoothing / 2
  A cc;  // center_coef

  MMR_HD bool operator()(A rc, A rr, A m, bool tie, A s, A& loss, A& grad_c, A& grad_r) const {
    const A quarter = A(0.25);
    const A q0 = rc * quarter - rr * quarter;
    const A q = tie ? q0 : q0 - m * quarter;
    A l, dz;
    soft_logistic_q(q, tie ? A(0.5) : p, l, dz);
    const A sum = rc + rr;
    const bool centered = cc != A(0);
    const A nan_if_bad = q - q;
    const A center_grad = centered ? s * A(2) * cc * sum : A(0);
    loss = l + (centered ? cc * sum * sum : A(0)) + nan_if_bad;
    grad_c = s * dz + center_grad + nan_if_bad;
    grad_r = center_grad - s * dz + nan_if_bad;
    return nan_if_bad == A(0);
  }
};

// softplus(x) = log(1 + exp(x)) without overflow; BCE-with-logits is softplus(z) - y*z.
MMR_HD float softplus(float x) { return fmaxf(x, 0.f) + log1pf(expf(-fabsf(x))); }
MMR_HD double softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }
}  // namespace mmreward
