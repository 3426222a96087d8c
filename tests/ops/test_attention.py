"""Small-head attention (mmreward.ops.attention): the C++ kernel against PyTorch's attention in
float64 (forward + gradients), fp32 / bf16 / fp64, the official VQ-Diffusion head shapes (16 heads
of width 8, self and cross), heads split off a fused projection (strided views), partial 16-query
blocks, one query / one key, head widths with and without compile-time loops (1…8) and wider
ones (run by PyTorch inside the op), large scores, NaN / inf propagation, input errors, the GPU
routing and the VQ-Diffusion block that uses it. opcheck / gradcheck / torch.compile of the raw
ops: tests/ops/test_library.py."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmreward import ops
from mmreward.ops import _backend

from helpers import assert_close

pytestmark = pytest.mark.skipif(not _backend.extension_loaded(), reason="needs the compiled extension")


def _expected(q, k, v, scale=None):
    """float64 attention as [B, Lq, H, Dv]."""
    out = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=scale)
    return out.transpose(1, 2)


def _qkv(B, H, Lq, Lk, D, Dv, dtype, seed=0, amp=1.0):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, H, Lq, D, generator=g, dtype=torch.float64) * amp).to(dtype)
    k = torch.randn(B, H, Lk, D, generator=g, dtype=torch.float64).to(dtype)
    v = torch.randn(B, H, Lk, Dv, generator=g, dtype=torch.float64).to(dtype)
    return q, k, v


SHAPES = [  # (B, H, Lq, Lk, D, Dv)
    (3, 16, 64, 64, 8, 8),    # official VQ-Diffusion self-attention (8×8 tokens)
    (2, 16, 64, 128, 8, 8),   # its cross-attention over two history frames
    (1, 1, 1, 1, 8, 8),
    (2, 3, 17, 5, 4, 4),      # a partial block of queries (17 = 16 + 1)
    (1, 2, 33, 9, 16, 16),
    (1, 2, 15, 40, 32, 32),
    (2, 2, 7, 11, 3, 5),      # no compile-time width, Dv != D
    (1, 1, 5, 6, 1, 1),
    (1, 2, 9, 13, 48, 48),    # wider than the kernel: PyTorch inside the op
    (1, 1, 4, 3, 8, 40),
    (2, 2, 18, 7, 8, 32),     # the widest value head the kernel takes
    (3, 5, 20, 700, 8, 8),    # long keys: a score buffer of 700 × 16, 15 (b, h) tasks
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["fp32", "bf16", "fp64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_float64_attention_forward_and_gradients(shape, dtype):
    q, k, v = _qkv(*shape, dtype)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = ops.attention(*leaves)
    assert out.shape == (shape[0], shape[2], shape[1], shape[5]) and out.dtype == dtype
    ref_leaves = [t.double().requires_grad_() for t in (q, k, v)]
    ref = _expected(*ref_leaves)
    assert_close(out, ref, dtype, scale=4)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = torch.autograd.grad((out * w.to(dtype)).sum(), leaves)
    ref_grads = torch.autograd.grad((ref * w).sum(), ref_leaves)
    for a, b in zip(grads, ref_grads):
        assert a.dtype == dtype
        assert_close(a, b, dtype, scale=8)


def test_strided_heads_of_a_fused_projection_and_the_output_layout():
    """q, k, v split off one [B, L, 3·H·D] projection by view + transpose (as the model does): read in
    place; the output [B, L, H, D] is contiguous, so flatten(2) is a view."""
    B, L, H, D = 2, 20, 4, 8
    qkv = torch.randn(B, L, 3 * H * D, dtype=torch.float32)
    q, k, v = (t.view(B, L, H, D).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    assert not q.is_contiguous()
    out = ops.attention(q, k, v)
    assert out.is_contiguous() and out.flatten(2).data_ptr() == out.data_ptr()
    assert_close(out, _expected(q, k, v), torch.float32)
    # a last dimension that is not contiguous is copied first, same result
    qt = q.contiguous().transpose(2, 3).contiguous().transpose(2, 3)
    assert qt.stride(3) != 1 and torch.equal(ops.attention(qt, k, v), out)
    with _backend.use_backend("reference"):  # PyTorch's attention: same values, same shape
        assert_close(ops.attention(q, k, v), out, torch.float32)


def test_scale_and_large_scores_stay_finite():
    q, k, v = _qkv(2, 3, 20, 30, 8, 8, torch.float32)
    assert_close(ops.attention(q, k, v, scale=0.1), _expected(q, k, v, scale=0.1), torch.float32)
    # scores up to ~1e4: the max is subtracted before exp, nothing overflows
    big = q * 3000.0
    out = ops.attention(big, k, v)
    assert torch.isfinite(out).all()
    assert_close(out, _expected(big, k, v), torch.float32, scale=4)
    # one key far ahead of the rest (its score ~100·|q|²/√D): the output is that key's value
    q1, k1, v1 = _qkv(2, 3, 1, 12, 8, 8, torch.float32, seed=3)
    k1[:, :, 7] = q1[:, :, 0] * 100.0
    assert_close(ops.attention(q1, k1, v1)[:, 0], v1[:, :, 7], torch.float32)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_input_gives_nan_rows_like_softmax(bad):
    q, k, v = _qkv(1, 2, 18, 6, 8, 8, torch.float32)
    q[0, 1, 3, 0] = bad  # one query of head 1
    out = ops.attention(q, k, v)
    # the formula, not PyTorch's CPU flash kernel (which returns finite rows for a NaN query)
    ref = (torch.softmax(q @ k.transpose(-1, -2) * 8 ** -0.5, -1) @ v).transpose(1, 2)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    assert torch.isnan(out[0, 3, 1]).all() and torch.isfinite(out[0, :, 0]).all()
    assert torch.isfinite(out[0, [i for i in range(18) if i != 3], 1]).all()
    k[0, 0, 2, 5] = bad  # a key of head 0: a NaN score for every query; ±inf ones (NaN rows, or weight 0)
    out = ops.attention(q, k, v)
    ref = (torch.softmax(q @ k.transpose(-1, -2) * 8 ** -0.5, -1) @ v).transpose(1, 2)
    assert torch.equal(torch.isnan(out), torch.isnan(ref)) and torch.isnan(out[0, :, 0]).any()
    assert_close(torch.nan_to_num(out), torch.nan_to_num(ref), torch.float32)


def test_input_errors():
    q, k, v = _qkv(1, 2, 4, 5, 8, 8, torch.float32)
    with pytest.raises(ValueError, match="4"):
        ops.attention(q[0], k, v)
    with pytest.raises(ValueError, match="head width"):
        ops.attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="same length"):
        ops.attention(q, k, v[:, :, :3])
    with pytest.raises(ValueError, match=r"\[B, H\]"):
        ops.attention(q, k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match="at least one key"):
        ops.attention(q, k[:, :, :0], v[:, :, :0])
    with pytest.raises(TypeError, match="one dtype"):
        ops.attention(q, k.double(), v)
    with pytest.raises(TypeError):
        ops.attention(q.long(), k.long(), v.long())


def test_gpu_tensors_route_to_pytorch_attention():
    """No CUDA / Triton kernel: on a GPU the op is PyTorch's fused attention, chosen without the
    'reference fallback' warning; forcing the GPU backends says why they cannot run it."""
    assert _backend.select("attention_heads", torch.device("cuda")) == "reference"
    assert _backend.select("attention_heads", torch.device("cpu")) == "cpp"
    for backend in ("cuda", "triton"):
        reason = _backend.why_unavailable(backend, "attention_heads", "cuda")
        assert reason is not None
        if torch.cuda.is_available():
            assert f"no {backend} kernel" in reason


def test_vq_diffusion_blocks_use_it_for_scoring_and_agree_with_pytorch(monkeypatch):
    """The official-size block (16 heads of width 8): scoring (no grad) runs the kernel, training
    (grad) keeps PyTorch's attention; both give the same logits."""
    from mmreward.robotics.video import vq_diffusion as vqd

    cfg = vqd.VQDiffusionConfig.paper(depth=2, context_dim=64)
    model = vqd.ConditionalVQDiffusion(cfg).eval()
    g = torch.Generator().manual_seed(0)
    hist = torch.randint(0, cfg.num_codes, (3, cfg.num_history, cfg.tokens_per_frame), generator=g)
    x_t = torch.randint(0, cfg.num_codes + 1, (3, cfg.tokens_per_frame), generator=g)
    calls = []
    real = ops.attention
    monkeypatch.setattr(ops, "attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    with torch.no_grad():
        fused = model(x_t, 5, model.encode_context(hist))
    assert len(calls) == 2 * cfg.depth  # self- and cross-attention of every block
    calls.clear()
    with torch.enable_grad():
        plain = model(x_t, 5, model.encode_context(hist))
    assert not calls
    torch.testing.assert_close(fused, plain.detach(), atol=2e-5, rtol=1e-5)
