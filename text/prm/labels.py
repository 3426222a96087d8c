"""Step labels from rollouts and search trees.

* :func:`monte_carlo_labels` — Math-Shepherd / VisualPRM: for each prefix, ``k`` continuations from
  a policy; soft label = fraction reaching the correct answer, hard label = (fraction > 0).
* :func:`rest_mcts_values` — ReST-MCTS* value targets
  ``v_k = max(0, v_{k−1} + (1 − v_{k−1})·s_k / m_k)`` with ``v_0 = 0``.
* :class:`SearchTree` (the tree MCTS builds) and :func:`ppm_pairs` — rStar-Math process-preference
  pairs; :func:`tree_value_targets` — ReST-MCTS* targets for every node of a tree.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

__all__ = ["monte_carlo_labels", "rest_mcts_values", "trace_value_targets", "TreeNode", "SearchTree",
           "tree_value_targets", "ppm_pairs"]

StepPolicy = Callable[[str, Sequence[str]], str]  # (problem, steps so far) -> next step


def policy_step(policy: StepPolicy, problem: str, steps: Sequence[str]) -> str:
    """``policy(problem, steps)``, checked: the next step's text. A blank step ("" — what :class:`HFStepPolicy`
    returns when the model wrote only separators or ended at once) is an error: it was appended like any step,
    scored, and searches returned solutions made of empty steps as their best answer."""
    step = policy(problem, steps)
    if not isinstance(step, str):
        raise TypeError(f"policy must return the next step as a str, got {type(step).__name__}")
    if not step.strip():
        raise ValueError(f"policy returned a blank step ({step!r}) for problem {problem!r} after {len(steps)} steps; a "
                         "step must hold text (an LM policy that wrote nothing: check its prompt, separator and "
                         "max_new_tokens)")
    return step


def rollout(policy: StepPolicy, problem: str, steps: Sequence[str], is_terminal: Callable, max_steps: int = 64) -> list[str]:
    """Continue ``steps`` with ``policy`` until ``is_terminal`` (or ``max_steps`` steps in all)."""
    out = list(steps)
    while not is_terminal(problem, out):
        if len(out) >= max_steps:
            break
        out.append(policy_step(policy, problem, out))
    return out


def monte_carlo_labels(problem: str, steps: Sequence[str], policy: StepPolicy, is_terminal: Callable,
                       is_correct: Callable, k: int = 8, hard: bool = False, max_steps: int = 64) -> list[float]:
    """Per-step labels of ``steps`` from ``k`` policy completions of each prefix ``steps[:i+1]``.

    The prefix ending in a terminal step is scored by ``is_correct`` directly (no rollout needed).
    Returns soft labels in [0, 1] (or 0/1 when ``hard``)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (rollouts per prefix), got {k!r}")
    if isinstance(steps, str):  # a string would be labelled one character per step
        raise TypeError("monte_carlo_labels: steps must be a list of strings, not a string")
    if not steps:
        raise ValueError("monte_carlo_labels: `steps` is empty")
    # rollouts stop at max_steps steps in all: below len(steps) every later prefix would be "completed" unfinished
    # and checked as a wrong answer, labelling good steps 0 without a word
    if isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or max_steps < len(steps):
        raise ValueError(f"monte_carlo_labels: max_steps must be an integer >= the {len(steps)} given steps (rollouts "
                         f"stop at max_steps steps in all), got {max_steps!r}")
    labels = []
    for i in range(len(steps)):
        prefix = list(steps[: i + 1])
        if is_terminal(problem, prefix):
            frac = float(bool(is_correct(problem, prefix)))
        else:
            hits = sum(bool(is_correct(problem, rollout(policy, problem, prefix, is_terminal, max_steps))) for _ in range(k))
            frac = hits / k
        labels.append(float(frac > 0) if hard else frac)
    return labels


