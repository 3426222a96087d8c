"""More unusual inputs to the public ops: meta tensors mixed with CPU tensors, torch.func.vmap /
grad over the ops, backends on meta tensors. One clear error naming the input, or the result."""
import pytest
import torch

import mmreward.ops as O
from mmreward.ops import _backend

META = torch.device("meta")


def _cpp_available():
    return "cpp" in _backend.available_backends("pairwise_loss", "cpu") and _backend.extension_loaded()


# ------------------------------------------------------------------------------------------------
# meta tensors mixed with CPU tensors


@pytest.mark.parametrize("fn", [O.segment_reduce, O.first_below, O.refine_process_rewards])
def test_segment_ops_meta_lengths_or_offsets_with_cpu_scores_are_named(fn):
    """A meta `lengths` / `offsets` with CPU scores failed in torch ("Cannot copy out of meta tensor")."""
    s = torch.rand(3)
    with pytest.raises(ValueError, match=r"`lengths` is a meta tensor .* `(scores|rewards)` is on cpu"):
        fn(s, torch.tensor([1, 2], device=META))
    with pytest.raises(ValueError, match=r"`offsets` is a meta tensor"):
        fn(s, offsets=torch.tensor([0, 1, 3], device=META))
    # real lengths with meta scores still give the output shape
    out = fn(s.to(META), torch.tensor([1, 2]))
    out = out[0] if isinstance(out, tuple) else out
    assert out.device.type == "meta" and out.shape[0] in (2, 3)


def test_pack_and_unpack_steps_with_meta_tensors():
    # meta mask: the number of steps depends on its values (was torch's nonzero-on-meta error)
    with pytest.raises(ValueError, match="pack_steps: the number of steps depends on the values of `mask`"):
        O.pack_steps(torch.rand(2, 3), torch.ones(2, 3, dtype=torch.bool, device=META))
    with pytest.raises(ValueError, match="`mask`"):
        O.segment_reduce(torch.rand(2, 3), mask=torch.ones(2, 3, dtype=torch.bool, device=META))
    # meta lengths: the padded width is max(lengths) (was "Cannot copy out of meta tensor")
    with pytest.raises(ValueError, match=r"unpack_steps: the padded width is max\(`lengths`\)"):
        O.unpack_steps(torch.rand(3), torch.tensor([1, 2], device=META))
    # meta values with real lengths: the padded shape (was "Tensor.item() cannot be called on meta tensors")
    out = O.unpack_steps(torch.rand(3, device=META), torch.tensor([1, 2]))
    assert out.device.type == "meta" and out.shape == (2, 2)


def test_step_ops_meta_bias_or_pairs_with_cpu_hidden_are_named():
    h, w = torch.randn(2, 3, 4), torch.randn(4)
    idx = torch.tensor([0, 3])
    with pytest.raises(ValueError, match=r"step_logits: `bias` is a meta tensor .* `hidden` is on cpu"):
        O.step_values(h, w, torch.zeros((), device=META), step_index=idx)
    with pytest.raises(ValueError, match=r"step_pair_loss: `pos_index` is a meta tensor"):
        O.step_pair_loss(h, w, step_index=idx, pos_index=torch.tensor([0], device=META), neg_index=torch.tensor([1]))
    with pytest.raises(ValueError, match=r"pairs_from_groups: the pairs depend on the values of `group`"):
        O.pairs_from_groups(torch.tensor([0, 0], device=META), torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"pairs_from_groups: the pairs depend on the values of `group`"):
        O.step_pair_loss(h, w, step_index=idx, step_group=torch.tensor([0, 0], device=META),
                         step_polarity=torch.tensor([True, False]))
    # CPU bias / pairs with CPU hidden still work
    assert O.step_pair_loss(h, w, torch.tensor(0.5), step_index=idx, pos_index=torch.tensor([0]),
                            neg_index=torch.tensor([1])).shape == ()


def test_every_backend_listed_for_meta_tensors_runs_there():
    """`mmreward ops --device meta` listed only `reference`, yet every forced backend runs meta tensors
    (the fake kernels); available_backends now agrees with what runs."""
    listed = O.available_backends("pairwise_loss", "meta")
    assert listed == list(O.BACKENDS)
    for b in listed:
        with O.use_backend(b):
            out = O.pairwise_loss(torch.randn(3, device=META), torch.randn(3, device=META))
        assert out.device.type == "meta" and out.shape == ()


# ------------------------------------------------------------------------------------------------
# torch.func.vmap / grad


