// VQ-codebook ops: CUDA kernel registration (schemas are in csrc/cpu/codebook.cpp). Checks inputs,
// allocates outputs, and calls the raw-pointer launchers of codebook.cu on the current stream.
// Same semantics, outputs and gradient layouts as the CPU kernels.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "codebook.cuh"
#include "mmreward/math.h"

namespace mmreward {
namespace {

namespace cc = mmreward::codebook_cuda;
using at::Tensor;

cc::DType cb_dtype(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return cc::DType::kFloat32;
    case at::kDouble: return cc::DType::kFloat64;
    case at::kBFloat16: return cc::DType::kBFloat16;
    case at::kHalf: return cc::DType::kFloat16;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t);
  }
  return cc::DType::kFloat32;
}

at::ScalarType cb_acc(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void cb_launch_ok(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
}

int64_t cb_class_dim(int64_t cd) {
  TORCH_CHECK(cd == 1 || cd == 2 || cd == -1, "class_dim must be 1 or -1, got ", cd);
  return cd == 1 ? 1 : 2;
}

struct CbGeo {
  int64_t B, L, K;
};

CbGeo cb_geo(const Tensor& t, int64_t cd) {
  if (cd == 1) return {t.size(0), t.size(2), t.size(1)};
  return {t.size(0), t.size(1), t.size(2)};
}

cc::Strided cb_in(const Tensor& t, int64_t cd) {
  if (cd == 1) return {t.const_data_ptr(), t.stride(0), t.stride(2), t.stride(1)};
  return {t.const_data_ptr(), t.stride(0), t.stride(1), t.stride(2)};
}

cc::StridedOut cb_out(Tensor& t, int64_t cd) {
  if (cd == 1) return {t.data_ptr(), t.stride(0), t.stride(2), t.stride(1)};
  return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)};
}

void cb_check(const char* op, const char* name, const Tensor& t, const Tensor& ref) {
  TORCH_CHECK(t.is_cuda(), op, ": `", name, "` must be a CUDA tensor");
  TORCH_CHECK(t.device() == ref.device(), op, ": `", name, "` is on ", t.device(), " but expected ", ref.device());
}

void cb_check_input(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK(t.dim() == 3, op, ": `", name, "` must be 3-D, got ", t.sizes());
  TORCH_CHECK(t.is_cuda(), op, ": `", name, "` must be a CUDA tensor");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": `", name, "` must be floating point");
}

std::optional<Tensor> cb_mask(const char* op, const std::optional<Tensor>& mask, const CbGeo& g, const Tensor& ref) {
  if (!mask.has_value()) return std::nullopt;
  cb_check(op, "mask", *mask, ref);
  TORCH_CHECK(mask->scalar_type() == at::kBool, op, ": `mask` must be bool");
  TORCH_CHECK(mask->dim() == 2 && mask->size(0) == g.B && mask->size(1) == g.L, op, ": `mask` must be [B, L] = [",
              g.B, ", ", g.L, "], got ", mask->sizes());
  return mask->contiguous();
}

const bool* cb_mask_ptr(const std::optional<Tensor>& m) { return m.has_value() ? m->const_data_ptr<bool>() : nullptr; }

Tensor cb_tok(const Tensor& like, const CbGeo& g) {
  return at::empty({g.B, g.L}, like.options().dtype(cb_acc(like.scalar_type())));
}

Tensor cb_tok_in(const char* op, const char* name, const Tensor& t, const CbGeo& g, at::ScalarType dt,
                 const Tensor& ref) {
  cb_check(op, name, t, ref);
  TORCH_CHECK(t.numel() == g.B * g.L, op, ": `", name, "` must be [B, L] = [", g.B, ", ", g.L, "]");
  return t.to(dt).contiguous();
}

Tensor cb_grad_like(const Tensor& x, int64_t cd) {
  if (x.is_non_overlapping_and_dense()) return at::empty_like(x);
  const CbGeo g = cb_geo(x, cd);
  const int64_t sK = cd == 1 ? x.stride(1) : x.stride(2);
  const int64_t sL = cd == 1 ? x.stride(2) : x.stride(1);
  if (sL == 1 && sK != 1) {
    Tensor t = at::empty({g.B, g.K, g.L}, x.options());
    return cd == 1 ? t : t.transpose(1, 2);
  }
  Tensor t = at::empty({g.B, g.L, g.K}, x.options());
  return cd == 1 ? t.transpose(1, 2) : t;
}

