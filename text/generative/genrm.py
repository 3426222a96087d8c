"""GenRM (Zhang et al., 2024, "Generative Verifiers: Reward Modeling as Next-Token Prediction").

* direct verifier: reward = P("Yes" | x, y, "Is the answer correct (Yes/No)?"), read from the
  next-token distribution renormalised over {Yes, No} — ``score([TextPair(x, y), ...])``;
* GenRM-CoT: sample K verification rationales, append the question after each, reward = mean
  P(Yes) over the K rationales; the majority vote of the K verdicts is returned too;
* training: ``L = SFT(verification data) + λ · SFT(correct solutions)`` (:func:`genrm_loss`), run by the
  shared core Trainer in :func:`train_genrm` (snapshots, exact resume, CSV / TensorBoard, curves).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from mmreward.core.inputs import TextPair
from mmreward.core.model import check_ranges

from .base import GenerativeJudge, chat_turns, judge_trainer, text_pairs
from .parsing import parse_yes_no
from .position import judge_from_scores
from .runner import JudgeConfig, JudgeRunner
from .sft import concat_batches, lm_loss, sft_batch

__all__ = ["GenRMConfig", "GenRM", "genrm_loss", "calibration", "train_genrm", "evaluate_genrm"]


@dataclass
class GenRMConfig:
    question: str = field(default="Is the answer correct (Yes/No)?", metadata={"help": "verification question after x, y"})
    yes: str = field(default="Yes", metadata={"help": "positive verdict token"})
    no: str = field(default="No", metadata={"help": "negative verdict token"})
    cot_instruction: str = field(default="Let's verify step by step.", metadata={"help": "CoT: asks for a rationale first"})
    num_rationales: int = field(default=4, metadata={"help": "K sampled rationales for GenRM-CoT"})
    max_new_tokens: int = field(default=128, metadata={"help": "rationale length limit"})
    temperature: float = field(default=0.7, metadata={"help": "rationale sampling temperature"})
    lam: float = field(default=1.0, metadata={"help": "λ: weight of the SFT loss on correct solutions"})
    batch_size: int = field(default=8, metadata={"help": "prompts per forward / generate call"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})

    def __post_init__(self) -> None:
        check_ranges(self, counts=("num_rationales", "max_new_tokens", "batch_size"), naturals=("seed",),
                     weights=("temperature", "lam"))
        for name in ("yes", "no"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"GenRMConfig.{name} must be a non-empty verdict word, got {value!r}")
        if self.yes.strip() == self.no.strip():  # P(yes) / (P(yes) + P(no)) would be 0.5 for every input
            raise ValueError(f"GenRMConfig: yes and no must be different words, got {self.yes!r} for both")


class GenRM(GenerativeJudge):
    """A generative verifier over a causal LM with a chat template; ``score`` on :class:`TextPair`
    inputs is the direct verifier's P(Yes)."""

    model_type = "genrm"
    config_class = GenRMConfig
    input_types = (TextPair,)

    def __init__(self, model: Any, tokenizer: Any, config: Optional[GenRMConfig] = None):
        super().__init__(model, tokenizer, config or GenRMConfig())
        self.runner = JudgeRunner(model, tokenizer, JudgeConfig(batch_size=self.config.batch_size))

    def messages(self, prompt: Any, response: Any, cot: bool = False, where: str = "input") -> list[dict]:
        # x and y as a user / assistant exchange, then the question: the verdict is read right where the
        # model's own solution knowledge lives (GenRM unifies generation and verification)
        q = self.config.cot_instruction if cot else self.config.question
        return chat_turns(prompt, response, where) + [{"role": "user", "content": q}]

    def _score(self, items: list, batch_size: int) -> torch.Tensor:
        msgs = [self.messages(it.prompt, it.response, where=f"input {i}") for i, it in enumerate(items)]
        p = self.runner.choice_probs(msgs, [self.config.yes, self.config.no], batch_size=batch_size)  # (N, 2)
        return p[:, 0].float().cpu()

    def judge(self, prompts: Sequence[Any], first: Sequence[Any], second: Sequence[Any]) -> torch.Tensor:
        """Pairwise view: P(first ≻ second) = 1 / ½ / 0 from the two rewards."""
        return judge_from_scores(self._score_texts)(prompts, first, second)

    def score_cot(self, prompts: Sequence[Any], responses: Sequence[Any], k: Optional[int] = None) -> dict:
        """GenRM-CoT: ``{"reward": (N,) mean P(Yes), "majority": (N,) bool, "p_yes": (N, K), "rationales": [N][K],
        "parse_rate": fraction of rationales that state a Yes/No themselves}``."""
        pairs = text_pairs(prompts, responses)
        if not pairs:
            raise ValueError("score_cot got no inputs")
        c = self.config
        if k is None:
            k = c.num_rationales
        elif isinstance(k, bool) or not isinstance(k, int) or k < 1:  # k=0 is not "the default"
            raise ValueError(f"score_cot: k (rationales per input) must be an integer >= 1, got {k!r}")
        if not c.temperature > 0:  # the runner's JudgeConfig refuses 0 even for k=1 (greedy): name our field
            raise ValueError(f"GenRMConfig.temperature must be > 0 for score_cot (the rationales are sampled at it), "
                             f"got {c.temperature!r}")
        gen = JudgeRunner(self.model, self.tokenizer, JudgeConfig(
            max_new_tokens=c.max_new_tokens, num_samples=k, do_sample=k > 1, temperature=c.temperature,
            batch_size=c.batch_size, seed=c.seed))
        msgs = [self.messages(x.prompt, x.response, cot=True, where=f"input {i}") for i, x in enumerate(pairs)]
        rats = gen.generate(msgs)  # [N][K]
        # after each rationale the model answers the verification question: continue the assistant turn
        follow = [gen.render(m) + f"{r}\n{c.question} " for m, rs in zip(msgs, rats) for r in rs]
        p = self.runner.choice_probs(follow, [c.yes, c.no])[:, 0].view(len(msgs), k)  # (N, K)
        stated = [parse_yes_no(r).ok for rs in rats for r in rs]
        return {"reward": p.mean(1), "majority": (p > 0.5).float().mean(1) > 0.5, "p_yes": p,
                "rationales": rats, "parse_rate": sum(stated) / len(stated)}