def _vmapped_matches_loop(f, *xs):
    got = torch.func.vmap(f)(*xs)
    want = torch.stack([f(*[x[i] for x in xs]) for i in range(xs[0].shape[0])])
    torch.testing.assert_close(got, want)


def test_vmap_over_the_ops_matches_a_loop():
    torch.manual_seed(0)
    rc, rr = torch.randn(3, 4), torch.randn(3, 4)
    h, w = torch.randn(3, 4, 6), torch.randn(6)
    _vmapped_matches_loop(lambda a, b: O.pairwise_loss(a, b, margin=0.5, center_coef=0.1), rc, rr)
    _vmapped_matches_loop(lambda a, b: O.pairwise_loss_and_accuracy(a, b)[1], rc, rr)
    _vmapped_matches_loop(lambda a: O.listwise_loss(a.view(2, 2), torch.tensor([[0, 1], [1, 0]])), rc)
    _vmapped_matches_loop(lambda a, b: O.reward_head_pairwise_loss(a, b, w), h, h.flip(1))
    _vmapped_matches_loop(lambda a: O.step_bce_loss(a, w, w.flip(0), torch.tensor([1.0, 0.0]),
                                                    step_index=torch.tensor([0, 2])), h)
    _vmapped_matches_loop(lambda a: O.codebook_entropy(a), torch.randn(2, 2, 5, 3))


def test_vmap_over_the_segment_ops_works_without_the_finite_check_else_one_clear_error():
    """The segment ops read the scores on the host (NaN / inf check): under vmap that failed with
    vmap's "data-dependent control flow" error. Now: one error naming the switch; with the check off
    the reference runs batched."""
    torch.manual_seed(0)
    x, lens = torch.rand(3, 4), torch.tensor([1, 3])
    fns = [lambda a: O.segment_reduce(a, lens, reduce="prod"), lambda a: O.first_below(a, lens),
           lambda a: O.refine_process_rewards(a, lens, delta=True)[1],
           lambda a: O.segment_reduce(a.view(2, 2), mask=torch.tensor([[True, False], [True, True]]))]
    for f in fns:
        with pytest.raises(ValueError, match=r"batched by torch.func.vmap.*set_check_finite\(False\)"):
            torch.func.vmap(f)(x)
    O.set_check_finite(False)
    try:
        for f in fns:
            _vmapped_matches_loop(f, x)
    finally:
        O.set_check_finite(True)


def test_vmap_over_checked_indices_labels_or_layouts_is_one_clear_error():
    """Values checked on the host (indices, labels, codes, segment layouts) cannot be batched by vmap:
    one error naming the input (was vmap's data-dependent-control-flow error)."""
    h, w = torch.randn(4, 6), torch.randn(6)
    s4, z = torch.rand(4), torch.randn(2, 5, 3)
    vm = torch.func.vmap
    cases = [
        (lambda y: O.step_bce_loss(h, w, w, y, step_index=torch.tensor([0, 2])), torch.tensor([[1.0, 0.0]] * 2),
         "step_bce_loss: `labels` is batched"),
        (lambda i: O.step_values(h, w, step_index=i), torch.tensor([[0, 2], [1, 3]]), "`step_index` is batched"),
        (lambda t: O.codebook_nll(z, t), torch.zeros(2, 2, 5, dtype=torch.long), "codebook_nll: `target` is batched"),
        (lambda p: O.step_pair_loss(h, w, step_index=torch.tensor([0, 2]), pos_index=p, neg_index=torch.tensor([1])),
         torch.tensor([[0], [0]]), "`pos_index` is batched"),
        (lambda n: O.segment_reduce(s4, n), torch.tensor([[1, 3], [2, 2]]), "segment_reduce: `lengths` is batched"),
        (lambda o: O.first_below(s4, offsets=o), torch.tensor([[0, 1, 4], [0, 2, 4]]), "`offsets` is batched"),
        (lambda n: O.unpack_steps(s4, n), torch.tensor([[1, 3], [2, 2]]), "unpack_steps: `lengths` is batched"),
        (lambda g: O.pairs_from_groups(g, torch.tensor([True, False]))[0], torch.tensor([[0, 0], [0, 1]]),
         "pairs_from_groups: the pairs depend on the values of `group`"),
    ]
    for f, x, msg in cases:
        with pytest.raises(ValueError, match=msg):
            vm(f)(x)


