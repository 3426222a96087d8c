"""VQGAN frame codec of Diffusion Reward: 64×64 RGB frames ↔ an 8×8 grid of codebook tokens.

* Encoder / decoder: conv + residual blocks (GroupNorm, SiLU), ``len(channels) − 1`` stride-2
  downsamplings (64 → 8 with 4 levels), an optional self-attention block at the bottleneck and
  after every residual block at the resolutions in ``attn_resolutions``. ``layout="mmreward"``
  (default): the encoder has ``len(channels)`` levels of residual blocks at widths ``channels``,
  downsampling by a padded stride-2 conv; ``layout="official"`` (the VQGAN Diffusion Reward
  uses): ``len(channels) − 1`` levels at widths ``channels[1:]``, each ending in a downsampling by
  right / bottom zero padding and an unpadded stride-2 conv. The decoders are the same in both.
  :meth:`VQGANConfig.paper` is the official model (20 481 219 parameters).
* Vector quantiser: nearest code in a ``num_codes × latent_dim`` codebook, either an EMA codebook
  (``quantizer="ema"``, commitment ``β·‖z − sg(e)‖²``) or straight-through with codebook +
  commitment losses (``"st"``, ``‖sg(z) − e‖² + β‖z − sg(e)‖²``, β = 0.25; the official MiniVQGAN
  is straight-through too but weighs the two terms the other way round, commitment 1 and codebook
  β); codes whose usage falls far below uniform can be restarted on encoder outputs.
* Losses (:func:`train_vqgan`): L1 (+ optional MSE) reconstruction + quantiser loss, optional hinge
  PatchGAN adversarial term with the adaptive weight of taming-transformers (from ``disc_start``),
  and a perceptual term only when the caller passes a perceptual network (nothing is downloaded).

Pixel conventions: uint8 ``[T, H, W, 3]`` (0..255) or float ``[T, 3, H, W]`` in ``[0, 1]`` in;
tokens ``[T, h, w]`` (int64); :meth:`VQGAN.decode` gives float ``[T, 3, H, W]`` in ``[0, 1]``
(``uint8=True`` → uint8 ``[T, H, W, 3]``).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmreward.core.model import Pretrained, check_ranges
from mmreward.core.train import seed_everything
from mmreward.core.trainer import Trainer

from ..training import capped_batch, check_frames_uint8, config_to_dict, frame_pool, loop_config, resume_settings

MODEL_TYPE = "vqgan"


@dataclass
class VQGANConfig:
    """Sizes of the VQGAN. Defaults are small (CPU); :meth:`paper` gives the official sizes."""

    image_size: int = 64  # frame height = width in pixels
    channels: tuple = (32, 32, 64, 64)  # width per resolution level; len - 1 downsamplings
    num_res_blocks: int = 1  # residual blocks per level
    attention: bool = False  # self-attention block at the bottleneck
    latent_dim: int = 32  # code vector size
    num_codes: int = 128  # codebook entries K
    beta: float = 0.25  # commitment weight
    quantizer: str = "ema"  # 'ema' (EMA codebook) or 'st' (straight-through + codebook loss)
    ema_decay: float = 0.99  # decay of the EMA codebook and of the usage statistics
    dead_code_threshold: float = 0.03  # restart codes used less than this × uniform usage (0 = never)
    attn_resolutions: tuple = ()  # resolutions (px) at which every residual block is followed by self-attention
    layout: str = "mmreward"  # encoder levels: 'mmreward' | 'official' (module docstring)

    @classmethod
    def paper(cls, **overrides) -> "VQGANConfig":
        """The official model: official layout, channels (128, 128, 256, 256), 2 res blocks,
        attention at the bottleneck and at 16×16, 64-d codes, 1024 codes, straight-through quantiser
        with β = 0.25."""
        base = dict(channels=(128, 128, 256, 256), num_res_blocks=2, attention=True, latent_dim=64,
                    num_codes=1024, quantizer="st", attn_resolutions=(16,), layout="official")
        base.update(overrides)
        return cls(**base)

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.channels) - 1)

    def validate(self) -> None:
        if self.layout not in ("mmreward", "official"):
            raise ValueError(f"layout must be 'mmreward' or 'official', got {self.layout!r}")
        if self.layout == "official" and len(self.channels) < 2:
            raise ValueError("layout 'official' needs at least 2 channel widths")
        if self.quantizer not in ("ema", "st"):
            raise ValueError(f"quantizer must be 'ema' or 'st', got {self.quantizer!r}")
        if len(self.channels) < 1 or any(isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 1
                                             for c in self.channels):
            raise ValueError(f"channels must be one or more widths >= 1 (one per level), got {list(self.channels)}")
        f = 2 ** (len(self.channels) - 1)
        if self.image_size % f:
            # frames of 84 px (DrQ's size) failed with only "not divisible by 2^3": say which sizes work
            lo, hi = self.image_size // f * f, (self.image_size // f + 1) * f
            sizes = f"{lo} or {hi}" if lo else f"{hi}"
            raise ValueError(f"image_size {self.image_size} is not divisible by 2^{len(self.channels) - 1} = {f} (the "
                             f"{len(self.channels)} levels of channels={list(self.channels)} halve the frame "
                             f"{len(self.channels) - 1} times): use {sizes} px frames (import-videos / collect "
                             "--size), or fewer levels (one channel width less halves it once less)")
        if self.num_codes < 2 or self.latent_dim < 1:
            raise ValueError("num_codes >= 2 and latent_dim >= 1 are required")


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, ch), ch, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  _norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class AttnBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=-1)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.out(a.transpose(1, 2).reshape(B, C, H, W))


class PadDownsample(nn.Module):
    """Stride-2 3×3 conv after one row / column of zeros on the right and bottom (official layout)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def _res_level(cfg: VQGANConfig, cin: int, cout: int, resolution: int) -> list[nn.Module]:
    """``num_res_blocks`` residual blocks ``cin → cout``, each followed by self-attention when
    ``resolution`` is in ``attn_resolutions``."""
    layers: list[nn.Module] = []
    for _ in range(cfg.num_res_blocks):
        layers.append(ResBlock(cin, cout))
        cin = cout
        if resolution in cfg.attn_resolutions:
            layers.append(AttnBlock(cout))
    return layers


