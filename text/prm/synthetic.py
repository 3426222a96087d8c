"""Exactly-labelled multi-step problems for PRM tests, demos and benchmarks.

A problem is a start digit and a list of single-digit operations, e.g. ``"3 +4 -2 +5"``; a solution
writes one step per operation, ``"a+b=c"`` with ``a`` the previous result. Every true intermediate
value stays in 0..9, so a correct step is single-digit arithmetic a tiny model can check.

Errors are wrong results ``c``. After a wrong step the chain continues from the wrong value (as a
real solver would), so later steps can be locally right yet the trace is on a wrong path; the step
labels follow Math-Shepherd: a step is good iff it and every step before it are right. The first
wrong step is known exactly (ProcessBench's label).

:class:`NoisyStepPolicy` is a step generator that errs at a known rate, for search benchmarks.
"""
from __future__ import annotations

import numbers
import random
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

__all__ = [
    "ArithmeticProblem",
    "make_problem",
    "make_problems",
    "solve",
    "step_text",
    "parse_step",
    "first_error",
    "step_labels",
    "make_labelled_chain",
    "make_dataset",
    "NoisyStepPolicy",
    "ArithmeticTask",
    "parse_problem",
    "char_tokenizer",
    "tiny_llama",
    "NoisyStepJudge",
    "make_pairs",
]


@dataclass(frozen=True)
class ArithmeticProblem:
    start: int
    ops: tuple[tuple[str, int], ...]  # (("+", 4), ("-", 2), ...)

    @property
    def text(self) -> str:
        return f"{self.start} " + " ".join(f"{o}{d}" for o, d in self.ops)

    @property
    def num_steps(self) -> int:
        return len(self.ops)

    @property
    def answer(self) -> int:
        return solve(self)[-1]


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def _count(name: str, value: Any, low: int) -> int:
    """``value`` as an int >= ``low``: a float or bool count (2.5, True) is an error naming it, not a
    ``range()`` TypeError, and a negative number of rows is not "no rows"."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def make_problem(rng: random.Random, num_steps: int = 4, max_value: int = 9) -> ArithmeticProblem:
    """A random chain whose true running value stays in 0..max_value (1..9)."""
    num_steps = _count("num_steps", num_steps, 1)
    if isinstance(max_value, bool) or not isinstance(max_value, numbers.Integral) or not 1 <= max_value <= 9:
        raise ValueError(f"max_value must be in 1..9 (single digits), got {max_value!r}")
    value = rng.randint(0, max_value)
    start, ops = value, []
    for _ in range(num_steps):
        op = rng.choice("+-")
        if op == "+" and value == max_value:
            op = "-"
        if op == "-" and value == 0:
            op = "+"
        d = rng.randint(1, max_value - value) if op == "+" else rng.randint(1, value)
        ops.append((op, d))
        value = _apply(value, op, d)
    return ArithmeticProblem(start, tuple(ops))


def make_problems(n: int, seed: int = 0, num_steps: int = 4, max_value: int = 9) -> list[ArithmeticProblem]:
    n = _count("n", n, 0)
    rng = random.Random(seed)
    return [make_problem(rng, num_steps, max_value) for _ in range(n)]


def solve(problem: ArithmeticProblem) -> list[int]:
    """True intermediate values (one per step)."""
    out, v = [], problem.start
    for op, d in problem.ops:
        v = _apply(v, op, d)
        out.append(v)
    return out


def step_text(a: int, op: str, b: int, c: int) -> str:
    return f"{a}{op}{b}={c}"


def parse_step(text: str) -> Optional[tuple[int, str, int, int]]:
    """``"7-2=5"`` → ``(7, "-", 2, 5)``; None when the step does not parse."""
    try:
        lhs, rhs = text.strip().split("=")
        c = int(rhs)
        for i in range(1, len(lhs)):  # first operator after the (possibly signed) first operand
            if lhs[i] in "+-":
                return int(lhs[:i]), lhs[i], int(lhs[i + 1:]), c
    except ValueError:
        return None
    return None


def first_error(problem: ArithmeticProblem, steps: Sequence[str]) -> int:
    """Index of the first wrong step (−1 when every step is right). A step is right when it parses,
    starts from the previous true value, uses the problem's operation and computes it correctly."""
    truth = [problem.start] + solve(problem)
    for k, s in enumerate(steps):
        if k >= problem.num_steps:
            return k
        p = parse_step(s)
        op, d = problem.ops[k]
        if p is None or p != (truth[k], op, d, truth[k + 1]):
            return k
    return -1


