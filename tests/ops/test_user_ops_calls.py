"""A user's training code calling mmreward.ops directly: unusual-but-valid calls and their errors."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import mmreward.ops as O

D = torch.float64


def _qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 2, 3, 8, generator=g, dtype=D)
    k = torch.randn(1, 2, 4, 8, generator=g, dtype=D)
    v = torch.randn(1, 2, 4, 8, generator=g, dtype=D)
    return q, k, v


def _formula(q, k, v):
    return (torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, -1) @ v).transpose(1, 2)


def test_attention_double_backward_on_the_reference_backend():
    """docs/ops.md: a gradient penalty (create_graph=True) runs on the reference backend. For attention
    it raised "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
    implemented" (SDPA's fused CPU kernel has no double backward)."""
    q, k, v = (t.requires_grad_() for t in _qkv())
    with O.use_backend("reference"):
        y = O.attention(q, k, v)
        g, = torch.autograd.grad((y ** 2).sum(), q, create_graph=True)
        gg = torch.autograd.grad(g.pow(2).sum(), (q, k, v))
    y2 = _formula(q, k, v)
    g2, = torch.autograd.grad((y2 ** 2).sum(), q, create_graph=True)
    gg2 = torch.autograd.grad(g2.pow(2).sum(), (q, k, v))
    for a, b in zip(gg, gg2):
        torch.testing.assert_close(a, b)


def test_attention_hessian_and_forward_mode_ad():
    """torch.func.hessian / jvp and forward-AD dual tensors run on the reference (docs/ops.md); for
    attention they failed: "Trying to use forward AD with _scaled_dot_product_flash_attention_for_cpu"."""
    q, k, v = _qkv(1)
    h = torch.func.hessian(lambda x: O.attention(x, k, v).pow(2).sum())(q)
    torch.testing.assert_close(h, torch.func.hessian(lambda x: _formula(x, k, v).pow(2).sum())(q))
    t = torch.randn_like(q)
    _, jv = torch.func.jvp(lambda x: O.attention(x, k, v), (q,), (t,))
    _, jv2 = torch.func.jvp(lambda x: _formula(x, k, v), (q,), (t,))
    torch.testing.assert_close(jv, jv2)
    with fwAD.dual_level():
        out = O.attention(fwAD.make_dual(q, t), k, v)
        torch.testing.assert_close(fwAD.unpack_dual(out).tangent, jv2)


