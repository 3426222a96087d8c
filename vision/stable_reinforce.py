"""StableReinforce (R1-Reward, Zhang et al. 2025): stable RL for generative (multimodal) reward models.

Three changes to a REINFORCE++ / PPO-clip update keep long RL runs of a generative judge from
diverging:

* **pre-clip**: the log-ratio ``log π − log π_old`` is clamped to ``[log_ratio_min, log_ratio_max]``
  *before* ``exp`` (plain PPO computes ``exp`` first: a log-ratio of 100 overflows to inf and the
  clipped objective still yields NaN gradients). Then the usual clip to ``[1 − ε, 1 + ε]``.
* **advantage filter** (R1-Reward's ``normalize``): advantages are normalised with the mean / std of the
  finite ones; non-finite ones, those beyond mean ± 3σ (``|z| > adv_sigma``) and normalised values
  with ``|z| > adv_abs_max`` (default 10) are set to 0 — the bounds apply to normalised advantages, so
  a reward on any scale (0–1 or 0–100) filters alike.
* **consistency reward**: ``reward = 0.5·format + accuracy·(1 + 0.5·(2·consistency − 1))``; ``format`` =
  the output is ``<think>…</think><answer>…</answer>`` naming answer 1 or 2; ``accuracy`` = it names the
  preferred one; ``consistency`` (in [0, 1]) = a pluggable judge's verdict that the reasoning supports
  the final answer (R1-Reward asks a separate MLLM, whose +1 / −1 / 0 — consistent / contradicting / no
  verdict — are consistency 1 / 0 / ½ here; :func:`rule_consistency` is a rule-based default). So a
  right answer earns 1.5 with consistent reasoning, 1.0 without a verdict and 0.5 against its reasoning.
  Unlike R1-Reward's server, an output failing the format check earns no accuracy.

:func:`stable_reinforce_step` is one update for any causal LM / VLM judge (``policy(input_ids=…,
attention_mask=…, **model_inputs).logits``); :func:`rollout` samples from a transformers policy and
returns the tensors it needs.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn


@dataclass
class StableReinforceConfig:
    clip_eps: float = field(default=0.2, metadata={"help": "PPO clip ε: the ratio is clipped to [1-ε, 1+ε]"})
    log_ratio_min: float = field(default=-math.log(1e3), metadata={"help": "pre-clip: lower bound of log π − log π_old before exp"})
    log_ratio_max: float = field(default=math.log(1e3), metadata={"help": "pre-clip: upper bound of log π − log π_old before exp"})
    adv_sigma: float = field(default=3.0, metadata={"help": "advantage filter: zero normalised advantages with |z| > this"})
    adv_abs_max: float = field(default=10.0, metadata={"help": "advantage filter: drop normalised advantages with |z| > this"})
    normalize_advantages: bool = field(default=True, metadata={"help": "normalise kept advantages by their mean / std"})
    group_baseline: bool = field(default=True, metadata={"help": "subtract each group's (prompt's) mean reward when groups are given"})
    kl_coef: float = field(default=0.0, metadata={"help": "weight of the k3 KL penalty to ref_logprobs (0: off)"})
    max_grad_norm: Optional[float] = field(default=1.0, metadata={"help": "clip the gradient norm (None: no clipping)"})
    format_weight: float = field(default=0.5, metadata={"help": "reward weight of a well-formed output"})
    consistency_weight: float = field(default=0.5, metadata={"help": "accuracy bonus factor for consistent reasoning"})

    def __post_init__(self) -> None:
        if not (0 < self.clip_eps < 1):
            raise ValueError(f"clip_eps must be in (0, 1), got {self.clip_eps}")
        if not (self.log_ratio_min < 0 < self.log_ratio_max):
            raise ValueError(f"need log_ratio_min < 0 < log_ratio_max, got {self.log_ratio_min}, {self.log_ratio_max}")
        for name in ("adv_sigma", "adv_abs_max"):
            value = getattr(self, name)
            if not value > 0:  # written so NaN fails too (NaN <= 0 is false); inf means "no bound"
                raise ValueError(f"StableReinforceConfig.{name} must be a number > 0, got {value!r}")
        g = self.max_grad_norm
        # clip_grad_norm_ with a negative bound multiplies every gradient by a negative factor (the update climbs
        # the loss), and 0 was read as "no clipping": only None means that, as in TrainConfig
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not g > 0):
            raise ValueError(f"StableReinforceConfig.max_grad_norm must be > 0 or None (no clipping), got {g!r}")
        if not (isinstance(self.kl_coef, (int, float)) and math.isfinite(self.kl_coef) and self.kl_coef >= 0):
            # a negative weight rewards drifting away from the reference policy
            raise ValueError(f"StableReinforceConfig.kl_coef must be a finite number >= 0, got {self.kl_coef!r}")
        for name in ("format_weight", "consistency_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"StableReinforceConfig.{name} must be a finite number, got {value!r}")


# ------------------------------------------------------------------ advantages and loss
def filter_advantages(adv: Tensor, sigma: float = 3.0, abs_max: float = 10.0,
                      normalize: bool = True, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """StableReinforce advantage filter on (B,) advantages → (filtered (B,), kept (B,) bool).

    With mean and population std of the finite values, ``z = (A − mean) / (std + eps)``; dropped (→ 0):
    NaN / inf, ``|z| > sigma`` and ``|z| > abs_max`` (R1-Reward bounds the normalised advantage: a raw
    bound would zero most advantages of a reward on a 0–100 scale). Kept values are ``z`` when
    ``normalize``, else ``A``."""
    if not isinstance(adv, Tensor) or adv.dim() != 1 or not adv.is_floating_point():
        got = f"a {adv.dtype} tensor of shape {tuple(adv.shape)}" if isinstance(adv, Tensor) else type(adv).__name__
        raise ValueError(f"advantages must be a 1-D float tensor, got {got}")
    a = adv.detach().double()
    valid = torch.isfinite(a)
    out = torch.zeros_like(a)
    if int(valid.sum()) == 0:
        return out.to(adv.dtype), valid
    v = a[valid]
    mean, std = v.mean(), v.std(unbiased=False)
    z = (a - mean) / (std + eps)
    kept = valid & (z.abs() <= sigma) & (z.abs() <= abs_max)
    out[kept] = z[kept] if normalize else a[kept]
    return out.to(adv.dtype), kept


def compute_advantages(rewards: Tensor, group: Optional[Tensor] = None,
                       config: Optional[StableReinforceConfig] = None) -> tuple[Tensor, Tensor]:
    """Rewards (B,) → filtered advantages (B,) and kept mask: the group-mean baseline (one group per
    prompt) when ``group`` is given, then :func:`filter_advantages`. ``group``: the group id of each
    sample, an int tensor (B,) or a list of B ids (ints, strings: equal ids share a group), or the
    prompt token ids of each sample (B, T): equal rows share a group."""
    cfg = config or StableReinforceConfig()
    if not isinstance(rewards, Tensor) or rewards.dim() != 1 or rewards.numel() == 0:
        raise ValueError(f"rewards must be a non-empty 1-D tensor, got {getattr(rewards, 'shape', type(rewards))}")
    r = rewards.detach().float()
    if group is not None and cfg.group_baseline:
        inv = _group_index(group, len(r)).to(r.device)
        fin = torch.isfinite(r)
        sums = torch.zeros(int(inv.max()) + 1, device=r.device).index_add_(0, inv, torch.where(fin, r, 0.0))
        cnt = torch.zeros_like(sums).index_add_(0, inv, fin.float())
        r = r - (sums / cnt.clamp_min(1))[inv]
    return filter_advantages(r, cfg.adv_sigma, cfg.adv_abs_max, cfg.normalize_advantages)


def _group_index(group: Any, n: int) -> Tensor:
    """(n,) index of each sample's group, from ids (a tensor (n,) / a list) or prompt rows (a tensor (n, T))."""
    if not isinstance(group, Tensor):
        if isinstance(group, (str, bytes)) or not hasattr(group, "__len__"):
            raise TypeError(f"group must be a tensor or a list of group ids, got {type(group).__name__}")
        if len(group) != n:
            raise ValueError(f"group has {len(group)} ids, rewards {n}")
        first: dict = {}
        try:
            return torch.tensor([first.setdefault(g, len(first)) for g in group], dtype=torch.long)
        except TypeError as e:  # unhashable ids (lists)
            raise TypeError(f"group ids must be hashable (ints, strings), got {e}") from None
    if group.dim() == 0 or group.shape[0] != n or group.dim() > 2:
        raise ValueError(f"group has shape {tuple(group.shape)}, rewards ({n},): give one id per sample (n,) or "
                         "one prompt row per sample (n, T)")
    if group.is_floating_point() and not bool((torch.isfinite(group) & (group == group.round())).all()):
        # .long() would truncate 0.5 and 0.7 into one group 0 without a word
        raise ValueError("group must hold integer group ids (one per prompt), got non-integer values")
    g = group.long()
    return torch.unique(g, dim=0, return_inverse=True)[1] if g.dim() == 2 else torch.unique(g, return_inverse=True)[1]