@pytest.mark.skipif(not _cpp_available(), reason="extension not built")
def test_torch_func_grad_with_a_forced_compiled_backend_is_a_backend_error():
    """Forced `cpp` under torch.func.grad gave torch's "cannot use C++ torch::autograd::Function with
    functorch transforms"; the docs promise BackendUnavailableError, naming the reference."""
    r = torch.randn(4)
    with O.use_backend("cpp"):
        with pytest.raises(O.BackendUnavailableError, match="pairwise_loss: backend 'cpp'.*torch.func.*'reference'"):
            torch.func.grad(lambda a: O.pairwise_loss(a, r.flip(0)))(r)
    with O.use_backend("reference"):
        want = torch.func.grad(lambda a: O.pairwise_loss(a, r.flip(0)))(r)
    torch.testing.assert_close(torch.func.grad(lambda a: O.pairwise_loss(a, r.flip(0)))(r), want)


# ------------------------------------------------------------------------------------------------
# silent conversions


def test_unpack_steps_fill_that_an_integer_tensor_cannot_hold_is_refused():
    """fill=0.5 into int64 packed values silently became 0; a string fill was torch's new_full error."""
    lens = torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"unpack_steps: `fill` 0.5 cannot be stored in `packed` of dtype torch.int64"):
        O.unpack_steps(torch.tensor([1, 2, 3]), lens, fill=0.5)
    with pytest.raises(ValueError, match="`fill` nan"):
        O.unpack_steps(torch.tensor([1, 2, 3]), lens, fill=float("nan"))
    with pytest.raises(TypeError, match="unpack_steps: `fill` must be a number, got 'x'"):
        O.unpack_steps(torch.rand(3), lens, fill="x")
    assert O.unpack_steps(torch.tensor([1, 2, 3]), lens, fill=-100.0).tolist() == [[1, -100], [2, 3]]
    assert O.unpack_steps(torch.tensor([1.0, 2.0, 3.0]), lens, fill=torch.tensor(0.5)).tolist() == [[1, 0.5], [2, 3]]


@pytest.mark.parametrize("shape", [(2.5, 3, 4), (2, -3, 4)])
def test_step_positions_hidden_shape_must_be_non_negative_integers(shape):
    """(2.5, 3, 4) was silently read as (2, 3, 4); a negative size gave "out of range [0, -6)"."""
    with pytest.raises(TypeError, match=r"`hidden_shape` must be .* \(non-negative integers\), got \(2"):
        O.step_positions(shape, step_index=torch.tensor([0]))
    assert O.step_positions((2, 3.0, 4), step_index=torch.tensor([[1, 2]])).tolist() == [5]


# ------------------------------------------------------------------------------------------------
# attention: NaN rows on every path


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("D", [24, 4])
def test_attention_nan_query_gives_a_nan_row_on_every_path(backend, D):
    """PyTorch's CPU attention (the reference; the C++ op for heads wider than 8, as in the shipped
    64x64 models) returned a zero row for a query with a NaN score; the docs and the formula give NaN."""
    if backend not in O.available_backends("attention_heads", "cpu"):
        pytest.skip(f"{backend} not available")
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 5, D), torch.randn(1, 2, 4, D), torch.randn(1, 2, 4, D)
    with O.use_backend(backend):
        clean = O.attention(q, k, v)
        q[0, 1, 3, 0] = float("nan")
        out = O.attention(q, k, v)
        k2 = k.clone()
        k2[0, 0, 2, 1] = float("-inf")
        out_k = O.attention(q, k2, v)
    assert torch.isnan(out[0, 3, 1]).all()
    keep = torch.ones_like(out, dtype=torch.bool)
    keep[0, 3, 1] = False
    assert torch.equal(out[keep], clean[keep])  # the other rows untouched
    ref = (torch.softmax(q @ k2.transpose(-1, -2) * D ** -0.5, -1) @ v).transpose(1, 2)
    assert torch.equal(torch.isnan(out_k), torch.isnan(ref))
    torch.testing.assert_close(torch.nan_to_num(out_k), torch.nan_to_num(ref))
    # under torch.func (the reference runs) too
    f = torch.func.vmap(lambda qq: O.attention(qq, k, v))
    assert torch.equal(torch.isnan(f(q.unsqueeze(0))[0]), torch.isnan(out))


@pytest.mark.parametrize("bad", ["bogus", "cuda:x", "CPU"])
def test_available_backends_names_an_unknown_device(bad):
    """A misspelt device listed `reference` as available (as if it were a real device type)."""
    with pytest.raises(ValueError, match=f"unknown device '{bad}'"):
        O.available_backends("pairwise_loss", bad)
    with pytest.raises(TypeError, match="device must be a torch.device or a string"):
        O.available_backends("pairwise_loss", None)
    assert "reference" in O.available_backends("pairwise_loss", torch.device("cpu"))


