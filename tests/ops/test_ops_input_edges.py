"""Unusual inputs to the public ops: one clear error naming the argument, or the reference result."""
import numpy as np
import pytest
import torch

import mmreward.ops as O


@pytest.mark.parametrize("bad", [["mean"], {"mean": 1}, None, "avg"])
def test_unhashable_or_unknown_reduction_is_a_clear_error(bad):
    r = torch.randn(3)
    with pytest.raises(ValueError, match="reduction must be one of"):
        O.pairwise_loss(r, r, reduction=bad)
    h, w = torch.randn(2, 3, 4), torch.randn(4)
    with pytest.raises(ValueError, match="step_bce_loss: reduction"):
        O.step_bce_loss(h, w, w, torch.ones(2), step_index=torch.tensor([0, 3]), reduction=bad)
    with pytest.raises(ValueError, match="segment_reduce: `reduce`"):
        O.segment_reduce(torch.rand(3), torch.tensor([1, 2]), reduce=bad)


def test_segment_reduce_empty_value_must_be_a_number():
    s, lens = torch.rand(3), torch.tensor([1, 2, 0])
    for bad in ("x", None, True, [1.0]):
        with pytest.raises(ValueError, match="`empty_value` must be a number"):
            O.segment_reduce(s, lens, reduce="logprod", empty_value=bad)
    # numbers and one-element tensors still work
    assert O.segment_reduce(s, lens, empty_value=np.float32(2.0))[2].item() == 2.0
    assert O.segment_reduce(s, lens, empty_value=torch.tensor(0.0))[2].item() == 0.0