def _bottleneck(cfg: VQGANConfig, ch: int) -> list[nn.Module]:
    return [ResBlock(ch, ch)] + ([AttnBlock(ch)] if cfg.attention else []) + [ResBlock(ch, ch)]


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch = list(cfg.channels)
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        cin, res = ch[0], cfg.image_size
        if cfg.layout == "official":  # levels at widths ch[1:], each one downsampling
            for c in ch[1:]:
                layers += _res_level(cfg, cin, c, res) + [PadDownsample(c)]
                cin, res = c, res // 2
        else:
            for i, c in enumerate(ch):
                layers += _res_level(cfg, cin, c, res)
                cin = c
                if i < len(ch) - 1:
                    layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                    res //= 2
        layers += _bottleneck(cfg, cin)
        layers += [_norm(cin), nn.SiLU(), nn.Conv2d(cin, cfg.latent_dim, 3, padding=1),
                   nn.Conv2d(cfg.latent_dim, cfg.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch = list(cfg.channels)[::-1]
        cin, res = ch[0], cfg.latent_size
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, cfg.latent_dim, 1),
                                   nn.Conv2d(cfg.latent_dim, cin, 3, padding=1)] + _bottleneck(cfg, cin)
        for i, c in enumerate(ch):
            layers += _res_level(cfg, cin, c, res)
            cin = c
            if i < len(ch) - 1:
                layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
                res *= 2
        layers += [_norm(cin), nn.SiLU(), nn.Conv2d(cin, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.net[-1].weight

    def forward(self, z):
        return self.net(z)


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with EMA or straight-through codebook updates, usage statistics and
    dead-code restarts."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        K, D = cfg.num_codes, cfg.latent_dim
        self.K, self.D, self.beta, self.mode, self.decay = K, D, cfg.beta, cfg.quantizer, cfg.ema_decay
        self.threshold = cfg.dead_code_threshold
        self.embedding = nn.Parameter(torch.randn(K, D) / math.sqrt(D), requires_grad=cfg.quantizer == "st")
        self.register_buffer("usage", torch.full((K,), 1.0 / K))  # EMA of code frequencies
        if self.mode == "ema":
            self.register_buffer("ema_count", torch.ones(K))
            self.register_buffer("ema_sum", self.embedding.detach().clone())
        self._last_z: Optional[torch.Tensor] = None

    def codes(self, z_flat: torch.Tensor) -> torch.Tensor:
        """Nearest code of each row of ``z_flat`` ``[N, D]``; distances in float32 even under a
        bfloat16 autocast (near-ties between codes are common)."""
        with torch.autocast(z_flat.device.type, enabled=False):
            z, e = z_flat.float(), self.embedding.float()
            d = z.pow(2).sum(1, keepdim=True) - 2 * z @ e.t() + e.pow(2).sum(1)[None]
        return d.argmin(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z`` ``[B, D, h, w]`` → ``(z_q straight-through, quantiser loss, tokens [B, h, w])``."""
        B, D, h, w = z.shape
        zf = z.permute(0, 2, 3, 1).reshape(-1, D)
        idx = self.codes(zf.detach())
        zq = self.embedding[idx]
        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(idx, self.K).type_as(zf)
                counts = onehot.sum(0)
                self.usage.mul_(self.decay).add_(counts / counts.sum(), alpha=1 - self.decay)
                if self.mode == "ema":
                    self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
                    self.ema_sum.mul_(self.decay).add_(onehot.t() @ zf.detach(), alpha=1 - self.decay)
                    n = self.ema_count.sum()
                    count = (self.ema_count + 1e-5) / (n + self.K * 1e-5) * n
                    self.embedding.data.copy_(self.ema_sum / count[:, None])
                self._last_z = zf.detach()
        if self.mode == "ema":
            loss = self.beta * F.mse_loss(zf, zq.detach())
        else:
            loss = F.mse_loss(zq, zf.detach()) + self.beta * F.mse_loss(zf, zq.detach())
        zq = zf + (zq - zf).detach()
        return zq.view(B, h, w, D).permute(0, 3, 1, 2), loss, idx.view(B, h, w)

    @torch.no_grad()
    def restart_dead_codes(self) -> int:
        """Move codes whose usage is below ``threshold / K`` onto random encoder outputs of the last
        training batch; returns how many were restarted."""
        if self.threshold <= 0 or self._last_z is None:
            return 0
        dead = (self.usage < self.threshold / self.K).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        z = self._last_z
        pick = z[torch.randint(0, z.shape[0], (dead.numel(),), device=z.device)]
        self.embedding.data[dead] = pick
        self.usage[dead] = 1.0 / self.K
        if self.mode == "ema":
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = pick
        return int(dead.numel())


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix / taming-transformers layout) giving a map of real/fake logits."""

    def __init__(self, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, n_layers + 1):
            c_out = channels * min(2 ** i, 8)
            layers += [nn.Conv2d(c, c_out, 4, 2 if i < n_layers else 1, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def frames_to_float(frames: torch.Tensor, image_size: Optional[int] = None) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` or float ``[T, 3, H, W]`` in [0, 1] → float ``[T, 3, H, W]`` in [−1, 1]."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor (or numpy array), got {type(frames).__name__}")
    if frames.dtype == torch.uint8:
        check_frames_uint8(frames, "frames", image_size)
        return frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if frames.is_floating_point():
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"float frames must be [T, 3, H, W] in [0, 1], got shape {list(frames.shape)}")
        if image_size is not None and tuple(frames.shape[2:]) != (image_size, image_size):
            raise ValueError(f"frames must be {image_size}x{image_size}, got {frames.shape[2]}x{frames.shape[3]}")
        if frames.numel():  # 0..255 floats (or NaN) were encoded as if in [0, 1]: tokens of a saturated image
            lo, hi = float(frames.min()), float(frames.max())
            if not (math.isfinite(lo) and math.isfinite(hi)) or bool(torch.isnan(frames).any()):
                raise ValueError("float frames hold NaN / inf values")
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(f"float frames must be in [0, 1], got values in [{lo:g}, {hi:g}] (frames of 0..255: "
                                 "pass them as uint8 [T, H, W, 3])")
        return frames.float() * 2.0 - 1.0
    raise TypeError(f"frames must be uint8 [T, H, W, 3] or float [T, 3, H, W], got {frames.dtype}")


class VQGAN(Pretrained, nn.Module):
    """Encoder → vector quantiser → decoder. :meth:`encode` / :meth:`decode` map frames ↔ tokens."""
    model_type = MODEL_TYPE
    config_class = VQGANConfig

    def __init__(self, config: Optional[VQGANConfig] = None):
        super().__init__()
        cfg = config or VQGANConfig()
        cfg.validate()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = VectorQuantizer(cfg)
        self.decoder = Decoder(cfg)

    @property
    def device(self) -> torch.device:
        return self.decoder.last_layer.device

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` float ``[B, 3, H, W]`` in [−1, 1] → ``(reconstruction in [−1, 1], quantiser loss, tokens)``."""
        zq, qloss, idx = self.quantizer(self.encoder(x))
        return self.decoder(zq), qloss, idx

    def token_digest(self) -> str:
        """A short hash of what decides the tokens :meth:`encode` gives (the encoder's weights and the
        codebook): a video model records its codec's, so that a codec retrained since (another
        ``train-codec --overwrite`` / ``--resume`` into the same folder) is not paired with it silently.
        Two hashes, ``"<bf16>-<fp16>"``, of the weights rounded to bfloat16 and to float16: rounding is
        idempotent, so a digest recorded from the float32 (or float64) codec — as training records it —
        matches that codec saved in float32, float64, bfloat16 or float16 and reloaded in any dtype, on any
        device (see :meth:`made_tokens_of`); a bfloat16 and a float16 copy do not match each other."""
        import hashlib

        from mmreward.core.checkpoint import update_digest

        parts = sorted((k, v) for k, v in self.state_dict().items() if k.startswith("encoder."))
        parts.append(("quantizer.embedding", self.quantizer.embedding))
        out = []
        for dtype in (torch.bfloat16, torch.float16):
            h = hashlib.sha256()
            for name, value in parts:
                h.update(name.encode())
                update_digest(h, value.detach().to(dtype))
            out.append(h.hexdigest()[:16])
        return "-".join(out)

    def made_tokens_of(self, digest: str) -> bool:
        """Whether ``digest`` (a :meth:`token_digest` recorded earlier) is this codec's, in any saved dtype."""
        return any(a == b for a, b in zip(self.token_digest().split("-"), str(digest).split("-")))

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Frames (uint8 ``[T, H, W, 3]`` or float ``[T, 3, H, W]`` in [0, 1]) → tokens ``[T, h, w]``."""
        x = frames_to_float(frames, self.config.image_size)
        out = []
        for i in range(0, x.shape[0], batch_size):
            # channels-last: oneDNN's faster conv layout on CPU (float32 either way)
            z = self.encoder(x[i:i + batch_size].to(self.device).contiguous(memory_format=torch.channels_last))
            B, D, h, w = z.shape
            out.append(self.quantizer.codes(z.permute(0, 2, 3, 1).reshape(-1, D)).view(B, h, w))
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, uint8: bool = False, batch_size: int = 256) -> torch.Tensor:
        """Tokens ``[T, h, w]`` → float ``[T, 3, H, W]`` in [0, 1] (or uint8 ``[T, H, W, 3]``)."""
        s = self.config.latent_size
        if tokens.dim() == 2 and tokens.shape[1] == s * s:
            tokens = tokens.view(-1, s, s)
        if tokens.dim() != 3 or tuple(tokens.shape[1:]) != (s, s):
            raise ValueError(f"tokens must be [T, {s}, {s}], got {list(tokens.shape)}")
        if tokens.is_floating_point() or int(tokens.min()) < 0 or int(tokens.max()) >= self.config.num_codes:
            raise ValueError(f"tokens must be integer ids in [0, {self.config.num_codes})")
        out = []
        for i in range(0, tokens.shape[0], batch_size):
            zq = self.quantizer.embedding[tokens[i:i + batch_size].to(self.device)].permute(0, 3, 1, 2)
            out.append(((self.decoder(zq) + 1) / 2).clamp(0, 1))
        x = torch.cat(out)
        if uint8:
            return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return x

def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per frame of two float ``[T, 3, H, W]`` tensors in [0, 1]."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


@torch.no_grad()
def evaluate_vqgan(model: VQGAN, frames: Any, batch_size: int = 128) -> dict[str, float]:
    """Reconstruction and codebook metrics on frames (any input :func:`~..training.frame_pool`
    takes): ``psnr`` (dB, mean over frames), ``l1`` (mean |error| in [0, 1] units),
    ``perplexity`` (exp of the entropy of code frequencies), ``code_usage`` (fraction of codes used)."""
    pool = frame_pool(frames)
    was = model.training
    model.eval()
    counts = torch.zeros(model.config.num_codes)
    ps, l1s = [], []
    for i in range(0, pool.shape[0], batch_size):
        x = pool[i:i + batch_size]
        tok = model.encode(x)
        rec = model.decode(tok).cpu()
        ref = x.permute(0, 3, 1, 2).float() / 255.0
        ps.append(psnr(rec, ref))
        l1s.append((rec - ref).abs().flatten(1).mean(1))
        counts += torch.bincount(tok.flatten().cpu(), minlength=model.config.num_codes).float()
    model.train(was)
    p = counts / counts.sum()
    ent = -(p[p > 0] * p[p > 0].log()).sum()
    return {"psnr": float(torch.cat(ps).mean()), "l1": float(torch.cat(l1s).mean()),
            "perplexity": float(ent.exp()), "code_usage": float((counts > 0).float().mean())}


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class VQGANTrainConfig:
    """Optimisation settings of :func:`train_vqgan` (official: Adam lr 1e-4, β=(0.5, 0.9), batch 32,
    disc from step 1000 with factor 0.1, perceptual 0.1)."""

    steps: int = _help("optimizer steps", 2000)
    batch_size: int = _help("frames per step (drawn with replacement)", 32)
    lr: float = _help("Adam learning rate (generator and discriminator)", 1e-4)
    betas: tuple = _help("Adam betas", (0.5, 0.9))
    l1_weight: float = _help("L1 reconstruction weight", 1.0)
    mse_weight: float = _help("optional MSE reconstruction weight", 0.0)
    perceptual_weight: float = _help("perceptual weight (used only when a perceptual_fn is given)", 0.1)
    disc_weight: float = _help("adversarial weight (0 = no discriminator; official 0.1)", 0.0)
    disc_start: int = _help("step at which the adversarial term starts", 1000)
    disc_channels: int = _help("PatchGAN base width", 64)
    restart_every: int = _help("dead-code restart interval in steps (0 = off)", 100)
    seed: int = _help("seed of the initial weights, batches and restarts", 0)
    log_every: int = _help("progress-bar / console interval in steps (metrics.csv gets every step)", 10)
    ckpt_every: int = _help("snapshot interval in steps (0 = only at the end)", 500)

    def __post_init__(self) -> None:
        # a negative restart_every restarted codes every step, a negative disc_weight silently dropped the
        # discriminator, lr 0 trained nothing: refused here, naming the field
        check_ranges(self, counts=("steps", "batch_size", "disc_channels"),
                     naturals=("disc_start", "restart_every", "seed", "log_every", "ckpt_every"),
                     weights=("lr", "l1_weight", "mse_weight", "perceptual_weight", "disc_weight"))
        if self.lr == 0:
            raise ValueError(f"VQGANTrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        b = self.betas
        if not (isinstance(b, (tuple, list)) and len(b) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1 for x in b)):
            raise ValueError(f"VQGANTrainConfig.betas must be two numbers in [0, 1), got {b!r}")


def _adaptive_weight(rec: torch.Tensor, g: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    gr = torch.autograd.grad(rec, last, retain_graph=True)[0]
    gg = torch.autograd.grad(g, last, retain_graph=True)[0]
    return (gr.norm() / (gg.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def train_vqgan(frames: Any, config: Optional[VQGANConfig] = None, out_dir: str = "vqgan",
                train: Optional[VQGANTrainConfig] = None, *, perceptual_fn: Optional[Callable] = None,
                resume: bool = True, overwrite: bool = False, stop_at: Optional[int] = None, progress_bar: bool = True,
                device: str = "cpu", quiet: bool = True, **overrides: Any) -> VQGAN:
    """Train a VQGAN on frames (uint8 ``[N, T, H, W, 3]`` / ``[M, H, W, 3]`` or a list of episodes)
    on the core training loop; returns the model (also saved to ``out_dir/model`` when training
    reaches ``steps``). ``perceptual_fn(x, y) -> loss`` takes float ``[B, 3, H, W]`` in [−1, 1]
    (e.g. an LPIPS module the user loaded). ``overrides`` set :class:`VQGANTrainConfig` fields.
    ``out_dir`` gets ``metrics.csv`` (loss terms, batch PSNR, perplexity, restarts; every step),
    TensorBoard events and snapshots (model, both optimizers, discriminator, RNGs) every
    ``ckpt_every`` steps; a run continues exactly from its newest snapshot (``resume``), a folder
    holding a run is refused without ``resume`` unless ``overwrite``; ``stop_at`` ends this call after
    that many total steps (call again to continue)."""
    cfg = config or VQGANConfig()
    tc = dataclasses.replace(train or VQGANTrainConfig(), **overrides)
    pool = frame_pool(frames)
    check_frames_uint8(pool, "frames", cfg.image_size)
    seed_everything(tc.seed)  # before the model: its initial weights come from the seed
    model = VQGAN(cfg).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr, betas=tuple(tc.betas))
    disc = opt_d = None
    if tc.disc_weight > 0:
        disc = PatchDiscriminator(tc.disc_channels).to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=tc.lr, betas=tuple(tc.betas))
    batch_size = capped_batch(tc.batch_size, pool.shape[0], "frames", "train_vqgan")

    def sample_batch() -> torch.Tensor:  # (B, 3, H, W) in [-1, 1]
        return frames_to_float(pool[torch.randint(0, pool.shape[0], (batch_size,))]).to(device)

    def step_fn(trainer: Trainer, x: torch.Tensor) -> dict[str, float]:
        rec, qloss, _ = model(x)
        rec_loss = tc.l1_weight * (x - rec).abs().mean()
        if tc.mse_weight:
            rec_loss = rec_loss + tc.mse_weight * (x - rec).pow(2).mean()
        if perceptual_fn is not None and tc.perceptual_weight:
            rec_loss = rec_loss + tc.perceptual_weight * perceptual_fn(x, rec).mean()
        loss = rec_loss + qloss
        gan: dict[str, float] = {}
        use_gan = disc is not None and trainer.step >= tc.disc_start
        if use_gan:
            g_loss = -disc(rec).mean()
            lam = _adaptive_weight(rec_loss, g_loss, model.decoder.last_layer)
            loss = loss + tc.disc_weight * lam * g_loss
            gan.update(g_loss=float(g_loss.detach()), adaptive_weight=float(lam))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if use_gan:
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(rec.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            (tc.disc_weight * d_loss).backward()
            opt_d.step()
            gan["d_loss"] = float(d_loss.detach())
        done = trainer.step + 1
        restarted = model.quantizer.restart_dead_codes() if tc.restart_every and done % tc.restart_every == 0 else 0
        with torch.no_grad():
            u = model.quantizer.usage
            return {"loss": float(loss.detach()), "rec_loss": float(rec_loss.detach()), "q_loss": float(qloss.detach()),
                    "psnr": float(psnr((rec + 1) / 2, (x + 1) / 2).mean()),
                    "perplexity": float(torch.exp(-(u * u.clamp_min(1e-12).log()).sum())), "restarted": restarted,
                    **gan}

    loop = loop_config(out_dir, steps=tc.steps, batch_size=batch_size, seed=tc.seed, log_every=tc.log_every,
                       save_every=tc.ckpt_every, resume=resume, overwrite=overwrite, progress_bar=progress_bar,
                       quiet=quiet)
    trainer = Trainer(model, loop, step_fn=step_fn, sample_batch=sample_batch, reseed=False,
                      settings={"vqgan_train": config_to_dict(tc)},
                      resume_settings=resume_settings(tc, cfg, (pool,)))
    trainer.register_state("optimizer", opt)
    if disc is not None:
        trainer.register_state("discriminator", disc)
        trainer.register_state("disc_optimizer", opt_d)
    trainer.fit(stop_at)
    return model.eval()


__all__ = ["VQGANConfig", "VQGANTrainConfig", "VQGAN", "VectorQuantizer", "PatchDiscriminator", "evaluate_vqgan",
           "train_vqgan", "frames_to_float", "psnr"]
