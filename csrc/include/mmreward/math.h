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

}  // namespace mmreward
