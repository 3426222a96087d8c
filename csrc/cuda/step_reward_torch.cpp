// PRM step-reward ops: CUDA registrations (checks, device guard, stream) calling the raw-pointer
// launchers of step_reward.cu. Schemas live in csrc/cpu/step_reward.cpp; semantics match the CPU
// kernels there.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "step_reward.cuh"

namespace mmreward {
namespace {

using cuda::DType;

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK(false, "mmreward step ops: unsupported dtype ", t.scalar_type());
  }
}
at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }
DType acc_of(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? DType::kFloat64 : DType::kFloat32; }

void check_cuda(const at::Tensor& t, const char* name, const at::Tensor& ref) {
  TORCH_CHECK(t.is_cuda() && t.device() == ref.device(), "mmreward step ops: `", name, "` must be on ", ref.device());
}
void ok(cudaError_t e, const char* what) {
  TORCH_CHECK(e == cudaSuccess, "mmreward ", what, ": CUDA launch failed: ", cudaGetErrorString(e));
}
const void* opt_ptr(const std::optional<at::Tensor>& t) { return t.has_value() ? t->const_data_ptr() : nullptr; }

std::tuple<at::Tensor, at::Tensor> step_head_cuda(const at::Tensor& hidden_, const at::Tensor& index_,
                                                  const at::Tensor& w_, const std::optional<at::Tensor>& w_neg_,
                                                  const std::optional<at::Tensor>& bias_,
                                                  const std::optional<at::Tensor>& target_, int64_t kind,
                                                  int64_t reduction) {
  TORCH_CHECK(hidden_.dim() == 2 && index_.dim() == 1 && index_.scalar_type() == at::kLong, "step_head: bad shapes");
  TORCH_CHECK(kind >= 0 && kind <= 2, "step_head: unknown kind ", kind);
  c10::cuda::CUDAGuard guard(hidden_.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  check_cuda(index_, "index", hidden_);
  check_cuda(w_, "w", hidden_);
  auto hidden = hidden_.contiguous(), index = index_.contiguous(), w = w_.contiguous();
  std::optional<at::Tensor> w_neg, bias, target;
  if (w_neg_.has_value()) w_neg = w_neg_->contiguous();
  if (bias_.has_value()) bias = bias_->contiguous();
  if (kind != 0) {
    TORCH_CHECK(target_.has_value(), "step_head: a loss kind needs `target`");
    target = target_->contiguous();
  }
  const int64_t S = index.size(0), H = hidden.size(1);
  const auto acc = acc_type(hidden.scalar_type());
  auto z = at::empty({S}, hidden.options().dtype(acc));
  auto per = at::empty({kind != 0 ? S : 0}, z.options());
  ok(cuda::step_head_forward(dtype_of(hidden), hidden.const_data_ptr(), index.const_data_ptr<int64_t>(),
                             w.const_data_ptr(), opt_ptr(w_neg), opt_ptr(bias), opt_ptr(target), z.mutable_data_ptr(),
                             kind != 0 ? per.mutable_data_ptr() : nullptr, S, H, static_cast<int>(kind), stream),
     "step_head");
  if (kind == 0) return {z.clone(), z};
  if (reduction == 0) return {per, z};
  auto out = at::empty({}, z.options());
  ok(cuda::step_loss_reduce(acc_of(hidden), per.const_data_ptr(), target->const_data_ptr(), S,
                            static_cast<int>(reduction), out.mutable_data_ptr(), stream),
     "step_head");
  return {out, z};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> step_head_backward_cuda(
    const at::Tensor& grad_out_, const at::Tensor& hidden_, const at::Tensor& index_, const at::Tensor& w_,
    const std::optional<at::Tensor>& w_neg_, const at::Tensor& z_, const std::optional<at::Tensor>& target_,
    int64_t kind, int64_t reduction, bool need_grad_hidden) {
  c10::cuda::CUDAGuard guard(hidden_.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto hidden = hidden_.contiguous(), index = index_.contiguous(), w = w_.contiguous(), z = z_.contiguous();
  const auto acc = acc_type(hidden.scalar_type());
  auto grad_out = grad_out_.to(acc).contiguous();
  std::optional<at::Tensor> w_neg, target;
  if (w_neg_.has_value()) w_neg = w_neg_->contiguous();
  if (kind != 0) {
    TORCH_CHECK(target_.has_value(), "step_head_backward: a loss kind needs `target`");
    target = target_->contiguous();
  }
  const int64_t N = hidden.size(0), H = hidden.size(1), S = index.size(0);
  auto gz = at::empty({S}, z.options());
  auto gb = at::empty({}, z.options());
  ok(cuda::step_head_grad_z(acc_of(hidden), grad_out.const_data_ptr(), z.const_data_ptr(), opt_ptr(target), S,
                            static_cast<int>(kind), static_cast<int>(reduction), gz.mutable_data_ptr(),
                            gb.mutable_data_ptr(), stream),
     "step_head_backward");
  auto grad_hidden = need_grad_hidden ? at::zeros({N, H}, hidden.options()) : at::empty({0}, hidden.options());
  auto grad_w = at::empty({H}, w.options());
  ok(cuda::step_head_backward(dtype_of(hidden), hidden.const_data_ptr(), index.const_data_ptr<int64_t>(),
                              w.const_data_ptr(), opt_ptr(w_neg), gz.const_data_ptr(),
                              need_grad_hidden ? grad_hidden.mutable_data_ptr() : nullptr, grad_w.mutable_data_ptr(), S,
                              H, stream),
     "step_head_backward");
  return {grad_hidden, grad_w, gb};
}

at::Tensor step_pair_loss_cuda(const at::Tensor& r_, const at::Tensor& pos_, const at::Tensor& neg_,
                               const std::optional<at::Tensor>& weight_, bool reduce) {
  TORCH_CHECK(r_.scalar_type() == at::kFloat || r_.scalar_type() == at::kDouble, "step_pair_loss: `r` must be fp32/fp64");
  c10::cuda::CUDAGuard guard(r_.device());
  check_cuda(pos_, "pos", r_);
  check_cuda(neg_, "neg", r_);
  if (weight_.has_value()) check_cuda(*weight_, "weight", r_);
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto r = r_.contiguous(), pos = pos_.contiguous(), neg = neg_.contiguous();
  std::optional<at::Tensor> weight;
  if (weight_.has_value()) weight = weight_->contiguous();
  const int64_t P = pos.size(0);
  auto per = at::empty({P}, r.options());
  auto out = at::empty({}, r.options());
  ok(cuda::step_pair_forward(acc_of(r), r.const_data_ptr(), pos.const_data_ptr<int64_t>(),
                             neg.const_data_ptr<int64_t>(), opt_ptr(weight), per.mutable_data_ptr(),
                             out.mutable_data_ptr(), P, reduce, stream),
     "step_pair_loss");
  return reduce ? out : per;
}

at::Tensor step_pair_loss_backward_cuda(const at::Tensor& grad_, const at::Tensor& r_, const at::Tensor& pos_,
                                        const at::Tensor& neg_, const std::optional<at::Tensor>& weight_,
                                        bool reduce) {
  c10::cuda::CUDAGuard guard(r_.device());
  check_cuda(grad_, "grad", r_);
  check_cuda(pos_, "pos", r_);
  check_cuda(neg_, "neg", r_);
  if (weight_.has_value()) check_cuda(*weight_, "weight", r_);
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto r = r_.contiguous(), pos = pos_.contiguous(), neg = neg_.contiguous();
  auto grad = grad_.to(r.scalar_type()).contiguous();
  std::optional<at::Tensor> weight;
  if (weight_.has_value()) weight = weight_->contiguous();
  auto grad_r = at::zeros_like(r);
  ok(cuda::step_pair_backward(acc_of(r), grad.const_data_ptr(), r.const_data_ptr(), pos.const_data_ptr<int64_t>(),
                              neg.const_data_ptr<int64_t>(), opt_ptr(weight), grad_r.mutable_data_ptr(), pos.size(0),
                              reduce, stream),
     "step_pair_loss_backward");
  return grad_r;
}

at::Tensor step_segment_reduce_cuda(const at::Tensor& values_, const at::Tensor& offsets_, int64_t op,
                                    double empty_value) {
  TORCH_CHECK(op >= 0 && op <= 6, "step_segment_reduce: unknown op ", op);
  c10::cuda::CUDAGuard guard(values_.device());
  check_cuda(offsets_, "offsets", values_);
  auto values = values_.contiguous(), offsets = offsets_.contiguous();
  const int64_t B = offsets.size(0) - 1;
  auto out = at::empty({B}, values.options().dtype(acc_type(values.scalar_type())));
  ok(cuda::step_segment_forward(dtype_of(values), values.const_data_ptr(), offsets.const_data_ptr<int64_t>(), B,
                                static_cast<int>(op), empty_value, out.mutable_data_ptr(),
                                c10::cuda::getCurrentCUDAStream()),
     "step_segment_reduce");
  return out;
}

at::Tensor step_segment_reduce_backward_cuda(const at::Tensor& grad_, const at::Tensor& values_,
                                             const at::Tensor& offsets_, int64_t op) {
  c10::cuda::CUDAGuard guard(values_.device());
  auto values = values_.contiguous(), offsets = offsets_.contiguous();
  auto grad = grad_.to(acc_type(values.scalar_type())).contiguous();
  auto grad_values = at::zeros_like(values);
  ok(cuda::step_segment_backward(dtype_of(values), grad.const_data_ptr(), values.const_data_ptr(),
                                 offsets.const_data_ptr<int64_t>(), offsets.size(0) - 1, static_cast<int>(op),
                                 grad_values.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream()),
     "step_segment_reduce_backward");
  return grad_values;
}

at::Tensor step_first_below_cuda(const at::Tensor& values_, const at::Tensor& offsets_, double threshold) {
  c10::cuda::CUDAGuard guard(values_.device());
  check_cuda(offsets_, "offsets", values_);
  auto values = values_.contiguous(), offsets = offsets_.contiguous();
  const int64_t B = offsets.size(0) - 1;
  auto out = at::empty({B}, offsets.options());
  ok(cuda::step_first_below(dtype_of(values), values.const_data_ptr(), offsets.const_data_ptr<int64_t>(), B, threshold,
                            out.mutable_data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream()),
     "step_first_below");
  return out;
}

std::tuple<at::Tensor, at::Tensor> step_refine_cuda(const at::Tensor& rewards_, const at::Tensor& offsets_, bool clip,
                                                    double eta, bool delta, double gamma) {
  c10::cuda::CUDAGuard guard(rewards_.device());
  check_cuda(offsets_, "offsets", rewards_);
  auto rewards = rewards_.contiguous(), offsets = offsets_.contiguous();
  const auto acc = acc_type(rewards.scalar_type());
  auto refined = at::empty(rewards.sizes(), rewards.options().dtype(acc));
  auto returns = at::empty(rewards.sizes(), rewards.options().dtype(acc));
  ok(cuda::step_refine(dtype_of(rewards), rewards.const_data_ptr(), offsets.const_data_ptr<int64_t>(),
                       offsets.size(0) - 1, clip, eta, delta, gamma, refined.mutable_data_ptr(),
                       returns.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream()),
     "step_refine");
  return {refined, returns};
}

}  // namespace
}  // namespace mmreward

TORCH_LIBRARY_IMPL(mmreward, CUDA, m) {
  m.impl("step_head", &mmreward::step_head_cuda);
  m.impl("step_head_backward", &mmreward::step_head_backward_cuda);
  m.impl("step_pair_loss", &mmreward::step_pair_loss_cuda);
  m.impl("step_pair_loss_backward", &mmreward::step_pair_loss_backward_cuda);
  m.impl("step_segment_reduce", &mmreward::step_segment_reduce_cuda);
  m.impl("step_segment_reduce_backward", &mmreward::step_segment_reduce_backward_cuda);
  m.impl("step_first_below", &mmreward::step_first_below_cuda);
  m.impl("step_refine", &mmreward::step_refine_cuda);
}
