"""Speed of the Diffusion Reward for one episode, end to end (uint8 frames in → rewards out), with
the official Meta-World models (``VQGANConfig.paper()``: 20.5 M parameters, ``VQDiffusionConfig.paper()``:
18.0 M, the sizes and layouts the official configs build; random weights), against the official
computation written out on the same weights.

**Official path** (``OfficialEager``): Diffusion Reward's ``calc_reward`` → ``imgs_to_batch`` →
``calc_vlb`` (entropy branch) on VQ-Diffusion's ``DiffusionTransformer`` / ``Text2ImageTransformer``,
point by point:

* the VQGAN encodes every frame of the episode once, in one batch (``encode_to_z``), with the
  official distance formula, quantised map and codebook loss;
* the T entropy windows (frame 0 repeated before the start) go through the chain as one batch; the
  history tokens are embedded once (``FrameEmbedding``: a plain token table);
* each of the 11 denoising calls embeds the content tokens (token + row + column embeddings), and
  every block recomputes the cross-attention keys / values from the history embedding (no cache),
  with separate key / query / value projections, plain ``softmax(QKᵀ/√d)V`` attention that also
  returns the head-averaged attention map (``FullAttention`` / ``CrossAttention``), AdaLayerNorms
  with their own timestep tables, and the ``Conv_MLP`` (token grid rearranged to an image, two 3×3
  convs with GELU2, rearranged back);
* ``log_softmax`` of the logits in float64 (``predict_start``); channel-first ``[B, K+1, L]``
  float32 log-space arithmetic: ``q_posterior`` with ``q_pred`` / ``q_pred_one_timestep`` and
  ``log_add_exp`` (the fast chain reuses the one-step posterior at ``t − skip``), Gumbel sampling
  to a log-one-hot, the bound's ``multinomial_kl`` and decoder log-likelihood.

Where it still differs from the official code: it runs our modules' weights (fused ``qkv`` / ``kv``
weight matrices, sliced into the three / two official projections), draws its Gumbel noise from a
seeded ``torch.Generator`` instead of the global RNG, skips the official ``t.cuda()`` / hydra
plumbing, and feeds the VQGAN frames in [−1, 1] (the official reward path passes [0, 1] images,
which changes no cost). The logits of the two paths agree (``check_max_logit_diff``).

**Ours** (``DiffusionReward(...)(frames)``, batch size = the episode length so that both paths
run one batch): frames encoded once in channels-last memory; history embedded and cross-attention
K/V projected once per window batch (:class:`ContextCache`); attention by ``mmreward.ops.attention``
(the C++ kernel for narrow heads: the official 16 heads of width 8); float32 channel-last arithmetic with the exact skip-step posterior and fused KL / log-categorical
ops. ``--compute-dtype bfloat16`` also times the ``DiffusionRewardConfig(compute_dtype="bfloat16")``
option (VQGAN encoder and video model under a bfloat16 autocast; not bit-identical, see the docs).
``--skip-step 19`` also times the reward with a coarser fast chain (6 denoising calls instead of the
official 11) in ``--compute-dtype``: a looser estimate of the same bound, so a different reward,
whose quality figures the docs give next to the default's.

All paths are timed in the same process, interleaved, median of ``--repeats``; the
breakdown (VQGAN encoding / transformer calls incl. history encoding / diffusion arithmetic) comes
from an instrumented run of each (which is also the warm-up).

``--device cuda``: the models are moved to the GPU and the episode's uint8 frames are put on the
GPU before timing (as a user with GPU frames would), so the timed runs go from device frames to
device rewards; every tensor the official path makes (schedules, all-mask start, timesteps,
Gumbel noise from a device ``torch.Generator``) lives on the GPU too. Every clock read (the end to
end times and the breakdown) is preceded by ``torch.cuda.synchronize()``; the breakdown's extra
synchronisations make it slightly slower than the end-to-end runs.

    python benchmarks/bench_diffusion_reward_speed.py --threads 1                # T = 100 (several minutes)
    python benchmarks/bench_diffusion_reward_speed.py --quick                    # T = 12, 1 repeat
    python benchmarks/bench_diffusion_reward_speed.py --threads 1 --repeats 3 --compute-dtype bfloat16 --skip-step 19 \
        --json benchmarks/results/diffusion_reward_speed_cpu.json
    python benchmarks/bench_diffusion_reward_speed.py --device cuda --json benchmarks/results/diffusion_reward_speed_cuda.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from mmreward.robotics.codec.vqgan import VQGAN, VQGANConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import cpu_model, load_average  # noqa: E402
from mmreward.robotics.reward.diffusion_reward import DiffusionReward, DiffusionRewardConfig
from mmreward.robotics.video.vq_diffusion import ConditionalVQDiffusion, VQDiffusionConfig, window_indices


# ----------------------------------------------------------------------------- timers
def sync(device) -> None:
    """Wait for the device's queued kernels (CUDA), so that a clock read after it measures them."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Accumulated wall time per key; on a CUDA ``device`` synchronised before each clock read."""

    def __init__(self, device="cpu"):
        self.t = {}
        self.device = torch.device(device)

    @contextmanager
    def __call__(self, key):
        sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.t[key] = self.t.get(key, 0.0) + time.perf_counter() - t0


