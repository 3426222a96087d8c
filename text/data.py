"""Preference data for text reward models, and the one text layout + truncation used by training,
scoring and evaluation (:class:`TextEncoder`), so a model is scored exactly as it was trained.

Row formats (from a list of dicts or any source :func:`mmreward.core.data.read_records` reads: ``.json``,
``.jsonl``, ``.parquet``, a dataset folder or a hub dataset id):

* explicit prompt: ``{"prompt": P, "chosen": R, "rejected": R}`` with P a string or a message list
  (``[{"role": "user", "content": "..."}]``) and R a string or a message list (the assistant turn);
* implicit prompt: ``{"chosen": C, "rejected": C}`` with C a whole conversation (message list) or a
  whole text; a prompt given *and* repeated at the start of ``chosen`` / ``rejected`` conversations
  (UltraFeedback-binarized rows) counts once (:func:`drop_repeated_prompt`), also after a system turn that opens
  the conversations and not the prompt (that turn then opens the prompt: :func:`split_conversation`);
* optional ``"margin"`` (number, for the margin loss), optional ``"tie": true`` or ``"target": 0.5``
  (RRM tie pairs, target probability ½; ``"target": 1`` is an ordinary pair). Other fields are kept
  in ``PreferencePair.meta`` (e.g. ``category`` / ``id`` for curation recipes).

Published layouts read as their authors mean them (:func:`pair_from_row`):

* ``"system": S`` (a non-empty string; Intel/orca_dpo_pairs) is the conversation's first turn, a
  system turn: put before the prompt's turns, or before both conversations of an implicit-prompt row
  (one that already opens with a system turn must hold the same text). A system field beside two bare
  texts, with no prompt, is refused (it would be dropped);
* no ``prompt`` but ``"question"`` (Intel/orca_dpo_pairs) or ``"input"``
  (argilla/distilabel-intel-orca-dpo-pairs): that string is the prompt. Two single replies (bare texts
  or one-turn lists) beside an ``instruction`` / ``query`` / ``problem`` / ``context`` / ``history`` /
  ``messages`` / ``conversations`` field and no prompt are refused (the field would be dropped: rename
  it ``prompt``);
* ``"status": "tie"`` (argilla/distilabel-intel-orca-dpo-pairs: both responses rated the same) is a tie;
* nvidia/HelpSteer2 preference rows ``{"prompt", "response_1", "response_2", "preference_strength"}``
  and nvidia/HelpSteer3 rows ``{"context": [messages], "response1", "response2",
  "overall_preference"}``: the strength runs from −3 (response 1 much better) to +3 (response 2 much
  better), so a negative one makes response 1 ``chosen``, a positive one response 2, and 0 ("about
  the same") is a tie pair (response 1 as ``chosen``). The strength stays in ``meta``;
* rows whose field ``split`` names their split (HelpSteer2's preference file holds train and ``val``
  rows together) are read one split at a time (:func:`load_preference_pairs`);
* refused with the fields to give: PKU-SafeRLHF rows (``response_0`` / ``response_1`` with
  ``better_response_id`` and ``safer_response_id``: two preferences, helpfulness and harmlessness —
  pick one and give ``chosen`` / ``rejected``), other two-response rows without ``chosen`` /
  ``rejected``, and RM-Bench rows (``chosen`` / ``rejected`` lists of three styled strings: the RM-Bench
  harness, ``mmreward text eval --benchmark rm-bench``, reads them).

Input formats (``input_format``), each tokenised once per text with the tokenizer's own special tokens:

* ``chat`` — prompt + response as one message list (a string prompt is a user turn, a string
  response an assistant turn) rendered by the tokenizer's chat template, a leading BOS string
  removed, then tokenised with special tokens (the Skywork-Reward convention);
* ``pair`` — ``tokenizer(prompt, response)``: the tokenizer's text-pair layout
  (``[CLS] prompt [SEP] response [SEP]`` for BERT, with token type ids), the convention of
  encoder reward models (OpenAssistant DeBERTa RMs);
* ``joined`` — ``prompt + "\\n\\n" + response`` tokenised with special tokens.

Message lists in ``pair`` / ``joined`` become their contents joined by blank lines. An implicit-prompt
conversation's last turn is the response and the turns before it the prompt; a conversation that ends
with a user or system turn has no reply to score and is a DataError. A bare text
(``prompt=None``, a string) is tokenised as it is, with special tokens.

Truncation (``max_length`` tokens per input): special and template tokens are always kept — among
them BERT's ``[CLS]`` and a chat template's closing tokens, the tokens an RM reads its score from —
and only content tokens are cut:

* ``prompt_first`` (default) — the prompt loses tokens from its start until it is down to
  ``prompt_share`` of the content budget, then the response loses tokens from its end (its opening
  survives), then the prompt loses the rest of its start. ``prompt_share=0``: the response keeps
  all it can and the prompt what is left;
* ``keep_end`` — the first content tokens go (the end of the text survives).
"""
from __future__ import annotations

import math
import numbers
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch

from mmreward.core.data import (DataError, _in_window, _split_window, describe, in_memory_rows, read_records,
                                row_origin)
from mmreward.core.inputs import _PROMPT_ALIASES, _listed
from mmreward.core.inputs import _UNREAD_PROMPT_FIELDS as _UNREAD_REPLY_PROMPT_FIELDS
from mmreward.core.inputs import _text as check_text

Messages = list[dict]
TextLike = Union[str, Messages]

# concat_eos: TRL RewardTrainer's rendering of rows that are no conversations: prompt + response as written, then
# the tokenizer's eos string (unless the text ends with it), tokenised with special tokens
INPUT_FORMATS = ("chat", "pair", "joined", "concat_eos")
TRUNCATIONS = ("prompt_first", "keep_end")
_KNOWN = ("prompt", "chosen", "rejected", "margin", "tie", "target")
_PROMPT, _RESPONSE = 1, 2  # token regions; 0: special / template token (never cut)
_FLOAT32_MAX = 3.4028234663852886e38


