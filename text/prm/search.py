"""PRM-guided search over reasoning steps: MCTS (rStar-Math / ReST-MCTS*) and Best-of-N.

* **policy** — any callable ``policy(problem, steps) -> next step`` (e.g.
  :class:`~mmreward.text.prm.synthetic.NoisyStepPolicy`) or :class:`HFStepPolicy` (a causal LM
  generating one step);
* **evaluator** — a :class:`~mmreward.text.prm.model.ProcessRewardModel` (anything with
  ``score_parts``: the last step's score) or any callable ``evaluator(problem, steps) -> float`` in [0, 1];
* **task** — ``is_terminal(problem, steps)`` and, for oracle rewards / self-training data,
  ``is_correct(problem, steps)``.

Values live in [−1, 1]: an evaluator score p becomes ``2p − 1``; a terminal leaf gets ±1 from the
answer checker (``terminal_reward="oracle"``, for generating training data) or the minimum of its
path's step values (``"evaluator"``, oracle-free). The budget counts generated steps (expansions and
rollouts), the unit Best-of-N is charged in too, so the two compare at equal generation cost.
"""
from __future__ import annotations

import contextlib
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from mmreward.core.checkpoint import atomic_write_text
from mmreward.core.device import seeded_sampling
from mmreward.core.inputs import StepSolution
from mmreward.core.model import check_ranges

from .labels import SearchTree, TreeNode, policy_step, ppm_pairs, rollout, tree_value_targets

__all__ = ["MCTSConfig", "MCTS", "SearchResult", "best_of_n_search", "compare_search", "HFStepPolicy", "self_training_records",
           "write_jsonl"]


@dataclass
class MCTSConfig:
    c_uct: float = field(default=2.0, metadata={"help": "UCT exploration constant (rStar-Math 2, ReST-MCTS* 0.4)"})
    expansion_width: int = field(default=3, metadata={"help": "candidate next steps generated per expansion"})
    budget_steps: int = field(default=32, metadata={"help": "total generated steps (expansions + rollouts)"})
    rollout_weight: float = field(default=0.0, metadata={"help": "α: node value = (1−α)·evaluator + α·rollout outcome (0: no rollouts)"})
    terminal_reward: str = field(default="evaluator", metadata={"help": "evaluator (oracle-free: min step value of the path) | oracle (±1 from is_correct)"})
    widen_below: Optional[float] = field(default=None, metadata={"help": "re-expand a node whose children all have Q below this (progressive widening; None: never)"})
    max_children: int = field(default=9, metadata={"help": "most children a node gets through re-expansion"})
    max_depth: int = field(default=64, metadata={"help": "a node this deep counts as terminal"})
    max_iterations: int = field(default=10000, metadata={"help": "safety cap on select/expand/backup rounds"})

    def __post_init__(self):
        # a NaN c_uct would make every UCT comparison false (an arbitrary child is walked); a float or bool
        # count would be taken as a number of steps
        for name in ("expansion_width", "budget_steps", "max_depth", "max_children", "max_iterations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an integer, got {v!r}")
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if self.expansion_width > self.max_children:  # each expansion drew min(width, max_children): capped silently
            raise ValueError(f"expansion_width={self.expansion_width} is more than max_children={self.max_children}, "
                             "the most children a node gets: raise max_children or lower expansion_width")
        check_ranges(self, weights=("c_uct",), fractions=("rollout_weight",))
        if self.widen_below is not None and (isinstance(self.widen_below, bool) or not isinstance(
                self.widen_below, (int, float)) or not math.isfinite(self.widen_below)):
            raise ValueError(f"MCTSConfig.widen_below must be None or a finite number, got {self.widen_below!r}")
        if self.terminal_reward not in ("evaluator", "oracle"):
            raise ValueError(f"terminal_reward must be 'evaluator' or 'oracle', got {self.terminal_reward!r}")


@dataclass
class SearchResult:
    steps: Optional[list[str]]  # the chosen solution (None: no complete solution within the budget)
    score: float  # its value in [-1, 1]
    generated_steps: int
    tree: Optional[SearchTree] = None
    candidates: list[tuple[list[str], float]] = field(default_factory=list)  # every complete solution seen


