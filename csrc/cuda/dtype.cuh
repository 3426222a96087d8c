// The element types the CUDA launchers take (raw pointers, no torch headers). One definition for
// every op family: three headers each defining its own `mmreward::cuda::DType` would break the
// one-definition rule, and any code seeing two of them could swap bf16 and fp16.
#pragma once

namespace mmreward {
namespace cuda {

enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

}  // namespace cuda
}  // namespace mmreward