def rest_mcts_values(signs: Sequence[int], remaining: Sequence[int]) -> list[float]:
    """ReST-MCTS* value targets along one trace.

    ``signs[k]``: +1 if step k lies on a path to a correct answer, −1 otherwise; ``remaining[k]``
    (``m_k`` ≥ 1): steps from step k (itself included) to the nearest correct leaf — for a step off
    every correct path, the steps left in its own trace. A correct final step (m = 1) gets 1."""
    if len(signs) != len(remaining):
        raise ValueError(f"signs ({len(signs)}) and remaining ({len(remaining)}) differ in length")
    v, out = 0.0, []
    for k, (s, m) in enumerate(zip(signs, remaining)):
        if s not in (1, -1):
            raise ValueError(f"signs[{k}] must be +1 or -1, got {s}")
        if isinstance(m, bool) or not isinstance(m, numbers.Real) or not m >= 1:  # NaN passed `m < 1`
            raise ValueError(f"remaining[{k}] must be a number >= 1 (steps to the leaf, step k included), got {m!r}")
        v = max(0.0, v + (1.0 - v) * s / m)
        out.append(v)
    return out


def trace_value_targets(step_good: Sequence[bool]) -> list[float]:
    """ReST-MCTS* targets for a linear trace whose good steps (a prefix) lead to the correct answer
    in ``len(step_good)`` steps: ``m_k = K − k``, sign from the label."""
    K = len(step_good)
    return rest_mcts_values([1 if g else -1 for g in step_good], [K - k for k in range(K)])


# ----------------------------------------------------------------------------- search trees
@dataclass
class TreeNode:
    id: int
    parent: int  # -1 for the root
    step: str  # "" for the root
    depth: int
    prior: float = 0.0  # evaluator value when created, in [-1, 1]
    visits: int = 0
    value_sum: float = 0.0
    terminal: bool = False
    correct: Optional[bool] = None  # terminal leaves, when an answer checker was given
    children: list[int] = field(default_factory=list)

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else self.prior