def _number(value: Any, problem: str) -> float:
    """A callable evaluator's score as a float: a real number (bool, numpy scalar) or a one-element tensor /
    array; anything else (None, a string, a list, a tensor of several values) is an error naming it."""
    if hasattr(value, "numel") and hasattr(value, "item"):  # torch tensor
        if value.numel() == 1 and not value.is_complex():
            return float(value.item())
    elif hasattr(value, "size") and hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalar / array
        if value.size == 1 and value.dtype.kind in "biuf":
            return float(value.item())
    elif isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"evaluator returned {value!r} ({type(value).__name__}) for problem {problem!r}; it must return "
                    "one number in [0, 1] per call")


def _step_scores(evaluator, problem: str, traces: list[list[str]]) -> list[torch.Tensor]:
    """Every step's score of every trace: a PRM scores each trace once (``score_parts``); a callable
    evaluator scores each prefix."""
    if hasattr(evaluator, "score_parts"):
        return evaluator.score_parts([StepSolution(problem, list(t)) for t in traces])
    if callable(evaluator):
        return [torch.tensor([_number(evaluator(problem, t[: k + 1]), problem) for k in range(len(t))],
                             dtype=torch.float64) for t in traces]
    raise TypeError(f"evaluator must be a ProcessRewardModel (score_parts) or a callable, got {type(evaluator).__name__}")


def _as_evaluator(evaluator) -> Callable[[str, list[list[str]]], list[float]]:
    """→ batched ``(problem, [steps, ...]) -> [score of the last step, ...]`` in [0, 1]."""
    if hasattr(evaluator, "score_parts"):
        def prm(problem: str, traces: list[list[str]]) -> list[float]:
            out = [float(s[-1]) for s in _step_scores(evaluator, problem, traces)]
            if any(v != v for v in out):  # NaN: the PRM left the new step unscored (past max_length, truncate=True)
                raise ValueError(f"the PRM left a new step of problem {problem!r} unscored (NaN: the solution so far "
                                 "is longer than its max_length); MCTS needs every step scored — raise max_length "
                                 "or lower max_depth")
            return out
        return prm
    if callable(evaluator):
        return lambda problem, traces: [_number(evaluator(problem, t), problem) for t in traces]
    raise TypeError(f"evaluator must be a ProcessRewardModel (score_parts) or a callable, got {type(evaluator).__name__}")


def _check_score(p: float, problem: str) -> float:
    if not (p == p) or p < 0.0 or p > 1.0:
        raise ValueError(f"evaluator returned {p} for problem {problem!r}; scores must be in [0, 1] (a PRM with "
                         "score='identity' gives raw values: MCTS maps P(good) to [-1, 1] and needs probabilities)")
    return 2.0 * p - 1.0


def _check_callable(**fns: Any) -> None:
    for name, fn in fns.items():
        if not callable(fn):
            raise TypeError(f"{name} must be a callable (problem, steps) -> ..., got {type(fn).__name__}")