class _NullTimer:
    @contextmanager
    def __call__(self, key):
        yield


NULL = _NullTimer()


# ----------------------------------------------------------------------------- official-style path
def alpha_schedule(time_step, N, att_1=0.99999, att_T=0.000009, ctt_1=0.000009, ctt_T=0.99999):
    """VQ-Diffusion's ``alpha_schedule`` (per-step a_t, b_t, c_t and cumulative ones)."""
    att = np.arange(0, time_step) / (time_step - 1) * (att_T - att_1) + att_1
    att = np.concatenate(([1], att))
    at = att[1:] / att[:-1]
    ctt = np.arange(0, time_step) / (time_step - 1) * (ctt_T - ctt_1) + ctt_1
    ctt = np.concatenate(([0], ctt))
    one_minus_ctt = 1 - ctt
    one_minus_ct = one_minus_ctt[1:] / one_minus_ctt[:-1]
    ct = 1 - one_minus_ct
    bt = (1 - at - ct) / N
    att = np.concatenate((att[1:], [1]))
    ctt = np.concatenate((ctt[1:], [0]))
    btt = (1 - att - ctt) / N
    return at, bt, ct, att, btt, ctt


def log_add_exp(a, b):
    maximum = torch.max(a, b)
    return maximum + torch.log(torch.exp(a - maximum) + torch.exp(b - maximum))


def log_1_min_a(a):
    return torch.log(1 - a.exp() + 1e-40)


def index_to_log_onehot(x, num_classes):
    x_onehot = F.one_hot(x, num_classes).permute(0, 2, 1)
    return torch.log(x_onehot.float().clamp(min=1e-30))


def log_onehot_to_index(log_x):
    return log_x.argmax(1)


