"""Judge runner over any Hugging Face causal LM with a chat template.

    runner = JudgeRunner(model, tokenizer, JudgeConfig(max_new_tokens=256, num_samples=4, do_sample=True))
    results = runner.run(messages, parse_ab)        # [N][k] JudgeResult (text + parsed value / reason)
    parse_metrics(results)                          # {"parse_rate": ..., "reasons": {...}}
    runner.choice_probs(messages, ["Yes", "No"])    # (N, 2) next-token probabilities, renormalised

Prompts are either strings (already rendered) or chat message lists ``[{"role", "content"}, ...]``
rendered with the tokenizer's chat template (generation prompt appended). Batches are left-padded
(decoder-only generation). Sampling is deterministic: each batch is generated under
``torch.manual_seed(seed + first_row_index)`` inside a forked RNG, so a fixed (seed, batch_size)
reproduces the same texts and the global RNG is left untouched — threads sampling at once included (they
take turns: torch's RNG is one per process). Greedy decoding draws nothing and runs concurrently; the padding
is done here, never by switching the shared tokenizer's ``padding_side``.
"""
from __future__ import annotations

import contextlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch

from mmreward.core.device import seeded_sampling
from mmreward.core.model import eval_while_scoring
from mmreward.core.weights import position_limit

from .heads import last_token_logits
from .parsing import Parsed

Prompt = Union[str, Sequence[dict]]

__all__ = ["JudgeConfig", "JudgeResult", "JudgeRunner", "parse_metrics", "render_prompt", "position_limit",
           "prompt_progress"]

_PROGRESS = threading.local()  # this thread's prompt_progress report, if any


@contextlib.contextmanager
def prompt_progress(report: Callable[[int, int], None]) -> Iterator[None]:
    """Within the block, in this thread, ``report(done, total)`` after each batch of prompts a judge reads
    (:meth:`JudgeRunner.generate` / :meth:`JudgeRunner.choice_probs`, GRAM's forward): ``total`` counts the prompts
    of every such call begun in the block so far, ``done`` those read. A progress bar without cutting a judge's call
    in pieces, which would change what it samples (seeds count the prompts of a call)."""
    old = getattr(_PROGRESS, "state", None)
    _PROGRESS.state = [report, 0, 0, 0]  # report, prompts read, prompts begun, depth of progress_expect blocks
    try:
        yield
    finally:
        _PROGRESS.state = old


@contextlib.contextmanager
def progress_expect(n: int) -> Iterator[None]:
    """Calls of ``n`` prompts in all begin within the block (GRAM's two orders): counted now, so that a bar does not
    read as done when the first of them is."""
    state = getattr(_PROGRESS, "state", None)
    if state is None:
        yield
        return
    progress_begins(n)
    state[3] += 1
    try:
        yield
    finally:
        state[3] -= 1


@contextlib.contextmanager
def bar_progress(bar: Any, n: int) -> Iterator[None]:
    """Move the progress ``bar`` by ``n`` units over the block (a judge's call on ``n`` inputs), in step with the
    share of its prompts read so far (:func:`prompt_progress`); never backwards (a call that begins late, e.g. RM-R1's
    second look at unparsed verdicts, adds prompts to the total). On an error the bar stays where it was."""
    start = bar.n

    def report(done: int, total: int) -> None:
        target = start + (n * done // total if total else 0)
        if target > bar.n:
            bar.update(target - bar.n)

    with prompt_progress(report):
        yield
    if bar.n < start + n:
        bar.update(start + n - bar.n)


def progress_begins(n: int) -> None:
    """A call of ``n`` prompts begins (see :func:`prompt_progress`)."""
    state = getattr(_PROGRESS, "state", None)
    if state is not None and not state[3]:
        state[2] += n
        state[0](state[1], state[2])


def progress_read(n: int) -> None:
    """``n`` more prompts were read (see :func:`prompt_progress`)."""
    state = getattr(_PROGRESS, "state", None)
    if state is not None:
        state[1] += n
        state[0](state[1], state[2])


@dataclass
class JudgeConfig:
    max_new_tokens: int = field(default=256, metadata={"help": "generation limit per sample"})
    num_samples: int = field(default=1, metadata={"help": "k generations per prompt (k > 1 needs do_sample)"})
    do_sample: bool = field(default=False, metadata={"help": "sample (True) or greedy decoding (False)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate() call"})
    seed: int = field(default=0, metadata={"help": "base seed; batch b is sampled under seed + its first row index"})
    max_prompt_tokens: Optional[int] = field(
        default=None, metadata={"help": "error if a rendered prompt is longer (None: no limit)"})
    chat_template_kwargs: dict = field(default_factory=dict, metadata={
        "help": "extra variables for the chat template, e.g. {'enable_thinking': False} for Qwen3"})

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "num_samples", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"JudgeConfig.{name} must be a positive int, got {v!r}")
        if self.num_samples > 1 and not self.do_sample:
            raise ValueError("JudgeConfig: num_samples > 1 needs do_sample=True (greedy samples are identical)")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not 0 < self.temperature < float("inf"):  # inf divided every logit to 0: uniform "sampling"
            raise ValueError(f"JudgeConfig.temperature must be a finite number > 0, got {self.temperature!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"JudgeConfig.top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"JudgeConfig.seed must be an integer >= 0, got {self.seed!r}")
        m = self.max_prompt_tokens
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"JudgeConfig.max_prompt_tokens must be None (no limit) or an integer >= 1, got {m!r}")
        if not isinstance(self.chat_template_kwargs, dict):
            raise ValueError(f"JudgeConfig.chat_template_kwargs must be a dict of chat template variables, got "
                             f"{type(self.chat_template_kwargs).__name__}")


