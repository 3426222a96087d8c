// What every op family shares on the torch side: the accumulation dtype, the two op namespaces
// (one set of schemas, one autograd) and the helpers the C++ autograd of each op uses.
//
// Each family defines its schemas once (`MMREWARD_SCHEMAS`) in both namespaces:
//   mmreward::<op>         C++ (CPU) and CUDA kernels of the compiled extension;
//   mmreward_triton::<op>  Triton kernels, registered from Python (mmreward/ops/triton/<family>.py).
// and its autograd once, in C++ (`MMREWARD_AUTOGRAD`), for both: the training hot path never runs
// Python autograd code. Fake (meta) kernels come from Python (mmreward/ops/library/<family>.py).
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

namespace mmreward {

// The dtype every op accumulates in and returns its float results in: float64 for float64
// inputs, float32 for float32 / bfloat16 / float16.
inline at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

enum OpNamespace : int { kKernels = 0, kTriton = 1 };

inline const char* namespace_name(int ns) { return ns == kKernels ? "mmreward" : "mmreward_triton"; }

// The op `name` of namespace `ns` with the C++ signature `Sig` (e.g. decltype of its CPU kernel).
template <class Sig>
c10::TypedOperatorHandle<Sig> find_op(int ns, const char* name) {
  const std::string qualified = std::string(namespace_name(ns)) + "::" + name;
  return c10::Dispatcher::singleton().findSchemaOrThrow(qualified.c_str(), "").typed<Sig>();
}

// The backward formulas are first order: run under grad mode (create_graph=True, a gradient of a
// gradient) their results would have no autograd history, so second derivatives would be missing or
// wrong without an error. Every C++ backward calls this first.
inline void check_first_order(const char* op) {
  TORCH_CHECK(!at::GradMode::is_enabled(), "mmreward.ops ", op,
              ": double backward (create_graph=True) is not supported by the compiled kernels; compute "
              "higher-order gradients on the reference backend: with mmreward.ops.use_backend(\"reference\"): ...");
}

// True for a tensor holding real data on the CPU (not meta, not a fake or functional tensor while
// torch.compile traces): only then may the autograd code read a value.
inline bool readable_on_host(const at::Tensor& t) {
  const auto ks = t.key_set();
  return t.defined() && t.device().is_cpu() && !ks.has(c10::DispatchKey::Python) &&
         !ks.has(c10::DispatchKey::Functionalize);
}

// True if the upstream gradient `g` is exactly 1 (loss.backward()) and known to be: read only on the
// CPU; a CUDA `g` is never read (that would synchronise).
inline bool upstream_is_one(const at::Tensor& g) {
  if (!readable_on_host(g) || g.numel() != 1) return false;
  switch (g.scalar_type()) {
    case at::kFloat: return *g.const_data_ptr<float>() == 1.0f;
    case at::kDouble: return *g.const_data_ptr<double>() == 1.0;
    default: return g.item<double>() == 1.0;
  }
}

// A gradient computed in the forward pass, times the upstream gradient `g` (skipped when that is
// exactly 1, see upstream_is_one), in `dtype`.
inline at::Tensor times_upstream(const at::Tensor& grad, const at::Tensor& g, bool g_is_one, at::ScalarType dtype) {
  const at::Tensor scaled = g_is_one ? grad : grad * g;
  return scaled.scalar_type() == dtype ? scaled : scaled.to(dtype);
}

inline bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool requires_grad(const std::optional<at::Tensor>& t) { return t.has_value() && requires_grad(*t); }

// True if autograd must record a call with these (differentiable) inputs: grad mode is on and one
// of them requires grad. Otherwise an op's autograd kernel runs the kernels directly, without
// building a graph node (cheaper inference).
template <class... Ts>
bool records_grad(const Ts&... inputs) {
  return at::GradMode::is_enabled() && (requires_grad(inputs) || ...);
}

// op(args...) below the autograd dispatch keys: the backend kernel (or the fake kernel) itself.
template <class Sig, class... Args>
auto call_below_autograd(const c10::TypedOperatorHandle<Sig>& op, Args&&... args) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(std::forward<Args>(args)...);
}

inline std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

}  // namespace mmreward

// Schemas of a family, defined in both namespaces: `fn(torch::Library&)` calls m.def(...).
#define MMREWARD_SCHEMAS(fn)                              \
  TORCH_LIBRARY_FRAGMENT(mmreward, m) { fn(m); }          \
  TORCH_LIBRARY_FRAGMENT(mmreward_triton, m) { fn(m); }

// Autograd kernels of a family for both namespaces: `fn<NS>(torch::Library&)` calls m.impl(...).
#define MMREWARD_AUTOGRAD(fn)                                                      \
  TORCH_LIBRARY_IMPL(mmreward, Autograd, m) { fn<::mmreward::kKernels>(m); }       \
  TORCH_LIBRARY_IMPL(mmreward_triton, Autograd, m) { fn<::mmreward::kTriton>(m); }
