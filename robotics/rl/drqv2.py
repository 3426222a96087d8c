"""DrQ-v2 (Yarats et al., 2021): data-augmented actor-critic for pixel observations.

Pieces, as in the paper: a conv encoder shared by actor and critic (trained by the critic loss
only), random-shift augmentation (replicate-pad 4 px, random crop back), a deterministic actor whose
exploration noise follows a linear std schedule and is clipped, a double-Q critic trained on n-step
returns with a slowly moving (EMA) target, and uniform random actions for the first
``num_expl_steps`` agent steps. Hyper-parameters default to the Diffusion Reward paper's RL config.

Observations are uint8 ``[C·stack, H, W]``; actions live in ``[-1, 1]^A``.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _help(text: str, **kw):
    return field(metadata={"help": text}, **kw)


@dataclass
class DrQV2Config:
    """Agent hyper-parameters (defaults: the Diffusion Reward paper's DrQ-v2 settings)."""

    lr: float = _help("Adam learning rate of encoder, actor and critic", default=1e-4)
    feature_dim: int = _help("width of the LayerNorm-tanh trunk after the encoder", default=50)
    hidden_dim: int = _help("width of the actor / critic MLPs", default=1024)
    critic_target_tau: float = _help("EMA rate of the target critic", default=0.01)
    num_expl_steps: int = _help("agent steps with uniform random actions at the start", default=2000)
    stddev_schedule: str = _help("exploration std over agent steps: a number, 'linear(init,final,steps)' or "
                                 "'step_linear(init,final1,steps1,final2,steps2)'",
                                 default="linear(1.0,0.1,500000)")
    stddev_clip: float = _help("clip of the exploration noise in the target / actor updates", default=0.3)
    discount: float = _help("per-step discount γ (the n-step return uses γ^n)", default=0.99)
    augment_pad: int = _help("random-shift augmentation padding in pixels (0 turns it off)", default=4)

    def validate(self) -> None:
        for name in ("lr", "critic_target_tau", "stddev_clip", "discount"):  # "1e-4" failed in a comparison
            v = getattr(self, name)  # naming nothing, True was taken for 1
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ValueError(f"{name} must be a number, got {v!r}")
        check_schedule(self.stddev_schedule)
        if not 0.0 < self.critic_target_tau <= 1.0:
            raise ValueError(f"critic_target_tau must be in (0, 1], got {self.critic_target_tau}")
        for name in ("feature_dim", "hidden_dim", "num_expl_steps", "augment_pad"):
            v = getattr(self, name)  # 2.5 failed inside nn.Linear / the shift augmentation, naming nothing
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        for name in ("feature_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")
        if not self.stddev_clip >= 0:
            raise ValueError(f"stddev_clip must be >= 0, got {self.stddev_clip}")
        for name in ("num_expl_steps", "augment_pad"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


_SCHEDULE_FORMS = "a number, 'linear(init,final,steps)' or 'step_linear(init,final1,steps1,final2,steps2)'"


def _schedule_terms(spec: str | float) -> tuple[float, ...]:
    """The numbers of a schedule: ``(v,)`` for a constant, ``(init, final, duration)`` for ``linear``,
    ``(init, final1, duration1, final2, duration2)`` for DrQ-v2's ``step_linear``."""
    try:
        return (float(spec),)
    except (TypeError, ValueError):
        pass
    num = r"\s*([^,()]+?)\s*"
    m = (re.fullmatch(rf"\s*linear\({num},{num},{num}\)\s*", str(spec))
         or re.fullmatch(rf"\s*step_linear\({num},{num},{num},{num},{num}\)\s*", str(spec)))
    if not m:
        raise ValueError(f"unknown schedule {spec!r}: use {_SCHEDULE_FORMS}")
    try:
        return tuple(float(g) for g in m.groups())
    except ValueError:
        raise ValueError(f"unknown schedule {spec!r}: use {_SCHEDULE_FORMS}") from None


def check_schedule(spec: str | float, name: str = "stddev_schedule") -> None:
    """Refuse a schedule whose stds are not finite and >= 0: a NaN or infinite std makes every action
    NaN or saturated, a negative one is no std (torch raises only at the first noisy action)."""
    terms = _schedule_terms(spec)
    stds, durations = terms[0:1] + terms[1::2], terms[2::2]
    if not all(math.isfinite(v) and v >= 0 for v in stds + durations):
        raise ValueError(f"{name} must give finite stds >= 0 over finite numbers of steps ({_SCHEDULE_FORMS}), "
                         f"got {spec!r}")


def _linear(init: float, final: float, step: float, duration: float) -> float:
    mix = min(max(step / max(duration, 1.0), 0.0), 1.0)
    return (1.0 - mix) * init + mix * final


def schedule(spec: str | float, step: int) -> float:
    """DrQ-v2's schedules evaluated at ``step``: ``0.2`` (constant), ``linear(init, final, duration)``
    (init → final over ``duration`` steps, then final), ``step_linear(init, final1, duration1, final2,
    duration2)`` (init → final1 over the first ``duration1`` steps, then final1 → final2 over the next
    ``duration2``)."""
    terms = _schedule_terms(spec)
    if len(terms) == 1:
        return terms[0]
    if len(terms) == 3:
        return _linear(terms[0], terms[1], step, terms[2])
    init, final1, duration1, final2, duration2 = terms
    if step <= duration1:
        return _linear(init, final1, step, duration1)
    return _linear(final1, final2, step - duration1, duration2)


def random_shift(x: torch.Tensor, pad: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Replicate-pad by ``pad`` and crop back at a random integer offset per image. ``x`` float
    ``[B, C, H, W]``. Integer shifts make this exactly the crop DrQ-v2's bilinear grid_sample computes."""
    if pad == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")  # (B, C, H+2p, W+2p)
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=x.device)
    rows = off[:, :1] + torch.arange(h, device=x.device)  # (B, H)
    cols = off[:, 1:] + torch.arange(w, device=x.device)  # (B, W)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def _orthogonal_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight.data, nn.init.calculate_gain("relu"))
        nn.init.zeros_(m.bias)


# the smallest frame side the encoder's convolutions leave a pixel of: (15 - 3) // 2 + 1 = 7, then 3 × (-2)
MIN_FRAME_SIZE = 15


class Encoder(nn.Module):
    """4 conv layers (32 channels, 3×3, first with stride 2) on pixels scaled to [-0.5, 0.5]."""

    def __init__(self, obs_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = obs_shape
        if min(h, w) < MIN_FRAME_SIZE:
            raise ValueError(f"frames of {h}x{w} pixels are too small for DrQ-v2's encoder: size must be >= "
                             f"{MIN_FRAME_SIZE}")
        self.convnet = nn.Sequential(
            nn.Conv2d(c, 32, 3, stride=2), nn.ReLU(), nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(), nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
        )
        with torch.no_grad():
            self.repr_dim = int(self.convnet(torch.zeros(1, c, h, w)).numel())
        self.apply(_orthogonal_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) float 0..255 -> (B, repr_dim)
        return self.convnet(obs / 255.0 - 0.5).flatten(1)


class Actor(nn.Module):
    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim),
                                    nn.ReLU(), nn.Linear(hidden_dim, action_dim))
        self.apply(_orthogonal_init)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, repr) -> mean action (B, A) in [-1, 1]
        return torch.tanh(self.policy(self.trunk(h)))