def pre_clipped_ratio(logprobs: Tensor, old_logprobs: Tensor, log_ratio_min: float, log_ratio_max: float) -> Tensor:
    """``exp(clamp(log π − log π_old))``: finite for any finite inputs (no overflow before the PPO clip)."""
    return torch.exp(torch.clamp(logprobs - old_logprobs, log_ratio_min, log_ratio_max))


def stable_ppo_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, action_mask: Tensor,
                    config: Optional[StableReinforceConfig] = None,
                    ref_logprobs: Optional[Tensor] = None) -> tuple[Tensor, dict[str, float]]:
    """PPO-clip loss with pre-clip, averaged as R1-Reward's ``PolicyLoss`` (OpenRLHF) does: the mean
    over each sequence's generated tokens, then the mean over the sequences (a short answer weighs as
    much as a long one; sequences with no generated token are left out). ``logprobs`` /
    ``old_logprobs`` / ``action_mask``: (B, L) (``action_mask`` marks generated tokens);
    ``advantages``: (B,) per sequence or (B, L). The optional k3 KL term is averaged the same way."""
    cfg = config or StableReinforceConfig()
    if logprobs.shape != old_logprobs.shape or logprobs.shape != action_mask.shape or logprobs.dim() != 2:
        raise ValueError(f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and action_mask "
                         f"{tuple(action_mask.shape)} must share one (B, L) shape")
    if advantages.dim() == 1:
        if advantages.shape[0] != logprobs.shape[0]:
            raise ValueError(f"advantages has {advantages.shape[0]} rows, logprobs {logprobs.shape[0]}")
        advantages = advantages.unsqueeze(1)  # (B, 1) broadcast over tokens
    elif advantages.shape != logprobs.shape:
        raise ValueError(f"advantages must be (B,) or (B, L), got {tuple(advantages.shape)}")
    mask = action_mask.to(logprobs.dtype)
    n = mask.sum()
    if float(n) == 0:
        raise ValueError("action_mask selects no token")
    old = old_logprobs.detach()
    ratio = pre_clipped_ratio(logprobs, old, cfg.log_ratio_min, cfg.log_ratio_max)  # (B, L)
    adv = advantages.detach().to(logprobs.dtype)
    surr = torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv)
    per_seq = mask.sum(-1)  # (B,) generated tokens of each sequence
    rows = per_seq > 0

    def seq_mean(x: Tensor) -> Tensor:  # masked mean over each sequence's tokens, then over the sequences
        return ((x * mask).sum(-1)[rows] / per_seq[rows]).mean()

    loss = -seq_mean(surr)
    clipped = ((ratio - 1).abs() > cfg.clip_eps).to(mask.dtype)
    metrics = {"pg_loss": float(loss.detach()), "clip_frac": float((clipped * mask).sum() / n),
               "ratio_max": float((ratio.detach() * mask).max())}
    if ref_logprobs is not None and cfg.kl_coef > 0:
        if ref_logprobs.shape != logprobs.shape:  # a (B, 1) or (L,) tensor would broadcast into a wrong KL
            raise ValueError(f"ref_logprobs must have the logprobs' shape {tuple(logprobs.shape)}, "
                             f"got {tuple(ref_logprobs.shape)}")
        lr = torch.clamp(ref_logprobs.detach() - logprobs, cfg.log_ratio_min, cfg.log_ratio_max)
        kl = seq_mean(torch.exp(lr) - lr - 1)  # k3 estimator, pre-clipped too
        loss = loss + cfg.kl_coef * kl
        metrics["kl"] = float(kl.detach())
    return loss, metrics