@dataclass
class PreferencePair:
    chosen: TextLike
    rejected: TextLike
    prompt: Optional[TextLike] = None  # None: chosen / rejected are whole conversations / texts
    margin: Optional[float] = None
    tie: bool = False
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------ validation
def required_field(row: dict, name: str, where: str) -> Any:
    """``row[name]``; a missing field and a null one are told apart in the DataError."""
    if name not in row:
        raise DataError(f"{where}: missing field {name!r} (fields present: {sorted(map(str, row))[:10]})")
    if row[name] is None:
        raise DataError(f"{where}: field {name!r} is null")
    return row[name]


def _number(row: dict, name: str, index: int) -> Optional[float]:
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise DataError(f"row {index}: field {name!r} must be a finite number, got {describe(value)}")
    if abs(float(value)) > _FLOAT32_MAX:  # a batch holds it as float32: inf there, a NaN loss at some step
        raise DataError(f"row {index}: field {name!r} is {float(value):g}, beyond the float32 range "
                        f"(±{_FLOAT32_MAX:.4g}) the batch holds it in")
    return float(value)


# published layouts (module docstring): the prompt under another name, fields that would be dropped, and the
# rows that rate two responses on a -3..3 scale (negative: the first one is better)
# the prompt under another name (Intel/orca_dpo_pairs, argilla/distilabel-intel-orca-dpo-pairs) and fields that would
# be dropped, as a single reply's row reads them (core.inputs); beside two replies, "messages" is one too
_PROMPT_FIELDS = _PROMPT_ALIASES
_UNREAD_PROMPT_FIELDS = _UNREAD_REPLY_PROMPT_FIELDS + ("messages",)
_STRENGTH_LAYOUTS = (("prompt", "response_1", "response_2", "preference_strength"),  # nvidia/HelpSteer2 preference
                     ("context", "response1", "response2", "overall_preference"))  # nvidia/HelpSteer3 preference
_TWO_RESPONSE_FIELDS = (("response_0", "response_1"), ("response_1", "response_2"), ("response1", "response2"),
                        ("response_a", "response_b"), ("answer_a", "answer_b"), ("completion_a", "completion_b"),
                        ("conversation_a", "conversation_b"))  # … lmsys/chatbot_arena_conversations


def _published_layout(row: dict, index: int) -> dict:
    """``row`` in the ``prompt`` / ``chosen`` / ``rejected`` layout: HelpSteer2 / HelpSteer3 preference rows
    mapped by the sign of their strength, the prompt taken from ``question`` / ``input``; rows whose
    preference cannot be read unambiguously are refused naming the fields to give."""
    where = f"row {index}"
    if "chosen" not in row and "rejected" not in row:
        for prompt_key, first, second, strength in _STRENGTH_LAYOUTS:
            if first in row and second in row and strength in row:
                s = _number(row, strength, index)
                if s is None:
                    raise DataError(f"{where}: field {strength!r} is null")
                if s not in (-3, -2, -1, 0, 1, 2, 3):
                    raise DataError(f"{where}: field {strength!r} must be an integer from -3 ({first} much better) "
                                    f"to 3 ({second} much better), got {s:g}")
                out = {k: v for k, v in row.items() if k not in (prompt_key, first, second)}
                out["prompt"] = required_field(row, prompt_key, where)
                out["chosen"], out["rejected"] = (row[first], row[second]) if s <= 0 else (row[second], row[first])
                if s == 0:  # "about the same": a tie, not a preference for response 1
                    out["tie"] = True
                return out
        if "response" in row and row.get("response") is not None:
            rated = [k for k in ("helpfulness", "correctness", "coherence", "complexity", "verbosity", "score",
                                 "rating", "label", "reward") if k in row]
            raise DataError(f"{where}: one response{' with its ratings (' + ', '.join(rated) + ')' if rated else ''}, "
                            "not a pair: a reward model trains on pairs of responses to one prompt, 'chosen' (the "
                            "preferred one) and 'rejected'; build them from two rated responses to the same prompt "
                            "(HelpSteer2's per-response rows: its preference file gives the pairs)")
        if "better_response_id" in row or "safer_response_id" in row:
            raise DataError(f"{where}: a PKU-SafeRLHF row (response_0 / response_1 with better_response_id and "
                            "safer_response_id) holds two preferences, helpfulness and harmlessness: pick one and "
                            "give the response it names as 'chosen' and the other as 'rejected' (fields present: "
                            f"{sorted(map(str, row))[:12]})")
        two = next((pair for pair in _TWO_RESPONSE_FIELDS if pair[0] in row and pair[1] in row), None)
        if two is not None:
            raise DataError(f"{where}: fields {two[0]!r} and {two[1]!r} give two responses but not which one is "
                            "preferred: give the preferred one as 'chosen' and the other as 'rejected' (fields "
                            f"present: {sorted(map(str, row))[:12]})")
    for side in ("chosen", "rejected"):
        value = _listed(row.get(side))  # a list column read from parquet is a numpy array
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            raise DataError(f"{where}: field {side!r} is a list of {len(value)} strings, not one response (RM-Bench "
                            "rows give each response in three styles: evaluate them with `mmreward text eval "
                            "--benchmark rm-bench` / mmreward.text.eval.evaluate_rmbench, or give one string per "
                            "side)")
    if row.get("prompt") is None:
        given = [k for k in _PROMPT_FIELDS if row.get(k) is not None]
        if len(given) > 1 and row[given[0]] != row[given[1]]:
            raise DataError(f"{where}: fields {given[0]!r} and {given[1]!r} both give the prompt, with different "
                            "values: keep one (or give it as 'prompt')")
        if given:  # consumed: not kept in meta as well
            row = {**{k: v for k, v in row.items() if k not in given}, "prompt": row[given[0]]}
    return row


