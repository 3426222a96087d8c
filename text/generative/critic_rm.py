"""Critic-RM (Yu et al., 2024, "Self-Generated Critiques Boost Reward Modeling for Language Models").

1. sample k critiques per response, each ending with ``Score: x`` (1–10) (:func:`sample_critiques`);
2. consistency filter: keep the chosen response's critiques that score it above the mean score the
   rejected response got, and the rejected one's critiques that score it below the chosen's mean; a pair
   with no consistent critique on either side is dropped (:func:`consistency_filter`);
3. joint fine-tuning on (x, y, critique): ``λ(t)·L_critique-LM + (1 − λ(t))·L_BT`` where the reward is a
   scalar head on the last token after the critique and ``λ(t)`` moves linearly from ``lam_start`` to
   ``lam_end`` (critique first, then reward) (:func:`critique_weight`, :meth:`CriticRM.loss`).

``score([TextPair(x, y), ...])`` writes a greedy critique of each response and reads the reward head
after it; :meth:`CriticRM.reward` reads it after critiques you give. Saved as ``lm/`` (the
backbone + tokenizer) and ``head.safetensors``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from mmreward.core.inputs import TextPair
from mmreward.core.model import (check_batch_size, check_ranges, config_from_dict, eval_while_scoring, load_weights,
                                  save_weights)
from mmreward.core.weights import quiet_transformers
from mmreward.ops import reward_head_pairwise_loss_and_accuracy

from .base import LM_FOLDER, GenerativeJudge, chat_turns, check_sampling, judge_trainer, load_causal_lm
from .heads import ScalarHeadLM
from .parsing import parse_score
from .position import judge_from_scores
from .runner import JudgeConfig, JudgeRunner
from .sft import IGNORE, concat_batches, sft_batch

__all__ = ["CriticRMConfig", "CriticRM", "critique_messages", "sample_critiques", "consistency_filter",
           "critique_weight", "CRITIQUE_REQUEST", "build_critique_rows", "train_critic_rm", "evaluate_critic_rm"]

CRITIQUE_REQUEST = "Critique the response above: point out its strengths and flaws, then end with 'Score: x' (1-10)."


@dataclass
class CriticRMConfig:
    request: str = field(default=CRITIQUE_REQUEST, metadata={"help": "critique instruction after (x, y)"})
    num_critiques: int = field(default=4, metadata={"help": "k sampled critiques per response"})
    max_new_tokens: int = field(default=256, metadata={"help": "critique length limit"})
    temperature: float = field(default=0.8, metadata={"help": "critique sampling temperature"})
    lam_start: float = field(default=0.9, metadata={"help": "critique-LM weight λ at step 0"})
    lam_end: float = field(default=0.1, metadata={"help": "critique-LM weight λ at the last step"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})

    def __post_init__(self) -> None:
        check_ranges(self, counts=("num_critiques", "max_new_tokens", "batch_size"), naturals=("seed",),
                     weights=("temperature",), fractions=("lam_start", "lam_end"))
        check_sampling(self, "num_critiques")


def critique_messages(prompt: Any, response: Any, request: str = CRITIQUE_REQUEST, where: str = "input") -> list[dict]:
    """(x, y) as chat turns, then the critique request."""
    return chat_turns(prompt, response, where) + [{"role": "user", "content": request}]


def sample_critiques(runner: JudgeRunner, prompts: Sequence[str], responses: Sequence[str],
                     request: str = CRITIQUE_REQUEST) -> list[list[tuple[str, Optional[float]]]]:
    """``[N][k]`` (critique text, parsed score or None) with the runner's sampling settings."""
    if len(prompts) != len(responses) or not prompts:
        raise ValueError("sample_critiques: prompts and responses must be non-empty and equally long")
    res = runner.run([critique_messages(p, r, request) for p, r in zip(prompts, responses)], parse_score)
    return [[(r.text, r.value if r.ok else None) for r in row] for row in res]


def consistency_filter(scores_chosen: Sequence[Optional[float]], scores_rejected: Sequence[Optional[float]]
                       ) -> tuple[list[int], list[int]]:
    """Indices of the consistent critiques of the chosen and of the rejected response (see module doc)."""
    c = [s for s in scores_chosen if s is not None]
    r = [s for s in scores_rejected if s is not None]
    if not c or not r:
        return [], []
    mc, mr = sum(c) / len(c), sum(r) / len(r)
    keep_c = [i for i, s in enumerate(scores_chosen) if s is not None and s > mr]
    keep_r = [i for i, s in enumerate(scores_rejected) if s is not None and s < mc]
    if not keep_c or not keep_r:
        return [], []
    return keep_c, keep_r


