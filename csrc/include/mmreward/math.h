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

// log(sigmoid(x)) = -softplus(-x), exact for |x| up to float max.
MMR_HD float log_sigmoid(float x) {
  return x >= 0.f ? -log1pf(expf(-x)) : x - log1pf(expf(x));
}
MMR_HD double log_sigmoid(double x) {
  return x >= 0.0 ? -log1p(exp(-x)) : x - log1p(exp(x));
}

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
// loops calling them auto-vectorise on the CPU; accuracy is a few ulp for any finite z.
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

// Writes the loss and d loss / dz for the soft-target logistic loss (see above).
MMR_HD void soft_logistic(float z, float p, float& loss, float& dz) {
  float e = detail::exp_nonpos(-fabsf(z));  // exp(-|z|) in (0, 1]
  float sp = detail::log1p_unit(e);         // softplus(-|z|)
  loss = (z < 0.f ? -z : 0.f) + sp + (1.0f - p) * z;
  dz = (z >= 0.f ? 1.0f : e) / (1.0f + e) - p;
}
MMR_HD void soft_logistic(double z, double p, double& loss, double& dz) {
  double e = exp(-fabs(z));
  loss = (z < 0.0 ? -z : 0.0) + log1p(e) + (1.0 - p) * z;
  dz = (z >= 0.0 ? 1.0 : e) / (1.0 + e) - p;
}

// softplus(x) = log(1 + exp(x)) without overflow; BCE-with-logits is softplus(z) - y*z.
MMR_HD float softplus(float x) { return fmaxf(x, 0.f) + log1pf(expf(-fabsf(x))); }
MMR_HD double softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }
}  // namespace mmreward