def test_attention_default_path_unchanged_without_higher_order():
    """The C++ kernel (and its first-order backward) still runs for an ordinary training step."""
    q, k, v = (t.requires_grad_() for t in _qkv(2))
    y = O.attention(q, k, v)
    if "cpp" in O.available_backends("attention", "cpu"):
        assert type(y.grad_fn).__name__ == "CppFunction"  # the C++ op's autograd, not SDPA's math kernel
    g = torch.autograd.grad(y.sum(), (q, k, v))
    g2 = torch.autograd.grad(_formula(q, k, v).sum(), (q, k, v))
    for a, b in zip(g, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("public,op", [("attention", "attention_heads"), ("step_scores", "step_head"),
                                       ("segment_reduce", "step_segment_reduce"),
                                       ("pairwise_loss_and_accuracy", "pairwise_loss")])
def test_available_backends_takes_public_function_names(public, op):
    """available_backends("attention", "cpu") listed only ['reference'] (the op is 'attention_heads'):
    a user checking whether the fused kernel runs was told it does not."""
    assert O.available_backends(public, "cpu") == O.available_backends(op, "cpu")
    assert O.available_backends(public, "meta") == O.available_backends(op, "meta")


def test_available_backends_plain_pytorch_functions():
    assert O.available_backends("pairwise_accuracy", "cpu") == ["reference"]
    assert O.available_backends("frame_reduce", torch.device("cpu")) == ["reference"]
    with pytest.raises(ValueError, match="unknown device"):
        O.available_backends("frame_reduce", "tpu")


@pytest.mark.parametrize("bad", ["nope", "Attention", "pairwise"])
def test_available_backends_unknown_name_is_an_error(bad):
    """An unknown (e.g. misspelt) name listed ['reference'] as if the op existed without kernels."""
    with pytest.raises(ValueError, match=f"unknown op '{bad}'.*attention_heads"):
        O.available_backends(bad, "cpu")
    with pytest.raises(TypeError, match="`op` must be"):
        O.available_backends(3, "cpu")


def test_codebook_nll_ignore_index_message_points_to_mask():
    """A PyTorch user passes cross_entropy's ignore_index (-100) in `target`; the error said only
    "out of range" without saying how ignoring is done here (`mask`)."""
    logits = torch.randn(2, 3, 5)
    target = torch.tensor([[1, -100, 2], [0, 4, -100]])
    with pytest.raises(ValueError, match=r"`target` has index -100 out of range \[0, 5\).*pass `mask`"):
        O.codebook_nll(logits, target)
    mask = target != -100
    got = O.codebook_nll(logits, target, mask=mask, reduction="none")
    want = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", [None, "reference"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_step_pair_loss_inf_value_is_nan_not_zero(backend, reduction):
    """docs/ops.md: a non-finite hidden state never gives a finite result. A +inf positive step value
    gave −log σ(+inf) = 0 with zero gradients: the bad step silently dropped out of the loss."""
    inf = float("inf")
    h = torch.tensor([[inf, 0.0], [1.0, 1.0], [0.5, 0.2]], requires_grad=True)
    w = torch.ones(2, requires_grad=True)
    with O.use_backend(backend):
        loss = O.step_pair_loss(h, w, step_index=torch.tensor([0, 1, 2]), pos_index=torch.tensor([0, 2]),
                                neg_index=torch.tensor([1, 1]), pair_group=torch.tensor([0, 1]), reduction=reduction)
    loss.sum().backward()
    if reduction == "none":
        assert torch.isnan(loss[0]) and torch.isfinite(loss[1])
        torch.testing.assert_close(loss[1], torch.nn.functional.softplus(-(torch.tensor(0.7) - 2.0)))
    else:
        assert torch.isnan(loss)
    assert torch.isnan(h.grad[:2]).all() and torch.isfinite(h.grad[2]).all()
    assert torch.isnan(w.grad).all()


def test_step_pair_loss_finite_values_unchanged():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(6, 4, generator=g, dtype=D, requires_grad=True)
    w = torch.randn(4, generator=g, dtype=D, requires_grad=True)
    grp, pol = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([True, False, False, True, True, False])
    loss = O.step_pair_loss(h, w, step_index=torch.arange(6), step_group=grp, step_polarity=pol)
    r = h @ w
    want = ((torch.nn.functional.softplus(-(r[0] - r[1])) + torch.nn.functional.softplus(-(r[0] - r[2]))) / 2
            + (torch.nn.functional.softplus(-(r[3] - r[5])) + torch.nn.functional.softplus(-(r[4] - r[5]))) / 2) / 2
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(torch.autograd.grad(loss, (h, w)), torch.autograd.grad(want, (h, w)))


@pytest.mark.parametrize("bias", [0.5, 2, -1.25])
def test_reward_head_takes_a_number_as_bias(bias):
    """The step heads take `bias` as a number; reward_head_pairwise_loss raised "`bias` must be a
    torch.Tensor" for the same call."""
    g = torch.Generator().manual_seed(3)
    h, hr = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    w = torch.randn(8, generator=g, requires_grad=True)
    loss = O.reward_head_pairwise_loss(h, hr, w, bias, center_coef=0.1)
    want = O.reward_head_pairwise_loss(h, hr, w, torch.tensor(float(bias)), center_coef=0.1)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(torch.autograd.grad(loss, w)[0], torch.autograd.grad(want, w)[0])
    with pytest.raises(TypeError, match="`bias` must be a torch.Tensor, a number or None, got bool"):
        O.reward_head_pairwise_loss(h, hr, w, True)


def test_step_index_on_another_device_is_named():
    """The error said "step positions are on cpu but `hidden` is on meta", naming no argument."""
    hidden = torch.zeros(3, 4, 8, device="meta")
    w = torch.zeros(8, device="meta")
    with pytest.raises(ValueError, match="`step_index` is on cpu but `hidden` is on meta"):
        O.step_values(hidden, w, step_index=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="`step_mask` is on cpu but `hidden` is on meta"):
        O.step_scores(hidden, w, w, step_mask=torch.ones(3, 4, dtype=torch.bool))


def test_attention_mixed_dtypes_under_autocast():
    """Under autocast, q from a bf16 Linear and fp32 k / v: scaled_dot_product_attention runs (casting
    to bf16); attention raised "q, k, v must have one dtype". Outside autocast it still raises."""
    g = torch.Generator().manual_seed(4)
    q = torch.randn(1, 2, 3, 8, generator=g).bfloat16().requires_grad_()
    k = torch.randn(1, 2, 4, 8, generator=g, requires_grad=True)
    v = torch.randn(1, 2, 4, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = O.attention(q, k, v)
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 2, 8)
    torch.testing.assert_close(out.float(), want.float(), atol=2e-2, rtol=2e-2)
    out.float().sum().backward()
    assert k.grad is not None and k.grad.dtype == torch.float32 and q.grad.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="q, k, v must have one dtype"):
        O.attention(q, k, v)