def critique_weight(step: int, total_steps: int, start: float = 0.9, end: float = 0.1) -> float:
    """λ(t): linear from ``start`` at step 0 to ``end`` at ``total_steps − 1``."""
    if total_steps < 1 or step < 0:
        raise ValueError(f"critique_weight: need step >= 0 and total_steps >= 1, got {step}, {total_steps}")
    if not (0 <= start <= 1 and 0 <= end <= 1):
        raise ValueError("critique_weight: start and end must be in [0, 1]")
    t = min(step / max(1, total_steps - 1), 1.0)
    return start + (end - start) * t


HEAD_NAME = "head.safetensors"


def _check_rows(who: str, prompts: Any, responses: Any, critiques: Any) -> None:
    """Parallel lists (a string is a sequence too: its characters would be scored as rows), non-empty,
    equally long, each critique a string."""
    for name, seq in (("prompts", prompts), ("responses", responses), ("critiques", critiques)):
        if isinstance(seq, (str, bytes, dict)) or not (hasattr(seq, "__len__") and hasattr(seq, "__getitem__")):
            raise TypeError(f"{who}: {name} must be a list (one item per row), got {type(seq).__name__}")
    if not (len(prompts) == len(responses) == len(critiques)) or not len(prompts):
        raise ValueError(f"{who}: prompts / responses / critiques must be non-empty and equally long, got "
                         f"{len(prompts)} / {len(responses)} / {len(critiques)}")
    bad = next((i for i, c in enumerate(critiques) if not isinstance(c, str)), None)
    if bad is not None:
        raise TypeError(f"{who}: critiques[{bad}] must be a string, got {type(critiques[bad]).__name__}")


