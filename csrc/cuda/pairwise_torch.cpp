// Pairwise reward losses: CUDA kernel registration (schemas are in csrc/cpu/pairwise.cpp).
// Checks inputs, allocates outputs / workspace with the caching allocator, and calls the raw-pointer
// launchers of pairwise.cu on the current stream. Same semantics and outputs as the CPU kernels.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "mmreward/math.h"
#include "pairwise.cuh"

namespace mmreward {
namespace {

namespace mc = mmreward::cuda;

mc::DType to_dtype(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return mc::DType::kFloat32;
    case at::kDouble: return mc::DType::kFloat64;
    case at::kBFloat16: return mc::DType::kBFloat16;
    case at::kHalf: return mc::DType::kFloat16;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t);
  }
  return mc::DType::kFloat32;
}

at::ScalarType acc_of(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
}

void check_cuda(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref) {
  TORCH_CHECK(t.is_cuda(), op, ": `", name, "` must be a CUDA tensor");
  TORCH_CHECK(t.device() == ref.device(), op, ": `", name, "` is on ", t.device(), " but expected ", ref.device());
}

std::optional<at::Tensor> contig(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

template <typename P = void>
const P* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? static_cast<const P*>(t->const_data_ptr()) : nullptr;
}

void check_pair(const char* op, const at::Tensor& rc, const at::Tensor& rr, const std::optional<at::Tensor>& margin,
                const std::optional<at::Tensor>& tie, int64_t reduction) {
  check_cuda(op, "r_chosen", rc, rc);
  check_cuda(op, "r_rejected", rr, rc);
  TORCH_CHECK(rc.dim() == 1 && rc.sizes() == rr.sizes(), op, ": r_chosen / r_rejected must be 1-D of equal shape");
  TORCH_CHECK(rc.scalar_type() == rr.scalar_type(), op, ": r_chosen and r_rejected dtypes differ");
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": bad reduction code ", reduction);
  if (margin.has_value()) {
    check_cuda(op, "margin", *margin, rc);
    TORCH_CHECK(margin->sizes() == rc.sizes() && margin->scalar_type() == acc_of(rc.scalar_type()), op,
                ": margin must be [B] in the accumulation dtype");
  }
  if (tie.has_value()) {
    check_cuda(op, "tie", *tie, rc);
    TORCH_CHECK(tie->sizes() == rc.sizes() && tie->scalar_type() == at::kBool, op, ": tie must be bool [B]");
  }
}

at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 1)}, like.options().dtype(at::kByte));
}

// ---- pairwise_loss -----------------------------------------------------------------------------
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pairwise_loss_cuda(
    const at::Tensor& r_chosen, const at::Tensor& r_rejected, const std::optional<at::Tensor>& margin,
    const std::optional<at::Tensor>& tie, double label_smoothing, double center_coef, int64_t reduction,
    bool need_grad) {
  const char* op = "pairwise_loss";
  check_pair(op, r_chosen, r_rejected, margin, tie, reduction);
  TORCH_CHECK(!(need_grad && reduction == kNone), op, ": need_grad requires reduction mean or sum");
  c10::cuda::CUDAGuard guard(r_chosen.device());
  const auto rc = r_chosen.contiguous(), rr = r_rejected.contiguous();
  const auto m = contig(margin), t = contig(tie);
  const int64_t B = rc.size(0);
  const auto acc_dt = acc_of(rc.scalar_type());
  auto opts = rc.options().dtype(acc_dt);
  at::Tensor loss = reduction == kNone ? at::empty({B}, opts) : at::empty({}, opts);
  at::Tensor acc = at::empty({}, rc.options().dtype(at::kFloat));
  at::Tensor gc = at::empty({need_grad ? B : 0}, opts), gr = at::empty({need_grad ? B : 0}, opts);
  if (B == 0) {
    loss.zero_();
    acc.zero_();
    return {loss, acc, gc, gr};
  }
  at::Tensor ws = workspace(mc::pairwise_workspace_bytes(B), rc);
  auto stream = c10::cuda::getCurrentCUDAStream();
  check_launch(mc::pairwise_launch(to_dtype(rc.scalar_type(), op), to_dtype(acc_dt, op), rc.const_data_ptr(),
                                   rr.const_data_ptr(), ptr_or_null(m), ptr_or_null<bool>(t), nullptr, false, B,
                                   label_smoothing, center_coef, static_cast<int>(reduction), loss.mutable_data_ptr(),
                                   reduction == kNone, acc.mutable_data_ptr<float>(),
                                   need_grad ? gc.mutable_data_ptr() : nullptr,
                                   need_grad ? gr.mutable_data_ptr() : nullptr, ws.mutable_data_ptr(), stream.stream()),
               op);
  return {loss, acc, gc, gr};
}