def sequence_logprobs(policy: nn.Module, sequences: Tensor, attention_mask: Tensor, **model_inputs) -> Tensor:
    """Log-probs (B, T−1) of ``sequences[:, 1:]`` under ``policy`` (fp32 log-softmax)."""
    logits = policy(input_ids=sequences, attention_mask=attention_mask, **model_inputs).logits[:, :-1]  # (B, T-1, V)
    tok = sequences[:, 1:].unsqueeze(-1)  # (B, T-1, 1)
    # one row at a time in fp32: never a second full (B, T, V) fp32 copy next to bf16 logits
    rows = [lg.float().gather(-1, t).squeeze(-1) - torch.logsumexp(lg.float(), dim=-1) for lg, t in zip(logits, tok)]
    return torch.stack(rows)  # (B, T-1)


def stable_reinforce_step(policy: nn.Module, optimizer: torch.optim.Optimizer, sequences: Tensor,
                          attention_mask: Tensor, action_mask: Tensor, old_logprobs: Tensor, rewards: Tensor,
                          config: Optional[StableReinforceConfig] = None, group: Optional[Tensor] = None,
                          ref_logprobs: Optional[Tensor] = None, model_inputs: Optional[dict] = None) -> dict[str, float]:
    """One StableReinforce update: advantages from ``rewards`` (B,) (group baseline + filter), the
    pre-clipped PPO loss over the generated tokens, backward, gradient clipping, optimizer step.
    Shapes: ``sequences`` / ``attention_mask`` (B, T); ``action_mask`` / ``old_logprobs`` (B, T−1),
    aligned with :func:`sequence_logprobs`. ``model_inputs``: extra inputs (pixel_values, …)."""
    cfg = config or StableReinforceConfig()
    if sequences.dim() != 2 or attention_mask.shape != sequences.shape:
        raise ValueError(f"sequences / attention_mask must be (B, T), got {tuple(sequences.shape)} / {tuple(attention_mask.shape)}")
    B, T = sequences.shape
    if rewards.shape != (B,):
        raise ValueError(f"rewards must be ({B},), got {tuple(rewards.shape)}")
    if action_mask.shape != (B, T - 1) or old_logprobs.shape != (B, T - 1):
        raise ValueError(f"action_mask and old_logprobs must be ({B}, {T - 1}) (one per next token), got "
                         f"{tuple(action_mask.shape)} / {tuple(old_logprobs.shape)}")
    adv, kept = compute_advantages(rewards, group, cfg)
    policy.train()
    logp = sequence_logprobs(policy, sequences, attention_mask, **(model_inputs or {}))
    loss, metrics = stable_ppo_loss(logp, old_logprobs, adv.to(logp.device), action_mask, cfg, ref_logprobs)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    gn = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm else float("inf"))
    if not (bool(torch.isfinite(loss.detach())) and bool(torch.isfinite(gn))):
        # clipping does not mend a NaN gradient (it scales it by NaN): the step would write NaN into every weight
        from mmreward.core.trainer import TrainingDiverged

        optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(f"stable_reinforce_step: the loss ({float(loss.detach())}) or the gradient norm "
                               f"({float(gn)}) is not finite; the update was not applied (the policy is unchanged): "
                               "look for NaN / inf in old_logprobs / ref_logprobs or in the policy's logits (a "
                               "lower learning rate, or fp32)")
    optimizer.step()
    metrics.update(loss=float(loss.detach()), grad_norm=float(gn), kept_frac=float(kept.float().mean()),
                   reward_mean=float(rewards.float().nanmean()))
    return metrics