def test_refine_options_reject_strings_and_bools():
    s, lens = torch.rand(3), torch.tensor([1, 2])
    # "no" used to count as delta=True (silently a different refinement)
    with pytest.raises(TypeError, match="`delta` must be True or False"):
        O.refine_process_rewards(s, lens, delta="no")
    with pytest.raises(ValueError, match="`gamma`"):
        O.refine_process_rewards(s, lens, gamma=True)
    with pytest.raises(ValueError, match="`clip`"):
        O.refine_process_rewards(s, lens, clip=True)
    a = O.refine_process_rewards(s, lens, delta=np.bool_(True))
    b = O.refine_process_rewards(s, lens, delta=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_first_below_threshold_bool_rejected():
    with pytest.raises(ValueError, match="`threshold`"):
        O.first_below(torch.rand(3), torch.tensor([1, 2]), threshold=True)


def test_step_bias_numpy_scalar_accepted_bool_rejected():
    h, w = torch.randn(2, 3, 4), torch.randn(4)
    idx = torch.tensor([0, 4])
    want = O.step_values(h, w, 0.5, step_index=idx)
    got = O.step_values(h, w, np.float32(0.5), step_index=idx)
    torch.testing.assert_close(got, want)
    with pytest.raises(TypeError, match="`bias` must be a tensor, float or None"):
        O.step_values(h, w, True, step_index=idx)
    with pytest.raises(TypeError, match="`b_good` must be a real tensor"):
        O.step_logits(h, w, w, b_good=torch.tensor(1j), step_index=idx)


def test_pack_steps_and_step_positions_name_bad_arguments():
    with pytest.raises(ValueError, match="pack_steps: `values` must be 2-D"):
        O.pack_steps(torch.ones(3), torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="pack_steps: `values` must be a torch.Tensor"):
        O.pack_steps([1.0, 2.0], torch.ones(2, dtype=torch.bool))
    with pytest.raises(TypeError, match="`hidden_shape`"):
        O.step_positions(5, step_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="`hidden_shape`"):
        O.step_positions((4,), step_index=torch.tensor([0]))
    assert O.step_positions(torch.Size([2, 4, 8]), step_index=torch.tensor([[1, 2]])).tolist() == [6]


@pytest.mark.parametrize("bad", [1.0, torch.tensor(1), "1"])
def test_codebook_class_dim_must_be_an_int(bad):
    with pytest.raises(ValueError, match="`class_dim` must be 1"):
        O.codebook_entropy(torch.randn(2, 5, 3), class_dim=bad)


def _strided_copies(x):
    """x's values in other layouts: transposed storage, every other element, a stride-0 broadcast
    is done separately."""
    t = x.transpose(0, -1).contiguous().transpose(0, -1)
    big = torch.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
    big[..., ::2] = x
    return {"transposed": t, "step": big[..., ::2]}


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_views_match_contiguous(backend):
    if backend not in O.available_backends("pairwise_loss", torch.device("cpu")):
        pytest.skip("extension not built")
    torch.manual_seed(0)
    hc, hr, w = torch.randn(5, 8), torch.randn(5, 8), torch.randn(8)
    z = torch.randn(2, 3, 7)
    q = torch.randn(2, 2, 5, 4)

    def run(hc, hr, z, q):
        leaves = [t.detach().requires_grad_(True) for t in (hc, hr, w, z, q)]
        a, b, ww, zz, qq = leaves
        with O.use_backend(backend):
            loss = (O.reward_head_pairwise_loss(a, b, ww, reduction="none").sum()
                    + O.codebook_entropy(zz).sum() + O.codebook_nll(zz, torch.zeros(2, 3, dtype=torch.long)).sum()
                    + O.attention(qq, qq, qq).square().sum()
                    + O.step_values(a, ww, step_index=torch.tensor([4, 0])).sum())
        return [loss] + list(torch.autograd.grad(loss, leaves))

    want = run(hc, hr, z, q)
    for name in ("transposed", "step"):
        got = run(_strided_copies(hc)[name], _strided_copies(hr)[name], _strided_copies(z)[name],
                  _strided_copies(q)[name])
        for g, e in zip(got, want):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5, msg=name)
    # stride-0 broadcasts
    got = run(hc[:1].expand(5, 8), hr, z[:, :, :1].expand(2, 3, 7), q[:1].expand(2, 2, 5, 4))
    want = run(hc[:1].expand(5, 8).contiguous(), hr, z[:, :, :1].expand(2, 3, 7).contiguous(),
               q[:1].expand(2, 2, 5, 4).contiguous())
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_torch_func_transforms_run_on_the_automatic_backend():
    """torch.func.grad / jacrev cannot run the compiled ops' C++ autograd; the automatic backend
    choice gives them the reference (same numbers) instead of an error."""
    torch.manual_seed(0)
    r0, r1 = torch.randn(4), torch.randn(4)
    h, w = torch.randn(4, 6), torch.randn(6)
    z = torch.randn(2, 3, 5)
    fns = [
        (lambda a: O.pairwise_loss(a, r1, center_coef=0.1), r0),
        (lambda ww: O.reward_head_pairwise_loss(h, h.flip(0), ww), w),
        (lambda zz: O.codebook_entropy(zz).sum(), z),
        (lambda ww: O.step_bce_loss(h, ww, w, torch.tensor([1.0, 0.0]), step_index=torch.tensor([0, 2])), w),
    ]
    for f, x in fns:
        with O.use_backend("reference"):
            want = torch.func.grad(f)(x)
        torch.testing.assert_close(torch.func.grad(f)(x), want)
    with O.use_backend("reference"):
        want = torch.func.jacrev(lambda a: O.pairwise_loss(a, r1, reduction="none"))(r0)
    torch.testing.assert_close(torch.func.jacrev(lambda a: O.pairwise_loss(a, r1, reduction="none"))(r0), want)



@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_double_backward_on_the_compiled_kernels_is_an_error_not_a_missing_term(reduction):
    """The C++ autograd formulas are first order: a gradient penalty (create_graph=True) through them got
    None second derivatives (its term silently dropped) or an unrelated error; now it is refused, naming
    the reference backend, which computes them."""
    if "cpp" not in O.available_backends("pairwise_loss", torch.device("cpu")):
        pytest.skip("extension not built")
    torch.manual_seed(0)
    c, r = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)

    def loss():
        out = O.pairwise_loss(c, r, reduction=reduction)
        return out.sum()

    with O.use_backend("cpp"):
        (g,) = torch.autograd.grad(loss(), c)  # first order works
        assert g.shape == c.shape
        with pytest.raises(RuntimeError, match=r"double backward \(create_graph=True\) is not supported.*reference"):
            torch.autograd.grad(loss(), c, create_graph=True)
    with O.use_backend("reference"):
        (g,) = torch.autograd.grad(loss(), c, create_graph=True)
        (gg,) = torch.autograd.grad(g.sum(), c)
        assert torch.isfinite(gg).all() and gg.abs().sum() > 0
