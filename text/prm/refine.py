"""PRM rewards for RL (PPO / GRPO), refined against reward hacking (Gao et al. 2024, "On Designing
Effective RL Reward at Training Time for LLM Reasoning").

Raw PRM step rewards invite the policy to pad solutions with many "good-looking" steps. The two
refinements bound what a trajectory can collect:

* **Clip** (``clip=η``): ``r̃_k = min(r_k − η, 0)`` — every step costs, at best nothing;
* **Delta** (``delta=True``): ``r̃_k = r_k − r_{k+1}`` (last step keeps ``r_K``) — the return
  telescopes to ``r_1``, so adding steps cannot raise it.

Both go through :func:`mmreward.ops.refine_process_rewards`, which also returns the discounted
returns-to-go ``G_k``. An optional outcome reward (e.g. answer correctness) is added to the last
step before refinement-free return accumulation, as the paper combines them.

    reward_fn = ProcessRewardFunction(prm, clip=0.5)
    out = reward_fn(problem, steps)        # {"step_rewards": Tensor[K], "returns": Tensor[K], "reward": float}
    rewards = reward_fn.batch(problems, step_lists)   # GRPO: one scalar per trajectory
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from mmreward.core.inputs import StepSolution
from mmreward.ops import refine_process_rewards

__all__ = ["RefineConfig", "ProcessRewardFunction"]


@dataclass
class RefineConfig:
    clip: Optional[float] = field(default=None, metadata={"help": "Clip refinement: r̃ = min(r − η, 0) (None: off)"})
    delta: bool = field(default=False, metadata={"help": "Delta refinement: r̃_k = r_k − r_{k+1}, last step keeps r_K"})
    gamma: float = field(default=1.0, metadata={"help": "discount of the returns-to-go"})
    outcome_weight: float = field(default=0.0, metadata={"help": "weight of the outcome reward added at the last step"})

    def __post_init__(self):
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if self.clip is not None and (isinstance(self.clip, bool) or not isinstance(self.clip, (int, float))
                                      or not math.isfinite(self.clip)):
            raise ValueError(f"clip must be None or a finite number (η), got {self.clip!r}")
        if not isinstance(self.delta, bool):  # "yes" / 1 passed here and failed only at the first reward call
            raise ValueError(f"delta must be True or False, got {self.delta!r}")
        w = self.outcome_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"outcome_weight must be a finite number, got {w!r}")


class ProcessRewardFunction:
    """Per-trajectory reward function for PPO / GRPO trainers.

    ``prm``: a ProcessRewardModel (anything with ``score_parts``) or a callable returning per-step
    scores ``Tensor[K]`` for ``(problem, steps)``. ``outcome_fn(problem, steps)``
    (optional) returns a float outcome reward."""

    def __init__(self, prm, config: Optional[RefineConfig] = None, outcome_fn: Optional[Callable] = None, **kw):
        # checked here: it failed at the first reward call ("'int' object is not callable")
        if not hasattr(prm, "score_parts") and not callable(prm):
            raise TypeError(f"ProcessRewardFunction: prm must be a ProcessRewardModel (score_parts) or a callable "
                            f"(problem, steps) -> step scores, got {type(prm).__name__}")
        self.prm = prm
        if config is not None and kw:  # the keywords would be dropped silently in favour of `config`
            raise TypeError(f"ProcessRewardFunction: give either config or its fields as keywords, not both "
                            f"(got config and {sorted(kw)})")
        self.config = config or RefineConfig(**kw)
        self.outcome_fn = outcome_fn
        if self.config.outcome_weight and outcome_fn is None:
            raise ValueError("outcome_weight > 0 needs an outcome_fn")

    def _scores(self, problems: Sequence[str], steps: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        if hasattr(self.prm, "score_parts"):
            return self.prm.score_parts([StepSolution(p, list(s)) for p, s in zip(problems, steps)])
        out = []
        for i, (p, s) in enumerate(zip(problems, steps)):
            raw = self.prm(p, list(s))
            try:
                if isinstance(raw, (str, bytes)):
                    raise TypeError
                r = torch.as_tensor(raw, dtype=torch.float32).reshape(-1)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"trajectory {i}: the PRM returned {raw!r} ({type(raw).__name__}); it must return one "
                                f"number per step (a list or tensor of {len(s)} scores)") from None
            if r.numel() != len(s):
                raise ValueError(f"trajectory {i}: the PRM returned {r.numel()} scores for {len(s)} steps")
            out.append(r)
        return out

    def batch(self, problems: Sequence[str], steps: Sequence[Sequence[str]]) -> list[dict]:
        """One ``{"step_rewards", "returns", "reward"}`` per trajectory; ``reward`` = ``G_0`` (the
        whole trajectory's refined return, what GRPO normalises within a group)."""
        if isinstance(problems, str) or isinstance(steps, str):
            raise TypeError("ProcessRewardFunction.batch: problems and steps must be lists (one entry per trajectory), "
                            "not a string")
        if len(problems) != len(steps):
            raise ValueError(f"{len(problems)} problems but {len(steps)} trajectories")
        if not len(steps):  # as the scorers' score([]): one clear error (torch.cat of no scores failed obscurely)
            raise ValueError("ProcessRewardFunction got no trajectories")
        for i, s in enumerate(steps):
            if isinstance(s, (str, bytes, dict)) or not hasattr(s, "__len__") or not hasattr(s, "__iter__"):
                # a string would be scored one character per step
                raise TypeError(f"trajectory {i}: steps must be a list of strings, got {type(s).__name__}")
            if not s:
                raise ValueError(f"trajectory {i} has no steps")
            for k, x in enumerate(s):
                if not isinstance(x, str):
                    raise TypeError(f"trajectory {i}: step {k} must be a str, got {type(x).__name__}")
        scores = self._scores(problems, steps)
        for i, r in enumerate(scores):
            bad = ~torch.isfinite(r)
            if bool(bad.any()):  # a PRM's NaN: a step past its max_length (truncate=True) has no score
                k = int(bad.nonzero()[0])
                raise ValueError(f"trajectory {i}: step {k} has no finite score ({float(r[k])}); a reward needs "
                                 "every step scored (a PRM leaves the steps past max_length NaN with truncate=True)")
        lengths = torch.tensor([s.numel() for s in scores])
        cfg = self.config
        refined, returns = refine_process_rewards(torch.cat(scores).float(), lengths, clip=cfg.clip, delta=cfg.delta,
                                                  gamma=cfg.gamma)
        out = []
        for i, (r, g) in enumerate(zip(refined.split(lengths.tolist()), returns.split(lengths.tolist()))):
            r, g = r.clone(), g.clone()
            if cfg.outcome_weight:
                raw = self.outcome_fn(problems[i], list(steps[i]))
                try:
                    value = float(raw)
                except (TypeError, ValueError):
                    value = float("nan")
                if isinstance(raw, (str, bytes)) or not math.isfinite(value):  # True / False: 1 / 0
                    raise ValueError(f"trajectory {i}: outcome_fn returned {raw!r}; it must return a finite number")
                o = cfg.outcome_weight * value
                r[-1] += o
                K = r.numel()  # the outcome reaches step k discounted by γ^(K−1−k)
                g += o * cfg.gamma ** torch.arange(K - 1, -1, -1, dtype=g.dtype)
            out.append({"step_rewards": r, "returns": g, "reward": float(g[0])})
        return out

    def __call__(self, problem: str, steps: Sequence[str]) -> dict:
        return self.batch([problem], [steps])[0]

    def rewards(self, problems: Sequence[str], steps: Sequence[Sequence[str]]) -> torch.Tensor:
        """``Tensor[N]`` of trajectory rewards (GRPO's per-sample scalar)."""
        return torch.tensor([d["reward"] for d in self.batch(problems, steps)], dtype=torch.float32)