def genrm_loss(model: Any, verification: dict, solutions: Optional[dict] = None,
               lam: float = 1.0) -> tuple[torch.Tensor, dict]:
    """``SFT(verification) + λ·SFT(solutions)``; both are :func:`sft_batch` outputs (verification targets
    are the Yes / No verdicts, optionally preceded by a rationale; solutions are correct answers).
    Each SFT term is the mean over its rows of the per-row token-mean NLL; both go through one forward."""
    if solutions is None or not lam:
        v = lm_loss(model, verification, reduction="none")  # (Bv,)
        return v.mean(), {"loss_verify": float(v.detach().mean())}
    both = concat_batches(verification, solutions)
    nv = verification["input_ids"].shape[0]
    rows = lm_loss(model, both, reduction="none")  # (Bv + Bs,)
    v, s = rows[:nv].mean(), rows[nv:].mean()
    return v + lam * s, {"loss_verify": float(v.detach()), "loss_solution": float(s.detach())}


def verification_batch(genrm: GenRM, prompts: Sequence[Any], responses: Sequence[Any], correct: Sequence[bool]) -> dict:
    """SFT batch teaching the verdict: (x, y, question) → Yes / No."""
    c = genrm.config
    msgs = [genrm.messages(x.prompt, x.response, where=f"row {i}") for i, x in enumerate(text_pairs(prompts, responses))]
    return sft_batch(genrm.tokenizer, msgs, [c.yes if ok else c.no for ok in correct])


