"""Preference data for text reward models: TRL's formats → :class:`PreferencePair`, and the shared
text rendering + tokenisation used by training (:class:`PairCollator`) and scoring
(``RewardModel.score``), so a model is scored on exactly the layout it was trained on.

Row formats (from a list of dicts, ``.json``, ``.jsonl`` or a saved ``datasets`` folder):

* explicit prompt: ``{"prompt": P, "chosen": R, "rejected": R}`` with P a string or a message list
  (``[{"role": "user", "content": "..."}]``) and R a string or a message list (the assistant turn);
* implicit prompt: ``{"chosen": C, "rejected": C}`` with C a whole conversation (message list) or a
  whole text — scored as given;
* optional ``"margin"`` (number, for the margin loss), optional ``"tie": true`` or ``"target": 0.5``
  (RRM tie pairs, target probability ½; ``"target": 1`` is an ordinary pair). Other fields are kept
  in ``PreferencePair.meta`` (e.g. ``category`` / ``id`` for curation recipes).

Rendering: with a tokenizer that has a chat template, prompt + response become one message list
(a string prompt is a user turn, a string response an assistant turn) rendered by
``apply_chat_template`` (no extra special tokens). Without a template the texts are joined as
``prompt + "\\n\\n" + response`` (message lists: their contents joined by blank lines, roles dropped)
and tokenised with the tokenizer's special tokens.

Truncation keeps the **last** ``max_length`` tokens: the reward is read at the last token, so the
end of the response must survive; the cut happens at the start of the prompt.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch

from mmreward.core.data import DataError, describe, read_records

Messages = list[dict]
TextLike = Union[str, Messages]

_KNOWN = ("prompt", "chosen", "rejected", "margin", "tie", "target")


@dataclass
class PreferencePair:
    chosen: TextLike
    rejected: TextLike
    prompt: Optional[TextLike] = None  # None: chosen / rejected are whole conversations / texts
    margin: Optional[float] = None
    tie: bool = False
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------ validation
def _check_messages(value: Any, where: str) -> Messages:
    if not value:
        raise DataError(f"{where} is an empty message list")
    for j, m in enumerate(value):
        if not isinstance(m, dict):
            raise DataError(f"{where}[{j}] must be a message dict with 'role' and 'content', got {describe(m)}")
        if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}[{j}] needs string 'role' and 'content', got {describe(m)}")
    return [dict(m) for m in value]


def check_text(value: Any, where: str, *, allow_empty: bool = False) -> TextLike:
    """A string or a message list, else ``DataError`` naming ``where``."""
    if isinstance(value, str):
        if not value and not allow_empty:
            raise DataError(f"{where} is an empty string")
        return value
    if isinstance(value, (list, tuple)):
        return _check_messages(value, where)
    raise DataError(f"{where} must be a string or a list of messages, got {type(value).__name__}: {describe(value)}")


def pair_from_row(row: Any, index: int) -> PreferencePair:
    """Validate one row (dict or PreferencePair); errors name the row index and the field."""
    if isinstance(row, PreferencePair):
        row = {"prompt": row.prompt, "chosen": row.chosen, "rejected": row.rejected, "margin": row.margin,
               "tie": row.tie, **row.meta}
    if not isinstance(row, dict):
        raise DataError(f"row {index}: expected a dict with 'chosen' and 'rejected', got {type(row).__name__}")
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            raise DataError(f"row {index}: missing field {name!r} (fields present: {sorted(map(str, row))[:10]})")
    chosen = check_text(row["chosen"], f"row {index}: field 'chosen'")
    rejected = check_text(row["rejected"], f"row {index}: field 'rejected'")
    prompt = row.get("prompt")
    if prompt is not None:
        prompt = check_text(prompt, f"row {index}: field 'prompt'", allow_empty=True)
    margin = row.get("margin")
    if margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not math.isfinite(float(margin)):
            raise DataError(f"row {index}: field 'margin' must be a finite number, got {describe(margin)}")
        margin = float(margin)
    tie = row.get("tie", False)
    if tie is None:
        tie = False
    if not isinstance(tie, (bool, int)) or tie not in (0, 1):
        raise DataError(f"row {index}: field 'tie' must be true / false, got {describe(tie)}")
    target = row.get("target")
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, numbers.Real) or float(target) not in (0.5, 1.0):
            raise DataError(f"row {index}: field 'target' must be 1 (chosen preferred) or 0.5 (tie), got {describe(target)}")
        tie = tie or float(target) == 0.5
    meta = {k: v for k, v in row.items() if k not in _KNOWN}
    return PreferencePair(chosen=chosen, rejected=rejected, prompt=prompt, margin=margin, tie=bool(tie), meta=meta)


def load_preference_pairs(source: Any, *, split: Optional[str] = None) -> list[PreferencePair]:
    """Pairs from a path (.json / .jsonl / saved dataset folder) or a list of dicts / PreferencePairs."""
    if isinstance(source, (list, tuple)) and all(isinstance(r, PreferencePair) for r in source):
        rows = list(source)
    else:
        rows = read_records(source, split=split)
    if not rows:
        raise DataError(f"no preference pairs in {source if isinstance(source, str) else 'the given data'}")
    where = f"{source}: " if isinstance(source, str) else ""
    out = []
    for i, r in enumerate(rows):
        try:
            out.append(pair_from_row(r, i))
        except DataError as e:
            raise DataError(f"{where}{e}") from None
    return out


# ------------------------------------------------------------------ rendering + tokenising
def _flatten(value: TextLike) -> str:
    return value if isinstance(value, str) else "\n\n".join(m["content"] for m in value)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer: Any, prompt: Optional[TextLike], response: TextLike) -> tuple[str, bool]:
    """``(text, add_special_tokens)`` for one (prompt, response); see the module docstring."""
    if has_chat_template(tokenizer) and not (prompt is None and isinstance(response, str)):
        msgs: Messages = []
        if prompt is not None:
            msgs += [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        msgs += [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
        return tokenizer.apply_chat_template(msgs, tokenize=False), False
    if prompt is None:
        return _flatten(response), True
    p = _flatten(prompt)
    return (p + "\n\n" + _flatten(response) if p else _flatten(response)), True


def model_max_length(tokenizer: Any, config: Any = None) -> Optional[int]:
    """The longest input the tokenizer / backbone config allows (None if neither says)."""
    limits = []
    m = getattr(tokenizer, "model_max_length", None)
    if isinstance(m, int) and 0 < m < 1_000_000:
        limits.append(m)
    p = getattr(config, "max_position_embeddings", None) if config is not None else None
    if isinstance(p, int) and p > 0:
        limits.append(p)
    return min(limits) if limits else None


def encode(tokenizer: Any, items: Sequence[tuple[Optional[TextLike], TextLike]],
           max_length: Optional[int] = None) -> tuple[list[list[int]], list[int]]:
    """Token ids of each (prompt, response) and how many tokens were cut from each (left truncation)."""
    ids_out, cut = [], []
    rendered = [render(tokenizer, p, r) for p, r in items]
    for special in (True, False):
        idx = [i for i, (_, s) in enumerate(rendered) if s == special]
        if not idx:
            continue
        enc = tokenizer([rendered[i][0] for i in idx], add_special_tokens=special)["input_ids"]
        for i, ids in zip(idx, enc):
            ids_out.append((i, list(ids)))
    ids_out.sort(key=lambda t: t[0])
    result = []
    for _, ids in ids_out:
        n_cut = max(0, len(ids) - max_length) if max_length else 0
        result.append(ids[n_cut:])
        cut.append(n_cut)
    for i, ids in enumerate(result):
        if not ids:
            raise DataError(f"input {i} has no tokens after tokenisation")
    return result, cut


def truncation_warning(cut: Sequence[int], max_length: Optional[int], what: str = "inputs") -> None:
    n = sum(1 for c in cut if c)
    if n:
        warnings.warn(f"truncated {n} of {len(cut)} {what} to max_length={max_length} tokens "
                      f"({sum(cut)} tokens cut in total, up to {max(cut)} from one; the start of the prompt is cut)",
                      stacklevel=3)


def pad_id_of(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    return 0 if pad is None else int(pad)


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both int64 (N, T)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        else:
            ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, T - len(s):] = 1
    return ids, mask


class PairCollator:
    """List of PreferencePairs → one batch for the concatenated pairwise forward:
    ``input_ids`` / ``attention_mask`` (2B, T) with the B chosen rows first, then the B rejected rows;
    ``margin`` (B,) float or None; ``tie`` (B,) bool or None."""

    def __init__(self, tokenizer: Any, max_length: Optional[int] = None):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.truncated = 0  # inputs truncated so far
        self._warned = False

    def __call__(self, pairs: Sequence[PreferencePair]) -> dict[str, Any]:
        if not pairs:
            raise ValueError("PairCollator got an empty batch")
        items = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
        ids, cut = encode(self.tokenizer, items, self.max_length)
        n_cut = sum(1 for c in cut if c)
        self.truncated += n_cut
        if n_cut and not self._warned:
            truncation_warning(cut, self.max_length, "training inputs in a batch")
            self._warned = True
        input_ids, attention_mask = pad_batch(ids, pad_id_of(self.tokenizer))
        margin = None
        if any(p.margin is not None for p in pairs):
            margin = torch.tensor([p.margin or 0.0 for p in pairs], dtype=torch.float32)
        tie = torch.tensor([p.tie for p in pairs], dtype=torch.bool) if any(p.tie for p in pairs) else None
        return {"input_ids": input_ids, "attention_mask": attention_mask, "margin": margin, "tie": tie}