def _with_system(row: dict, index: int, prompt: Optional[TextLike], chosen: TextLike,
                 rejected: TextLike) -> tuple[Optional[TextLike], TextLike, TextLike]:
    """A row's ``system`` string (Intel/orca_dpo_pairs) as the first turn of the conversation: before the
    prompt's turns, or before both conversations of an implicit-prompt row; ``""`` / null: none."""
    system = row.get("system")
    if system is None or (isinstance(system, str) and not system.strip()):
        return prompt, chosen, rejected
    if not isinstance(system, str):
        raise DataError(f"row {index}: field 'system' must be a string (the system prompt), got {describe(system)}")
    turn = {"role": "system", "content": system}

    def opened(conv: Messages, name: str) -> Messages:
        first = conv[0]
        if first.get("role") != "system":
            return [turn] + conv
        if first.get("content", "").strip() != system.strip():
            raise DataError(f"row {index}: field 'system' and the system turn that opens {name!r} differ: keep one")
        return conv

    if isinstance(prompt, str) and not prompt.strip():  # no question: the system turn alone
        return [turn], chosen, rejected
    if prompt is not None:
        return opened([{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt, "prompt"), \
            chosen, rejected
    if isinstance(chosen, list) and isinstance(rejected, list):
        return None, opened(chosen, "chosen"), opened(rejected, "rejected")
    raise DataError(f"row {index}: field 'system' would be dropped: 'chosen' and 'rejected' are bare texts with no "
                    "prompt; give the prompt as 'prompt' (the system turn goes before it) or whole conversations")


def pair_from_row(row: Any, index: int) -> PreferencePair:
    """Validate one row (dict or PreferencePair); errors name the row index and the field. The published
    layouts of the module docstring (``system``, ``question`` / ``input``, ``status: "tie"``, HelpSteer2 /
    HelpSteer3 preference rows) are read as their authors mean them; PKU-SafeRLHF, other two-response rows and
    RM-Bench rows are refused naming the fields to give."""
    if isinstance(row, PreferencePair):
        row = {"prompt": row.prompt, "chosen": row.chosen, "rejected": row.rejected, "margin": row.margin,
               "tie": row.tie, **row.meta}
    if not isinstance(row, dict):
        raise DataError(f"row {index}: expected a dict with 'chosen' and 'rejected', got {type(row).__name__}")
    row = _published_layout(row, index)
    chosen = check_text(required_field(row, "chosen", f"row {index}"), f"row {index}: field 'chosen'")
    rejected = check_text(required_field(row, "rejected", f"row {index}"), f"row {index}: field 'rejected'")
    prompt = row.get("prompt")  # every field's roles and written-out message lists are checked by check_text
    if prompt is not None:
        prompt = check_text(prompt, f"row {index}: field 'prompt'", allow_empty=True)
    else:
        implicit = [isinstance(x, list) and len(x) > 1 for x in (chosen, rejected)]
        if implicit[0] != implicit[1]:  # one side would be read with the other's earlier turns, the other with none
            conv, single = ("chosen", "rejected") if implicit[0] else ("rejected", "chosen")
            raise DataError(f"row {index}: field {conv!r} is a conversation whose earlier turns are the prompt, but "
                            f"field {single!r} is a single reply without them, so the two would be scored against "
                            "different prompts: give both as whole conversations, or the prompt as 'prompt'")
        if not implicit[0]:  # bare texts / single turns: a prompt under another name would be dropped
            stray = [k for k in _UNREAD_PROMPT_FIELDS if row.get(k) is not None]
            if stray:
                raise DataError(f"row {index}: field {stray[0]!r} would be dropped: 'chosen' and 'rejected' are single "
                                "replies and the prompt they answer is read from 'prompt' (or 'question' / 'input'); "
                                f"rename {stray[0]!r} to 'prompt' (or give whole texts / conversations without it)")
    prompt, chosen, rejected = _with_system(row, index, prompt, chosen, rejected)
    meta = {k: v for k, v in row.items() if k not in _KNOWN and k != "system"}
    return PreferencePair(chosen=chosen, rejected=rejected, prompt=prompt, margin=_number(row, "margin", index),
                          tie=row_is_tie(row, index), meta=meta)


def row_is_tie(row: dict, index: int) -> bool:
    """Whether a preference row is a tie pair (no preferred response): ``tie: true``, ``target: 0.5`` (RRM's
    augmented rows; ``target`` 1 is a preference) or ``status: "tie"`` (argilla / distilabel rows whose two
    responses were rated the same). Other values of ``tie`` / ``target`` are refused naming the row."""
    tie = row.get("tie") or False
    if not isinstance(tie, (bool, int)) or tie not in (0, 1):
        raise DataError(f"row {index}: field 'tie' must be true / false, got {describe(tie)}")
    target = _number(row, "target", index)
    if target is not None:
        if target not in (0.5, 1.0):
            raise DataError(f"row {index}: field 'target' must be 1 (chosen preferred) or 0.5 (tie), got {target}")
        tie = tie or target == 0.5
    return bool(tie) or row.get("status") == "tie"


def is_preference_row(row: Any) -> bool:
    """A row that holds two responses with a preference between them, in any layout :func:`pair_from_row` reads:
    ``chosen`` / ``rejected``, or a HelpSteer2 / HelpSteer3 preference row."""
    if not isinstance(row, dict) or "response" in row:
        return False
    if "chosen" in row or "rejected" in row:
        return True
    return any(all(k in row for k in layout[1:]) for layout in _STRENGTH_LAYOUTS)


def preference_inputs(row: Any, index: int, source: str) -> tuple[Any, Any]:
    """The chosen and rejected responses of a preference row as two ``TextPair`` inputs with the row's prompt,
    read as :func:`pair_from_row` reads rows for training (a ``system`` turn, the prompt as ``question`` /
    ``input``, HelpSteer rows), so scoring a row scores what training on it learns from; errors name
    ``source`` and the row."""
    from mmreward.core.inputs import TextPair

    try:
        pair = pair_from_row(row, index)
    except DataError as e:
        raise DataError(f"{source}: {e}") from None
    return TextPair(pair.prompt, pair.chosen), TextPair(pair.prompt, pair.rejected)


def _row_splits(rows: list, where: str = "", asked: Optional[str] = None) -> dict:
    """``{split name: number of rows}`` when every row names its split in a string field ``split``
    (nvidia/HelpSteer2's preference file holds its train and validation rows together, told apart by it), else
    ``{}``. Rows of which only some name their split are refused when the named splits are several or the split
    ``asked`` is to be picked by the field (a row without it would be trained on, or dropped, unseen)."""
    if not rows or not all(isinstance(r, dict) for r in rows):
        return {}  # a row that is no object: the row reader reports it
    counts: dict = {}
    for r in rows:
        if isinstance(r.get("split"), str):
            counts[r["split"]] = counts.get(r["split"], 0) + 1
    missing = next((i for i, r in enumerate(rows) if not isinstance(r.get("split"), str)), None)
    if counts and missing is not None:
        if len(counts) > 1 or asked:
            raise DataError(f"{where}row {missing} names no split (field 'split' is "
                            f"{describe(rows[missing].get('split'))}) while other rows name theirs ({counts}): give "
                            "every row a string 'split', or none")
        return {}
    return counts


def _read_pair_rows(source: Any, split: Optional[str], where: str) -> list:
    """The rows of ``source``; rows of several splits named in their own ``split`` field are refused without
    ``split`` (the validation rows would be trained on) and, with it, cut to the rows of that split — also
    where the source itself has no splits (one file, a list)."""
    try:
        rows = read_records(source, split=split)
    except DataError as e:
        if not split:
            raise
        try:  # a source without that split (one file, a list, a one-split folder): its rows may name their splits
            rows = read_records(source)
            name, window, percent = _split_window(split, where.rstrip(": ") or "data")  # "val" / "val[:100]"
        except (DataError, OSError):
            raise e from None
        counts = _row_splits(rows, where, name)
        if not counts:
            raise e from None
        if name not in counts:
            raise DataError(f"{where}no row has split {name!r}: the rows' field 'split' holds {counts}") from None
        picked = [r for r in rows if r["split"] == name]
        return _in_window(picked, window, percent, split, name, where.rstrip(": ") or "data")
    counts = _row_splits(rows, where)
    if len(counts) > 1:
        if not split:
            raise DataError(f"{where}the rows belong to several splits (field 'split': {counts}): give split= "
                            f"(--split) to read one, e.g. split={next(iter(counts))!r}, so that held-out rows are not "
                            "trained on")
        name = split.split("[", 1)[0]
        if name not in counts:
            raise DataError(f"{where}no row has split {name!r}: the rows' field 'split' holds {counts}")
        rows = [r for r in rows if r["split"] == name]
    return rows


def load_preference_pairs(source: Any, *, split: Optional[str] = None) -> list[PreferencePair]:
    """Pairs from a path (.json / .jsonl / .parquet / dataset folder / hub id), a list of dicts / PreferencePairs,
    a ``datasets.Dataset`` / ``DatasetDict`` (one split: ``split=``) or a pandas DataFrame.
    Rows that name their split in a ``split`` field (nvidia/HelpSteer2's preference file) are read one split at a
    time: ``split=`` picks the rows whose field holds it; rows of several splits without ``split=`` are refused."""
    named = isinstance(source, (str, os.PathLike))  # a path names itself in every error
    where = f"{os.fspath(source)}: " if named else ""
    if not named:
        source, split = in_memory_rows(source, split)
    if isinstance(source, (list, tuple)) and source and all(isinstance(r, PreferencePair) for r in source):
        rows = list(source)
    else:
        rows = _read_pair_rows(source, split, where)
    if not rows:
        raise DataError(f"no preference pairs in {os.fspath(source) if named else 'the given data'}")
    out = []
    for i, r in enumerate(rows):
        try:
            out.append(pair_from_row(r, i))
        except DataError as e:
            origin = row_origin(rows, i)  # a folder of shards: the shard and its row, not a row of all of them
            if origin is not None and str(e).startswith(f"row {i}: "):
                raise DataError(f"{origin[0]}: row {origin[1]}: {str(e)[len(f'row {i}: '):]}") from None
            raise DataError(f"{where}{e}") from None
    return out


# ------------------------------------------------------------------ rendering
def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def has_pair_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer(a, b)`` separates the two texts with special tokens (BERT-style pairs)."""
    try:
        enc = tokenizer(["a"], ["b"], verbose=False)
        seq = enc.sequence_ids(0)
    except Exception:  # noqa: BLE001 - tokenizers without pair support or sequence ids
        return False
    return 0 in seq and 1 in seq and None in seq[seq.index(0):len(seq) - seq[::-1].index(1)]


def split_conversation(prompt: Optional[TextLike], response: TextLike) -> tuple[Optional[TextLike], TextLike]:
    """An implicit-prompt conversation (``prompt=None``, 2+ turns) → (the earlier turns, the last turn);
    a response conversation that repeats the prompt's turns first loses them (:func:`drop_repeated_prompt`)."""
    if prompt is None and isinstance(response, list) and len(response) > 1:
        return response[:-1], response[-1:]
    if prompt is not None and isinstance(response, list) and len(response) > 2 and isinstance(response[0], dict) \
            and response[0].get("role") == "system":
        # {"prompt": Q, "chosen": [system, user Q, assistant A]} (UltraFeedback-style rows whose conversations open
        # with a system turn the prompt lacks): the system turn opens the prompt, and Q is shown once
        head = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if isinstance(head, list) and head and not (isinstance(head[0], dict) and head[0].get("role") == "system"):
            tail = response[1:]
            rest = drop_repeated_prompt(head, tail)
            if rest is not tail:
                return [response[0]] + list(head), rest
    return prompt, drop_repeated_prompt(prompt, response)


def explicit_prompt_row(row: Any, index: int, what: str) -> Any:
    """A TRL implicit-prompt row (no ``prompt``; ``chosen`` / ``rejected`` whole conversations of 2+ turns) as an
    explicit one, split as training splits it: the earlier turns, the same on both sides, become ``prompt``, the
    last turns ``chosen`` / ``rejected`` (one-message lists). Any other row is returned as it is. For the
    recipes, which need one prompt per row (RRM pairs a prompt with other rows' responses)."""
    if not isinstance(row, dict) or row.get("prompt") is not None:
        return row
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not (isinstance(chosen, list) and isinstance(rejected, list) and len(chosen) > 1 and len(rejected) > 1):
        return row
    (p_c, c), (p_r, r) = split_conversation(None, chosen), split_conversation(None, rejected)
    if p_c != p_r:
        raise DataError(f"{what}: row {index}: the chosen and rejected conversations differ before their last turns, "
                        "so the row has no one prompt (an implicit-prompt row repeats the same earlier turns on both "
                        "sides); give it as prompt / chosen / rejected")
    return {**row, "prompt": p_c, "chosen": c, "rejected": r}


def drop_repeated_prompt(prompt: Optional[TextLike], response: TextLike) -> TextLike:
    """``response`` without its leading turns when they are the prompt's turns, same roles and contents
    (a string prompt is one user turn). Rows such as UltraFeedback-binarized's give the prompt *and*
    whole conversations as ``chosen`` / ``rejected``; read as prompt + response they would show the
    model the prompt twice. TRL reads such rows as implicit-prompt conversations: so does this."""
    if prompt is None or not isinstance(response, list):
        return response
    head = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if not isinstance(head, list):
        return response
    def turns(ms: list) -> list:  # contents compared without their outer whitespace (" Hi\n" repeats "Hi")
        return [(m.get("role"), m.get("content").strip() if isinstance(m.get("content"), str) else m.get("content"))
                if isinstance(m, dict) else m for m in ms]

    if len(response) > len(head) and turns(response[:len(head)]) == turns(head):
        return response[len(head):]
    return response


def _is_template_error(e: BaseException) -> bool:
    """A Jinja error from a chat template (``raise_exception('Conversation roles must alternate …')``,
    an undefined variable …): the conversation does not fit the template, a data error."""
    try:
        from jinja2 import TemplateError
    except ImportError:  # pragma: no cover - transformers' chat templates need jinja2
        return False
    return isinstance(e, TemplateError)


def _as_messages(value: TextLike, role: str) -> Messages:
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)


def _flatten(value: TextLike) -> str:
    return value if isinstance(value, str) else "\n\n".join(m["content"] for m in value)


@dataclass
class Encoded:
    """One tokenised input: ``ids`` (and ``types``, the token type ids of ``pair`` inputs) after
    truncation, and how many prompt / response tokens were cut."""

    ids: list[int]
    types: Optional[list[int]] = None
    cut_prompt: int = 0
    cut_response: int = 0

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class _Rendered:
    text: str  # the first (or only) text given to the tokenizer
    second: Optional[str] = None  # the response, for pair inputs
    messages: Optional[Messages] = None  # chat inputs: the rendered messages ...
    n_prompt_messages: int = 0  # ... of which the first n are the prompt
    spans: Optional[list[tuple[int, int, int]]] = None  # joined inputs: (start, end, region) of the contents
    strip: int = 0  # characters of a leading BOS removed from a chat rendering


class TextEncoder:
    """(prompt, response) → token ids, in one of :data:`INPUT_FORMATS`, cut to ``max_length`` by the
    ``truncation`` policy (module docstring). Shared by training, scoring and evaluation."""

    def __init__(self, tokenizer: Any, *, max_length: Optional[int] = None, input_format: str = "joined",
                 truncation: str = "prompt_first", prompt_share: float = 0.25, system_prompt: str = ""):
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
        if input_format == "chat" and not has_chat_template(tokenizer):
            raise ValueError("input_format='chat' needs a tokenizer with a chat template")
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        if not 0.0 <= prompt_share <= 1.0:
            raise ValueError(f"prompt_share must be in [0, 1], got {prompt_share!r}")
        self.tokenizer, self.max_length, self.input_format = tokenizer, max_length, input_format
        if system_prompt and input_format != "chat":
            raise ValueError(f"system_prompt applies to input_format='chat', not {input_format!r}")
        self.truncation, self.prompt_share, self.system_prompt = truncation, prompt_share, system_prompt

    def _added_bos(self) -> Optional[str]:
        """The BOS string when the tokenizer puts its BOS token before every text it encodes, else None."""
        if not hasattr(self, "_bos_cache"):
            bos, bos_id = getattr(self.tokenizer, "bos_token", None), getattr(self.tokenizer, "bos_token_id", None)
            adds = False
            if isinstance(bos, str) and bos and bos_id is not None:
                try:
                    adds = list(self.tokenizer("a", add_special_tokens=True)["input_ids"])[:1] == [bos_id] \
                        and list(self.tokenizer("a", add_special_tokens=False)["input_ids"])[:1] != [bos_id]
                except Exception:  # noqa: BLE001 - a tokenizer that cannot say: leave texts as they are
                    adds = False
            self._bos_cache = bos if adds else None
        return self._bos_cache

    def _eos_after(self, text: str) -> str:
        """``concat_eos``: the eos string to append to ``text`` (none when it ends with it, or in other formats)."""
        eos = getattr(self.tokenizer, "eos_token", None) if self.input_format == "concat_eos" else None
        return eos if isinstance(eos, str) and eos and not text.endswith(eos) else ""

    # -------------------------------------------------------------- rendering
    def render(self, prompt: Optional[TextLike], response: TextLike) -> _Rendered:
        prompt, response = split_conversation(prompt, response)
        last = response[-1] if isinstance(response, list) and response else None
        if isinstance(last, dict) and last.get("role") in ("user", "system"):
            raise DataError(f"the conversation ends with a {last['role']!r} turn, not a reply: a reward model scores "
                            "the response, which is the last turn (give the reply as an 'assistant' turn or as "
                            "'response')")
        if prompt is None and isinstance(response, str):
            # a whole text rendered elsewhere (a chat template's output, a decoded OpenRLHF query) may open with
            # the BOS string, which the tokenizer adds again: it goes, as the chat path's does
            bos = self._added_bos()
            if bos and response.startswith(bos):
                response = response[len(bos):]
            return _Rendered(response + self._eos_after(response), spans=[(0, len(response), _RESPONSE)])
        if self.input_format == "chat":
            asked = [] if prompt is None else _as_messages(prompt, "user")
            if self.system_prompt and not (asked and asked[0].get("role") == "system"):  # a given system turn wins
                asked = [{"role": "system", "content": self.system_prompt}] + asked
            msgs = asked + _as_messages(response, "assistant")
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False)
            # a template that writes the BOS string: dropped when the tokenizer adds its own (else it is doubled),
            # kept when it does not (as apply_chat_template(tokenize=True) keeps it)
            bos = self._added_bos()
            strip = len(bos) if bos and text.startswith(bos) else 0
            return _Rendered(text[strip:], messages=msgs, n_prompt_messages=len(asked), strip=strip)
        p, r = ("" if prompt is None else _flatten(prompt)), _flatten(response)
        if self.input_format == "pair" and prompt is not None:
            return _Rendered(p, second=r)
        if self.input_format == "concat_eos":
            spans = ([(0, len(p), _PROMPT)] if p else []) + [(len(p), len(p) + len(r), _RESPONSE)]
            return _Rendered(p + r + self._eos_after(p + r), spans=spans)
        if not p:
            return _Rendered(r, spans=[(0, len(r), _RESPONSE)])
        return _Rendered(p + "\n\n" + r, spans=[(0, len(p), _PROMPT), (len(p) + 2, len(p) + 2 + len(r), _RESPONSE)])

    def _chat_spans(self, r: _Rendered) -> Optional[list[tuple[int, int, int]]]:
        """Character spans of each message's content in a chat rendering: the template is rendered
        with placeholders, which must come back as the real text when replaced by the contents
        (None when the template rewrites or repeats a content)."""
        marks = [f"\ue000{i}\ue001" for i in range(len(r.messages))]
        marked = self.tokenizer.apply_chat_template([{**m, "content": s} for m, s in zip(r.messages, marks)],
                                                    tokenize=False)[r.strip:]
        spans, pieces, cursor, length = [], [], 0, 0
        for i, (m, mark) in enumerate(zip(r.messages, marks)):
            at = marked.find(mark, cursor)
            if at < 0 or marked.find(mark, at + 1) >= 0:
                return None
            pieces += [marked[cursor:at], m["content"]]
            length += at - cursor
            spans.append((length, length + len(m["content"]), _PROMPT if i < r.n_prompt_messages else _RESPONSE))
            length += len(m["content"])
            cursor = at + len(mark)
        pieces.append(marked[cursor:])
        return spans if "".join(pieces) == r.text else None

    # -------------------------------------------------------------- tokenising
    def encode(self, items: Sequence[Any]) -> list[Encoded]:
        """``items``: (prompt, response) tuples or objects with ``prompt`` / ``response`` (TextPair)."""
        rendered = []
        for i, it in enumerate(items):
            try:
                rendered.append(self.render(*((it.prompt, it.response) if hasattr(it, "response") else it)))
            except DataError as e:
                raise DataError(f"input {i}: {e}") from None
            except Exception as e:  # noqa: BLE001 - re-raised unless it is the chat template's own refusal
                if not _is_template_error(e):
                    raise
                raise DataError(f"input {i}: the tokenizer's chat template refused the conversation "
                                f"({type(e).__name__}: {e})") from None
        out: list[Optional[Encoded]] = [None] * len(rendered)
        pairs = [i for i, r in enumerate(rendered) if r.second is not None]
        singles = [i for i, r in enumerate(rendered) if r.second is None]
        for idx, is_pair in ((singles, False), (pairs, True)):
            if not idx:
                continue
            args = ([rendered[i].text for i in idx],) + (([rendered[i].second for i in idx],) if is_pair else ())
            enc = self.tokenizer(*args, add_special_tokens=True, verbose=False)
            types = enc.get("token_type_ids") if is_pair else None
            too_long = []
            for k, i in enumerate(idx):
                ids = list(enc["input_ids"][k])
                if not ids:
                    raise DataError(f"input {i} has no tokens after tokenisation")
                row_types = list(types[k]) if types is not None else None
                if self.max_length is None or len(ids) <= self.max_length:
                    out[i] = Encoded(ids, row_types)
                elif is_pair:
                    regions = [{0: _PROMPT, 1: _RESPONSE}.get(s, 0) for s in enc.sequence_ids(k)]
                    out[i] = self._cut(i, ids, row_types, regions)
                else:
                    too_long.append((k, i, ids))
            if too_long:
                for (k, i, ids), regions in zip(too_long, self._regions([rendered[i] for _, i, _ in too_long])):
                    out[i] = self._cut(i, ids, None, regions)
        return out  # type: ignore[return-value]

    def _regions(self, rendered: list[_Rendered]) -> list[list[int]]:
        """Region of every token of single-text inputs, from the tokenizer's character offsets."""
        texts = [r.text for r in rendered]
        try:
            enc = self.tokenizer(texts, add_special_tokens=True, verbose=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        except NotImplementedError:  # a tokenizer without character offsets: special tokens are all it tells
            enc = self.tokenizer(texts, add_special_tokens=True, verbose=False)
            offsets = [[(0, 1)] * len(ids) for ids in enc["input_ids"]]
            rendered = [_Rendered(r.text) for r in rendered]
        # the unknown token stands for content (an emoji, a script the vocabulary lacks): cuttable like any word
        special = set(getattr(self.tokenizer, "all_special_ids", [])) - {getattr(self.tokenizer, "unk_token_id", None)}
        out = []
        for k, r in enumerate(rendered):
            spans = r.spans if r.messages is None else self._chat_spans(r)
            regions = []
            for tid, (s, e) in zip(enc["input_ids"][k], offsets[k]):
                if e <= s or tid in special:
                    regions.append(0)
                elif spans is None:  # contents not located: every non-special token is cut from the start
                    regions.append(_PROMPT)
                else:
                    regions.append(next((reg for a, b, reg in spans if s < b and e > a), 0))
            out.append(regions)
        return out

    def _cut(self, index: int, ids: list[int], types: Optional[list[int]], regions: list[int]) -> Encoded:
        fixed = sum(1 for g in regions if g == 0)
        budget = self.max_length - fixed
        if budget < 0:
            raise DataError(f"input {index}: its special / template tokens alone are {fixed} tokens, more than "
                            f"max_length={self.max_length}")
        pos_p = [j for j, g in enumerate(regions) if g == _PROMPT]
        pos_r = [j for j, g in enumerate(regions) if g == _RESPONSE]
        if self.truncation == "keep_end":
            content = sorted(pos_p + pos_r)
            drop = set(content[:len(content) - budget])
        else:
            keep_r = min(len(pos_r), budget - min(len(pos_p), int(self.prompt_share * budget)))
            keep_p = min(len(pos_p), budget - keep_r)
            drop = set(pos_p[:len(pos_p) - keep_p]) | set(pos_r[keep_r:])
        keep = [j for j in range(len(ids)) if j not in drop]
        return Encoded([ids[j] for j in keep], None if types is None else [types[j] for j in keep],
                       cut_prompt=sum(1 for j in drop if regions[j] == _PROMPT),
                       cut_response=sum(1 for j in drop if regions[j] == _RESPONSE))


def truncation_warning(rows: Sequence[Encoded], encoder: TextEncoder, what: str = "inputs", stacklevel: int = 4) -> None:
    """One warning for all truncated ``rows`` (``stacklevel``: the user's call that encoded them), shown once per
    calling line, model length and policy (:func:`_warn_once_per_site`)."""
    cut = [r.cut_prompt + r.cut_response for r in rows]
    n = sum(1 for c in cut if c)
    if n:
        _warn_once_per_site(f"truncated {n} of {len(rows)} {what} to max_length={encoder.max_length} tokens "
                            f"({encoder.truncation}: {sum(r.cut_prompt for r in rows)} prompt and "
                            f"{sum(r.cut_response for r in rows)} response tokens cut, up to {max(cut)} from one "
                            "input; special and template tokens kept); reported once per calling line unless "
                            "warnings are set to 'always'", ("truncated", what, encoder.max_length,
                                                                encoder.truncation), stacklevel)


# (file, line, key) of a call whose warning was shown -> the warning filters it was shown under
_WARNED: dict = {}


def _warn_once_per_site(message: str, key: tuple, stacklevel: int) -> None:
    """``warnings.warn(message, stacklevel=stacklevel)`` for a message whose counts change from call to call, shown
    as Python shows a fixed message: once per calling line under the default filters (``key``: what makes it
    another warning), each time under ``simplefilter("always")``, never under "ignore", raised under "error".
    Plain ``warnings.warn`` would add one entry per distinct text to the caller's ``__warningregistry__`` (a
    scoring call in an RL loop: one per call, without bound) and show nearly every call's warning."""
    try:
        frame = sys._getframe(stacklevel)
    except ValueError:  # a stack shallower than stacklevel: warnings.warn names "sys" then
        frame = None
    # the user's line, past mmreward's own frames (the eval-mode wrapper of every score method, evaluate_pairs,
    # the recipes): a fixed stacklevel named mmreward/core/model.py for every RewardModel.score call
    while frame is not None and str(frame.f_globals.get("__name__", "")).split(".")[0] == "mmreward":
        frame = frame.f_back
    if frame is None:
        filename, lineno, module = "sys", 1, "sys"
    else:
        filename, lineno = frame.f_code.co_filename, frame.f_lineno
        module = frame.f_globals.get("__name__", "<string>")
    site = (filename, lineno, key)
    filters = (id(warnings.filters), tuple(warnings.filters))  # catch_warnings / simplefilter change them
    if _WARNED.get(site) == filters:
        return
    registry: dict = {}  # thrown away: the message's counts never enter a registry that lives on
    # no module_globals: a module's loader that cannot give its source (a script read from stdin) raises there
    warnings.warn_explicit(message, UserWarning, filename, lineno, module, registry)
    if len(registry) > 1:  # beside its "version": a filter that shows a warning once ("default", "module", "once")
        _WARNED[site] = filters


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


def pad_id_of(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    return 0 if pad is None else int(pad)


def pad_batch(rows: Sequence[Union[Encoded, Sequence[int]]], pad_id: int,
              side: str = "right") -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``(input_ids, attention_mask, token_type_ids or None)``, int64 (N, T), T = the longest row."""
    rows = [r if isinstance(r, Encoded) else Encoded(list(r)) for r in rows]
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    with_types = any(r.types is not None for r in rows)
    types = torch.zeros((len(rows), T), dtype=torch.long) if with_types else None
    for i, r in enumerate(rows):
        cols = slice(0, len(r)) if side == "right" else slice(T - len(r), T)
        ids[i, cols] = torch.tensor(r.ids, dtype=torch.long)
        mask[i, cols] = 1
        if with_types and r.types is not None:
            types[i, cols] = torch.tensor(r.types, dtype=torch.long)
    return ids, mask, types


# ------------------------------------------------------------------ pairs for training
@dataclass
class EncodedPair:
    """A preference pair tokenised once: the chosen and rejected inputs, margin and tie flag."""

    chosen: Encoded
    rejected: Encoded
    margin: Optional[float] = None
    tie: bool = False

    def __len__(self) -> int:  # the padded length it needs in a batch
        return max(len(self.chosen), len(self.rejected))


def encode_pairs(encoder: TextEncoder, pairs: Sequence[PreferencePair], what: str = "training inputs", *,
                 stacklevel: int = 4, names: Optional[Sequence[str]] = None) -> list[EncodedPair]:
    """Tokenise every chosen and rejected input once (one batched tokenizer call for all of them);
    ``stacklevel``: of the truncation / equal-pair warnings (the default names the caller's caller); ``names``:
    what an error calls each pair (default ``training pair K``; :func:`pair_names` names a file's rows)."""
    n = len(pairs)
    try:
        rows = encoder.encode([(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs])
    except DataError as e:  # "input K" is the K-th of the 2n texts: name the pair and its side
        m = re.match(r"input (\d+)\b", str(e))
        if not m or int(m.group(1)) >= 2 * n:
            raise
        k = int(m.group(1))
        name = names[k % n] if names is not None else f"{what.removesuffix(' inputs')} pair {k % n}"
        raise DataError(f"{name} ({'chosen' if k < n else 'rejected'}){str(e)[m.end():]}") from None
    truncation_warning(rows, encoder, what, stacklevel=stacklevel)
    same_tokens_warning(rows[:n], rows[n:], pairs, encoder, what, stacklevel=stacklevel, names=names)
    return [EncodedPair(rows[i], rows[n + i], p.margin, p.tie) for i, p in enumerate(pairs)]


def pair_names(source: Any, indices: Sequence[int], what: str = "training") -> list[str]:
    """What errors call the pairs at ``indices`` of the pairs loaded from ``source``: ``FILE: row I`` for a path
    (the row of the file, also where tie pairs left out of an evaluation come before it), else ``{what} pair I``
    (its place in the given list)."""
    if isinstance(source, (str, os.PathLike)):
        return [f"{os.fspath(source)}: row {i}" for i in indices]
    return [f"{what} pair {i}" for i in indices]


def same_tokens_warning(chosen: Sequence[Encoded], rejected: Sequence[Encoded], pairs: Sequence[PreferencePair],
                        encoder: TextEncoder, what: str = "training inputs", stacklevel: int = 4,
                        names: Optional[Sequence[str]] = None) -> None:
    """One warning for the non-tie pairs whose chosen and rejected inputs are the same tokens (equal
    texts, or texts that differ only in the part truncation cuts): such a pair gives no gradient and
    is always counted wrong, silently. Tie pairs are meant to score alike and are not named."""
    same = [i for i, (c, r, p) in enumerate(zip(chosen, rejected, pairs))
            if not p.tie and c.ids == r.ids and c.types == r.types]
    if same:
        hint = ""
        if encoder.truncation == "prompt_first" and any(pairs[i].prompt is None and isinstance(pairs[i].chosen, str)
                                                        and (chosen[i].cut_response or rejected[i].cut_response)
                                                        for i in same):
            # a whole text (HH-RLHF's "\n\nHuman: … \n\nAssistant: …") is all response: its end, the reply the
            # two sides differ in, is what prompt_first cuts
            hint = ("; whole texts (HH-RLHF dialogues) lose their end, the final reply, under truncation="
                    "'prompt_first': truncation='keep_end' (--truncation keep_end) keeps it")
        _warn_once_per_site(f"{len(same)} of {len(pairs)} pairs of the {what} have chosen and rejected inputs of the "
                            f"same tokens, first {names[same[0]] if names is not None else f'pair {same[0]}'} (equal texts, or texts that differ only where "
                            f"truncation to max_length={encoder.max_length} cuts): such a pair gives no gradient and "
                            "always counts as wrong" + hint, ("same tokens", what, encoder.max_length), stacklevel)


class PairCollator:
    """EncodedPairs → one batch for the concatenated pairwise forward: ``input_ids`` /
    ``attention_mask`` (2B, T) — the B chosen rows, then the B rejected rows — ``token_type_ids``
    (2B, T) for pair inputs, else None; ``margin`` (B,) or None; ``tie`` (B,) bool or None."""

    def __init__(self, pad_id: int):
        self.pad_id = int(pad_id)

    def __call__(self, pairs: Sequence[EncodedPair]) -> dict[str, Any]:
        if not pairs:
            raise ValueError("PairCollator got an empty batch")
        input_ids, attention_mask, types = pad_batch([p.chosen for p in pairs] + [p.rejected for p in pairs], self.pad_id)
        margin = None
        if any(p.margin is not None for p in pairs):
            margin = torch.tensor([p.margin or 0.0 for p in pairs], dtype=torch.float32)
        tie = torch.tensor([p.tie for p in pairs], dtype=torch.bool) if any(p.tie for p in pairs) else None
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": types, "margin": margin,
                "tie": tie}