class MCTS:
    def __init__(self, policy: Callable, evaluator, is_terminal: Callable, config: Optional[MCTSConfig] = None,
                 is_correct: Optional[Callable] = None):
        if not callable(policy):
            raise TypeError(f"policy must be callable, got {type(policy).__name__}")
        _check_callable(is_terminal=is_terminal, **({} if is_correct is None else {"is_correct": is_correct}))
        self.policy, self.evaluate, self.is_terminal = policy, _as_evaluator(evaluator), is_terminal
        self.config = config or MCTSConfig()
        self.is_correct = is_correct
        if self.config.terminal_reward == "oracle" and is_correct is None:
            raise ValueError("terminal_reward='oracle' needs is_correct")

    # -- pieces
    def _terminal(self, problem: str, steps: list[str]) -> bool:
        return len(steps) >= self.config.max_depth or bool(self.is_terminal(problem, steps))

    def _leaf_value(self, problem: str, steps: list[str], path_values: list[float]) -> float:
        if self.config.terminal_reward == "oracle":
            return 1.0 if self.is_correct(problem, steps) else -1.0
        return min(path_values)

    def _path_values(self, tree: SearchTree, node_id: int) -> list[float]:
        out = []
        while node_id > 0:
            out.append(tree.nodes[node_id].prior)
            node_id = tree.nodes[node_id].parent
        return out[::-1]

    def _select(self, tree: SearchTree, exhausted: set[int]) -> TreeNode:
        node, cfg = tree.root, self.config
        while node.children and not node.terminal:
            kids = [tree.nodes[c] for c in node.children if c not in exhausted]
            if (cfg.widen_below is not None and len(node.children) < cfg.max_children and node.id not in self._widened_out
                    and max(tree.nodes[c].q for c in node.children) < cfg.widen_below):
                return node  # every candidate so far looks wrong: draw more (progressive widening)
            log_n = math.log(node.visits + 1)
            node = max(kids, key=lambda k: k.q + self.config.c_uct * math.sqrt(log_n / (1 + k.visits)))
        return node

    def _mark_exhausted(self, tree: SearchTree, node: TreeNode, exhausted: set[int]) -> None:
        while node is not None and (node.terminal or (node.children and all(c in exhausted for c in node.children))):
            exhausted.add(node.id)
            node = tree.nodes[node.parent] if node.parent >= 0 else None

    @staticmethod
    def _backup(tree: SearchTree, node_id: int, value: float) -> None:
        while node_id >= 0:
            n = tree.nodes[node_id]
            n.visits += 1
            n.value_sum += value
            node_id = n.parent

    # -- the search
    def search(self, problem: str) -> SearchResult:
        cfg = self.config
        if bool(self.is_terminal(problem, [])):  # as best_of_n_search: nothing to search, no step to score
            raise ValueError(f"MCTS.search: is_terminal({problem!r}, []) is true, so a solution would have no steps "
                             "to search over")
        tree = SearchTree(problem)
        exhausted: set[int] = set()
        self._widened_out: set[int] = set()  # nodes whose re-expansion drew nothing new
        generated = 0
        candidates: list[tuple[list[str], float]] = []
        for _ in range(cfg.max_iterations):
            if generated >= cfg.budget_steps or 0 in exhausted:
                break
            leaf = self._select(tree, exhausted)
            if leaf.terminal:  # all of its siblings' subtrees are exhausted too: re-back it up
                self._backup(tree, leaf.id, leaf.q)
                self._mark_exhausted(tree, leaf, exhausted)
                continue
            prefix = tree.steps(leaf.id)
            new_steps: list[str] = []
            known = {tree.nodes[c].step for c in leaf.children}
            for _ in range(min(cfg.expansion_width, cfg.max_children - len(leaf.children))):
                if generated >= cfg.budget_steps:
                    break
                step = policy_step(self.policy, problem, prefix)
                generated += 1
                if step not in new_steps and step not in known:  # identical candidates add nothing
                    new_steps.append(step)
            if not new_steps:
                if leaf.children:  # widening drew only known steps: stop widening this node
                    self._widened_out.add(leaf.id)
                    continue
                break
            scores = self.evaluate(problem, [prefix + [s] for s in new_steps])
            parent_values = self._path_values(tree, leaf.id)
            for step, p in zip(new_steps, scores):
                v = _check_score(p, problem)
                steps = prefix + [step]
                terminal = self._terminal(problem, steps)
                child = tree.add(leaf.id, step, v, terminal)
                if terminal:
                    value = self._leaf_value(problem, steps, parent_values + [v])
                    candidates.append((steps, value))
                else:
                    value = v
                    if cfg.rollout_weight > 0 and generated < cfg.budget_steps:
                        value, generated = self._rollout_value(problem, steps, parent_values + [v], v, generated, candidates)
                if self.is_correct is not None and terminal:
                    child.correct = bool(self.is_correct(problem, steps))
                self._backup(tree, child.id, value)
                if terminal:
                    self._mark_exhausted(tree, child, exhausted)
        best = max(candidates, key=lambda c: c[1], default=None)
        return SearchResult(best[0] if best else None, best[1] if best else -1.0, generated, tree, candidates)

    def _rollout_value(self, problem, steps, path_values, v, generated, candidates):
        """Complete ``steps`` with the policy (within the budget) and mix its outcome into ``v``."""
        trace = list(steps)
        while not self._terminal(problem, trace) and generated < self.config.budget_steps:
            trace.append(policy_step(self.policy, problem, trace))  # checked as expansions are
            generated += 1
        if not self._terminal(problem, trace):
            return v, generated
        extra = len(trace) - len(steps)
        vals = path_values + ([_check_score(p, problem) for p in self._score_trace(problem, trace)[-extra:]] if extra else [])
        outcome = self._leaf_value(problem, trace, vals)
        candidates.append((trace, outcome))
        a = self.config.rollout_weight
        return (1 - a) * v + a * outcome, generated

    def _score_trace(self, problem, trace):
        return self.evaluate(problem, [trace[: k + 1] for k in range(len(trace))])


