// Reusable large CPU output buffers (see csrc/cpu/buffer_cache.cpp).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace mmreward {

// An uninitialised contiguous tensor of `sizes` for an output that is written in full right away
// (e.g. a [B, H] gradient). Large ones come from a small cache of buffers that nothing references
// any more, so a training loop does not pay the kernel's zero-fill of fresh pages every step.
at::Tensor empty_output_buffer(at::IntArrayRef sizes, const at::TensorOptions& opts);

// Frees the cached buffers nothing references; returns the bytes freed.
int64_t release_cpu_buffers();

// Bytes the cache holds (in use or free).
int64_t cached_cpu_buffer_bytes();

}  // namespace mmreward