class OfficialEager:
    """The official computation on our weights (see the module docstring); needs the official
    layouts (``VQGANConfig(layout="official")``, ``VQDiffusionConfig(embedding="official",
    mlp_type="conv")``), as the ``.paper()`` presets build them."""

    def __init__(self, reward: DiffusionReward):
        self.codec, self.video = reward.codec, reward.video
        cfg = self.video.config
        if cfg.embedding != "official" or cfg.mlp_type != "conv" or self.codec.config.layout != "official":
            raise ValueError("OfficialEager needs the official layouts (VQGANConfig.paper(), VQDiffusionConfig.paper())")
        self.cfg = cfg
        self.num_classes = cfg.num_codes + 1
        self.num_timesteps = cfg.num_steps
        self.L = cfg.tokens_per_frame
        self.skip_step = reward.config.skip_step
        self.device = dev = reward.device
        at, bt, ct, att, btt, ctt = alpha_schedule(cfg.num_steps, N=cfg.num_codes, att_1=cfg.att_1, att_T=cfg.att_T,
                                                   ctt_1=cfg.ctt_1, ctt_T=cfg.ctt_T)
        f64 = lambda a: torch.tensor(a.astype("float64"))
        log_at, log_bt, log_ct = torch.log(f64(at)), torch.log(f64(bt)), torch.log(f64(ct))
        log_cumprod_at, log_cumprod_bt, log_cumprod_ct = torch.log(f64(att)), torch.log(f64(btt)), torch.log(f64(ctt))
        self.log_at, self.log_bt, self.log_ct = log_at.float(), log_bt.float(), log_ct.float()
        self.log_cumprod_at, self.log_cumprod_bt = log_cumprod_at.float(), log_cumprod_bt.float()
        self.log_cumprod_ct = log_cumprod_ct.float()
        self.log_1_min_ct = log_1_min_a(log_ct).float()
        self.log_1_min_cumprod_ct = log_1_min_a(log_cumprod_ct).float()
        # VQ-Diffusion registers these as buffers (computed on the CPU), so model.to(device) moves them
        for name in ("log_at", "log_bt", "log_ct", "log_cumprod_at", "log_cumprod_bt", "log_cumprod_ct",
                     "log_1_min_ct", "log_1_min_cumprod_ct"):
            setattr(self, name, getattr(self, name).to(dev))

    # -- VQ-Diffusion arithmetic, channel-first [B, C, L]
    @staticmethod
    def extract(a, t, x_shape):
        b = t.shape[0]
        out = a.gather(-1, t)
        return out.reshape(b, *((1,) * (len(x_shape) - 1)))

    def q_pred_one_timestep(self, log_x_t, t):
        log_at = self.extract(self.log_at, t, log_x_t.shape)
        log_bt = self.extract(self.log_bt, t, log_x_t.shape)
        log_ct = self.extract(self.log_ct, t, log_x_t.shape)
        log_1_min_ct = self.extract(self.log_1_min_ct, t, log_x_t.shape)
        return torch.cat([log_add_exp(log_x_t[:, :-1, :] + log_at, log_bt),
                          log_add_exp(log_x_t[:, -1:, :] + log_1_min_ct, log_ct)], dim=1)

    def q_pred(self, log_x_start, t):
        t = (t + (self.num_timesteps + 1)) % (self.num_timesteps + 1)
        log_cumprod_at = self.extract(self.log_cumprod_at, t, log_x_start.shape)
        log_cumprod_bt = self.extract(self.log_cumprod_bt, t, log_x_start.shape)
        log_cumprod_ct = self.extract(self.log_cumprod_ct, t, log_x_start.shape)
        log_1_min_cumprod_ct = self.extract(self.log_1_min_cumprod_ct, t, log_x_start.shape)
        return torch.cat([log_add_exp(log_x_start[:, :-1, :] + log_cumprod_at, log_cumprod_bt),
                          log_add_exp(log_x_start[:, -1:, :] + log_1_min_cumprod_ct, log_cumprod_ct)], dim=1)

    def q_posterior(self, log_x_start, log_x_t, t):
        batch_size = log_x_start.size()[0]
        onehot_x_t = log_onehot_to_index(log_x_t)
        mask = (onehot_x_t == self.num_classes - 1).unsqueeze(1)
        log_one_vector = torch.zeros(batch_size, 1, 1, device=log_x_t.device).type_as(log_x_t)
        log_zero_vector = torch.log(log_one_vector + 1.0e-30).expand(-1, -1, self.L)
        log_qt = self.q_pred(log_x_t, t)
        log_qt = log_qt[:, :-1, :]
        log_cumprod_ct = self.extract(self.log_cumprod_ct, t, log_x_start.shape)
        ct_cumprod_vector = log_cumprod_ct.expand(-1, self.num_classes - 1, -1)
        log_qt = (~mask) * log_qt + mask * ct_cumprod_vector
        log_qt_one_timestep = self.q_pred_one_timestep(log_x_t, t)
        log_qt_one_timestep = torch.cat((log_qt_one_timestep[:, :-1, :], log_zero_vector), dim=1)
        log_ct = self.extract(self.log_ct, t, log_x_start.shape)
        ct_vector = log_ct.expand(-1, self.num_classes - 1, -1)
        ct_vector = torch.cat((ct_vector, log_one_vector), dim=1)
        log_qt_one_timestep = (~mask) * log_qt_one_timestep + mask * ct_vector
        q = log_x_start[:, :-1, :] - log_qt
        q = torch.cat((q, log_zero_vector), dim=1)
        q_log_sum_exp = torch.logsumexp(q, dim=1, keepdim=True)
        q = q - q_log_sum_exp
        log_EV = self.q_pred(q, t - 1) + log_qt_one_timestep + q_log_sum_exp
        return torch.clamp(log_EV, -70, 0)

    @staticmethod
    def multinomial_kl(log_prob1, log_prob2):  # float32, as the official code
        return (log_prob1.exp() * (log_prob1 - log_prob2)).sum(dim=1)

    def log_sample_categorical(self, logits, generator):
        uniform = torch.rand(logits.shape, device=logits.device, generator=generator)
        gumbel_noise = -torch.log(-torch.log(uniform + 1e-30) + 1e-30)
        sample = (gumbel_noise + logits).argmax(dim=1)
        return index_to_log_onehot(sample, self.num_classes)

    # -- VQGAN: every frame of the episode in one batch, as imgs_to_batch → encode_to_z does
    def encode(self, frames):
        x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        z = self.codec.encoder(x)  # encoder + quant_conv
        z = z.permute(0, 2, 3, 1).contiguous()
        z_flat = z.view(-1, z.shape[-1])
        e = self.codec.quantizer.embedding
        d = torch.sum(z_flat ** 2, dim=1, keepdim=True) + torch.sum(e ** 2, dim=1) - 2 * torch.matmul(z_flat, e.t())
        idx = torch.argmin(d, dim=1)
        z_q = e[idx].view(z.shape)  # the official encode also returns the quantised map and the loss
        _ = torch.mean((z_q.detach() - z) ** 2) + 0.25 * torch.mean((z_q - z.detach()) ** 2)
        return idx.view(frames.shape[0], -1)

    # -- network: VQ-Diffusion's Text2ImageTransformer with K/V recomputed in every call
    @staticmethod
    def _attn(q, k, v):
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.softmax(dim=-1)
        y = att @ v
        return y, att.mean(dim=1)  # FullAttention / CrossAttention also return the head-mean map

    @staticmethod
    def _heads(x, n_head):
        B, T, C = x.shape
        return x.view(B, T, n_head, C // n_head).transpose(1, 2)

    def _block(self, blk, x, t, cond_emb):
        B, T, C = x.shape
        nh = blk.heads
        h = blk.ln1(x, t)  # AdaLayerNorm: own timestep table → Linear(SiLU) → scale / shift
        wq, wk, wv = blk.qkv.weight.chunk(3, 0)
        bq, bk, bv = blk.qkv.bias.chunk(3, 0)
        k, q, v = (self._heads(F.linear(h, w, b), nh) for w, b in ((wk, bk), (wq, bq), (wv, bv)))
        y, _ = self._attn(q, k, v)
        x = x + blk.proj1(y.transpose(1, 2).contiguous().view(B, T, C))
        h = blk.ln2(x, t)
        wk, wv = blk.kv.weight.chunk(2, 0)
        bk, bv = blk.kv.bias.chunk(2, 0)
        k, v = self._heads(F.linear(cond_emb, wk, bk), nh), self._heads(F.linear(cond_emb, wv, bv), nh)
        q = self._heads(blk.q(h), nh)
        y, _ = self._attn(q, k, v)
        x = x + blk.proj2(y.transpose(1, 2).contiguous().view(B, T, C))
        g = blk.ln3(x).permute(0, 2, 1).reshape(B, C, *self.cfg.token_shape)  # rearrange 'b (h w) c -> b c h w'
        mlp = blk.mlp
        g = mlp.conv2(mlp.act(mlp.conv1(g)))
        return x + g.flatten(2).permute(0, 2, 1)  # 'b c h w -> b (h w) c'

    def condition_embedding(self, hist):
        B, H, L = hist.shape
        return self.video.ctx_tok(hist.reshape(B, H * L)).float()  # FrameEmbedding, once per episode

    def transformer(self, x_t, cond_emb, t):
        v = self.video
        x_t = x_t.clone()
        x_t[x_t < 0] = 0  # DalleMaskImageEmbedding
        h = v.tok_emb(x_t) + v.content_positions()[None]
        level = t + 1  # official timestep t = our level t + 1 (each AdaLN's table is indexed by t)
        for blk in v.blocks:
            h = self._block(blk, h, level, cond_emb)
        return v.to_logits(v.out_norm(h)).permute(0, 2, 1)  # [B, K, L] like VQ-Diffusion

    def predict_start(self, log_x_t, cond_emb, t, tm):
        x_t = log_onehot_to_index(log_x_t)
        with tm("transformer"):
            out = self.transformer(x_t, cond_emb, t)
        log_pred = F.log_softmax(out.double(), dim=1).float()
        zero_vector = torch.zeros(log_x_t.size(0), 1, self.L, device=log_x_t.device).type_as(log_x_t) - 70
        return torch.clamp(torch.cat((log_pred, zero_vector), dim=1), -70, 0)

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor, tm=NULL, seed: int = 0) -> torch.Tensor:
        T = frames.shape[0]
        H = self.cfg.num_history
        dev = self.device
        with tm("vqgan"):
            tokens = self.encode(frames)  # [T, L]: each frame once
        # [T, H] frames of each entropy window (frame 0 repeated before the start), as imgs_to_batch
        hist = tokens[window_indices(T, torch.arange(T, device=tokens.device), H, self.cfg.frame_skip)]
        with tm("transformer"):
            cond_emb = self.condition_embedding(hist)
        gen = torch.Generator(device=dev).manual_seed(seed)
        b = T
        log_x_start = index_to_log_onehot(tokens, self.num_classes)  # calc_vlb builds it (unused by entropy)
        diffusion_list = list(range(self.num_timesteps - 1, -1, -1 - self.skip_step))
        if diffusion_list[-1] != 0:
            diffusion_list.append(0)
        zero_logits = torch.zeros((b, self.num_classes - 1, self.L), device=dev)
        one_logits = torch.ones((b, 1, self.L), device=dev)
        log_z = torch.log(torch.cat((zero_logits, one_logits), dim=1))
        model_log_probs, log_zs, ts = [], [], []
        for diffusion_index in diffusion_list:
            t = torch.full((b,), diffusion_index, device=dev, dtype=torch.long)
            log_x_recon = self.predict_start(log_z, cond_emb, t, tm)
            with tm("arithmetic"):
                log_zs.append(log_z)
                tt = t - self.skip_step if diffusion_index > self.skip_step else t
                model_log_prob = self.q_posterior(log_x_start=log_x_recon, log_x_t=log_z, t=tt)
                ts.append(tt)
                model_log_probs.append(model_log_prob)
                log_z = self.log_sample_categorical(model_log_prob, gen)
        with tm("arithmetic"):
            x_start = log_onehot_to_index(log_z)
            log_x_start = index_to_log_onehot(x_start, self.num_classes)
            vlb = []
            for i, model_log_prob in enumerate(model_log_probs[:-1]):
                log_true_prob = self.q_posterior(log_x_start=log_x_start, log_x_t=log_zs[i], t=ts[i])
                vlb.append(-self.multinomial_kl(log_true_prob, model_log_prob).sum(1, keepdim=True))
            log_probs = model_log_probs[-1].permute(0, 2, 1)
            target = F.one_hot(x_start, num_classes=self.num_classes)
            rewards = (log_probs * target).sum(-1).sum(-1) + torch.cat(vlb, dim=1).sum(dim=1)
        return rewards.float()


