"""ReFL (reward feedback learning, ImageReward §4) for diffusers text-to-image parts.

Each training step, for a batch of prompts (as ImageReward's ``refl.py``):

1. set the scheduler (``DiffusionParts.from_pipeline``: a ``DDPMScheduler`` with the pipeline's
   scheduler config, as ImageReward's ReFL) to T = ``num_inference_steps`` (40) steps and draw t uniformly from
   [``min_step``, ``max_step``] = [30, 39] — an index into the 40-step loop;
2. run the loop from pure noise up to index t **without gradient**;
3. at index t, run the UNet **with gradient**, take the predicted x0 (the scheduler's
   ``pred_original_sample``, or x0 from ᾱ_t and the prediction type), decode it with the VAE
   (gradient flows through the frozen VAE), map to [0, 1] and score it;
4. loss = mean(ReLU(λ − r)) · scale (λ = 2, scale = 1e-3 by default).

Only the UNet trains (text encoder and VAE are frozen). The scorer is an image reward model (any
:class:`~mmreward.core.model.RewardScorer` that scores :class:`~mmreward.core.inputs.ImagePrompt`
differentiably in float pixels, e.g. :class:`~mmreward.vision.ImageRewardModel`) or any
differentiable function ``(prompts, images[B, 3, H, W] in [0, 1]) -> Tensor[B]``. Training runs on
the core Trainer (logs, snapshots of the UNet, exact resume); :func:`sample` / :func:`mean_reward`
evaluate with the full T-step loop.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .scoring import as_pixel_scorer


@dataclass
class ReFLConfig:
    num_inference_steps: int = field(default=40, metadata={"help": "T: denoising steps of the sampling loop"})
    min_step: int = field(default=30, metadata={"help": "smallest loop index t at which the gradient is taken"})
    max_step: int = field(default=39, metadata={"help": "largest loop index t (inclusive)"})
    reward_threshold: float = field(default=2.0, metadata={"help": "λ in ReLU(λ − r)"})
    grad_scale: float = field(default=1e-3, metadata={"help": "the loss is multiplied by this"})
    guidance_scale: float = field(default=1.0, metadata={"help": "classifier-free guidance (1: off, as ImageReward's ReFL)"})

    def __post_init__(self) -> None:
        if not 1 <= self.num_inference_steps:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if not 0 <= self.min_step <= self.max_step < self.num_inference_steps:
            raise ValueError(f"need 0 <= min_step <= max_step < num_inference_steps, got "
                             f"{self.min_step}, {self.max_step}, {self.num_inference_steps}")
        # NaN passes no comparison, so each rule is written as "must hold" and NaN fails it
        if not math.isfinite(self.reward_threshold):
            raise ValueError(f"ReFLConfig.reward_threshold must be a finite number, got {self.reward_threshold!r}")
        if not (math.isfinite(self.grad_scale) and self.grad_scale > 0):
            raise ValueError(f"ReFLConfig.grad_scale must be a finite number > 0, got {self.grad_scale!r}")
        if not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ValueError(f"ReFLConfig.guidance_scale must be a finite number >= 0, got {self.guidance_scale!r}")


class DiffusionParts(nn.Module):
    """The pieces of a diffusers text-to-image pipeline ReFL needs (``from_pipeline(pipe)`` takes them
    from any StableDiffusion-like pipeline). Only ``unet`` is trainable."""

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, tokenizer: Any, scheduler: Any):
        super().__init__()
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer, self.scheduler = tokenizer, scheduler
        for m in (vae, text_encoder):
            m.requires_grad_(False).eval()
        self.vae_scale = getattr(vae.config, "scaling_factor", 1.0)
        self.latent_size = unet.config.sample_size
        self.latent_channels = unet.config.in_channels

    @classmethod
    def from_pipeline(cls, pipe: Any, scheduler: Any = None) -> "DiffusionParts":
        """The parts of ``pipe``. ``scheduler`` defaults to :func:`refl_scheduler` of the pipeline's
        scheduler — a ``DDPMScheduler`` with its config, the scheduler ImageReward's ReFL samples
        and predicts x0 with; pass ``pipe.scheduler`` (or any other) to use that one instead."""
        return cls(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer,
                   refl_scheduler(pipe.scheduler) if scheduler is None else scheduler)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")
        device = next(self.unet.parameters()).device
        return self.text_encoder(tok["input_ids"].to(device))[0]  # (B, L, C)

    def noise(self, batch: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        device = next(self.unet.parameters()).device
        shape = (batch, self.latent_channels, self.latent_size, self.latent_size)
        x = torch.randn(shape, generator=generator, device="cpu").to(device)
        return x * getattr(self.scheduler, "init_noise_sigma", 1.0)

    def _eps(self, unet: nn.Module, latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
             uncond: Optional[torch.Tensor], guidance: float) -> torch.Tensor:
        x = self.scheduler.scale_model_input(latents, t)
        if uncond is None or guidance == 1.0:
            return unet(x, t, encoder_hidden_states=cond).sample
        out = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        e_u, e_c = out.chunk(2)
        return e_u + guidance * (e_c - e_u)

    def _x0(self, out: Any, pred: torch.Tensor, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x0 = getattr(out, "pred_original_sample", None)
        if x0 is not None:
            return x0
        a = self.scheduler.alphas_cumprod.to(latents.device)[t].view(-1, 1, 1, 1)
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            return (latents - (1 - a).sqrt() * pred) / a.sqrt()
        if kind == "v_prediction":
            return a.sqrt() * latents - (1 - a).sqrt() * pred
        return pred  # "sample"

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images [B, 3, H, W] in [0, 1] (differentiable; clamped as in ImageReward)."""
        img = self.vae.decode(latents / self.vae_scale).sample
        return (img / 2 + 0.5).clamp(0, 1)

    def run(self, unet: nn.Module, prompts: Sequence[str], config: ReFLConfig, stop_at: Optional[int] = None,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The T-step loop. ``stop_at=None``: full no-grad sampling -> images. ``stop_at=t``: steps
        before t without gradient, then the UNet with gradient at t -> decoded predicted x0."""
        cond = self.encode_prompts(prompts)
        uncond = self.encode_prompts([""] * len(prompts)) if config.guidance_scale != 1.0 else None
        self.scheduler.set_timesteps(config.num_inference_steps, device=cond.device)
        latents = self.noise(len(prompts), generator)
        # a stochastic scheduler (DDPM, ReFL's) draws its step noise from the same seeded generator, so
        # sample(seed=...) is the same images every call
        extra = {"generator": generator} if generator is not None and "generator" in inspect.signature(
            self.scheduler.step).parameters else {}
        steps = self.scheduler.timesteps
        for i, t in enumerate(steps):
            if stop_at is not None and i == stop_at:
                pred = self._eps(unet, latents, t, cond, uncond, config.guidance_scale)  # with gradient
                out = self.scheduler.step(pred, t, latents, **extra)
                return self.decode(self._x0(out, pred, t, latents))
            with torch.no_grad():
                pred = self._eps(unet, latents, t, cond, uncond, config.guidance_scale)
                latents = self.scheduler.step(pred, t, latents, **extra).prev_sample
        with torch.no_grad():
            return self.decode(latents)


def refl_scheduler(scheduler: Any) -> Any:
    """A diffusers ``DDPMScheduler`` with ``scheduler``'s config (its betas, training steps, prediction
    type). ImageReward's ReFL loads ``DDPMScheduler`` from the model's ``scheduler`` folder whatever
    scheduler the pipeline samples with (Stable Diffusion 1.x ships a PNDM config): its 40-step loop,
    the loop index t drawn from [30, 39] and the predicted x0 are the DDPM ones. A pipeline's PNDM
    scheduler would instead take 41 steps (one timestep repeated), shifting the indices."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config)