std::tuple<Tensor, Tensor, Tensor> cb_entropy(const Tensor& logits, int64_t class_dim, const std::optional<Tensor>& mask_) {
  const char* op = "codebook_entropy";
  cb_check_input(op, "logits", logits);
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_geo(logits, cd);
  TORCH_CHECK(g.K > 0, op, ": `logits` has an empty class dim");
  c10::cuda::CUDAGuard guard(logits.device());
  auto mask = cb_mask(op, mask_, g, logits);
  Tensor H = cb_tok(logits, g), lse = cb_tok(logits, g), mu = cb_tok(logits, g);
  cb_launch_ok(cc::launch_stats(cb_dtype(logits.scalar_type(), op), cb_in(logits, cd), g.B, g.L, g.K, nullptr,
                                cb_mask_ptr(mask), H.data_ptr(), lse.data_ptr(), mu.data_ptr(),
                                c10::cuda::getCurrentCUDAStream()),
               op);
  return {H, lse, mu};
}

Tensor cb_entropy_bwd(const Tensor& grad, const Tensor& logits, const Tensor& lse, const Tensor& mu, int64_t class_dim,
                      const std::optional<Tensor>& mask_) {
  const char* op = "codebook_entropy_backward";
  cb_check_input(op, "logits", logits);
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_geo(logits, cd);
  c10::cuda::CUDAGuard guard(logits.device());
  auto mask = cb_mask(op, mask_, g, logits);
  const auto acc = cb_acc(logits.scalar_type());
  Tensor gr = cb_tok_in(op, "grad", grad, g, acc, logits), ls = cb_tok_in(op, "lse", lse, g, acc, logits),
         m = cb_tok_in(op, "mu", mu, g, acc, logits);
  Tensor out = cb_grad_like(logits, cd);
  cb_launch_ok(cc::launch_softmax_bwd(cb_dtype(logits.scalar_type(), op), cb_in(logits, cd), cb_out(out, cd), g.B, g.L,
                                      g.K, gr.const_data_ptr(), ls.const_data_ptr(), m.const_data_ptr(), nullptr,
                                      cb_mask_ptr(mask), c10::cuda::getCurrentCUDAStream()),
               op);
  return out;
}

std::tuple<Tensor, Tensor> cb_nll(const Tensor& logits, const Tensor& target, int64_t class_dim,
                                  const std::optional<Tensor>& mask_) {
  const char* op = "codebook_nll";
  cb_check_input(op, "logits", logits);
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_geo(logits, cd);
  TORCH_CHECK(g.K > 0, op, ": `logits` has an empty class dim");
  c10::cuda::CUDAGuard guard(logits.device());
  auto mask = cb_mask(op, mask_, g, logits);
  Tensor tg = cb_tok_in(op, "target", target, g, at::kLong, logits);  // range checked in Python (no sync here)
  Tensor nll = cb_tok(logits, g), lse = cb_tok(logits, g);
  cb_launch_ok(cc::launch_stats(cb_dtype(logits.scalar_type(), op), cb_in(logits, cd), g.B, g.L, g.K,
                                tg.const_data_ptr<int64_t>(), cb_mask_ptr(mask), nll.data_ptr(), lse.data_ptr(),
                                nullptr, c10::cuda::getCurrentCUDAStream()),
               op);
  return {nll, lse};
}

Tensor cb_nll_bwd(const Tensor& grad, const Tensor& logits, const Tensor& target, const Tensor& lse, int64_t class_dim,
                  const std::optional<Tensor>& mask_) {
  const char* op = "codebook_nll_backward";
  cb_check_input(op, "logits", logits);
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_geo(logits, cd);
  c10::cuda::CUDAGuard guard(logits.device());
  auto mask = cb_mask(op, mask_, g, logits);
  const auto acc = cb_acc(logits.scalar_type());
  Tensor gr = cb_tok_in(op, "grad", grad, g, acc, logits), ls = cb_tok_in(op, "lse", lse, g, acc, logits);
  Tensor tg = cb_tok_in(op, "target", target, g, at::kLong, logits);
  Tensor out = cb_grad_like(logits, cd);
  cb_launch_ok(cc::launch_softmax_bwd(cb_dtype(logits.scalar_type(), op), cb_in(logits, cd), cb_out(out, cd), g.B, g.L,
                                      g.K, gr.const_data_ptr(), ls.const_data_ptr(), nullptr,
                                      tg.const_data_ptr<int64_t>(), cb_mask_ptr(mask),
                                      c10::cuda::getCurrentCUDAStream()),
               op);
  return out;
}