def best_of_n_search(problem: str, policy: Callable, prm, n: int, is_terminal: Callable, reduce: str = "min",
                     max_depth: int = 64) -> SearchResult:
    """Sample ``n`` complete solutions and keep the one with the best aggregated PRM score
    (``reduce``: min / prod / last / mean). ``prm``: a ProcessRewardModel or a step evaluator
    callable (scored prefix by prefix). A callable's scores must be in [0, 1] (as for :class:`MCTS`); steps
    a PRM left unscored (NaN: past its ``max_length`` with ``truncate``) are left out of the aggregate, as
    :meth:`ProcessRewardModel.score` does. Ties keep the first sample."""
    from .model import AGGREGATIONS, aggregate_steps

    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    n = int(n)
    if reduce not in AGGREGATIONS:
        raise ValueError(f"reduce must be one of {AGGREGATIONS}, got {reduce!r}")
    # max_depth 0 (or less) would stop every sample before its first step, and the error would blame is_terminal
    if isinstance(max_depth, bool) or not isinstance(max_depth, numbers.Integral) or max_depth < 1:
        raise ValueError(f"max_depth must be an integer >= 1 (most steps per sampled solution), got {max_depth!r}")
    if reduce == "prod" and getattr(getattr(prm, "config", None), "score", "sigmoid") != "sigmoid":
        # as PRMConfig refuses it: a product of raw values (negative ones flip the sign) ranks nothing
        raise ValueError("best_of_n_search: reduce='prod' needs probabilities, but this PRM gives raw values "
                         "(score='identity'): use min, last or mean")
    _check_callable(policy=policy, is_terminal=is_terminal)
    traces = [rollout(policy, problem, [], is_terminal, max_depth) for _ in range(n)]
    if not all(traces):  # an empty solution has no step to score: aggregated it would be "no step wrong" = 1
        raise ValueError(f"best_of_n_search: is_terminal({problem!r}, []) is true, so the sampled solutions have "
                         "no steps to score")
    generated = sum(len(t) for t in traces)
    per = _step_scores(prm, problem, traces)
    is_prm = hasattr(prm, "score_parts")
    for t, s in zip(traces, per):
        s = torch.as_tensor(s, dtype=torch.float64)
        if not is_prm:
            for p in s.tolist():
                _check_score(p, problem)
            continue
        # a PRM's NaN is a step it did not score (truncate=True); its own scores are P(good), or raw values
        # with score="identity", which rank solutions as well
        if bool(torch.isinf(s).any()):
            raise ValueError(f"best_of_n_search: the PRM gave a step of a sampled solution the score "
                             f"{float(s[torch.isinf(s)][0])}, not a finite number")
        if bool(torch.isnan(s).all()):
            raise ValueError(f"best_of_n_search: the PRM scored none of the {len(t)} steps of a sampled solution")
    agg = aggregate_steps([torch.as_tensor(s, dtype=torch.float32) for s in per], reduce).tolist()
    rank = agg
    if reduce == "prod":
        # ranked by the sum of log scores in float64: the float32 product of a long solution's step scores
        # underflows to 0 (0.5 ** 300), and solutions that all read 0 tied, the first one winning
        rank = []
        for s in per:
            s = torch.as_tensor(s, dtype=torch.float64)
            rank.append(float(torch.log(s[~torch.isnan(s)]).sum()))
    i = max(range(n), key=lambda j: rank[j])
    return SearchResult(traces[i], 2 * agg[i] - 1, generated, None, [(t, 2 * a - 1) for t, a in zip(traces, agg)])