def test_step_ops_all_on_meta_give_shapes():
    """Everything on meta (shape inference): the pair loss with a reduction failed in torch.unique, padded
    scores without a mask in nonzero; per-position CPU labels with meta hidden in a meta->cpu copy."""
    h, w = torch.randn(2, 3, 4, device=META), torch.randn(4, device=META)
    idx = torch.tensor([0, 3], device=META)
    for red, shape in (("mean", ()), ("sum", ()), ("none", (1,))):
        out = O.step_pair_loss(h, w, step_index=idx, pos_index=torch.tensor([0]), neg_index=torch.tensor([1]),
                               reduction=red)
        assert out.device.type == "meta" and out.shape == shape
    out = O.segment_reduce(torch.rand(2, 3, device=META))
    assert out.device.type == "meta" and out.shape == (2,)
    with pytest.raises(ValueError, match="step_bce_loss: `labels` is on cpu but `hidden` is on meta"):
        O.step_bce_loss(h, w, w, torch.ones(2, 3), step_index=idx)
    # padded scores without a mask on CPU: every step valid, as before
    s = torch.tensor([[0.1, 0.5], [0.7, 0.2]])
    torch.testing.assert_close(O.segment_reduce(s, reduce="mean"), torch.tensor([0.3, 0.45]))
    assert O.segment_reduce(torch.rand(2, 0)).tolist() == [1.0, 1.0]


def test_set_check_finite_refuses_strings_and_env_false_turns_it_off():
    from mmreward.ops import _validate

    for bad in ("false", "off", None, 0.5):
        with pytest.raises(TypeError, match="set_check_finite: `enabled` must be True or False"):
            O.set_check_finite(bad)
    assert _validate.check_finite_enabled()  # unchanged by the refused calls
    for val, want in (("false", False), ("0", False), (" Off", False), ("no", False), ("1", True), ("", True)):
        assert _validate._env_enabled(val) is want, val


def test_forward_mode_ad_is_carried_or_refused_never_dropped():
    """Dual tensors (torch.autograd.forward_ad) through the compiled ops got a None tangent: the
    derivative silently vanished. Now the automatic choice runs the reference, a forced compiled
    backend is refused; refine_process_rewards' outputs carry no derivative (RL targets)."""
    import torch.autograd.forward_ad as fwAD

    torch.manual_seed(0)
    r0, r1 = torch.randn(4), torch.randn(4)

    def tangent(f, x):
        with fwAD.dual_level():
            out = f(fwAD.make_dual(x, torch.ones_like(x)))
            return fwAD.unpack_dual(out).tangent

    want = torch.func.jvp(lambda a: -torch.nn.functional.logsigmoid(a - r1).mean(), (r0,), (torch.ones(4),))[1]
    torch.testing.assert_close(tangent(lambda a: O.pairwise_loss(a, r1), r0), want)
    got = tangent(lambda h: O.step_values(h, torch.ones(3), step_index=torch.tensor([0])), torch.randn(2, 3))
    torch.testing.assert_close(got, torch.tensor([3.0]))
    assert tangent(lambda a: O.refine_process_rewards(a, torch.tensor([4]))[0], torch.rand(4)) is None
    if _cpp_available():
        with O.use_backend("cpp"):
            with pytest.raises(O.BackendUnavailableError, match="forward-mode AD .* 'reference'"):
                tangent(lambda a: O.pairwise_loss(a, r1), r0)


def test_threshold_clip_gamma_take_one_element_tensors_like_empty_value():
    """A 0-d tensor threshold / clip / gamma (e.g. a quantile computed with torch) was refused while
    segment_reduce's empty_value took one; bool tensors and several values are still refused."""
    s, lens = torch.tensor([0.9, 0.3, 0.8]), torch.tensor([1, 2])
    assert O.first_below(s, lens, threshold=torch.tensor(0.5)).tolist() == [-1, 0]
    a = O.refine_process_rewards(s, lens, clip=torch.tensor(0.5), gamma=torch.tensor([0.5]))
    b = O.refine_process_rewards(s, lens, clip=0.5, gamma=0.5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="`threshold`"):
        O.first_below(s, lens, threshold=torch.tensor(True))
    with pytest.raises(ValueError, match="`gamma`"):
        O.refine_process_rewards(s, lens, gamma=torch.tensor([0.5, 0.6]))