std::tuple<at::Tensor, at::Tensor> pairwise_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& r_chosen, const at::Tensor& r_rejected,
    const std::optional<at::Tensor>& margin, const std::optional<at::Tensor>& tie, double label_smoothing,
    double center_coef, int64_t reduction) {
  const char* op = "pairwise_loss_backward";
  check_pair(op, r_chosen, r_rejected, margin, tie, reduction);
  check_cuda(op, "grad", grad, r_chosen);
  c10::cuda::CUDAGuard guard(r_chosen.device());
  const auto rc = r_chosen.contiguous(), rr = r_rejected.contiguous();
  const auto m = contig(margin), t = contig(tie);
  const int64_t B = rc.size(0);
  TORCH_CHECK(reduction == kNone ? (grad.dim() == 1 && grad.size(0) == B) : grad.numel() == 1, op,
              ": bad grad shape ", grad.sizes());
  const auto g = grad.to(acc_of(rc.scalar_type())).contiguous();
  at::Tensor gc = at::empty_like(rc), gr = at::empty_like(rr);
  if (B == 0) return {gc, gr};
  at::Tensor ws = workspace(mc::pairwise_workspace_bytes(B), rc);
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto dt = to_dtype(rc.scalar_type(), op);
  check_launch(mc::pairwise_launch(dt, dt, rc.const_data_ptr(), rr.const_data_ptr(), ptr_or_null(m),
                                   ptr_or_null<bool>(t), g.const_data_ptr(), reduction == kNone, B, label_smoothing,
                                   center_coef, static_cast<int>(reduction), nullptr, false, nullptr,
                                   gc.mutable_data_ptr(), gr.mutable_data_ptr(), ws.mutable_data_ptr(),
                                   stream.stream()),
               op);
  return {gc, gr};
}

// ---- listwise_loss -----------------------------------------------------------------------------
void check_list(const char* op, const at::Tensor& rewards, const at::Tensor& ranks, int64_t reduction) {
  check_cuda(op, "rewards", rewards, rewards);
  check_cuda(op, "ranks", ranks, rewards);
  TORCH_CHECK(rewards.dim() == 2 && ranks.sizes() == rewards.sizes(), op, ": rewards / ranks must be [B, K]");
  TORCH_CHECK(ranks.scalar_type() == at::kLong, op, ": ranks must be int64");
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": bad reduction code ", reduction);
}

std::tuple<at::Tensor, at::Tensor> listwise_loss_cuda(const at::Tensor& rewards_in, const at::Tensor& ranks_in,
                                                      int64_t reduction) {
  const char* op = "listwise_loss";
  check_list(op, rewards_in, ranks_in, reduction);
  c10::cuda::CUDAGuard guard(rewards_in.device());
  const auto rewards = rewards_in.contiguous(), ranks = ranks_in.contiguous();
  const int64_t B = rewards.size(0), K = rewards.size(1);
  auto opts = rewards.options().dtype(acc_of(rewards.scalar_type()));
  at::Tensor loss = reduction == kNone ? at::empty({B}, opts) : at::empty({}, opts);
  at::Tensor counts = at::empty({B}, rewards.options().dtype(at::kLong));
  if (B == 0) {
    loss.zero_();
    return {loss, counts};
  }
  at::Tensor ws = workspace(mc::listwise_workspace_bytes(B), rewards);
  check_launch(mc::listwise_forward(to_dtype(rewards.scalar_type(), op), rewards.const_data_ptr(),
                                    ranks.const_data_ptr<int64_t>(), B, K, static_cast<int>(reduction),
                                    loss.mutable_data_ptr(), counts.mutable_data_ptr<int64_t>(), ws.mutable_data_ptr(),
                                    c10::cuda::getCurrentCUDAStream().stream()),
               op);
  return {loss, counts};
}