def step_labels(problem: ArithmeticProblem, steps: Sequence[str]) -> list[bool]:
    """Math-Shepherd labels: step k is good iff steps 0..k are all right."""
    fe = first_error(problem, steps)
    return [fe < 0 or k < fe for k in range(len(steps))]


def _wrong_digit(rng: random.Random, true: int, max_value: int = 9) -> int:
    """A wrong result drawn from the values a correct step can have (0..max_value), so an error is
    never recognisable by its size alone."""
    return rng.choice([d for d in range(max_value + 1) if d != true])


def make_labelled_chain(problem: ArithmeticProblem, error_at: int, rng: random.Random, max_value: int = 9) -> list[str]:
    """A full solution whose first wrong step is ``error_at`` (−1: none); later steps compute
    correctly from the wrong value."""
    steps, a = [], problem.start
    for k, (op, d) in enumerate(problem.ops):
        c = _apply(a, op, d)
        if k == error_at:
            c = _wrong_digit(rng, c, max_value)
        steps.append(step_text(a, op, d, c))
        a = c
    return steps


def make_dataset(n: int, seed: int = 0, num_steps: int = 4, error_rate: float = 0.5, max_value: int = 9,
                 after_error: str = "bad") -> list[dict]:
    """``n`` TRL-stepwise rows ``{prompt, completions, labels, first_error}``; a fraction
    ``error_rate`` has one planted error at a uniformly chosen step. ``after_error``: label of the
    steps after the first error — ``"bad"`` (Math-Shepherd: no path to the answer) or ``"ignore"``
    (−100, PRM800K-style: labelling stops at the first error)."""
    n = _count("n", n, 0)
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
    if after_error not in ("bad", "ignore"):
        raise ValueError(f"after_error must be 'bad' or 'ignore', got {after_error!r}")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        p = make_problem(rng, num_steps, max_value)
        err = rng.randrange(num_steps) if rng.random() < error_rate else -1
        steps = make_labelled_chain(p, err, rng, max_value)
        fe = first_error(p, steps)
        labels = [float(y) for y in step_labels(p, steps)]
        if after_error == "ignore" and fe >= 0:
            labels = labels[: fe + 1] + [-100.0] * (len(steps) - fe - 1)
        rows.append({"prompt": p.text, "completions": steps, "labels": labels, "first_error": fe})
    return rows


@dataclass
class NoisyStepPolicy:
    """Writes the next step of a chain; the result is wrong with probability ``error_rate``
    (a uniformly chosen other digit). Continues from whatever value the last step wrote."""

    error_rate: float = 0.3
    seed: int = 0
    max_value: int = 9  # wrong results are drawn from 0..max_value
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self):
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate}")
        self.rng = random.Random(self.seed)

    def __call__(self, problem: str, steps: Sequence[str]) -> str:
        p = parse_problem(problem)
        k = len(steps)
        if k >= p.num_steps:
            raise ValueError(f"problem {problem!r} has {p.num_steps} steps; the chain is already complete")
        a = p.start if k == 0 else (parse_step(steps[-1]) or (0, "+", 0, 0))[3]
        op, d = p.ops[k]
        c = _apply(a, op, d)
        if self.rng.random() < self.error_rate:
            c = _wrong_digit(self.rng, c, self.max_value)
        return step_text(a, op, d, c)


def parse_problem(text: str) -> ArithmeticProblem:
    """Inverse of :attr:`ArithmeticProblem.text`."""
    try:
        head, *ops = text.split()
        if not ops or any(o[0] not in "+-" for o in ops):  # "3 *4" was read as "3" with no steps at all
            raise ValueError("every term after the start value must be +N or -N, and there must be one")
        return ArithmeticProblem(int(head), tuple((o[0], int(o[1:])) for o in ops))
    except (ValueError, IndexError, AttributeError) as e:
        raise ValueError(f"not a synthetic arithmetic problem (\"START +N -M ...\"): {text!r}") from e