@dataclass
class SearchTree:
    problem: str
    nodes: list[TreeNode] = field(default_factory=list)

    def __post_init__(self):
        if not self.nodes:
            self.nodes.append(TreeNode(0, -1, "", 0))

    @property
    def root(self) -> TreeNode:
        return self.nodes[0]

    def add(self, parent: int, step: str, prior: float, terminal: bool) -> TreeNode:
        node = TreeNode(len(self.nodes), parent, step, self.nodes[parent].depth + 1, prior, terminal=terminal)
        self.nodes.append(node)
        self.nodes[parent].children.append(node.id)
        return node

    def steps(self, node_id: int) -> list[str]:
        """The steps from the root to ``node_id``."""
        out = []
        while node_id > 0:
            out.append(self.nodes[node_id].step)
            node_id = self.nodes[node_id].parent
        return out[::-1]

    def leaves(self) -> list[TreeNode]:
        return [n for n in self.nodes if n.terminal]

    def to_dict(self) -> dict:
        return {"problem": self.problem, "nodes": [asdict(n) for n in self.nodes]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "SearchTree":
        try:
            nodes = [TreeNode(**n) for n in data["nodes"]]
            tree = cls(data["problem"], nodes)
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a search tree record: {e}") from e
        # the walks (steps, outcomes, value targets) index nodes by id and assume parents come first: a record
        # whose links disagree would give wrong paths and labels, or an IndexError deep inside
        for i, n in enumerate(tree.nodes):
            ok = n.id == i and (n.parent == -1 if i == 0 else isinstance(n.parent, int) and 0 <= n.parent < i)
            ok = ok and all(isinstance(c, int) and i < c < len(tree.nodes) and tree.nodes[c].parent == i
                            for c in n.children)
            if not ok:
                raise ValueError(f"not a search tree record: node {i} (id {n.id!r}, parent {n.parent!r}, children "
                                 f"{n.children!r}) does not fit the tree (ids are positions, the root first, "
                                 "parents before children)")
        if sum(len(n.children) for n in tree.nodes) != len(tree.nodes) - 1:
            raise ValueError("not a search tree record: some node is missing from its parent's children")
        return tree

    # -- outcome bookkeeping used by the label functions
    def _outcomes(self) -> tuple[list[bool], list[bool], list[float]]:
        """Per node: reaches a correct leaf, reaches a wrong leaf, distance (steps) to the nearest
        correct leaf (inf if none)."""
        n = len(self.nodes)
        good, bad, dist = [False] * n, [False] * n, [math.inf] * n
        for node in reversed(self.nodes):  # children always have larger ids
            if node.terminal and node.correct is not None:
                good[node.id], bad[node.id] = node.correct, not node.correct
                dist[node.id] = 0.0 if node.correct else math.inf
            for c in node.children:
                good[node.id] |= good[c]
                bad[node.id] |= bad[c]
                dist[node.id] = min(dist[node.id], dist[c] + 1)
        return good, bad, dist


def tree_value_targets(tree: SearchTree) -> dict[int, float]:
    """ReST-MCTS* value target for every non-root node whose subtree has a checked leaf.

    ``m_k`` = 1 + steps from the node to its nearest correct leaf; for nodes with no correct leaf
    below, 1 + the steps to their nearest leaf."""
    good, bad, dist = tree._outcomes()
    depth_to_leaf = [math.inf] * len(tree.nodes)
    for node in reversed(tree.nodes):
        if node.terminal:
            depth_to_leaf[node.id] = 0
        for c in node.children:
            depth_to_leaf[node.id] = min(depth_to_leaf[node.id], depth_to_leaf[c] + 1)
    values: dict[int, float] = {0: 0.0}
    for node in tree.nodes[1:]:  # parents come before children
        if not (good[node.id] or bad[node.id]) or node.parent not in values:
            continue
        if good[node.id]:
            s, m = 1, dist[node.id] + 1
        else:
            s, m = -1, (depth_to_leaf[node.id] + 1) if math.isfinite(depth_to_leaf[node.id]) else 1
        v = values[node.parent]
        values[node.id] = max(0.0, v + (1.0 - v) * s / m)
    values.pop(0)
    return values


def ppm_pairs(tree: SearchTree, top: int = 2) -> list[dict]:
    """rStar-Math PPM preference pairs from a search tree.

    At every node with children on both sides: positives = children reaching a correct leaf, ranked
    by Q (top ``top``); negatives = children reaching only wrong leaves (bottom ``top`` by Q). When
    one side has a single node the other side fills to ``2·top`` nodes. All positive × negative pairs
    with ``Q_pos > Q_neg`` are kept; ``group`` is the parent node id (the loss weights each group's
    pairs 1/(n_pos·n_neg))."""
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 1:  # 0 gave no pairs, silently
        raise ValueError(f"ppm_pairs: top must be an integer >= 1, got {top!r}")
    good, bad, _ = tree._outcomes()
    pairs = []
    for node in tree.nodes:
        kids = [tree.nodes[c] for c in node.children]
        pos = sorted((c for c in kids if good[c.id]), key=lambda c: -c.q)
        neg = sorted((c for c in kids if bad[c.id] and not good[c.id]), key=lambda c: c.q)
        if not pos or not neg:
            continue
        n_pos, n_neg = min(top, len(pos)), min(top, len(neg))
        if n_pos == 1:
            n_neg = min(len(neg), 2 * top - 1)
        elif n_neg == 1:
            n_pos = min(len(pos), 2 * top - 1)
        prefix = tree.steps(node.id)
        for p in pos[:n_pos]:
            for q in neg[:n_neg]:
                if p.q > q.q:
                    pairs.append({"prompt": tree.problem, "prefix": prefix, "chosen": p.step, "rejected": q.step,
                                  "q_chosen": p.q, "q_rejected": q.q, "group": node.id})
    return pairs