at::Tensor listwise_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& rewards_in,
                                       const at::Tensor& ranks_in, const at::Tensor& pair_counts, int64_t reduction) {
  const char* op = "listwise_loss_backward";
  check_list(op, rewards_in, ranks_in, reduction);
  check_cuda(op, "grad", grad, rewards_in);
  check_cuda(op, "pair_counts", pair_counts, rewards_in);
  c10::cuda::CUDAGuard guard(rewards_in.device());
  const auto rewards = rewards_in.contiguous(), ranks = ranks_in.contiguous();
  const int64_t B = rewards.size(0), K = rewards.size(1);
  TORCH_CHECK(pair_counts.dim() == 1 && pair_counts.size(0) == B && pair_counts.scalar_type() == at::kLong, op,
              ": pair_counts must be int64 [B]");
  TORCH_CHECK(reduction == kNone ? (grad.dim() == 1 && grad.size(0) == B) : grad.numel() == 1, op,
              ": bad grad shape ", grad.sizes());
  const auto g = grad.to(acc_of(rewards.scalar_type())).contiguous();
  const auto cnt = pair_counts.contiguous();
  at::Tensor out = at::empty_like(rewards);
  if (B == 0) return out;
  at::Tensor ws = workspace(mc::listwise_workspace_bytes(B), rewards);
  check_launch(mc::listwise_backward(to_dtype(rewards.scalar_type(), op), g.const_data_ptr(), rewards.const_data_ptr(),
                                     ranks.const_data_ptr<int64_t>(), cnt.const_data_ptr<int64_t>(), B, K,
                                     static_cast<int>(reduction), out.mutable_data_ptr(), ws.mutable_data_ptr(),
                                     c10::cuda::getCurrentCUDAStream().stream()),
               op);
  return out;
}