# ----------------------------------------------------------------------------- ours, instrumented
@torch.no_grad()
def ours_instrumented(reward: DiffusionReward, frames: torch.Tensor, tm: Timer) -> torch.Tensor:
    """``reward.raw_reward(frames)`` with the time split into VQGAN / transformer (incl. the history
    encoding) / arithmetic; the video model's forward is timed through a patched instance method."""
    video = reward.video
    fwd = video.forward

    def timed_forward(*a, **k):
        with tm("transformer"):
            return fwd(*a, **k)

    enc = video.encode_context

    def timed_encode(*a, **k):
        with tm("transformer"):
            return enc(*a, **k)

    video.forward, video.encode_context = timed_forward, timed_encode
    try:
        with tm("vqgan"):
            tok = reward.tokenize(frames)
        with tm("chain"):
            raw = reward.raw_reward_tokens(tok)
    finally:
        del video.forward, video.encode_context
    tm.t["arithmetic"] = tm.t.pop("chain") - tm.t.get("transformer", 0.0)
    return reward.combine(raw, frames)


def median_time(fn, repeats, device="cpu"):
    ts = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def synthetic_episode(T: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth moving-blob video (uint8 [T, size, size, 3]); content does not change the cost."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = g.integers(40, 200, (1, 1, 3))
    frames = []
    for t in range(T):
        cx, cy = size / 2 + size / 4 * math.cos(t / 9), size / 2 + size / 4 * math.sin(t / 7)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 40.0)[..., None]
        frames.append(np.clip(base + 120 * blob + g.normal(0, 3, (size, size, 3)), 0, 255))
    return torch.from_numpy(np.stack(frames).astype(np.uint8))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Diffusion Reward speed: ours vs the official computation")
    ap.add_argument("--frames", type=int, default=100, help="episode length T")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="T = 12, 1 repeat (smoke run)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--device", default="cpu", help="'cpu' (default) or 'cuda' (models and frames on the GPU)")
    ap.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"),
                    help="also time DiffusionRewardConfig(compute_dtype=...) when not float32 (default: float32)")
    ap.add_argument("--skip-step", type=int, default=None,
                    help="also time the reward with this fast-chain stride (and --compute-dtype): fewer denoising "
                         "calls than the official 11 (19: 6 calls); a different estimate, see the docs' quality figures")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames, args.repeats = 12, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type not in ("cpu", "cuda"):
        ap.error(f"--device must be cpu or cuda, got {args.device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda: torch.cuda.is_available() is False")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
        device_name = torch.cuda.get_device_name(dev)
    else:
        device_name = cpu_model()
    torch.manual_seed(0)  # models are built on the CPU (same weights on every device), then moved
    codec = VQGAN(VQGANConfig.paper()).eval().to(dev)
    video = ConditionalVQDiffusion(VQDiffusionConfig.paper()).eval().to(dev)
    T = args.frames
    rewards = {"ours": DiffusionReward(codec, video, DiffusionRewardConfig(batch_size=max(T, 1))).to(dev)}
    if args.compute_dtype != "float32":
        rewards["ours_" + args.compute_dtype] = DiffusionReward(codec, video, DiffusionRewardConfig(
            batch_size=max(T, 1), compute_dtype=args.compute_dtype)).to(dev)
    if args.skip_step is not None:
        rewards[f"ours_{args.compute_dtype}_skip{args.skip_step}"] = DiffusionReward(codec, video, DiffusionRewardConfig(
            batch_size=max(T, 1), compute_dtype=args.compute_dtype, skip_step=args.skip_step)).to(dev)
    for r in rewards.values():
        r.statistics.copy_(torch.tensor([-300.0, 30.0, 1.0], dtype=torch.float64, device=dev))
    reward = rewards["ours"]
    official = OfficialEager(reward)
    frames = synthetic_episode(T).to(dev)  # uint8 frames on the device before any timing
    n_codec, n_video = (sum(p.numel() for p in m.parameters()) for m in (codec, video))
    print(f"official Meta-World models: VQGAN {n_codec / 1e6:.1f} M params, VQ-Diffusion {n_video / 1e6:.1f} M "
          f"params; T = {T} frames, {len(video.schedule.fast_levels(reward.config.skip_step))} denoising calls, "
          f"{torch.get_num_threads()} threads; device {dev} ({device_name})", flush=True)

    # sanity: the official network path computes the same logits as ours (same weights)
    with torch.no_grad():
        tok = reward.tokenize(frames[:4])
        hist = tok[window_indices(4, torch.arange(4, device=tok.device), 2)]
        x = torch.randint(0, video.num_codes + 1, (4, video.config.tokens_per_frame), device=dev)
        a = video(x, 50, video.encode_context(hist))
        b = official.transformer(x, official.condition_embedding(hist), torch.full((4,), 49, device=dev))
        logits_diff = float((a - b.permute(0, 2, 1)).abs().max())
        tokens_equal = bool(torch.equal(official.encode(frames[:4]), tok))
    print(f"check: max |logits ours − official| = {logits_diff:.2e}; VQGAN tokens equal: {tokens_equal}", flush=True)

    # instrumented breakdowns (also the warm-up)
    timers = {"official": Timer(dev), **{k: Timer(dev) for k in rewards}}
    r_off = official(frames, timers["official"])
    assert r_off.shape == (T,) and torch.isfinite(r_off).all()
    for k, r in rewards.items():
        out = ours_instrumented(r, frames, timers[k])
        assert out.shape == (T,) and torch.isfinite(out).all()
    # end-to-end, interleaved
    load_before = load_average()
    fns = {"official": lambda: official(frames), **{k: (lambda r=r: r(frames)) for k, r in rewards.items()}}
    runs = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            runs[k].append(median_time(fn, 1, dev)[0])
    med = {k: statistics.median(v) for k, v in runs.items()}
    keys = ("vqgan", "transformer", "arithmetic")
    names = {"vqgan": "VQGAN encoding", "transformer": "transformer calls (+ history enc.)",
             "arithmetic": "diffusion arithmetic"}
    # seconds on the CPU; milliseconds on a GPU, where a whole episode takes a fraction of a second
    fmt = (lambda x: f"{x:>9.2f} s") if dev.type == "cpu" else (lambda x: f"{1000 * x:>8.1f} ms")
    pf = ".0f" if dev.type == "cpu" else ".2f"
    width = {k: max(18, len(k) + 2) for k in fns}
    print(f"\n{'':<36}" + "".join(f"{k:>{width[k]}}" for k in fns) + "   speed-up vs official")
    for key in keys:
        vals = {k: tm.t.get(key, 0.0) for k, tm in timers.items()}
        tot = {k: sum(tm.t.get(kk, 0.0) for kk in keys) for k, tm in timers.items()}
        cells = "".join(f"{fmt(vals[k]) + f' {100 * vals[k] / tot[k]:3.0f}%':>{width[k]}}" for k in fns)
        ups = "  ".join(f"{vals['official'] / vals[k]:.1f}x" if vals[k] > 0 else "-" for k in rewards)
        print(f"{names[key]:<36}{cells}   {ups}")
    cells = "".join(f"{fmt(med[k]) + ' ' * 5:>{width[k]}}" for k in fns)
    ups = "  ".join(f"{med['official'] / med[k]:.2f}x" for k in rewards)
    print(f"{'end to end (median of ' + str(args.repeats) + ')':<36}{cells}   {ups}")
    print("per frame: " + ", ".join(f"{k} {1000 * med[k] / T:{pf}} ms" for k in fns))
    cuda_info = {}
    if dev.type == "cuda":
        cuda_info = {"cuda": torch.version.cuda, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                     "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                     "max_memory_allocated_gib": torch.cuda.max_memory_allocated(dev) / 2 ** 30}
    out = {
        "benchmark": "diffusion_reward_speed", "frames": T, "repeats": args.repeats, "quick": args.quick,
        "threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu": cpu_model(),
                    "logical_cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": str(dev), "device_name": device_name, **cuda_info},
        "load_average": {"before": load_before, "after": load_average()},
        "models": {"vqgan": "VQGANConfig.paper()", "video": "VQDiffusionConfig.paper()", "weights": "random (seed 0)",
                   "vqgan_params": n_codec, "video_params": n_video},
        "official_eager_s": med["official"], "ours_s": med["ours"], "speedup": med["official"] / med["ours"],
        "official_runs_s": runs["official"], "ours_runs_s": runs["ours"],
        "breakdown_official_s": {k: timers["official"].t.get(k, 0.0) for k in keys},
        "breakdown_ours_s": {k: timers["ours"].t.get(k, 0.0) for k in keys},
        "check_max_logit_diff": logits_diff, "check_vqgan_tokens_equal": tokens_equal,
    }
    for k in rewards:
        if k != "ours":
            out.update({f"{k}_s": med[k], f"speedup_{k}": med["official"] / med[k], f"{k}_runs_s": runs[k],
                        f"breakdown_{k}_s": {kk: timers[k].t.get(kk, 0.0) for kk in keys}})
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