def test_step_pair_loss_names_step_group_and_step_polarity():
    """A list / float step_group was reported as `group` of pairs_from_groups (a name the caller never used)."""
    h, w, idx = torch.randn(2, 3, 4), torch.randn(4), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="step_pair_loss: `step_group` must be a torch.Tensor"):
        O.step_pair_loss(h, w, step_index=idx, step_group=[0, 0], step_polarity=torch.tensor([True, False]))
    with pytest.raises(TypeError, match="step_pair_loss: `step_group` must be an integer tensor"):
        O.step_pair_loss(h, w, step_index=idx, step_group=torch.zeros(2), step_polarity=torch.tensor([True, False]))
    with pytest.raises(TypeError, match="step_pair_loss: `step_polarity` must be a bool tensor, got torch.int64"):
        O.step_pair_loss(h, w, step_index=idx, step_group=torch.tensor([0, 0]), step_polarity=torch.tensor([1, 0]))
    assert O.step_pair_loss(h, w, step_index=idx, step_group=torch.tensor([0, 0]),
                            step_polarity=torch.tensor([True, False])).shape == ()


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_listwise_nonfinite_padding_gets_zero_gradient(backend):
    """Padding (rank < 0) may hold anything: the reference (run by torch.func and without the extension)
    gave its NaN / inf entries NaN gradients, which poison the model that produced them."""
    if backend not in O.available_backends("listwise_loss", "cpu"):
        pytest.skip(f"{backend} not available")
    nan, inf = float("nan"), float("inf")
    ranks = torch.tensor([[0, -1, 1], [1, 0, -1]])
    for red in ("none", "mean", "sum"):
        r = torch.tensor([[0.5, nan, 1.0], [0.2, 0.3, inf]], requires_grad=True)
        with O.use_backend(backend):
            loss = O.listwise_loss(r, ranks, reduction=red)
        (g,) = torch.autograd.grad(loss.sum(), r)
        assert torch.isfinite(loss).all() and torch.isfinite(g).all(), red
        assert g[0, 1] == 0 and g[1, 2] == 0
    # a non-finite reward at a ranked position still makes its row NaN
    r = torch.tensor([[0.5, 0.0, nan]], requires_grad=True)
    with O.use_backend(backend):
        loss = O.listwise_loss(r, torch.tensor([[0, -1, 1]]), reduction="none")
    assert torch.isnan(loss).all()


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_masked_tokens_and_ignored_steps_get_zero_gradients_whatever_they_hold(backend):
    """The docs promise masked codebook tokens / ignored (-100) steps zero gradients; the reference (run
    by torch.func and without the extension) gave a NaN / inf one there NaN gradients (0·NaN), poisoning
    the model that produced them."""
    if backend not in O.available_backends("codebook_entropy", "cpu"):
        pytest.skip(f"{backend} not available")
    torch.manual_seed(0)
    m = torch.tensor([[True, False]])
    logb = torch.randn(1, 2, 3).log_softmax(-1)
    calls = [lambda z, red: O.codebook_entropy(z, mask=m, reduction=red),
             lambda z, red: O.codebook_nll(z, torch.tensor([[0, -100]]), mask=m, reduction=red),
             lambda z, red: O.categorical_kl(z, logb, mask=m, reduction=red),
             lambda z, red: O.log_categorical(z, logb, mask=m, reduction=red)]
    for f in calls:
        for red in ("sum", "mean", "none"):
            z = torch.randn(1, 2, 3)
            z[0, 1, 0] = float("nan")
            z.requires_grad_(True)
            with O.use_backend(backend):
                out = f(z, red)
            (g,) = torch.autograd.grad(out.sum(), z)
            assert torch.isfinite(out).all() and torch.isfinite(g).all() and (g[0, 1] == 0).all(), red
    for loss in (O.step_bce_loss, O.step_value_loss):
        h = torch.randn(2, 3, 4)
        h[0, 1] = float("nan")
        h.requires_grad_(True)
        w = torch.randn(4, requires_grad=True)
        args = (h, w, w.detach().flip(0)) if loss is O.step_bce_loss else (h, w)
        with O.use_backend(backend):
            out = loss(*args, torch.tensor([1.0, -100.0]), step_index=torch.tensor([0, 1]))
        gh, gw = torch.autograd.grad(out, (h, w))
        assert torch.isfinite(out) and torch.isfinite(gh).all() and torch.isfinite(gw).all()
        assert (gh[0, 1] == 0).all()
