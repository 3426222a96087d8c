"""Soft actor-critic (Haarnoja et al., 2018, "SAC algorithms and applications"): the state-based
agent that trains the Adroit experts (:mod:`.expert`).

Pieces, as in the paper's v2: a tanh-squashed Gaussian actor, twin Q critics trained on the soft
Bellman target with the minimum of two target critics, targets tracking the critics by EMA (τ),
and a learned temperature α whose loss drives the policy's entropy to ``−|A|``. Uniform random
actions for the first ``num_seed_steps`` agent steps fill the buffer before learning starts.

Observations are float vectors ``[obs_dim]``; actions live in ``[-1, 1]^A``. Every random draw of
the agent (exploration, the policy samples of an update) comes from the agent's own
``torch.Generator``, so a snapshot that stores its state resumes bit for bit.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _help(text: str, **kw):
    return field(metadata={"help": text}, **kw)


@dataclass
class SACConfig:
    """Agent hyper-parameters (defaults: the SAC v2 paper's)."""

    hidden_dim: int = _help("width of the two hidden layers of actor and critics", default=256)
    lr: float = _help("Adam learning rate of actor, critics and temperature", default=3e-4)
    batch_size: int = _help("replay batch size", default=256)
    updates_per_step: int = _help("gradient updates per agent step (UTD ratio)", default=1)
    discount: float = _help("per-step discount γ", default=0.99)
    critic_target_tau: float = _help("EMA rate of the target critics", default=0.005)
    init_temperature: float = _help("initial entropy temperature α", default=1.0)
    target_entropy: Optional[float] = _help("entropy the temperature drives the policy to (default: −|A|)",
                                            default=None)
    num_seed_steps: int = _help("agent steps with uniform random actions before learning starts", default=5000)
    log_std_min: float = _help("lower bound of the actor's log standard deviation", default=-5.0)
    log_std_max: float = _help("upper bound of the actor's log standard deviation", default=2.0)

    def validate(self) -> None:
        # whole numbers and finite reals first: hidden_dim=2.5 failed inside nn.Linear, "3e-4" in a comparison,
        # and a NaN / inf temperature, target entropy or log-std bound trained a NaN policy without a word
        for name in ("hidden_dim", "batch_size", "updates_per_step", "num_seed_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        for name in ("lr", "discount", "critic_target_tau", "init_temperature", "log_std_min", "log_std_max") + (
                ("target_entropy",) if self.target_entropy is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        for name in ("hidden_dim", "batch_size", "updates_per_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_seed_steps < 0:
            raise ValueError(f"num_seed_steps must be >= 0, got {self.num_seed_steps}")
        if not 0.0 < self.critic_target_tau <= 1.0:
            raise ValueError(f"critic_target_tau must be in (0, 1], got {self.critic_target_tau}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")
        if self.lr <= 0 or self.init_temperature <= 0:
            raise ValueError("lr and init_temperature must be positive")
        if self.log_std_min >= self.log_std_max:
            raise ValueError(f"log_std_min ({self.log_std_min}) must be below log_std_max ({self.log_std_max})")


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, out_dim))


class GaussianActor(nn.Module):
    """``obs → (mean, log_std)`` of a Gaussian over pre-squash actions; ``a = tanh(u)``."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int, log_std_min: float = -5.0,
                 log_std_max: float = 2.0):
        super().__init__()
        self.net = mlp(obs_dim, hidden_dim, 2 * action_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, O) -> (B, A), (B, A)
        mean, raw = self.net(obs).chunk(2, dim=-1)
        # a smooth squash of log σ into its bounds (no dead gradient at a hard clamp)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1.0)
        return mean, log_std

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:  # (B, O) -> (B, A) in (-1, 1)
        return torch.tanh(self(obs)[0])

    def sample(self, obs: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action ``(B, A)`` and its log-probability ``(B,)`` under the squashed
        Gaussian (change of variables through tanh)."""
        mean, log_std = self(obs)
        eps = torch.randn(mean.shape, generator=generator).to(mean.device)
        u = mean + log_std.exp() * eps
        gaussian = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log(1 − tanh(u)²) = 2·(log 2 − u − softplus(−2u)), stable for large |u|
        squash = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), gaussian - squash


