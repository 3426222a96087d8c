"""DeepSeek-GRM / SPCT (Liu et al., 2025, "Inference-Time Scaling for Generalist Reward Modeling").

* pointwise generative RM: the judge writes principles, critiques each response against them and ends
  with integer scores 1–10, one per response (``Final Scores: \\boxed{s_1, …, s_n}``);
* voting@k: k sampled judgements, the scores of the valid ones are summed per response;
* meta-RM: a scalar classifier on (query, responses, judgement) trained with BCE on whether that
  judgement's verdict was right; at inference only the top-k_meta judgements by meta score vote;
* the SPCT rule reward for RL: +1 when the scores single out the ground-truth best response
  (n ≥ 2: the best one's score is strictly above all others; n = 1: the score equals the label), else −1;
* ``score([TextPair(prompt, response), ...])`` judges each response alone: the mean of its valid
  sampled scores (0 — below the 1–10 scale — when no sample parses).

No prompt of the paper's own is reproduced here: DeepSeek released no code, and the prompt in the
paper's appendix exists only as PDF text (see docs/generative.md). The verdict format
(``\boxed{s_1, …, s_n}``, integers 1–10) is the paper's.
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from mmreward.core.folders import CheckpointError
from mmreward.core.inputs import TextPair
from mmreward.core.model import check_ranges, config_from_dict, eval_while_scoring, load_weights, save_weights
from mmreward.ops import step_bce_loss

from .base import (LM_FOLDER, GenerativeJudge, check_sampling, load_causal_lm, save_causal_lm, text_field,
                   text_list_lists, text_lists)
from .heads import ScalarHeadLM
from .parsing import parse_scores
from .runner import JudgeConfig, JudgeRunner, parse_metrics
from .sft import sft_batch

__all__ = ["GRMConfig", "GRMJudge", "grm_messages", "vote", "spct_rule_reward", "meta_rm_loss", "meta_rm_batch",
           "GRM_INSTRUCTIONS", "train_meta_rm", "build_meta_rm_rows",
           "evaluate_meta_rm"]

GRM_INSTRUCTIONS = (
    "You are a skilled judge. First write the principles that matter for this query, each with a weight. "
    "Then critique every response against the principles. Finally rate each response with an integer "
    "from 1 to 10 and end with: Final Scores: \\boxed{score_1, score_2, ...} (one score per response, in order)."
)


@dataclass
class GRMConfig:
    instructions: str = field(default=GRM_INSTRUCTIONS, metadata={"help": "principles + critique instructions"})
    num_samples: int = field(default=1, metadata={"help": "k sampled judgements for voting@k"})
    k_meta: int = field(default=0, metadata={"help": "keep the top k_meta judgements by meta-RM score (0: keep all)"})
    max_new_tokens: int = field(default=512, metadata={"help": "judgement length limit"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature when k > 1"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})

    def __post_init__(self) -> None:
        check_ranges(self, counts=("num_samples", "max_new_tokens", "batch_size"), naturals=("k_meta", "seed"),
                     weights=("temperature",))
        check_sampling(self, "num_samples")
        if self.k_meta > self.num_samples:
            raise ValueError(f"GRMConfig.k_meta ({self.k_meta}) keeps more judgements than num_samples "
                             f"({self.num_samples}) draws")


def grm_messages(prompt: str, responses: Sequence[str], instructions: str = GRM_INSTRUCTIONS) -> list[dict]:
    if not responses:
        raise ValueError("grm_messages: no responses")
    body = "\n\n".join(f"[Response {i + 1}]\n{r}\n[End of Response {i + 1}]" for i, r in enumerate(responses))
    return [{"role": "system", "content": instructions}, {"role": "user", "content": f"[Query]\n{prompt}\n\n{body}"}]


def vote(score_lists: Sequence[Optional[Sequence[int]]], n: int, keep: Optional[Sequence[bool]] = None) -> torch.Tensor:
    """voting@k: (n,) sum of the valid score lists (``None`` = no verdict, ``keep`` = meta-RM filter).
    All-invalid gives zeros (every response tied)."""
    total = torch.zeros(n, dtype=torch.float64)
    for i, s in enumerate(score_lists):
        if s is None or (keep is not None and not keep[i]):
            continue
        if len(s) != n:
            raise ValueError(f"score list {i} has {len(s)} scores for {n} responses")
        total += torch.tensor([float(x) for x in s], dtype=torch.float64)
    return total


def spct_rule_reward(scores: Optional[Sequence[float]], best: Optional[int] = None,
                     label_score: Optional[float] = None) -> float:
    """SPCT's rule reward. n ≥ 2: +1 iff ``scores[best]`` is strictly the highest; n = 1: +1 iff the
    score equals ``label_score``. Unparsed (``None``) → −1."""
    if scores is None:
        return -1.0
    n = len(scores)
    if n == 0:
        raise ValueError("spct_rule_reward: empty scores")
    if n == 1:
        if label_score is None:
            raise ValueError("spct_rule_reward: a single response needs label_score")
        return 1.0 if float(scores[0]) == float(label_score) else -1.0
    if isinstance(best, bool) or not isinstance(best, numbers.Integral) or not 0 <= best < n:  # True: response 1
        raise ValueError(f"spct_rule_reward: best must index one of the {n} responses, got {best!r}")
    return 1.0 if all(scores[best] > s for j, s in enumerate(scores) if j != best) else -1.0


META_RM_HEAD = "meta_rm_head.safetensors"


class GRMJudge(GenerativeJudge):
    """Pointwise GRM with voting@k and an optional meta-RM filter (``meta_rm``: a ScalarHeadLM, saved
    with the judge: its head as ``meta_rm_head.safetensors``, its backbone as ``meta_rm/`` unless it
    is the judge's own LM)."""

    model_type = "grm"
    config_class = GRMConfig
    input_types = (TextPair,)

    def __init__(self, model: Any, tokenizer: Any, config: Optional[GRMConfig] = None,
                 meta_rm: Optional[ScalarHeadLM] = None):
        super().__init__(model, tokenizer, config or GRMConfig())
        c = self.config
        if c.k_meta < 0 or c.k_meta > c.num_samples:
            raise ValueError(f"k_meta must be in [0, num_samples={c.num_samples}], got {c.k_meta}")
        if c.k_meta and meta_rm is None:
            raise ValueError("k_meta > 0 needs a meta_rm")
        self.meta_rm = meta_rm
        self.runner = JudgeRunner(model, tokenizer, JudgeConfig(
            max_new_tokens=c.max_new_tokens, num_samples=c.num_samples, do_sample=c.num_samples > 1,
            temperature=c.temperature, batch_size=c.batch_size, seed=c.seed))
        self.last_results: list = []
        self.last_kept: list = []

    def _save(self, folder: str, state_dict: Optional[dict[str, torch.Tensor]] = None) -> dict:
        out = super()._save(folder, state_dict)
        if self.meta_rm is not None:
            shared = self.meta_rm.backbone is self.model
            if not shared:
                save_causal_lm(self.meta_rm.backbone, self.tokenizer, os.path.join(folder, "meta_rm"))
            save_weights(folder, {k: v.detach() for k, v in self.meta_rm.head.state_dict().items()}, META_RM_HEAD)
            out["meta_rm"] = {"backbone": LM_FOLDER if shared else "meta_rm", "head": META_RM_HEAD}
        return out

    @classmethod
    def required_files(cls, body: dict) -> list:
        """The judge's LM and, with a meta-RM, its head and (when not shared) its backbone."""
        files = super().required_files(body)
        info = body.get("meta_rm")
        if isinstance(info, dict):
            files.append(META_RM_HEAD)
            if info.get("backbone") == "meta_rm":
                files += super().required_files({"lm": "meta_rm"})
        return files

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device, **kwargs: Any) -> "GRMJudge":
        from mmreward.core.weights import quiet_transformers

        config = config_from_dict(GRMConfig, body.get("config", {}), cls.model_type)
        with quiet_transformers():
            model, tokenizer = load_causal_lm(os.path.join(folder, LM_FOLDER))
        meta = None
        info = body.get("meta_rm")
        if info is not None:
            if not isinstance(info, dict) or info.get("backbone") not in (LM_FOLDER, "meta_rm") or info.get("head") != META_RM_HEAD:
                raise CheckpointError(f"{folder}/config.json: 'meta_rm' must be {{'backbone': 'lm' | 'meta_rm', "
                                      f"'head': '{META_RM_HEAD}'}}, got {info!r}")
            backbone = model if info["backbone"] == LM_FOLDER else load_causal_lm(os.path.join(folder, "meta_rm"))[0]
            meta = ScalarHeadLM.with_head(backbone, load_weights(folder, "cpu", META_RM_HEAD), folder)
        return cls(model, tokenizer, config, meta_rm=meta, **kwargs)

    def judge_lists(self, prompts: Sequence[str], responses: Sequence[Sequence[str]],
                    batch_size: Optional[int] = None) -> list[torch.Tensor]:
        """Per query, the (n,) voted scores of its responses. ``last_kept[i][j]``: whether sample j of query i
        counted (it parsed and, with a meta-RM, was among the top ``k_meta``)."""
        prompts, responses = text_list_lists("GRMJudge", prompts, responses)
        msgs = [grm_messages(p, rs, self.config.instructions) for p, rs in zip(prompts, responses)]
        res: list = [None] * len(msgs)
        for n in sorted({len(rs) for rs in responses}):  # one batched run per response count n
            idx = [i for i, rs in enumerate(responses) if len(rs) == n]
            with self.runner.numbered(idx):  # errors name the queries, not their places in this run
                runs = self.runner.run([msgs[i] for i in idx], lambda t, n=n: parse_scores(t, n), batch_size)
            for i, row in zip(idx, runs):
                for r in row:
                    r.row = i
                res[i] = row
        self.last_results = res
        out, kept = [], []
        for m, rs, row in zip(msgs, responses, res):
            keep = None
            if self.config.k_meta:
                keep = self._meta_keep(m, [r.text for r in row], [r.ok for r in row])
            # float32, as every judge's output (vote sums in float64; integer sums are exact in float32)
            out.append(vote([r.value if r.ok else None for r in row], len(rs), keep).float())
            kept.append([r.ok and (keep is None or keep[j]) for j, r in enumerate(row)])
        self.last_kept = kept
        return out

    @torch.no_grad()
    def _meta_keep(self, messages: list[dict], texts: list[str], valid: Optional[list[bool]] = None) -> list[bool]:
        """The top ``k_meta`` judgements by meta-RM score among the ``valid`` (parsed) ones: an unparsed
        judgement has no scores to vote with, so it must not take one of the k_meta places from a parsed one
        (with ``k_meta=1`` that would leave the query with no vote although parsed samples exist)."""
        valid = [True] * len(texts) if valid is None else valid
        idx = [i for i, ok in enumerate(valid) if ok]
        if not idx:
            return [False] * len(texts)
        batch = meta_rm_batch(self.tokenizer, [messages] * len(idx), [texts[i] for i in idx])
        dev = next(self.meta_rm.parameters()).device
        s = self.meta_rm(batch["input_ids"].to(dev), batch["attention_mask"].to(dev))  # (len(idx),)
        if torch.isnan(s).any():
            raise ValueError("the meta-RM scored a judgement NaN: it cannot rank the samples (check its weights)")
        top = {idx[j] for j in torch.topk(s, min(self.config.k_meta, len(idx))).indices.tolist()}
        return [i in top for i in range(len(texts))]

    def judge(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> torch.Tensor:
        """Pairwise view: P(first ≻ second) = 1 / ½ / 0 from the voted scores (½ on ties or no verdict)."""
        prompts, first, second = text_lists("GRMJudge.judge", prompts=prompts, first=first, second=second)
        v = self.judge_lists(prompts, [[a, b] for a, b in zip(first, second)])
        return torch.tensor([1.0 if s[0] > s[1] else 0.0 if s[0] < s[1] else 0.5 for s in v], dtype=torch.float32)

    def _score(self, items: list, batch_size: int) -> torch.Tensor:
        """Each response judged alone: the mean score of the samples that voted (parsed and, with a meta-RM,
        kept); 0 if none."""
        prompts = [text_field(it.prompt, f"input {i}: field 'prompt'") for i, it in enumerate(items)]
        responses = [[text_field(it.response, f"input {i}: field 'response'")] for i, it in enumerate(items)]
        v = self.judge_lists(prompts, responses, batch_size)
        # the vote sums only the kept samples, so it is divided by their count, not by every parsed one
        n_ok = torch.tensor([max(1, sum(row)) for row in self.last_kept], dtype=torch.float64)
        return (torch.stack([x[0] for x in v]).double() / n_ok).float()

    def metrics(self) -> dict:
        return parse_metrics(self.last_results)


def meta_rm_batch(tokenizer: Any, messages: Sequence[list[dict]], judgements: Sequence[str], **kw) -> dict:
    """Right-padded (query + responses, judgement) sequences for the meta-RM (labels unused)."""
    return sft_batch(tokenizer, messages, list(judgements), add_eos=True, **kw)


def meta_rm_loss(meta: ScalarHeadLM, batch: dict, correct: torch.Tensor,
                 module: Optional[torch.nn.Module] = None) -> tuple[torch.Tensor, dict]:
    """BCE of the meta-RM's logit against ``correct`` (B,) in [0, 1] (1: the judgement's verdict was right),
    through the fused ``step_bce_loss`` on the last-token hidden states with the head's row. The forward
    runs through ``module`` (default ``meta``; the Trainer passes its DDP wrapper so gradients sync)."""
    dev = next(meta.parameters()).device
    fwd = meta if module is None else module
    h, _ = fwd(batch["input_ids"].to(dev), batch["attention_mask"].to(dev), return_hidden=True)  # (B, H)
    y = correct.to(device=dev, dtype=torch.float32)
    if y.shape != (h.shape[0],):
        raise ValueError(f"correct must have shape ({h.shape[0]},), got {tuple(y.shape)}")
    w_bad = torch.zeros_like(meta.head.weight[0])  # one-logit head: p = σ(h·w + b)
    loss = step_bce_loss(h, meta.head.weight[0], w_bad, y, b_good=meta.head.bias[0],
                         step_mask=torch.ones(h.shape[0], dtype=torch.bool, device=dev))
    with torch.no_grad():
        acc = ((meta.head(h).squeeze(-1) > 0).float() == (y > 0.5).float()).float().mean()
    return loss, {"accuracy": float(acc)}


def build_meta_rm_rows(judge: GRMJudge, pairs: Sequence[dict]) -> tuple[list[dict], dict]:
    """Meta-RM training rows from ``{"prompt", "chosen", "rejected"}`` pairs: ``judge`` samples its
    ``num_samples`` judgements of each pair, and each judgement becomes ``{"messages", "judgement",
    "correct"}`` with correct = 1 iff its scores put the chosen response strictly above the rejected one
    (unparsable or tied: 0). The chosen response is shown first in even pairs and second in odd ones, so
    the label is not the position. Returns the rows and counts (pairs, rows, parse rate, correct rate)."""
    for i, r in enumerate(pairs):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("prompt", "chosen", "rejected")):
            raise ValueError(f"build_meta_rm_rows: pair {i} needs str 'prompt', 'chosen' and 'rejected'")
    if not pairs:
        raise ValueError("build_meta_rm_rows: no pairs")
    shown = [[r["chosen"], r["rejected"]] if i % 2 == 0 else [r["rejected"], r["chosen"]] for i, r in enumerate(pairs)]
    judge.judge_lists([r["prompt"] for r in pairs], shown)
    rows = []
    for i, (r, resp, samples) in enumerate(zip(pairs, shown, judge.last_results)):
        messages = grm_messages(r["prompt"], resp, judge.config.instructions)
        c = i % 2  # index of the chosen response in `resp`
        for s in samples:
            right = s.ok and s.value[c] > s.value[1 - c]
            rows.append({"messages": messages, "judgement": s.text, "correct": float(right)})
    flat = [s for row in judge.last_results for s in row]
    counts = {"pairs": len(pairs), "rows": len(rows), "parse_rate": sum(s.ok for s in flat) / len(flat),
              "correct_rate": sum(r["correct"] for r in rows) / len(rows)}
    return rows, counts