@dataclass
class JudgeResult:
    """One generation: raw ``text`` and its parse (``value`` or the "no verdict" ``reason``)."""
    row: int
    sample: int
    text: str
    value: Any = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


def render_prompt(tokenizer: Any, prompt: Prompt, where: str = "prompt", **template_kwargs: Any) -> str:
    """A chat message list through the chat template (generation prompt added, ``template_kwargs``
    passed to the template); strings pass through."""
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, (list, tuple)) or not prompt or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in prompt
    ):
        raise TypeError(f"{where}: expected a str or a non-empty list of {{'role', 'content'}} dicts")
    for j, m in enumerate(prompt):  # None / a number would be rendered as the text "None" / "5" and judged
        if not isinstance(m["role"], str) or not isinstance(m["content"], (str, list)):
            raise TypeError(f"{where}: message {j} needs a str 'role' and a str (or list of parts) 'content', got "
                            f"role {type(m['role']).__name__}, content {type(m['content']).__name__}")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("tokenizer has no chat_template: set tokenizer.chat_template or pass rendered strings")
    try:
        return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True, **template_kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is the chat template's own refusal
        from jinja2 import TemplateError

        if not isinstance(e, TemplateError):
            raise
        raise ValueError(f"{where}: the tokenizer's chat template refused the conversation "
                         f"({type(e).__name__}: {e})") from None


def parse_metrics(results: Sequence[Sequence[JudgeResult]]) -> dict:
    """Parse rate over all generations and the count of each no-verdict reason."""
    flat = [r for row in results for r in row]
    n_ok = sum(r.ok for r in flat)
    return {"n": len(flat), "n_parsed": n_ok, "parse_rate": n_ok / len(flat) if flat else 0.0,
            "reasons": dict(Counter(r.reason for r in flat if not r.ok))}