class ArithmeticTask:
    """Terminal test and answer check for search / Monte-Carlo labels on these problems."""

    def is_terminal(self, problem: str, steps: Sequence[str]) -> bool:
        return len(steps) >= parse_problem(problem).num_steps

    def is_correct(self, problem: str, steps: Sequence[str]) -> bool:
        p = parse_problem(problem)
        if len(steps) != p.num_steps:
            return False
        last = parse_step(steps[-1])
        return last is not None and last[3] == p.answer


def char_tokenizer(level: str = "char", max_value: int = 9):
    """A ``PreTrainedTokenizerFast`` for these problems, built in-process (no download).

    ``level="char"``: one token per character. ``level="term"``: a step ``"a+b=c"`` is two tokens,
    the expression ``"a+b"`` and the result ``"=c"`` (any integers −99..99; other text falls back to
    characters). Verifying a step then needs a comparison of two tokens, not arithmetic over five
    characters — small enough for a tiny model trained for seconds on one CPU thread."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if level not in ("char", "term", "step"):
        raise ValueError(f"level must be 'char', 'term' or 'step', got {level!r}")
    specials = ["<pad>", "<s>", "<unk>"]
    chars = sorted(set("0123456789+-= \nки"))
    words: list[str] = []
    if level == "term":
        nums = [str(v) for v in range(-99, 100)]
        words = nums + [f"{a}{o}{b}" for a in nums for o in "+-" for b in range(1, max_value + 1)] + [f"={c}" for c in nums] + [" ки", "ки"]
    elif level == "step":  # whole equations with operands / results in -9..18
        nums = [str(v) for v in range(-9, 19)]
        words = nums + [f"{a}{o}{b}={c}" for a in nums for o in "+-" for b in range(1, max_value + 1) for c in nums]
        words += [" ки", "ки"]
    vocab = {t: i for i, t in enumerate(specials + chars + [w for w in words if w not in chars])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.decoder = decoders.Fuse()  # decode back to the text, not space-joined tokens
    if level == "char":
        tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    elif level == "step":
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?ки|-?\d+[+-]\d+=-?\d+|-?\d+|."), behavior="isolated")
    else:  # "-3+4=1 ки" -> "-3+4", "=1", " ", "к", "и"; numbers stay whole
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?ки|-?\d+[+-]\d+|=-?\d+|-?\d+|."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", unk_token="<unk>")


def tiny_llama(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0):
    """A randomly initialised tiny ``LlamaForCausalLM`` sized for ``tokenizer`` (tests / demos)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=256, tie_word_embeddings=False,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=None)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


@dataclass
class NoisyStepJudge:
    """A step evaluator with a known accuracy: scores the last step of ``steps`` ``high`` when it is
    good (Math-Shepherd sense: it and all earlier steps right) and ``1 − high`` when not, with the
    verdict flipped with probability ``1 − accuracy``. The flip is a fixed function of
    (problem, steps, seed), so repeated queries agree — a stand-in PRM for search tests."""

    accuracy: float = 0.9
    high: float = 0.9
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.accuracy <= 1.0 or not 0.5 <= self.high <= 1.0:
            raise ValueError("accuracy must be in [0, 1] and high in [0.5, 1]")

    def __call__(self, problem: str, steps: Sequence[str]) -> float:
        import zlib

        p = parse_problem(problem)
        good = step_labels(p, steps)[-1]
        u = random.Random(zlib.crc32(f"{self.seed}|{problem}|{'|'.join(steps)}".encode())).random()
        if u >= self.accuracy:
            good = not good
        return self.high if good else 1.0 - self.high


def make_pairs(n: int, seed: int = 0, num_steps: int = 4, max_value: int = 9) -> list[dict]:
    """``n`` rStar-style step-preference rows ``{prompt, prefix, chosen, rejected, group}``: after a
    correct prefix of random length, the right next step vs the same step with a wrong result."""
    n = _count("n", n, 0)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        p = make_problem(rng, num_steps, max_value)
        vals = [p.start] + solve(p)
        k = rng.randrange(num_steps)
        prefix = [step_text(vals[j], *p.ops[j], vals[j + 1]) for j in range(k)]
        op, d = p.ops[k]
        rows.append({"prompt": p.text, "prefix": prefix, "chosen": step_text(vals[k], op, d, vals[k + 1]),
                     "rejected": step_text(vals[k], op, d, _wrong_digit(rng, vals[k + 1], max_value)), "group": i})
    return rows