class Critic(nn.Module):
    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())

        def q():
            return nn.Sequential(nn.Linear(feature_dim + action_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

        self.q1, self.q2 = q(), q()
        self.apply(_orthogonal_init)

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.trunk(h), action], dim=-1)
        return self.q1(x), self.q2(x)  # (B, 1) each


def clipped_noise_action(mu: torch.Tensor, std: float, clip: Optional[float]) -> torch.Tensor:
    """DrQ-v2's truncated normal sample: ``mu + clip(ε·std)`` clamped to (−1, 1); the gradient flows to
    ``mu`` straight through the clamp (as in the reference TruncatedNormal)."""
    eps = torch.randn_like(mu) * std
    if clip is not None:
        eps = eps.clamp(-clip, clip)
    x = mu + eps
    clamped = x.clamp(-1.0 + 1e-6, 1.0 - 1e-6)
    return x - x.detach() + clamped.detach()


class DrQV2Agent(nn.Module):
    """Encoder + actor + double-Q critic (+ target). ``act`` picks actions; ``update`` does one
    gradient step of critic (and encoder) then actor, and returns a metric dict."""

    def __init__(self, obs_shape: tuple[int, int, int], action_dim: int, config: Optional[DrQV2Config] = None):
        super().__init__()
        self.config = config or DrQV2Config()
        self.config.validate()
        self.obs_shape, self.action_dim = tuple(int(s) for s in obs_shape), int(action_dim)
        c = self.config
        self.encoder = Encoder(self.obs_shape)
        self.actor = Actor(self.encoder.repr_dim, action_dim, c.feature_dim, c.hidden_dim)
        self.critic = Critic(self.encoder.repr_dim, action_dim, c.feature_dim, c.hidden_dim)
        self.critic_target = Critic(self.encoder.repr_dim, action_dim, c.feature_dim, c.hidden_dim)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=c.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.lr)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"encoder": self.encoder_opt, "actor": self.actor_opt, "critic": self.critic_opt}

    @torch.no_grad()
    def act(self, obs, step: int, eval_mode: bool) -> torch.Tensor:
        """Action for one uint8 observation ``[C, H, W]``: the mean in eval mode; uniform random
        during the first ``num_expl_steps`` steps; else the mean plus scheduled Gaussian noise."""
        obs = torch.as_tensor(obs, device=self.device)
        if obs.shape != self.obs_shape:
            raise ValueError(f"observation shape {tuple(obs.shape)} does not match the agent's {self.obs_shape}")
        mu = self.actor(self.encoder(obs.float()[None]))[0]
        if eval_mode:
            return mu.cpu()
        if step < self.config.num_expl_steps:
            return (torch.rand(self.action_dim) * 2.0 - 1.0)
        return clipped_noise_action(mu, schedule(self.config.stddev_schedule, step), None).cpu()

    def update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One update on a replay batch: ``obs`` / ``next_obs`` uint8 ``[B, C, H, W]``, ``action``
        ``[B, A]``, ``reward`` and ``discount`` ``[B]`` (n-step sum and γ^n)."""
        c, dev = self.config, self.device
        obs = random_shift(batch["obs"].to(dev).float(), c.augment_pad)
        next_obs = random_shift(batch["next_obs"].to(dev).float(), c.augment_pad)
        action = batch["action"].to(dev)
        reward, discount = batch["reward"].to(dev)[:, None], batch["discount"].to(dev)[:, None]
        h = self.encoder(obs)
        with torch.no_grad():
            next_h = self.encoder(next_obs)
        std = schedule(c.stddev_schedule, step)
        metrics = self._update_critic(h, action, reward, discount, next_h, std)
        metrics.update(self._update_actor(h.detach(), std))
        with torch.no_grad():  # target EMA
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.lerp_(p, c.critic_target_tau)
        metrics["batch_reward"] = float(reward.mean())
        return metrics

    def _update_critic(self, h, action, reward, discount, next_h, std) -> dict[str, float]:
        with torch.no_grad():
            next_action = clipped_noise_action(self.actor(next_h), std, self.config.stddev_clip)
            tq1, tq2 = self.critic_target(next_h, next_action)
            target_q = reward + discount * torch.min(tq1, tq2)
        q1, q2 = self.critic(h, action)
        loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()
        return {"critic_loss": float(loss.detach()), "critic_q1": float(q1.detach().mean()), "critic_target_q": float(target_q.mean())}

    def _update_actor(self, h, std) -> dict[str, float]:
        action = clipped_noise_action(self.actor(h), std, self.config.stddev_clip)
        q1, q2 = self.critic(h, action)
        loss = -torch.min(q1, q2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        return {"actor_loss": float(loss.detach()), "actor_std": float(std)}