class CriticRM(GenerativeJudge):
    """A critique-generating LM with a reward head (``ScalarHeadLM``) and its joint loss."""

    model_type = "critic_rm"
    config_class = CriticRMConfig
    input_types = (TextPair,)

    def __init__(self, model: ScalarHeadLM, tokenizer: Any, config: Optional[CriticRMConfig] = None):
        if not isinstance(model, ScalarHeadLM):
            raise TypeError("CriticRM needs a ScalarHeadLM (wrap the causal LM: ScalarHeadLM(lm))")
        if config is not None and not isinstance(config, CriticRMConfig):
            raise TypeError(f"CriticRM: config must be a CriticRMConfig, got {type(config).__name__}")
        if tokenizer is None or not callable(getattr(tokenizer, "apply_chat_template", None)):
            raise TypeError(f"CriticRM needs the LM's tokenizer (with a chat template), got {type(tokenizer).__name__}")
        super().__init__(model, tokenizer, config or CriticRMConfig())
        c = self.config
        self.runner = JudgeRunner(model.backbone, tokenizer, JudgeConfig(
            max_new_tokens=c.max_new_tokens, num_samples=c.num_critiques, do_sample=c.num_critiques > 1,
            temperature=c.temperature, batch_size=c.batch_size, seed=c.seed))

    @property
    def causal_lm(self) -> Any:
        return self.model.backbone

    def _save(self, folder: str, state_dict: Optional[dict[str, torch.Tensor]] = None) -> dict:
        out = super()._save(folder, state_dict)
        head = self.model.head.state_dict() if state_dict is None else {
            k[len("model.head."):]: v for k, v in state_dict.items() if k.startswith("model.head.")}
        save_weights(folder, {k: v.detach() for k, v in head.items()}, HEAD_NAME)
        return {**out, "head": HEAD_NAME}

    @classmethod
    def required_files(cls, body: dict) -> list:
        head = body.get("head")
        return [*super().required_files(body), head if isinstance(head, str) and head else HEAD_NAME]

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device, **kwargs: Any) -> "CriticRM":
        config = config_from_dict(CriticRMConfig, body.get("config", {}), cls.model_type)
        with quiet_transformers():  # no weight-loading progress bars on stderr (mmreward checks the weights)
            lm, tokenizer = load_causal_lm(os.path.join(folder, LM_FOLDER))
        head = load_weights(folder, "cpu", HEAD_NAME)
        model = ScalarHeadLM.with_head(lm, head, folder)
        kinds = {t.dtype for t in head.values() if t.is_floating_point()}
        if len(kinds) == 1:  # the head as saved (a bf16 save loads as bf16), as the LM loads as saved
            model.head.to(kinds.pop())
        return cls(model, tokenizer, config, **kwargs)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """(B,) the reward head on last-token hidden states (B, H), computed in the head's dtype: the LM
        and the head may differ (an LM cast to bf16 under a float32 head, a mixed-dtype save)."""
        head = self.model.head
        return head(h.to(head.weight.dtype)).squeeze(-1)

    def batch(self, prompts: Sequence[Any], responses: Sequence[Any], critiques: Sequence[str]) -> dict:
        """(x, y, request) → critique SFT batch; the reward is read after the critique's eos."""
        _check_rows("CriticRM.batch", prompts, responses, critiques)
        msgs = [critique_messages(p, r, self.config.request, f"row {i}") for i, (p, r) in enumerate(zip(prompts, responses))]
        return sft_batch(self.tokenizer, msgs, list(critiques))

    def loss(self, chosen: dict, rejected: dict, step: int, total_steps: int,
             module: Optional[torch.nn.Module] = None) -> tuple[torch.Tensor, dict]:
        """``λ(t)·LM(critiques) + (1 − λ(t))·BT(r_chosen, r_rejected)`` in one forward over both batches,
        run through ``module`` (default ``self.model``; the Trainer passes its DDP wrapper)."""
        c = self.config
        lam = critique_weight(step, total_steps, c.lam_start, c.lam_end)
        n = chosen["input_ids"].shape[0]
        if rejected["input_ids"].shape[0] != n:
            raise ValueError("CriticRM.loss: chosen and rejected batches differ in size")
        both = concat_batches(chosen, rejected, pad_id=self.tokenizer.pad_token_id or 0)
        dev = next(self.model.parameters()).device
        both = {k: v.to(dev) for k, v in both.items()}
        fwd = self.model if module is None else module
        h, logits = fwd(both["input_ids"], both["attention_mask"], return_hidden=True)  # (2B, H), (2B, T, V)
        logits, tgt = logits[:, :-1].float(), both["labels"][:, 1:]  # (2B, T-1, V), (2B, T-1)
        lm = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=IGNORE)
        w = self.model.head.weight
        h = h.to(w.dtype)  # an LM in another dtype than its head (bf16 under a float32 head)
        bt, acc = reward_head_pairwise_loss_and_accuracy(h[:n], h[n:], w, self.model.head.bias)
        loss = lam * lm + (1 - lam) * bt
        return loss, {"lambda": lam, "loss_critique": float(lm.detach()), "loss_bt": float(bt.detach()),
                      "accuracy": float(acc)}

    @torch.no_grad()
    def reward(self, prompts: Sequence[Any], responses: Sequence[Any], critiques: Sequence[str],
               batch_size: Optional[int] = None) -> torch.Tensor:
        """(N,) the reward head after the given critiques, ``batch_size`` rows per forward."""
        _check_rows("CriticRM.reward", prompts, responses, critiques)
        bs = self.config.batch_size if batch_size is None else check_batch_size(batch_size)
        with eval_while_scoring(self.model):  # threads share one eval period; submodule modes kept
            dev = next(self.model.parameters()).device
            out = []
            for s in range(0, len(prompts), bs):
                b = self.batch(prompts[s:s + bs], responses[s:s + bs], critiques[s:s + bs])
                h, _ = self.model.hidden(b["input_ids"].to(dev), b["attention_mask"].to(dev))  # (b, H)
                out.append(self._head(h).float().cpu())  # (b,)
            return torch.cat(out)

    def _score(self, items: list, batch_size: int) -> torch.Tensor:
        """A greedy critique of each response, then the reward head after it."""
        prompts, responses = [it.prompt for it in items], [it.response for it in items]
        greedy = JudgeRunner(self.model.backbone, self.tokenizer, JudgeConfig(
            max_new_tokens=self.config.max_new_tokens, batch_size=batch_size))
        msgs = [critique_messages(p, r, self.config.request, f"input {i}") for i, (p, r) in enumerate(zip(prompts, responses))]
        critiques = [t[0] for t in greedy.generate(msgs)]
        return self.reward(prompts, responses, critiques, batch_size)

    def judge(self, prompts: Sequence[Any], first: Sequence[Any], second: Sequence[Any]) -> torch.Tensor:
        """Pairwise view: P(first ≻ second) = 1 / ½ / 0 from the two rewards."""
        return judge_from_scores(self._score_texts)(prompts, first, second)


# ------------------------------------------------------------------ data + training with the core Trainer
CRITIQUE_KEYS = ("prompt", "chosen", "rejected", "critique_chosen", "critique_rejected")


