// A small cache of large CPU output buffers, in the spirit of the CUDA caching allocator.
//
// A training step allocates the same [B, H] gradient shapes every time. glibc serves blocks this
// large with mmap and unmaps them on free, so every step the kernel zero-fills fresh pages on first
// touch — for the reward head's 2 x 1 GiB gradients at B = 64k, H = 4096 that zero-fill costs as
// much as writing the gradients (measured ~120 ms of ~350 ms on a 2-core VM). Here a buffer is
// handed out again once nothing references its storage any more (storage use count 1: only this
// cache), so it can never alias a live tensor. Each hand-out is a fresh tensor viewing the storage.
//
//   MMREWARD_CPU_BUFFER_CACHE_MB   cap on cached bytes (default 4096; 0 turns the cache off)
//   MMREWARD_CPU_HUGEPAGES=0       no transparent-huge-page advice on new buffers
//   torch.ops.mmreward.release_cpu_buffers()   frees the unreferenced ones (mmreward.ops.empty_cpu_cache)
#include "mmreward/buffer_cache.h"

#include <torch/library.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace mmreward {
namespace {

constexpr int64_t kMinCachedBytes = int64_t(16) << 20;  // smaller buffers: malloc reuses them anyway

int64_t cache_cap_bytes() {
  static const int64_t cap = [] {
    const char* e = std::getenv("MMREWARD_CPU_BUFFER_CACHE_MB");
    if (e == nullptr || *e == '\0') return int64_t(4096) << 20;
    char* end = nullptr;
    const long long mb = std::strtoll(e, &end, 10);
    TORCH_CHECK(end != e && *end == '\0' && mb >= 0, "MMREWARD_CPU_BUFFER_CACHE_MB must be a non-negative integer, got '",
                e, "'");
    return static_cast<int64_t>(mb) << 20;
  }();
  return cap;
}

// Ask for transparent huge pages (THP "madvise" mode) so the first touch costs one fault per 2 MiB
// instead of per 4 KiB. Only the 2 MiB-aligned interior is advised; a no-op elsewhere or on failure.
void advise_hugepages(at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  static const bool enabled = [] {
    const char* e = std::getenv("MMREWARD_CPU_HUGEPAGES");
    return e == nullptr || std::string(e) != "0";
  }();
  const size_t bytes = t.nbytes();
  if (enabled && bytes >= 4 * kHuge) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(t.mutable_data_ptr());
    const uintptr_t lo = (p + kHuge - 1) & ~(kHuge - 1), hi = (p + bytes) & ~(kHuge - 1);
    if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
  }
#else
  (void)t;
#endif
}

struct Pool {
  std::mutex mu;
  std::vector<c10::Storage> buffers;  // each referenced here once; use_count() == 1 => free
  int64_t bytes = 0;
};

Pool& pool() {
  static Pool* p = new Pool();  // leaked on purpose: no destruction-order issues at exit
  return *p;
}

at::Tensor view_of(const c10::Storage& s, at::IntArrayRef sizes, const at::TensorOptions& opts) {
  at::Tensor t = at::empty({0}, opts);
  t.set_(s, 0, sizes, c10::contiguous_strides(sizes));
  return t;
}

}  // namespace

at::Tensor empty_output_buffer(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  const int64_t cap = cache_cap_bytes();
  int64_t numel = 1;
  for (const auto s : sizes) numel *= s;
  const int64_t nbytes = numel * static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(opts.dtype())));
  const bool cacheable = cap > 0 && nbytes >= kMinCachedBytes && opts.device().is_cpu() && opts.layout() == at::kStrided;
  if (cacheable) {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    for (const auto& s : p.buffers) {
      if (s.use_count() == 1 && static_cast<int64_t>(s.nbytes()) == nbytes) return view_of(s, sizes, opts);
    }
  }
  at::Tensor t = at::empty(sizes, opts);
  advise_hugepages(t);
  if (cacheable) {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    // make room by dropping free buffers of other sizes (a changed batch shape) before giving up
    for (size_t i = 0; i < p.buffers.size() && p.bytes + nbytes > cap;) {
      if (p.buffers[i].use_count() == 1) {
        p.bytes -= static_cast<int64_t>(p.buffers[i].nbytes());
        p.buffers.erase(p.buffers.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
    if (p.bytes + nbytes <= cap) {
      p.buffers.push_back(t.storage());
      p.bytes += nbytes;
    }
  }
  return t;
}

int64_t release_cpu_buffers() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  int64_t freed = 0;
  std::vector<c10::Storage> kept;
  for (auto& s : p.buffers) {
    if (s.use_count() == 1) {
      freed += static_cast<int64_t>(s.nbytes());
    } else {
      kept.push_back(s);
    }
  }
  p.buffers.swap(kept);
  p.bytes -= freed;
  return freed;
}

int64_t cached_cpu_buffer_bytes() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  return p.bytes;
}

}  // namespace mmreward

TORCH_LIBRARY_FRAGMENT(mmreward, m) {
  m.def("release_cpu_buffers() -> int", &mmreward::release_cpu_buffers);
  m.def("cached_cpu_buffer_bytes() -> int", &mmreward::cached_cpu_buffer_bytes);
}