// ---- reward_head_pairwise_loss -----------------------------------------------------------------
void check_head(const char* op, const at::Tensor& hc, const at::Tensor& hr, const at::Tensor& w,
                const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& margin,
                const std::optional<at::Tensor>& tie, int64_t reduction) {
  check_cuda(op, "h_chosen", hc, hc);
  check_cuda(op, "h_rejected", hr, hc);
  check_cuda(op, "weight", w, hc);
  TORCH_CHECK(hc.dim() == 2 && hc.sizes() == hr.sizes(), op, ": h_chosen / h_rejected must be [B, H]");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == hc.size(1), op, ": weight must be [H]");
  TORCH_CHECK(hc.scalar_type() == hr.scalar_type() && hc.scalar_type() == w.scalar_type(), op,
              ": h_chosen, h_rejected and weight must share a dtype");
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": bad reduction code ", reduction);
  const auto acc = acc_of(hc.scalar_type());
  const int64_t B = hc.size(0);
  if (bias.has_value()) {
    check_cuda(op, "bias", *bias, hc);
    TORCH_CHECK(bias->dim() == 0 && bias->scalar_type() == acc, op, ": bias must be 0-d in the accumulation dtype");
  }
  if (margin.has_value()) {
    check_cuda(op, "margin", *margin, hc);
    TORCH_CHECK(margin->dim() == 1 && margin->size(0) == B && margin->scalar_type() == acc, op,
                ": margin must be [B] in the accumulation dtype");
  }
  if (tie.has_value()) {
    check_cuda(op, "tie", *tie, hc);
    TORCH_CHECK(tie->dim() == 1 && tie->size(0) == B && tie->scalar_type() == at::kBool, op, ": tie must be bool [B]");
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> head_grads_alloc(const at::Tensor& hc, const at::Tensor& w,
                                                                            bool grad_h, bool grad_wb) {
  const int64_t B = hc.size(0), H = hc.size(1);
  auto accopts = hc.options().dtype(acc_of(hc.scalar_type()));
  return {grad_h ? at::empty({B, H}, hc.options()) : at::empty({0}, hc.options()),
          grad_h ? at::empty({B, H}, hc.options()) : at::empty({0}, hc.options()),
          grad_wb ? at::empty({H}, w.options()) : at::empty({0}, w.options()),
          grad_wb ? at::empty({}, accopts) : at::empty({0}, accopts)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> reward_head_pairwise_loss_cuda(
    const at::Tensor& h_chosen, const at::Tensor& h_rejected, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& margin,
    const std::optional<at::Tensor>& tie, double label_smoothing, double center_coef, int64_t reduction, bool grad_h,
    bool grad_wb) {
  const char* op = "reward_head_pairwise_loss";
  check_head(op, h_chosen, h_rejected, weight, bias, margin, tie, reduction);
  TORCH_CHECK(!((grad_h || grad_wb) && reduction == kNone), op, ": grads in the forward need reduction mean or sum");
  c10::cuda::CUDAGuard guard(h_chosen.device());
  const auto hc = h_chosen.contiguous(), hr = h_rejected.contiguous(), w = weight.contiguous();
  const auto b = contig(bias), m = contig(margin), t = contig(tie);
  const int64_t B = hc.size(0), H = hc.size(1);
  auto opts = hc.options().dtype(acc_of(hc.scalar_type()));
  at::Tensor loss = reduction == kNone ? at::empty({B}, opts) : at::empty({}, opts);
  at::Tensor acc = at::empty({}, hc.options().dtype(at::kFloat));
  auto [ghc, ghr, gw, gb] = head_grads_alloc(hc, w, grad_h, grad_wb);
  if (B == 0) {  // H = 0 still has a loss: the bias alone scores both responses
    loss.zero_();
    acc.zero_();
    if (grad_h) { ghc.zero_(); ghr.zero_(); }
    if (grad_wb) { gw.zero_(); gb.zero_(); }
    return {loss, acc, ghc, ghr, gw, gb};
  }
  const auto dt = to_dtype(hc.scalar_type(), op);
  at::Tensor ws = workspace(mc::head_workspace_bytes(dt, B, grad_wb ? H : 0), hc);
  check_launch(mc::head_launch(dt, hc.const_data_ptr(), hr.const_data_ptr(), w.const_data_ptr(), ptr_or_null(b),
                               ptr_or_null(m), ptr_or_null<bool>(t), nullptr, false, B, H, label_smoothing,
                               center_coef, static_cast<int>(reduction), loss.mutable_data_ptr(), reduction == kNone,
                               acc.mutable_data_ptr<float>(), grad_h ? ghc.mutable_data_ptr() : nullptr,
                               grad_h ? ghr.mutable_data_ptr() : nullptr, grad_wb ? gw.mutable_data_ptr() : nullptr,
                               grad_wb ? gb.mutable_data_ptr() : nullptr, ws.mutable_data_ptr(),
                               c10::cuda::getCurrentCUDAStream().stream()),
               op);
  return {loss, acc, ghc, ghr, gw, gb};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> reward_head_pairwise_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& h_chosen, const at::Tensor& h_rejected, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& margin,
    const std::optional<at::Tensor>& tie, double label_smoothing, double center_coef, int64_t reduction, bool grad_h,
    bool grad_wb) {
  const char* op = "reward_head_pairwise_loss_backward";
  check_head(op, h_chosen, h_rejected, weight, bias, margin, tie, reduction);
  check_cuda(op, "grad", grad, h_chosen);
  c10::cuda::CUDAGuard guard(h_chosen.device());
  const auto hc = h_chosen.contiguous(), hr = h_rejected.contiguous(), w = weight.contiguous();
  const auto b = contig(bias), m = contig(margin), t = contig(tie);
  const int64_t B = hc.size(0), H = hc.size(1);
  TORCH_CHECK(reduction == kNone ? (grad.dim() == 1 && grad.size(0) == B) : grad.numel() == 1, op,
              ": bad grad shape ", grad.sizes());
  const auto g = grad.to(acc_of(hc.scalar_type())).contiguous();
  auto [ghc, ghr, gw, gb] = head_grads_alloc(hc, w, grad_h, grad_wb);
  if (B == 0 || !(grad_h || grad_wb)) {
    if (grad_h) { ghc.zero_(); ghr.zero_(); }
    if (grad_wb) { gw.zero_(); gb.zero_(); }
    return {ghc, ghr, gw, gb};
  }
  const auto dt = to_dtype(hc.scalar_type(), op);
  at::Tensor ws = workspace(mc::head_workspace_bytes(dt, B, grad_wb ? H : 0), hc);
  check_launch(mc::head_launch(dt, hc.const_data_ptr(), hr.const_data_ptr(), w.const_data_ptr(), ptr_or_null(b),
                               ptr_or_null(m), ptr_or_null<bool>(t), g.const_data_ptr(), reduction == kNone, B, H,
                               label_smoothing, center_coef, static_cast<int>(reduction), nullptr, false, nullptr,
                               grad_h ? ghc.mutable_data_ptr() : nullptr, grad_h ? ghr.mutable_data_ptr() : nullptr,
                               grad_wb ? gw.mutable_data_ptr() : nullptr, grad_wb ? gb.mutable_data_ptr() : nullptr,
                               ws.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream().stream()),
               op);
  return {ghc, ghr, gw, gb};
}

}  // namespace
}  // namespace mmreward

TORCH_LIBRARY_IMPL(mmreward, CUDA, m) {
  m.impl("pairwise_loss", &mmreward::pairwise_loss_cuda);
  m.impl("pairwise_loss_backward", &mmreward::pairwise_loss_backward_cuda);
  m.impl("listwise_loss", &mmreward::listwise_loss_cuda);
  m.impl("listwise_loss_backward", &mmreward::listwise_loss_backward_cuda);
  m.impl("reward_head_pairwise_loss", &mmreward::reward_head_pairwise_loss_cuda);
  m.impl("reward_head_pairwise_loss_backward", &mmreward::reward_head_pairwise_loss_backward_cuda);
}