def build_critique_rows(crm: CriticRM, pairs: Sequence[dict]) -> tuple[list[dict], dict]:
    """Steps 1–2 over ``{"prompt", "chosen", "rejected"}`` pairs: sample ``num_critiques`` critiques of
    each response, keep the consistent ones, and pair the kept chosen / rejected critiques cyclically
    (every kept critique is used once). Returns the training rows (:data:`CRITIQUE_KEYS`) and counts."""
    for i, r in enumerate(pairs):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("prompt", "chosen", "rejected")):
            raise ValueError(f"build_critique_rows: pair {i} needs str 'prompt', 'chosen' and 'rejected'")
    if not pairs:
        raise ValueError("build_critique_rows: no pairs")
    p = [r["prompt"] for r in pairs]
    crit_c = sample_critiques(crm.runner, p, [r["chosen"] for r in pairs], crm.config.request)
    crit_r = sample_critiques(crm.runner, p, [r["rejected"] for r in pairs], crm.config.request)
    rows, parsed, dropped = [], 0, 0
    for pair, cc, cr in zip(pairs, crit_c, crit_r):
        parsed += sum(s is not None for _, s in cc + cr)
        kc, kr = consistency_filter([s for _, s in cc], [s for _, s in cr])
        if not kc:
            dropped += 1
            continue
        for j in range(max(len(kc), len(kr))):
            rows.append({**{k: pair[k] for k in ("prompt", "chosen", "rejected")},
                         "critique_chosen": cc[kc[j % len(kc)]][0], "critique_rejected": cr[kr[j % len(kr)]][0]})
    k = crm.config.num_critiques
    return rows, {"pairs": len(pairs), "pairs_dropped": dropped, "rows": len(rows),
                  "parse_rate": parsed / (2 * k * len(pairs))}


def _critique_rows(rows: Sequence[Any], what: str) -> list[dict]:
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in CRITIQUE_KEYS):
            raise ValueError(f"{what} row {i}: needs str {', '.join(repr(k) for k in CRITIQUE_KEYS)}")
    if not rows:
        raise ValueError(f"{what}: no rows")
    return list(rows)


def _pair_batches(crm: CriticRM, rows: Sequence[dict]) -> dict:
    p = [r["prompt"] for r in rows]
    return {"chosen": crm.batch(p, [r["chosen"] for r in rows], [r["critique_chosen"] for r in rows]),
            "rejected": crm.batch(p, [r["rejected"] for r in rows], [r["critique_rejected"] for r in rows])}


def evaluate_critic_rm(crm: CriticRM, rows: Sequence[dict], lam: Optional[float] = None) -> dict:
    """Held-out joint loss (at ``lam``, default ``lam_end``), critique LM loss, BT loss and pair accuracy."""
    rows = _critique_rows(rows, "evaluate_critic_rm")
    c = crm.config
    b = _pair_batches(crm, rows)
    with torch.no_grad(), eval_while_scoring(crm.model):  # only the two components are used: the joint loss is
        _, m = crm.loss(b["chosen"], b["rejected"], step=0, total_steps=1)  # recombined at `lam` below
    lam = c.lam_end if lam is None else lam
    joint = lam * m["loss_critique"] + (1 - lam) * m["loss_bt"]
    return {"loss": joint, "loss_critique": m["loss_critique"], "loss_bt": m["loss_bt"], "accuracy": m["accuracy"]}


def train_critic_rm(crm: CriticRM, rows: Sequence[dict], config: Any,
                    eval_rows: Optional[Sequence[dict]] = None) -> list[dict]:
    """Step 3 with :class:`mmreward.core.trainer.Trainer` (``config``: its ``TrainConfig``) on rows of
    :data:`CRITIQUE_KEYS`; λ(t) runs from ``lam_start`` to ``lam_end`` over ``config.max_steps`` optimizer
    steps. Returns the Trainer's history (``eval_*`` from :func:`evaluate_critic_rm`)."""
    rows = _critique_rows(rows, "train_critic_rm")
    eval_rows = _critique_rows(eval_rows, "train_critic_rm eval") if eval_rows else None
    trainer: list = []  # filled below: loss_fn reads the optimizer step the Trainer is on

    def loss_fn(module: torch.nn.Module, batch: dict):
        return crm.loss(batch["chosen"], batch["rejected"], step=trainer[0].step, total_steps=config.max_steps,
                        module=module)

    eval_fn = (lambda _m: evaluate_critic_rm(crm, eval_rows)) if eval_rows else None
    c = crm.config
    settings = {"method": "critic_rm", "request": c.request, "lam_start": c.lam_start, "lam_end": c.lam_end}
    trainer.append(judge_trainer(crm.model, config, rows, lambda b: _pair_batches(crm, b), loss_fn, eval_fn, settings))
    return trainer[0].fit()