class HFStepPolicy:
    """A Hugging Face causal LM as a step policy: prompt = ``problem ⏎ step₁ ⏎ … ⏎``; samples until
    ``separator`` (or ``max_new_tokens``) and returns the text before it — the first non-blank piece, so
    separators the model writes before its step are skipped (``""`` only when it wrote nothing else)."""

    def __init__(self, model, tokenizer, separator: str = "\n", max_new_tokens: int = 64, temperature: float = 0.7,
                 seed: int = 0):
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0 \
                or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature!r}")
        if not isinstance(separator, str) or not separator:  # "" cannot end a step: str.split("") raises
            raise ValueError(f"separator must be a non-empty string (it ends every step), got {separator!r}")
        for name, v, low in (("max_new_tokens", max_new_tokens, 1), ("seed", seed, 0)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(f"HFStepPolicy: {name} must be an integer >= {low}, got {v!r}")
        self.model, self.tokenizer, self.separator = model, tokenizer, separator
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, problem: str, steps: Sequence[str]) -> str:
        if not isinstance(problem, str) or isinstance(steps, (str, bytes)) or not all(isinstance(x, str) for x in steps):
            # a string of steps would be joined one character per step
            raise TypeError(f"HFStepPolicy: problem must be a str and steps a list of str, got "
                            f"{type(problem).__name__} and {type(steps).__name__}")
        text = self.separator.join([problem, *steps]) + self.separator
        ids = self.tokenizer(text, return_tensors="pt").input_ids.to(self.model.device)
        from mmreward.core.weights import position_limit

        limit = position_limit(self.model)  # a learned position table ends: past it generate() fails deep inside
        if limit is not None and ids.shape[1] + self.max_new_tokens - 1 > limit:
            raise ValueError(f"HFStepPolicy: the problem and {len(steps)} steps are {ids.shape[1]} tokens, + "
                             f"max_new_tokens={self.max_new_tokens} - 1 is more than the {limit} positions "
                             f"{type(self.model).__name__} reads")
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        pad = self.tokenizer.pad_token_id
        kw: dict[str, Any] = {"do_sample": self.temperature > 0, "max_new_tokens": self.max_new_tokens,
                              "pad_token_id": pad if pad is not None else self.tokenizer.eos_token_id}
        if self.temperature > 0:
            kw["temperature"] = self.temperature
        # sampled under the policy's own seed inside a forked RNG: the caller's global RNG (its training,
        # its data order) is neither reseeded nor advanced by a search; threads sampling at once take turns
        sampling = seeded_sampling(seed, ids.device) if self.temperature > 0 else contextlib.nullcontext()
        with sampling:  # greedy draws nothing: no seed, and threads need not take turns
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
        new = self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        # the step is the first non-blank piece: an instruct LM often opens with the separator itself (a blank
        # line before its answer), and the text before it, "", was returned as the step (searches then chose
        # solutions of empty steps). "" only when the model wrote nothing but separators / whitespace.
        return next((piece.strip() for piece in new.split(self.separator) if piece.strip()), "")


def self_training_records(result: SearchResult) -> dict[str, list[dict]]:
    """Self-training data from a searched tree whose leaves were checked (``is_correct`` given):
    ``traces`` — TRL-stepwise rows (one per complete leaf) whose float labels are ReST-MCTS* value
    targets (train with ``objective="mse"``); ``pairs`` — rStar-Math PPM pairs (``objective="ppm"``)."""
    tree = result.tree
    if tree is None:
        raise ValueError("self_training_records needs an MCTS result (with a tree)")
    if tree.leaves() and not any(n.correct is not None for n in tree.leaves()):
        raise ValueError("the tree's leaves were not checked: run MCTS with is_correct=...")
    values = tree_value_targets(tree)
    traces = []
    for leaf in tree.leaves():
        path, node_id = [], leaf.id
        while node_id > 0:
            path.append(node_id)
            node_id = tree.nodes[node_id].parent
        path.reverse()
        if all(i in values for i in path):
            traces.append({"prompt": tree.problem, "completions": [tree.nodes[i].step for i in path],
                           "labels": [round(values[i], 6) for i in path], "correct": leaf.correct})
    return {"traces": traces, "pairs": ppm_pairs(tree)}