CbGeo cb_pair_check(const char* op, const Tensor& a, const Tensor& b, int64_t cd) {
  cb_check_input(op, "a", a);
  cb_check_input(op, "b", b);
  TORCH_CHECK(a.sizes() == b.sizes(), op, ": inputs have shapes ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": inputs must have the same dtype");
  cb_check(op, "b", b, a);
  return cb_geo(a, cd);
}

Tensor cb_pair_fwd(const char* op, bool is_kl, const Tensor& a, const Tensor& b, int64_t class_dim,
                   const std::optional<Tensor>& mask_) {
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_pair_check(op, a, b, cd);
  c10::cuda::CUDAGuard guard(a.device());
  auto mask = cb_mask(op, mask_, g, a);
  Tensor out = cb_tok(a, g);
  cb_launch_ok(cc::launch_pair_fwd(cb_dtype(a.scalar_type(), op), is_kl, cb_in(a, cd), cb_in(b, cd), g.B, g.L, g.K,
                                   cb_mask_ptr(mask), out.data_ptr(), c10::cuda::getCurrentCUDAStream()),
               op);
  return out;
}

std::tuple<Tensor, Tensor> cb_pair_bwd(const char* op, bool is_kl, const Tensor& grad, const Tensor& a,
                                       const Tensor& b, int64_t class_dim, const std::optional<Tensor>& mask_) {
  const int64_t cd = cb_class_dim(class_dim);
  const CbGeo g = cb_pair_check(op, a, b, cd);
  c10::cuda::CUDAGuard guard(a.device());
  auto mask = cb_mask(op, mask_, g, a);
  Tensor gr = cb_tok_in(op, "grad", grad, g, cb_acc(a.scalar_type()), a);
  Tensor ga = cb_grad_like(a, cd), gb = cb_grad_like(b, cd);
  cb_launch_ok(cc::launch_pair_bwd(cb_dtype(a.scalar_type(), op), is_kl, cb_in(a, cd), cb_in(b, cd), cb_out(ga, cd),
                                   cb_out(gb, cd), g.B, g.L, g.K, gr.const_data_ptr(), cb_mask_ptr(mask),
                                   c10::cuda::getCurrentCUDAStream()),
               op);
  return {ga, gb};
}

Tensor cb_kl(const Tensor& a, const Tensor& b, int64_t cd, const std::optional<Tensor>& m) {
  return cb_pair_fwd("categorical_kl", true, a, b, cd, m);
}
std::tuple<Tensor, Tensor> cb_kl_bwd(const Tensor& g, const Tensor& a, const Tensor& b, int64_t cd,
                                     const std::optional<Tensor>& m) {
  return cb_pair_bwd("categorical_kl_backward", true, g, a, b, cd, m);
}
Tensor cb_logcat(const Tensor& a, const Tensor& b, int64_t cd, const std::optional<Tensor>& m) {
  return cb_pair_fwd("log_categorical", false, a, b, cd, m);
}
std::tuple<Tensor, Tensor> cb_logcat_bwd(const Tensor& g, const Tensor& a, const Tensor& b, int64_t cd,
                                         const std::optional<Tensor>& m) {
  return cb_pair_bwd("log_categorical_backward", false, g, a, b, cd, m);
}

}  // namespace
}  // namespace mmreward

TORCH_LIBRARY_IMPL(mmreward, CUDA, m) {
  m.impl("codebook_entropy", &mmreward::cb_entropy);
  m.impl("codebook_entropy_backward", &mmreward::cb_entropy_bwd);
  m.impl("codebook_nll", &mmreward::cb_nll);
  m.impl("codebook_nll_backward", &mmreward::cb_nll_bwd);
  m.impl("categorical_kl", &mmreward::cb_kl);
  m.impl("categorical_kl_backward", &mmreward::cb_kl_bwd);
  m.impl("log_categorical", &mmreward::cb_logcat);
  m.impl("log_categorical_backward", &mmreward::cb_logcat_bwd);
}