@torch.no_grad()
def rollout(policy: nn.Module, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int,
            temperature: float = 1.0, **model_inputs) -> dict[str, Tensor]:
    """Sample completions with ``policy.generate`` (left-padded prompts) → ``sequences``,
    ``attention_mask`` (B, T), ``action_mask`` and ``old_logprobs`` (B, T−1), and ``model_inputs``
    (the extra inputs, per-token ones extended to T) to pass on to :func:`stable_reinforce_step`."""
    was = policy.training
    policy.eval()
    # a sampled image / video placeholder token would not match the image features on the next forward
    cfg = getattr(policy, "config", None)
    placeholders = sorted({int(t) for t in (getattr(cfg, "image_token_id", None), getattr(cfg, "video_token_id", None))
                           if t is not None})
    extra_gen = {"suppress_tokens": placeholders} if placeholders else {}
    seq = policy.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True, temperature=temperature,
                          top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, **extra_gen, **model_inputs)
    P = input_ids.shape[1]
    gen_mask = torch.ones_like(seq[:, P:])
    eos = getattr(getattr(policy, "generation_config", None), "eos_token_id", None)
    if eos is not None:  # tokens after the first EOS are padding
        eos_ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos], device=seq.device)
        is_eos = torch.isin(seq[:, P:], eos_ids).long()
        gen_mask = (torch.cumsum(is_eos, 1) - is_eos == 0).long()
    attn = torch.cat([attention_mask, gen_mask], dim=1)
    action = torch.zeros_like(seq[:, 1:], dtype=torch.bool)
    action[:, P - 1:] = gen_mask.bool()
    extra = dict(model_inputs)
    if "mm_token_type_ids" in extra:  # per-token modality ids (Qwen2-VL M-RoPE): generated tokens are text (0)
        mm = extra["mm_token_type_ids"]
        extra["mm_token_type_ids"] = torch.cat([mm, mm.new_zeros(mm.shape[0], seq.shape[1] - P)], dim=1)
    old = sequence_logprobs(policy, seq, attn, **extra)
    policy.train(was)
    return {"sequences": seq, "attention_mask": attn, "action_mask": action, "old_logprobs": old, "model_inputs": extra}