def write_jsonl(path: str, rows: Sequence[dict]) -> None:
    """Atomically write ``rows`` as JSON lines."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def compare_search(evaluator, n_problems: int = 100, num_steps: int = 4, error_rate: float = 0.3,
                   config: Optional[MCTSConfig] = None, method: str = "both", seed: int = 0, reduce: str = "min",
                   export: Optional[str] = None, max_value: int = 9) -> dict:
    """PRM-guided MCTS vs Best-of-N on held-out synthetic chains with a :class:`NoisyStepPolicy`,
    at the same budget of generated steps (Best-of-N: ``budget_steps // num_steps`` samples).
    Success = the chosen solution's final answer is right (checked after the search; the search
    itself never sees the answer unless ``terminal_reward="oracle"``). ``export``: JSONL of MCTS
    self-training records (one ``{"type": "trace" | "pair", ...}`` per line). ``max_value``: the
    problems' value range (as in :func:`~mmreward.text.prm.synthetic.make_problem`)."""
    from .synthetic import ArithmeticTask, NoisyStepPolicy, make_problems

    if method not in ("mcts", "best-of-n", "both"):
        raise ValueError(f"method must be mcts | best-of-n | both, got {method!r}")
    for name, value in (("n_problems", n_problems), ("num_steps", num_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if config is not None and not isinstance(config, MCTSConfig):  # a dict failed later on config.budget_steps
        raise TypeError(f"config must be an MCTSConfig (or None: the defaults), got {type(config).__name__}")
    if export and method == "best-of-n":  # the export holds MCTS traces: it would be written empty
        raise ValueError("export writes MCTS self-training traces, but method='best-of-n' runs no MCTS: use "
                         "method='mcts' or 'both', or drop export")
    from .model import AGGREGATIONS

    if method != "mcts" and reduce not in AGGREGATIONS:  # refused before the MCTS half runs
        raise ValueError(f"reduce must be one of {AGGREGATIONS}, got {reduce!r}")
    config = config or MCTSConfig()
    n_bon = config.budget_steps // num_steps
    if n_bon < 1:
        raise ValueError(f"budget_steps={config.budget_steps} is below one full solution ({num_steps} steps)")
    task = ArithmeticTask()
    problems = [p.text for p in make_problems(n_problems, seed=10_000 + seed, num_steps=num_steps, max_value=max_value)]
    out: dict = {"problems": n_problems, "budget_steps": config.budget_steps, "policy_error_rate": error_rate,
                 "policy_solve_rate": (1 - error_rate) ** num_steps}
    records: list[dict] = []
    if method in ("mcts", "both"):
        policy = NoisyStepPolicy(error_rate, seed=seed, max_value=max_value)
        mcts = MCTS(policy, evaluator, task.is_terminal, config, is_correct=task.is_correct if export else None)
        wins, used = 0, 0
        for p in problems:
            r = mcts.search(p)
            wins += r.steps is not None and task.is_correct(p, r.steps)
            used += r.generated_steps
            if export:
                st = self_training_records(r)
                records += [{"type": "trace", **t} for t in st["traces"]] + [{"type": "pair", **q} for q in st["pairs"]]
        out["mcts_success"] = wins / n_problems
        out["mcts_mean_generated_steps"] = used / n_problems
    if method in ("best-of-n", "both"):
        policy = NoisyStepPolicy(error_rate, seed=seed + 1, max_value=max_value)
        wins, used = 0, 0
        for p in problems:
            r = best_of_n_search(p, policy, evaluator, n_bon, task.is_terminal, reduce)
            wins += task.is_correct(p, r.steps)
            used += r.generated_steps
        out["best_of_n"] = n_bon
        out["best_of_n_success"] = wins / n_problems
        out["best_of_n_mean_generated_steps"] = used / n_problems
    if export:
        write_jsonl(export, records)
        out["exported_records"] = len(records)
    return out