def refl_loss(parts: DiffusionParts, scorer: Any, config: ReFLConfig):
    """``loss_fn(unet, prompts) -> (loss, metrics)`` for :class:`mmreward.core.trainer.Trainer`; t is
    drawn from torch's global RNG (which the Trainer seeds and snapshots, so resume is exact)."""
    score = as_pixel_scorer(scorer)

    def loss_fn(unet: nn.Module, prompts: list) -> tuple[torch.Tensor, dict]:
        t = int(torch.randint(config.min_step, config.max_step + 1, ()))
        images = parts.run(unet, prompts, config, stop_at=t)  # (B, 3, H, W)
        r = score(list(prompts), images)
        if r.shape != (len(prompts),):
            raise ValueError(f"scorer returned shape {tuple(r.shape)}, expected ({len(prompts)},)")
        loss = F.relu(config.reward_threshold - r).mean() * config.grad_scale
        return loss, {"reward": float(r.detach().mean()), "t_index": float(t)}

    return loss_fn


@torch.no_grad()
def sample(parts: DiffusionParts, prompts: Sequence[str], config: ReFLConfig, seed: int = 0) -> torch.Tensor:
    """Full T-step sampling from fixed noise (seeded) -> images [B, 3, H, W] in [0, 1]."""
    return parts.run(parts.unet, list(prompts), config, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def mean_reward(parts: DiffusionParts, scorer: Any, prompts: Sequence[str], config: ReFLConfig,
                seed: int = 0) -> float:
    """Mean reward of full T-step samples from fixed noise (``seed``)."""
    return float(as_pixel_scorer(scorer)(list(prompts), sample(parts, prompts, config, seed)).mean())


def train_refl(parts: DiffusionParts, scorer: Any, prompts: Sequence[str], config: ReFLConfig, train_config):
    """ReFL fine-tuning of ``parts.unet`` on ``prompts`` with the core Trainer (``train_config`` is a
    :class:`mmreward.core.trainer.TrainConfig`). A reward model given as ``scorer`` is frozen
    (``requires_grad_(False)``): the gradient flows through it to the pixels, only the UNet learns.
    Returns the per-step history; save the UNet with ``parts.unet.save_pretrained(folder)``
    (diffusers, safetensors)."""
    from mmreward.core.trainer import Trainer

    # a bare string would train on its letters one by one (list("a cat") is 5 prompts)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    if not prompts:
        raise ValueError("prompts is empty")
    bad = next((i for i, p in enumerate(prompts) if not isinstance(p, str)), None)
    if bad is not None:
        raise TypeError(f"prompts[{bad}] must be a string, got {type(prompts[bad]).__name__}")
    # a prompt-conditioned scorer refuses an image without a prompt: refused here, not when its batch comes up
    empty = next((i for i, p in enumerate(prompts) if not p.strip()), None)
    if empty is not None and getattr(scorer, "uses_prompt", False):
        raise ValueError(f"prompts[{empty}] is empty: {type(scorer).__name__} scores each image against its prompt")
    if isinstance(scorer, nn.Module):
        scorer.requires_grad_(False)
    trainer = Trainer(parts.unet, train_config, list(prompts), lambda batch: list(batch), refl_loss(parts, scorer, config))
    return trainer.fit()