# ------------------------------------------------------------------ R1-Reward output format and reward
_THINK_ANSWER = re.compile(r"^\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*$", re.S)
# a lone digit 1 or 2: not part of a number ("12", "1.5", "0.2"); a full stop after it ends the sentence ("Answer 2.")
_CHOICE = re.compile(r"(?<![\d.])([12])(?!\d|\.\d)")


@dataclass
class R1Output:
    format_ok: bool
    think: str = ""
    answer: str = ""
    choice: Optional[int] = None  # 1 or 2: the answer judged better
    reason: str = ""  # why the format check failed ("" when it passed)


def parse_r1_output(text: str) -> R1Output:
    """Parse ``<think>…</think><answer>…</answer>`` whose answer names exactly one of 1 / 2
    (e.g. "2", "Answer 1 is better", "Overall Judgment: Answer 2 is better")."""
    if not isinstance(text, str):
        return R1Output(False, reason=f"output is {type(text).__name__}, not a string")
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        if text.count(tag) != 1:
            return R1Output(False, reason=f"expected exactly one {tag}, found {text.count(tag)}")
    m = _THINK_ANSWER.match(text)
    if m is None:
        return R1Output(False, reason="tags out of order or text outside <think>…</think><answer>…</answer>")
    think, answer = m.group("think").strip(), m.group("answer").strip()
    choices = {int(c) for c in _CHOICE.findall(answer)}
    if len(choices) != 1:
        return R1Output(False, think, answer,
                        reason="answer names neither 1 nor 2" if not choices else "answer names both 1 and 2")
    return R1Output(True, think, answer, choices.pop())


_PREFERS = re.compile(r"answer\s*([12])\s*(?:is|seems|looks)\s*(?:better|superior|preferred|more)", re.I)


def rule_consistency(parsed: R1Output) -> float:
    """1.0 if the reasoning's last "Answer k is better" agrees with the final choice, 0.0 if it names
    the other answer; 0.5 when the reasoning states no preference (undecidable by rule)."""
    if not parsed.format_ok:
        return 0.0
    found = _PREFERS.findall(parsed.think)
    if not found:
        return 0.5
    return 1.0 if int(found[-1]) == parsed.choice else 0.0


ConsistencyJudge = Callable[[R1Output], float]


def r1_reward(text: str, preferred: int, consistency_judge: Optional[ConsistencyJudge] = None,
              config: Optional[StableReinforceConfig] = None) -> tuple[float, dict[str, Any]]:
    """``format_weight·format + accuracy·(1 + consistency_weight·(2·consistency − 1))`` for one judge
    output (R1-Reward's reward: its referee's +1 / −1 / 0 are consistency 1 / 0 / ½); ``preferred`` is the
    better answer (1 or 2). Returns the reward and its parts (with the reason when the format check
    failed)."""
    cfg = config or StableReinforceConfig()
    if isinstance(preferred, bool) or preferred not in (1, 2):  # True == 1: a yes / no label is not an answer index
        raise ValueError(f"preferred must be 1 or 2 (the better answer), got {preferred!r}")
    p = parse_r1_output(text)
    fmt = float(p.format_ok)
    acc = float(p.format_ok and p.choice == preferred)
    cons = 0.0
    if acc:
        cons = float((consistency_judge or rule_consistency)(p))
        if not (0.0 <= cons <= 1.0):
            raise ValueError(f"consistency judge returned {cons}, expected a value in [0, 1]")
    reward = cfg.format_weight * fmt + acc * (1.0 + cfg.consistency_weight * (2.0 * cons - 1.0))
    return reward, {"format": fmt, "accuracy": acc, "consistency": cons, "choice": p.choice, "reason": p.reason}