class TwinCritic(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.q1 = mlp(obs_dim + action_dim, hidden_dim, 1)
        self.q2 = mlp(obs_dim + action_dim, hidden_dim, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)  # (B,) each


class SACAgent(nn.Module):
    """Actor + twin critics (+ targets) + temperature. ``act`` picks actions; ``update`` does one
    critic step, one actor step, one temperature step and the target EMA, and returns a metric dict."""

    def __init__(self, obs_dim: int, action_dim: int, config: Optional[SACConfig] = None, seed: int = 0):
        super().__init__()
        self.config = config or SACConfig()
        self.config.validate()
        c = self.config
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.target_entropy = float(-self.action_dim if c.target_entropy is None else c.target_entropy)
        self.actor = GaussianActor(obs_dim, action_dim, c.hidden_dim, c.log_std_min, c.log_std_max)
        self.critic = TwinCritic(obs_dim, action_dim, c.hidden_dim)
        self.critic_target = TwinCritic(obs_dim, action_dim, c.hidden_dim)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(c.init_temperature)))
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=c.lr)
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "critic": self.critic_opt, "alpha": self.alpha_opt}

    @torch.no_grad()
    def act(self, obs, step: int, eval_mode: bool) -> torch.Tensor:
        """Action ``[A]`` (CPU) for one observation ``[obs_dim]``: the squashed mean in eval mode;
        uniform random during the first ``num_seed_steps`` steps; else a policy sample."""
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if obs.shape != (self.obs_dim,):
            raise ValueError(f"observation shape {tuple(obs.shape)} does not match the agent's ({self.obs_dim},)")
        if eval_mode:
            return self.actor.mean_action(obs[None])[0].cpu()
        if step < self.config.num_seed_steps:
            return torch.rand(self.action_dim, generator=self.generator) * 2.0 - 1.0
        return self.actor.sample(obs[None], self.generator)[0][0].cpu()

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One update on a replay batch: ``obs`` / ``next_obs`` ``[B, O]``, ``action`` ``[B, A]``,
        ``reward`` and ``discount`` ``[B]`` (γ, or 0 after a terminal step)."""
        dev = self.device
        obs, next_obs = batch["obs"].to(dev), batch["next_obs"].to(dev)
        action, reward, discount = batch["action"].to(dev), batch["reward"].to(dev), batch["discount"].to(dev)
        metrics = self._update_critic(obs, action, reward, discount, next_obs)
        metrics.update(self._update_actor_and_alpha(obs))
        with torch.no_grad():  # target EMA
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.lerp_(p, self.config.critic_target_tau)
        metrics["batch_reward"] = float(reward.mean())
        return metrics

    def _update_critic(self, obs, action, reward, discount, next_obs) -> dict[str, float]:
        with torch.no_grad():
            next_action, next_logp = self.actor.sample(next_obs, self.generator)
            tq1, tq2 = self.critic_target(next_obs, next_action)
            target_q = reward + discount * (torch.min(tq1, tq2) - self.alpha * next_logp)  # (B,)
        q1, q2 = self.critic(obs, action)
        loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return {"critic_loss": float(loss.detach()), "critic_q1": float(q1.detach().mean()),
                "critic_target_q": float(target_q.mean())}

    def _update_actor_and_alpha(self, obs) -> dict[str, float]:
        action, logp = self.actor.sample(obs, self.generator)
        self.critic.requires_grad_(False)  # the actor loss needs gradients w.r.t. actions only
        q1, q2 = self.critic(obs, action)
        self.critic.requires_grad_(True)
        actor_loss = (self.alpha.detach() * logp - torch.min(q1, q2)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        return {"actor_loss": float(actor_loss.detach()), "alpha": float(self.alpha.detach()),
                "alpha_loss": float(alpha_loss.detach()), "entropy": float(-logp.detach().mean())}