class JudgeRunner:
    """Batched generation + parsing over ``model`` (a transformers causal LM) and its ``tokenizer``."""

    def __init__(self, model: Any, tokenizer: Any, config: Optional[JudgeConfig] = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or JudgeConfig()
        # per thread: the caller's numbers of the prompts (see `numbered`); a dict, so a runner still copies
        # (a copy starts with none of its own: see __getstate__)
        self._rows_of: dict[int, Sequence[int]] = {}
        if tokenizer.pad_token_id is None:  # decoder-only tokenizers often lack one; pads are masked anyway
            if tokenizer.eos_token is None:
                raise ValueError("tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token

    def __getstate__(self) -> dict:
        # copy.copy / deepcopy / pickle: the copy gets its own numbering. A shared dict let one runner's
        # `numbered` block rename the other's prompts in errors (same thread), and a copy made inside a block
        # would keep that block's numbers for good.
        state = dict(self.__dict__)
        state["_rows_of"] = {}
        return state

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def _rows(self) -> Optional[Sequence[int]]:
        return self._rows_of.get(threading.get_ident())

    @_rows.setter
    def _rows(self, rows: Optional[Sequence[int]]) -> None:
        # per thread: a judge numbering its subset in one thread must not rename another thread's prompts
        if rows is None:
            self._rows_of.pop(threading.get_ident(), None)
        else:
            self._rows_of[threading.get_ident()] = rows

    @contextlib.contextmanager
    def numbered(self, rows: Sequence[int]) -> Iterator[None]:
        """Within the block, errors of :meth:`generate` / :meth:`run` / :meth:`choice_probs` name prompt ``i``
        of a call as ``rows[i]``: a judge that runs a subset of its inputs names them by its own numbers."""
        old, self._rows = self._rows, list(rows)
        try:
            yield
        finally:
            self._rows = old

    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees for ``prompt`` (chat template applied)."""
        return render_prompt(self.tokenizer, prompt, **self.config.chat_template_kwargs)

    def _batch_size(self, batch_size: Optional[int]) -> int:
        if batch_size is None:
            return self.config.batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return batch_size

    def _check_prompts(self, prompts: Sequence[Prompt]) -> list[str]:
        if isinstance(prompts, (str, dict)) or not isinstance(prompts, Sequence):
            raise TypeError("prompts must be a list of str or of chat message lists")
        if len(prompts) == 0:
            raise ValueError("prompts is empty")
        kw = self.config.chat_template_kwargs
        return [render_prompt(self.tokenizer, p, f"prompts[{i}]", **kw) for i, p in enumerate(prompts)]

    def encode(self, texts: Sequence[str], first_index: int = 0, new_tokens: int = 0,
               rows: Optional[Sequence[int]] = None) -> dict:
        """Left-padded batch (``input_ids``, ``attention_mask``), special tokens as rendered by the template.
        ``texts`` are prompts ``first_index``, ``first_index + 1``, … of the call (errors name them so), or
        ``rows[0]``, ``rows[1]``, … when given (a caller that runs a subset of its inputs names them by its own
        numbers); ``new_tokens``: positions generation will add after each prompt."""
        enc = self._left_padded(texts)
        lens = enc["attention_mask"].sum(1)
        lim = self.config.max_prompt_tokens
        name = (lambda i: first_index + i) if rows is None else (lambda i: rows[i])  # noqa: E731
        if lens.numel() and int(lens.min()) == 0:  # nothing to read: generate() would continue the padding
            i = int(lens.argmin())
            raise ValueError(f"prompt {name(i)} is empty: it encodes to no tokens ({texts[i]!r})")
        if lim is not None and int(lens.max()) > lim:
            i = int(lens.argmax())
            raise ValueError(f"prompt {name(i)} has {int(lens[i])} tokens > max_prompt_tokens={lim}")
        self._check_fits(enc["input_ids"], enc["attention_mask"], name, new_tokens)
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def _left_padded(self, texts: Sequence[str]) -> dict:
        """``input_ids`` / ``attention_mask`` (N, T) of ``texts``, padded on the left here rather than by
        switching the tokenizer's ``padding_side`` for the call: that attribute is shared, so a thread scoring at
        the same time could tokenise right-padded (then generate after the padding) and the tokenizer could be
        left with the wrong side for the caller's own use."""
        ids = [list(x) for x in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
        width = max((len(x) for x in ids), default=0)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            if x:
                input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
                mask[i, width - len(x):] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def _check_fits(self, ids: torch.Tensor, mask: torch.Tensor, name: Callable[[int], int], new_tokens: int) -> None:
        """Every prompt is one the model can read, else an error naming it (the model would fail deep inside
        with an index error): token ids within its embeddings, and — for a learned position table (GPT-2
        and the like; rotary positions have no hard end) — prompt + ``new_tokens`` - 1 within the table."""
        words = self.model.get_input_embeddings() if hasattr(self.model, "get_input_embeddings") else None
        vocab = getattr(words, "num_embeddings", None)
        lens = mask.sum(1)
        if vocab is not None and ids.numel() and int(ids.max()) >= vocab:
            # the prompt's own tokens apart from the padding, so that a bad pad id is not blamed on a prompt
            bad = (ids >= vocab) & mask.bool()
            if not bad.any():
                raise ValueError(f"the tokenizer's pad token id {int(ids.max())} is outside the model's embeddings "
                                 f"(ids 0..{vocab - 1}): set a pad token the model has")
            i = int(bad.any(1).nonzero()[0])
            raise ValueError(f"prompt {name(i)} holds token id {int(ids[i][bad[i]].max())}, but the model "
                             f"has embeddings for ids 0..{vocab - 1} only: the tokenizer is not the one the model "
                             "was built with")
        limit = position_limit(self.model)
        # the model reads the prompt and every generated token but the last (that one is never fed back),
        # so L + max_new_tokens - 1 positions: L + max_new_tokens = limit + 1 still fits
        if limit is not None and int(lens.max()) + max(new_tokens - 1, 0) > limit:
            i = int(lens.argmax())
            need = int(lens[i]) + max(new_tokens - 1, 0)
            extra = f" + max_new_tokens={new_tokens} - 1 = {need} positions" if new_tokens else ""
            raise ValueError(f"prompt {name(i)} is {int(lens[i])} tokens{extra}, more than the {limit} "
                             f"positions {type(self.model).__name__} reads: shorten it"
                             + (" or lower max_new_tokens" if new_tokens else ""))

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], batch_size: Optional[int] = None,
                 rows: Optional[Sequence[int]] = None) -> list[list[str]]:
        """``[N][k]`` generated continuations (prompt stripped, special tokens removed), ``batch_size``
        prompts (default ``config.batch_size``) per ``generate`` call; ``rows``: the caller's numbers of the
        prompts, for errors (default 0 … N−1)."""
        texts = self._check_prompts(prompts)
        cfg, out, bs = self.config, [], self._batch_size(batch_size)
        rows = self._rows if rows is None else rows
        progress_begins(len(texts))
        with eval_while_scoring(self.model):  # threads share one eval period
            for start in range(0, len(texts), bs):
                enc = self.encode(texts[start:start + bs], start, cfg.max_new_tokens,
                                  None if rows is None else rows[start:start + bs])
                kw: dict = dict(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                                num_return_sequences=cfg.num_samples, pad_token_id=self.tokenizer.pad_token_id)
                if cfg.do_sample:
                    kw.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
                else:
                    kw.update(temperature=None, top_p=None, top_k=None)
                if cfg.do_sample:  # threads sampling at once take turns (one RNG per process)
                    with seeded_sampling(cfg.seed + start, self.device):
                        seqs = self.model.generate(**enc, **kw)  # (b·k, T_prompt + T_new)
                else:  # greedy: no random draws, so nothing to seed or to serialise
                    seqs = self.model.generate(**enc, **kw)
                new = seqs[:, enc["input_ids"].shape[1]:]
                dec = self.tokenizer.batch_decode(new, skip_special_tokens=True)
                k = cfg.num_samples
                out.extend(dec[i * k:(i + 1) * k] for i in range(len(dec) // k))
                progress_read(len(dec) // k)
        return out

    def run(self, prompts: Sequence[Prompt], parser: Callable[[str], Parsed],
            batch_size: Optional[int] = None, rows: Optional[Sequence[int]] = None) -> list[list[JudgeResult]]:
        """Generate and parse; a parser exception becomes a no-verdict reason instead of a crash."""
        results = []
        # rows only when given: a generate() replaced by a caller (tests, wrappers) need not take them
        for i, samples in enumerate(self.generate(prompts, batch_size) if rows is None
                                    else self.generate(prompts, batch_size, rows)):
            row = []
            for j, text in enumerate(samples):
                try:
                    p = parser(text)
                except Exception as e:  # a buggy custom parser must not lose the batch
                    p = Parsed.fail(f"parser error: {type(e).__name__}: {e}")
                row.append(JudgeResult(i, j, text, p.value, p.reason))
            results.append(row)
        return results

    def token_ids(self, words: Sequence[str]) -> list[int]:
        """One token id per word (the first token of its encoding; leading-space variants are not tried)."""
        if isinstance(words, (str, bytes)) or not isinstance(words, Sequence) or len(words) < 2 \
                or not all(isinstance(w, str) for w in words):
            # a string would be split into characters; one word would always get probability 1
            raise ValueError(f"words must be a list of at least 2 strings (the choices), got {words!r}")
        ids = []
        for w in words:
            t = self.tokenizer.encode(w, add_special_tokens=False)
            if not t:
                raise ValueError(f"word {w!r} encodes to no token")
            ids.append(t[0])
        if len(set(ids)) != len(ids):
            raise ValueError(f"words {list(words)} share a first token: {ids}")
        return ids

    @torch.no_grad()
    def choice_probs(self, prompts: Sequence[Prompt], words: Sequence[str], suffix: str = "",
                     batch_size: Optional[int] = None, rows: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``(N, C)`` next-token probabilities of ``words`` after each rendered prompt (+ ``suffix``),
        renormalised over the C choices (GenRM's P(Yes), GRAM's P(A)); ``rows`` as in :meth:`generate`."""
        texts = [t + suffix for t in self._check_prompts(prompts)]
        bs = self._batch_size(batch_size)
        rows = self._rows if rows is None else rows
        ids = torch.tensor(self.token_ids(words), device=self.device)
        out = []
        progress_begins(len(texts))
        with eval_while_scoring(self.model):
            for s in range(0, len(texts), bs):
                enc = self.encode(texts[s:s + bs], s, rows=None if rows is None else rows[s:s + bs])
                logits = last_token_logits(self.model, enc["input_ids"], enc["attention_mask"], ids)  # (b, C)
                out.append(torch.softmax(logits, dim=-1))
                progress_read(len(logits))
        return torch.cat(out)