def calibration(p_yes: torch.Tensor, labels: torch.Tensor, bins: int = 10) -> dict:
    """Expected calibration error of P(Yes) against 0/1 labels, with the reliability bins
    (``[lo, hi, count, mean_p, frac_positive]`` for each non-empty bin) and the Brier score."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"calibration: bins must be an integer >= 1, got {bins!r}")  # 0 bins gave ECE 0
    p = p_yes.detach().double().flatten()
    y = labels.detach().double().flatten()
    if p.numel() != y.numel() or p.numel() == 0:
        raise ValueError(f"calibration: {p.numel()} probabilities vs {y.numel()} labels")
    if torch.isnan(p).any() or ((p < 0) | (p > 1)).any():
        raise ValueError("calibration: probabilities must be in [0, 1]")
    if torch.isnan(y).any() or ((y < 0) | (y > 1)).any():  # a label of 2 or NaN would skew / poison the ECE
        raise ValueError("calibration: labels must be 0 / 1 (or frequencies in [0, 1])")
    idx = (p * bins).long().clamp(max=bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        m = idx == b
        if m.any():
            conf, acc = float(p[m].mean()), float(y[m].mean())
            ece += m.sum().item() / p.numel() * abs(conf - acc)
            table.append([b / bins, (b + 1) / bins, int(m.sum()), conf, acc])
    return {"ece": ece, "brier": float(((p - y) ** 2).mean()), "bins": table}


# ------------------------------------------------------------------ training with the core Trainer
def _verification_rows(rows: Sequence[Any], what: str) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not {"prompt", "response", "correct"} <= set(r):
            raise ValueError(f"{what} row {i}: needs 'prompt', 'response' and 'correct', got "
                             f"{sorted(r) if isinstance(r, dict) else type(r).__name__}")
        if not isinstance(r["correct"], (bool, int)) or r["correct"] not in (0, 1):
            raise ValueError(f"{what} row {i}: 'correct' must be true / false, got {r['correct']!r}")
        out.append({"prompt": r["prompt"], "response": r["response"], "correct": bool(r["correct"])})
    if not out:
        raise ValueError(f"{what}: no rows")
    for i, r in enumerate(out):
        chat_turns(r["prompt"], r["response"], f"{what} row {i}")  # str or chat turns, else a TypeError naming the row
    return out


def evaluate_genrm(genrm: GenRM, rows: Sequence[dict]) -> dict:
    """Direct-verifier metrics on labelled rows: accuracy of P(Yes) > ½, ECE and Brier score."""
    rows = _verification_rows(rows, "evaluate_genrm")
    with torch.no_grad():  # score() runs in eval mode
        p = genrm.score([TextPair(r["prompt"], r["response"]) for r in rows])
    y = torch.tensor([float(r["correct"]) for r in rows])
    cal = calibration(p, y)
    return {"accuracy": float(((p > 0.5).float() == y).float().mean()), "ece": cal["ece"], "brier": cal["brier"]}


def train_genrm(genrm: GenRM, rows: Sequence[dict], config: Any, eval_rows: Optional[Sequence[dict]] = None,
                solutions: Optional[Sequence[dict]] = None, balance: bool = True) -> list[dict]:
    """Train the verifier with :class:`mmreward.core.trainer.Trainer` (``config``: its ``TrainConfig``).

    ``rows``: ``{"prompt", "response", "correct": bool}``. Each micro-batch of ``config.batch_size`` rows
    is one verification SFT batch; with ``genrm.config.lam`` > 0 it is joined by as many rows drawn
    at random from ``solutions`` (``{"prompt", "response"}``, correct answers to learn to produce;
    default: the correct rows of ``rows``). ``balance`` repeats the rarer verdict so both appear
    equally often per epoch (verification data is usually mostly wrong answers). Returns the
    Trainer's per-step history (``eval_accuracy`` / ``eval_ece`` / ``eval_brier`` with ``eval_rows``).
    The LM is trained in place; ``genrm.save_pretrained(folder)`` saves the verifier."""
    rows = _verification_rows(rows, "train_genrm")
    eval_rows = _verification_rows(eval_rows, "train_genrm eval") if eval_rows else None
    src = solutions if solutions is not None else [r for r in rows if r["correct"]]
    for i, r in enumerate(src):
        if not isinstance(r, dict) or not isinstance(r.get("prompt"), str) or not isinstance(r.get("response"), str):
            raise ValueError(f"train_genrm solutions row {i}: needs str 'prompt' and 'response'")
    sols = [{"prompt": r["prompt"], "response": r["response"]} for r in src]
    lam = genrm.config.lam
    if lam and not sols:
        raise ValueError("train_genrm: lam > 0 but there is no solution to learn (no correct row, no solutions=)")
    data = rows
    if balance:
        pos, neg = [r for r in rows if r["correct"]], [r for r in rows if not r["correct"]]
        if pos and neg:  # repeat the rarer class (whole copies, then the first rows again) up to the larger
            small, big = (pos, neg) if len(pos) < len(neg) else (neg, pos)
            data = big + (small * (len(big) // len(small)) + small[:len(big) % len(small)])

    def collate(batch: Sequence[dict]) -> dict:
        out = {"verification": verification_batch(genrm, [r["prompt"] for r in batch], [r["response"] for r in batch],
                                                  [r["correct"] for r in batch])}
        if lam:
            idx = torch.randint(0, len(sols), (len(batch),)).tolist()  # the Trainer snapshots this RNG
            out["solutions"] = sft_batch(genrm.tokenizer, [[{"role": "user", "content": sols[i]["prompt"]}] for i in idx],
                                         [sols[i]["response"] for i in idx])
        return out

    def loss_fn(module: torch.nn.Module, batch: dict):
        return genrm_loss(module, batch["verification"], batch.get("solutions"), lam=lam)

    eval_fn = (lambda _m: evaluate_genrm(genrm, eval_rows)) if eval_rows else None
    c = genrm.config
    settings = {"method": "genrm", "question": c.question, "yes": c.yes, "no": c.no, "lam": lam, "balance": balance}
    return judge_trainer(genrm.model, config, data, collate, loss_fn, eval_fn, settings).fit()