def train_meta_rm(meta: ScalarHeadLM, tokenizer: Any, rows: Sequence[dict], config: Any,
                  eval_rows: Optional[Sequence[dict]] = None) -> list[dict]:
    """Train the meta-RM with :class:`mmreward.core.trainer.Trainer` (``config``: its ``TrainConfig``) on
    rows ``{"messages": the judge's input (chat), "judgement": its output, "correct": 0 … 1}``. Returns
    the Trainer's history (``eval_loss`` / ``eval_accuracy`` with ``eval_rows``)."""
    from mmreward.core.trainer import Trainer

    def check(rs: Sequence[Any], what: str) -> list[dict]:
        for i, r in enumerate(rs):
            ok = isinstance(r, dict) and isinstance(r.get("messages"), list) and isinstance(r.get("judgement"), str)
            if not ok or not isinstance(r.get("correct"), (int, float)) or not 0.0 <= float(r["correct"]) <= 1.0:
                raise ValueError(f"{what} row {i}: needs 'messages' (list), 'judgement' (str), 'correct' in [0, 1]")
        if not rs:
            raise ValueError(f"{what}: no rows")
        return list(rs)

    rows = check(rows, "train_meta_rm")
    eval_rows = check(eval_rows, "train_meta_rm eval") if eval_rows else None

    def collate(batch: Sequence[dict]) -> dict:
        return {"batch": meta_rm_batch(tokenizer, [r["messages"] for r in batch], [r["judgement"] for r in batch]),
                "correct": torch.tensor([float(r["correct"]) for r in batch])}

    def loss_fn(module: torch.nn.Module, b: dict):
        return meta_rm_loss(meta, b["batch"], b["correct"], module=module)

    return Trainer(meta, config, rows, collate, loss_fn,
                   eval_fn=(lambda _m: evaluate_meta_rm(meta, tokenizer, eval_rows)) if eval_rows else None).fit()


def evaluate_meta_rm(meta: ScalarHeadLM, tokenizer: Any, rows: Sequence[dict]) -> dict:
    """Held-out BCE and accuracy of the meta-RM on ``{"messages", "judgement", "correct"}`` rows (one batch)."""
    with torch.no_grad(), eval_while_scoring(meta):
        b = meta_rm_batch(tokenizer, [r["messages"] for r in rows], [r["judgement"] for r in rows])
        loss, m = meta_rm_loss(meta, b, torch.tensor([float(r["correct"]) for r in rows]))
    return {"loss": float(loss), "accuracy": m["accuracy"]}
