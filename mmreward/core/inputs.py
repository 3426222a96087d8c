"""The documented inputs of ``score``: one small dataclass per modality, the same everywhere.

=================  =====================================================  ==================================
input              fields                                                 scored by
=================  =====================================================  ==================================
``TextPair``       ``prompt`` (str / messages / None), ``response``       text RMs, GenRM, GRM, Critic-RM, …
``Comparison``     ``prompt``, ``first``, ``second``                      pairwise judges: P(first ≻ second)
``StepSolution``   ``problem``, ``steps`` (list of str)                   PRMs (per-step scores)
``ImagePrompt``    ``prompt``, ``image`` (path / PIL / array / tensor)     image scorers
``VideoPrompt``    ``prompt``, ``video`` (path / uint8 ``[T, H, W, 3]``)  image scorers over frames
``Conversation``   ``messages`` (chat turns), ``images`` (list)            VLM reward models
``VisualSteps``    ``question``, ``steps``, ``images``                     VisualPRM (per-step scores)
``Episode``        ``frames`` (path / uint8 ``[T, H, W, 3]``), ``success``  Diffusion Reward, ranker, RND
=================  =====================================================  ==================================

Every ``score`` takes a list of these (or of dicts with the same field names, as JSON rows and the
server send them) and returns ``Tensor[N]``, one float per input. Inputs made of parts (steps,
frames) also have ``score_parts`` → one ``Tensor[K_i]`` per input.

``from_record`` builds an input from a JSON row and names the row and field on bad input. Images
and videos stay as given (a path, bytes, an array …): decoding belongs to the model that reads them.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Sequence, Union

from .data import DataError, describe

Messages = list
TextLike = Union[str, list]


def _text_parts(parts: Sequence[Any], where: str) -> str:
    """OpenAI-style content, a list of ``{"type": "text", "text": ...}`` parts, as one string (parts
    joined by newlines, as vLLM's chat preprocessing joins them); a part of another type (an image,
    audio) cannot be read by a text model and is named."""
    texts = []
    for k, part in enumerate(parts):
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise DataError(f"{where}: content part {k} is of type {kind!r}: a text model reads only "
                            "{'type': 'text', 'text': str} parts")
    if not texts:
        raise DataError(f"{where}: content is an empty list of parts")
    return "\n".join(texts)


TOOL_CALL_KEYS = ("tool_calls", "function_call")  # an assistant turn that only calls tools has content null


def _message(m: Any, where: str) -> dict:
    """One chat turn as a dict with a string ``content``: OpenAI-style text parts joined, and the
    ``content: null`` of an assistant turn that only calls tools (``tool_calls`` / ``function_call``, common
    in agent trajectories) read as ``""``. Other keys (the tool calls, ``tool_call_id``, ``name``) are kept
    for the chat template; a null content without tool calls is an error."""
    if isinstance(m, dict) and isinstance(m.get("role"), str):
        content = m.get("content")
        if isinstance(content, (list, tuple)):
            m = {**m, "content": _text_parts(content, where)}
        elif content is None and any(m.get(k) for k in TOOL_CALL_KEYS):
            m = {**m, "content": ""}
        elif content is None and "content" in m:
            raise DataError(f"{where} must be a message {{'role': str, 'content': str}}: its 'content' is null, "
                            f"which only a turn with 'tool_calls' / 'function_call' may have; got {describe(m)}")
    if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
        raise DataError(f"{where} must be a message {{'role': str, 'content': str}}, got {describe(m)}")
    return dict(m)


# roles of other conventions that chat templates would render as written (Qwen's and Llama's templates print
# "<|im_start|>human"; a template that tests role == "user" drops the turn): ShareGPT's, HH-RLHF's, Gemma's rendering.
# The same table and messages as the training data's checks (mmreward.text.data.pair_from_row), so a row refused
# for training is refused for scoring too, not scored as written.
_ROLE_NAMES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant",
               "chatbot": "assistant", "prompter": "user"}
_ROLES = ("system", "user", "assistant", "tool", "function", "ipython", "developer")
# a message list written out: it opens with `[{"role":` (or 'content'), names another such key, and ends with `}]`.
# Three linear scans: one regex with two `.*` was quadratic in the length (seconds for a 512 KB response a client
# sent to the server)
_WRITTEN_MESSAGES_HEAD = re.compile(r"""\[\s*\{\s*["'](?:role|content)["']\s*:""")
_MESSAGE_KEY = re.compile(r"""["'](?:role|content)["']\s*:""")


def _check_roles(value: Any, where: str) -> None:
    """A message list's roles in the names chat templates take (``user`` / ``assistant`` / ``system`` …); another
    convention's names (ShareGPT's ``human`` / ``gpt``, capitalised ``User``) are refused naming the turn. Roles
    no convention maps (an agent framework's own) are left to the chat template."""
    if not isinstance(value, list):
        return
    for k, m in enumerate(value):
        role = m.get("role") if isinstance(m, dict) else None
        if not isinstance(role, str) or role in _ROLES:
            continue
        meant = _ROLE_NAMES.get(role.strip().lower()) or (role.strip().lower() if role.strip().lower() in _ROLES
                                                          else None)
        if meant is not None:
            raise DataError(f"{where}[{k}] has role {role!r}: chat templates render roles as written and tell the "
                            f"reply by 'assistant': write it as {meant!r}")


def _is_written_message_list(value: Any) -> bool:
    """Whether a string is a whole message list written out (``[{'role': 'user', 'content': ...}, ...]``, as
    pandas' ``to_csv`` writes a list column, or its JSON)."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    head = _WRITTEN_MESSAGES_HEAD.match(text)
    if head is None or not text.endswith("]") or not text[:-1].rstrip().endswith("}"):
        return False
    return _MESSAGE_KEY.search(text, head.end()) is not None


def _text(value: Any, where: str, *, allow_empty: bool = False, messages: bool = True) -> TextLike:
    """A text field: a string or (``messages``) a message list. ``allow_empty``: ``""`` and whitespace are kept
    as given (a policy may generate an empty reply, and RL needs its reward, not an error failing the batch).
    Where a message list may stand, one written out as text and roles of other conventions are refused (the
    model would read the list's characters, or a ``human`` turn), as training data refuses them."""
    if isinstance(value, str):
        if not value and not allow_empty:
            raise DataError(f"{where} is an empty string")
        if messages and _is_written_message_list(value):
            raise DataError(f"{where} is a message list written as text ({describe(value)}; a CSV cell, or a list "
                            "column saved with str()), which the model would read as the characters of the list: "
                            "give it as a list of messages (JSON lines, JSON, parquet) or give the turn's own text")
        return str(value)  # numpy's str_ (a row of a string array) becomes a plain str
    value = _listed(value)
    if messages and isinstance(value, (list, tuple)):
        if not value:
            raise DataError(f"{where} is an empty message list")
        turns = [_message(m, f"{where}[{j}]") for j, m in enumerate(value)]
        _check_roles(turns, where)
        return turns
    kinds = "a string or a list of messages" if messages else "a string"
    raise DataError(f"{where} must be {kinds}, got {describe(value)}")


def _same(a: Any, b: Any) -> bool:
    """Whether two JSON-like values are the same (arrays, images ...: only when they are one object)."""
    if a is b:
        return True
    try:
        return type(a) is type(b) and isinstance(a, (str, int, float, list, tuple, dict)) and bool(a == b)
    except (ValueError, TypeError):  # lists of arrays: no single truth value
        return False


def _field(row: dict, names: Sequence[str], where: str, required: bool = True) -> Any:
    given = [n for n in names if n in row and row[n] is not None]
    for n in given[1:]:  # aliases of one field: with different values, one would be silently dropped
        if not _same(row[given[0]], row[n]):
            raise DataError(f"{where}: fields {given[0]!r} and {n!r} both give {names[0]!r}, with different values: "
                            "keep one")
    if given:
        return row[given[0]]
    if required:
        present = [n for n in names if n in row]
        if present:
            raise DataError(f"{where}: field {present[0]!r} is null")
        raise DataError(f"{where}: missing field {names[0]!r} (fields present: {sorted(map(str, row))[:12]})")
    return None


def _steps(value: Any, where: str) -> list[str]:
    value = _listed(value)
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(f"{where}: field 'steps' must be a non-empty list of strings, got {describe(value)}")
    out = []
    for k, step in enumerate(value):
        s = step.get("text", step.get("content")) if isinstance(step, dict) else step  # PRM800K-style {"text": ...}
        if not isinstance(s, str):
            raise DataError(f"{where}: step {k} must be a string (or an object with a 'text' string), got "
                            f"{describe(step)}")
        out.append(str(s))
    return out


def _is_array(value: Any) -> bool:
    """A numpy array or torch tensor (checked by name: importing neither is needed for this)."""
    return type(value).__module__.split(".")[0] in ("numpy", "torch") and hasattr(value, "ndim") \
        and hasattr(value, "shape")


def _listed(value: Any) -> Any:
    """A 1-d numpy array of strings or objects (a list column read by pandas / pyarrow: steps, messages,
    image paths) as a list; anything else unchanged (an image's uint8 pixels stay an array)."""
    if _is_array(value) and getattr(value, "ndim", None) == 1 \
            and getattr(value.dtype, "kind", None) in ("O", "U", "S"):
        return value.tolist()
    return value


def _images(value: Any, where: str) -> list:
    value = _listed(value)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _first(row: dict, names: Sequence[str], where: str = "row") -> Any:
    """The value of the first of ``names`` that ``row`` holds (even None), else None; two of them
    holding different values is an error (one would be silently dropped)."""
    _field(row, names, where, required=False)  # the check of aliases given twice
    for n in names:
        if n in row:
            return row[n]
    return None


class ScoreInput:
    """Base of the input dataclasses: ``from_record`` (JSON rows) and the keys that identify them."""

    required: ClassVar[tuple[str, ...]] = ()  # a dict with these keys (or their aliases) is this input
    # each field -> the keys of a JSON row that may hold it (its own name first, then aliases, in the order
    # from_record reads them); the one declaration that from_record and the server (which refuses any other
    # key of a row) read
    row_keys: ClassVar[dict] = {}

    @classmethod
    def row_fields(cls) -> Optional[tuple[str, ...]]:
        """Every key a JSON row of this type may hold, or None where the class declares no
        ``row_keys`` of its own (a subclass that reads rows its own way)."""
        if "row_keys" not in vars(cls):
            return None
        return tuple(dict.fromkeys(k for keys in cls.row_keys.values() for k in keys))

    @classmethod
    def from_record(cls, row: Any, where: str = "row"):
        raise NotImplementedError

    @classmethod
    def matches(cls, row: dict, given: bool = False) -> bool:
        """``row`` has this type's required fields (``given``: each with a non-null value)."""
        return all(any(a in row and (not given or row[a] is not None) for a in alts.split("|"))
                   for alts in cls.required)


@dataclass
class TextPair(ScoreInput):
    """A response to a prompt (``prompt=None``: ``response`` is a whole text / conversation)."""

    prompt: Optional[TextLike]
    response: TextLike
    required: ClassVar = ("response|messages|text",)
    # "response" with "prompt", or a whole text / conversation as "messages" or "text" (no prompt); "system"
    # (a system prompt, as in Intel/orca_dpo_pairs) is the first turn of the prompt / conversation
    row_keys: ClassVar = {"prompt": ("prompt", "system"), "response": ("response", "messages", "text")}

    @classmethod
    def from_record(cls, row: Any, where: str = "row") -> "TextPair":
        _need_dict(row, where)
        response, *whole = cls.row_keys["response"]
        given = [k for k in cls.row_keys["response"] if row.get(k) is not None]
        if len(given) > 1:  # one of them would be scored and the other silently dropped
            raise DataError(f"{where}: fields {given[0]!r} and {given[1]!r} both give the response: keep one")
        prompt = row.get("prompt")
        prompt = None if prompt is None else _text(prompt, f"{where}: field 'prompt'", allow_empty=True)
        if response in row:
            if prompt is None:  # the prompt under a published dataset's name, read as preference rows read it
                prompt = _other_prompt(row, where)
            pair = cls(prompt, _text(_field(row, (response,), where), f"{where}: field 'response'", allow_empty=True))
        elif any(k in row for k in whole):
            key = next(k for k in whole if k in row)
            value = _field(row, (key,), where)
            if key == "messages" and not isinstance(value, (list, tuple)):  # a string here is a mistake, not a text
                raise DataError(f"{where}: field 'messages' must be a list of messages, got {describe(value)}")
            value = _text(value, f"{where}: field {key!r}")
            if prompt is not None and not _opens_with(value, prompt):  # it would be dropped: scored without it
                raise DataError(f"{where}: field 'prompt' would be ignored: {key!r} is scored whole, as the "
                                f"conversation / text it holds; put the prompt in {key!r} (its first turns) or send "
                                "'prompt' with 'response'")
            pair = cls(None, value)
        else:
            two = [k for k in ("response_1", "response_2", "response1", "response2", "response_0", "response_a",
                               "response_b", "chosen", "rejected") if k in row]
            hint = (f"; {two[0]!r} is one of two responses of a preference row: score each as 'response' (with "
                    "'prompt'), or evaluate the pairs (mmreward text eval / evaluate_pairs)") if two else ""
            raise DataError(f"{where}: needs 'response' (with 'prompt'), 'messages' or 'text' "
                            f"(fields present: {sorted(map(str, row))[:12]}){hint}")
        return pair._with_system(row.get("system"), where)

    def _with_system(self, system: Any, where: str) -> "TextPair":
        """This input with a row's ``system`` string as the first turn of its prompt (a string prompt becomes
        a user turn after it) or, without a prompt, of its conversation; ``""`` / None: unchanged. A
        conversation that opens with a system turn must hold the same text; a bare text has no place for it."""
        if system is None or (isinstance(system, str) and not system.strip()):
            return self
        if not isinstance(system, str):
            raise DataError(f"{where}: field 'system' must be a string (the system prompt), got {describe(system)}")
        turn = {"role": "system", "content": system}
        if isinstance(self.prompt, str) and not self.prompt.strip():  # no question: the system turn alone
            return type(self)([turn], self.response)
        if self.prompt is not None:
            turns, name = ([{"role": "user", "content": self.prompt}] if isinstance(self.prompt, str) else
                           list(self.prompt)), "prompt"
        elif isinstance(self.response, list):
            turns, name = list(self.response), "messages"
        else:
            raise DataError(f"{where}: field 'system' would be dropped: a whole text (no 'prompt') has no turns to put "
                            "it before; send the prompt as 'prompt' or the conversation as 'messages'")
        if turns[0].get("role") == "system":
            if turns[0]["content"].strip() != system.strip():
                raise DataError(f"{where}: field 'system' and the system turn that opens {name!r} differ: keep one")
        else:
            turns = [turn] + turns
        return type(self)(turns, self.response) if self.prompt is not None else type(self)(None, turns)


# a reply's prompt given under another name (Intel/orca_dpo_pairs' "question", argilla's "input"): read as the
# prompt, as mmreward.text.data.pair_from_row reads preference rows; fields that would only be dropped: refused
_PROMPT_ALIASES = ("question", "input")
_UNREAD_PROMPT_FIELDS = ("instruction", "query", "problem", "context", "history", "conversations")


def _other_prompt(row: dict, where: str) -> Any:
    given = [k for k in _PROMPT_ALIASES if row.get(k) is not None]
    if len(given) > 1 and not _same(row[given[0]], row[given[1]]):
        raise DataError(f"{where}: fields {given[0]!r} and {given[1]!r} both give the prompt, with different values: "
                        "keep one (or give it as 'prompt')")
    if given:
        return _text(row[given[0]], f"{where}: field {given[0]!r}", allow_empty=True)
    stray = [k for k in _UNREAD_PROMPT_FIELDS if row.get(k) is not None]
    if stray:
        raise DataError(f"{where}: field {stray[0]!r} would be dropped: the prompt of 'response' is read from "
                        f"'prompt' (or 'question' / 'input'); rename {stray[0]!r} to 'prompt'")
    return None


@dataclass
class Comparison(ScoreInput):
    """Two responses to one prompt; a pairwise judge scores P(first ≻ second)."""

    prompt: TextLike
    first: TextLike
    second: TextLike
    required: ClassVar = ("prompt", "first|chosen|response_a", "second|rejected|response_b")
    row_keys: ClassVar = {"prompt": ("prompt",), "first": ("first", "response_a", "chosen"),
                          "second": ("second", "response_b", "rejected")}

    @classmethod
    def from_record(cls, row: Any, where: str = "row") -> "Comparison":
        _need_dict(row, where)
        if isinstance(row.get("system"), str) and row["system"].strip():  # a dataset's system prompt: not dropped
            raise DataError(f"{where}: field 'system' would be dropped: a pairwise judge reads 'prompt', 'first' and "
                            "'second'; put the system prompt in 'prompt' (a message list opening with a system turn) "
                            "or leave it out")
        p = _text(_field(row, cls.row_keys["prompt"], where), f"{where}: field 'prompt'", allow_empty=True)
        a = _field(row, cls.row_keys["first"], where)
        b = _field(row, cls.row_keys["second"], where)
        return cls(p, _text(a, f"{where}: first response", allow_empty=True),
                   _text(b, f"{where}: second response", allow_empty=True))


@dataclass
class StepSolution(ScoreInput):
    """A problem and the steps of one solution; a PRM scores every step."""

    problem: str
    steps: list
    required: ClassVar = ("problem|prompt|question", "steps")
    row_keys: ClassVar = {"problem": ("problem", "prompt", "question"), "steps": ("steps", "completions")}

    @classmethod
    def from_record(cls, row: Any, where: str = "row") -> "StepSolution":
        _need_dict(row, where)
        raw = None
        if "input" in row and "label" in row and not any(k in row for k in cls.row_keys["problem"]):
            raw = "a Math-Shepherd row (fields 'input' / 'label', steps ended by the tag 'ки')"
        elif isinstance(row.get("question"), dict) and isinstance(row.get("label"), dict):
            raw = "a raw PRM800K row (fields 'question': {'problem', ...} and 'label': {'steps', ...})"
        if raw:  # the steps are inside a tagged text / the labelling record: the PRM data reader takes them out
            raise DataError(f"{where}: {raw}: read it with `mmreward prm score --data` / "
                            "mmreward.text.prm.data.read_step_examples, or give the row as 'problem' (a string) and "
                            "'steps' (a list of strings)")
        problem = _text(_field(row, cls.row_keys["problem"], where), f"{where}: field 'problem'",
                        allow_empty=True, messages=False)
        return cls(problem, _steps(_field(row, cls.row_keys["steps"], where), where))


def _one_medium(row: dict, where: str) -> None:
    """An image row that also holds a video (or the reverse): one of them would be silently dropped."""
    image = [k for k in ImagePrompt.row_keys["image"] if row.get(k) is not None]
    video = [k for k in VideoPrompt.row_keys["video"] if row.get(k) is not None]
    if image and video:
        raise DataError(f"{where}: fields {image[0]!r} and {video[0]!r} both given; an input is one image or one "
                        "video: keep one")


@dataclass
class ImagePrompt(ScoreInput):
    """An image and the text it should match."""

    prompt: str
    image: Any
    required: ClassVar = ("image|file_name|image_path",)
    # Hugging Face imagefolder's metadata.jsonl names the image file_name and its caption text (or caption);
    # ImageRewardDB names it image_path
    row_keys: ClassVar = {"prompt": ("prompt", "caption", "text"), "image": ("image", "file_name", "image_path")}

    @classmethod
    def from_record(cls, row: Any, where: str = "row") -> "ImagePrompt":
        _need_dict(row, where)
        _one_medium(row, where)
        prompt = _first(row, cls.row_keys["prompt"], where)
        return cls(_text(prompt if prompt is not None else "", f"{where}: field 'prompt'", allow_empty=True,
                         messages=False), _field(row, cls.row_keys["image"], where))


@dataclass
class VideoPrompt(ScoreInput):
    """A video (file, frame folder or uint8 ``[T, H, W, 3]``) and the text it should match."""

    prompt: str
    video: Any
    required: ClassVar = ("video",)
    row_keys: ClassVar = {"prompt": ("prompt", "caption", "text"), "video": ("video", "frames")}

    @classmethod
    def from_record(cls, row: Any, where: str = "row") -> "VideoPrompt":
        _need_dict(row, where)
        _one_medium(row, where)
        prompt = _first(row, cls.row_keys["prompt"], where)
        return cls(_text(prompt if prompt is not None else "", f"{where}: field 'prompt'", allow_empty=True,
                         messages=False), _field(row, cls.row_keys["video"], where))


@dataclass
class Conversation(ScoreInput):
    """A chat (user / assistant turns) with its images; a VLM RM scores the last assistant turn."""

    messages: list
    images: list = field(default_factory=list)
    required: ClassVar = ("messages|conversations",)
    row_keys: ClassVar = {"messages": ("messages", "conversations"), "images": ("images", "image")}

    @classmethod
    def from_record(cls, row: Any, where: str = "row") -> "Conversation":
        _need_dict(row, where)
        msgs = _listed(_field(row, cls.row_keys["messages"], where))
        if not isinstance(msgs, (list, tuple)) or not msgs:
            raise DataError(f"{where}: field 'messages' must be a non-empty list of turns, got {describe(msgs)}")
        return cls(list(msgs), _images(_first(row, cls.row_keys["images"], where), where))


@dataclass
class VisualSteps(ScoreInput):
    """A question about images and the steps of one answer; VisualPRM scores every step."""

    question: str
    steps: list
    images: list = field(default_factory=list)
    required: ClassVar = ("question", "steps", "images|image")
    row_keys: ClassVar = {"question": ("question", "prompt"), "steps": ("steps",), "images": ("images", "image")}

    @classmethod
    def from_record(cls, row: Any, where: str = "row") -> "VisualSteps":
        _need_dict(row, where)
        q = _text(_field(row, cls.row_keys["question"], where), f"{where}: field 'question'", messages=False)
        scored = row.get("steps_with_score") if "steps" not in row else None
        if hasattr(scored, "tolist") and not isinstance(scored, (list, tuple)):  # a list column read by pandas
            scored = scored.tolist()
        if isinstance(scored, (list, tuple)):  # VisualPRM400K-Raw: [{"step", "score", ...}]: scored by its steps
            steps = [s.get("step") if isinstance(s, dict) else s for s in scored]
        else:
            steps = _field(row, cls.row_keys["steps"], where)
        return cls(q, _steps(steps, where), _images(_first(row, cls.row_keys["images"], where), where))


@dataclass
class Episode(ScoreInput):
    """Frames of one robot episode (uint8 ``[T, H, W, 3]``, an episode / video file) and optionally
    the per-frame success flags the reward adds."""

    frames: Any
    success: Optional[Any] = None
    required: ClassVar = ("frames|episode|video",)
    row_keys: ClassVar = {"frames": ("frames", "episode", "video"), "success": ("success",)}

    @classmethod
    def from_record(cls, row: Any, where: str = "row") -> "Episode":
        _need_dict(row, where)
        # the per-frame success flags are checked where the frame count is known (the robotics domain)
        return cls(_field(row, cls.row_keys["frames"], where), _first(row, cls.row_keys["success"], where))


def _opens_with(whole: TextLike, prompt: TextLike) -> bool:
    """Whether a whole conversation / text already holds ``prompt`` at its start (a row with both, such
    as UltraChat's ``prompt`` + ``messages``, loses nothing when the prompt is dropped)."""
    if isinstance(prompt, str) and not prompt.strip():
        return True
    if isinstance(whole, str):
        return isinstance(prompt, str) and whole.lstrip().startswith(prompt.strip())
    if isinstance(prompt, list):
        return whole[:len(prompt)] == prompt
    users = [m["content"] for m in whole if m.get("role") == "user"]
    return bool(users) and users[0].strip() == prompt.strip()


INPUT_TYPES: dict[str, type] = {
    "text": TextPair, "comparison": Comparison, "steps": StepSolution, "image": ImagePrompt, "video": VideoPrompt,
    "conversation": Conversation, "visual_steps": VisualSteps, "episode": Episode,
}
# inputs whose parts are the point (steps, frames): `mmreward score` and the server's /score answer their
# per-part scores unless asked for one score each
PART_INPUTS: tuple[type, ...] = (StepSolution, VisualSteps, VideoPrompt, Episode)


def _need_dict(row: Any, where: str) -> None:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {describe(row)}")


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "AEIOU" else "a ") + noun


def _type_list(types: tuple, fields: bool = False) -> str:
    """``TextPair / Comparison``; with ``fields``, ``Episode(frames, success)`` (what to build instead)."""
    if not fields:
        return " / ".join(t.__name__ for t in types)
    return " / ".join(f"{t.__name__}({', '.join(f.name for f in dataclasses.fields(t))})" for t in types)


def _checked(item: ScoreInput, where: str) -> ScoreInput:
    """``item`` with its fields checked as a JSON row's are: an instance or tuple built in Python gets
    the same errors as a dict (``TextPair("q", None)`` names the field, not a tokenizer's TypeError)."""
    return type(item).from_record({f.name: getattr(item, f.name) for f in dataclasses.fields(item)}, where)


def _as_row(item: Any) -> Any:
    """A dict for mapping-like rows that are not dicts (a pandas row from ``iterrows``, a
    ``MappingProxyType``), else ``item`` unchanged."""
    if isinstance(item, collections.abc.Mapping) and not isinstance(item, dict):
        return dict(item)
    if type(item).__module__.split(".")[0] == "pandas" and hasattr(item, "to_dict") and hasattr(item, "index") \
            and getattr(item, "ndim", None) == 1:  # a pandas Series: one row of a DataFrame
        return _pandas_row(item.to_dict())
    return item


def _pandas_row(row: dict) -> dict:
    """A pandas row with its missing cells (NaN in an object column) as None, as in a JSON row
    without the field."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}


def _as_list(inputs: Any, types: tuple, what: str) -> list:
    """The inputs as a list: a list / tuple as it is, any other iterable of inputs (a generator, a
    1-d numpy object array, the rows of a pandas DataFrame) listed; a single input or an array of
    numbers is an error saying to wrap it in a list."""
    names = " / ".join(t.__name__ for t in types)
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    if type(inputs).__module__.split(".")[0] == "pandas" and hasattr(inputs, "to_dict") and hasattr(inputs, "columns"):
        # a DataFrame: one input per row, its columns the fields
        return [_pandas_row(r) for r in inputs.to_dict("records")]
    if _is_array(inputs):
        if getattr(inputs, "ndim", 0) == 1 and getattr(getattr(inputs, "dtype", None), "kind", "") == "O":
            return list(inputs)  # a numpy object array holding inputs
        raise TypeError(f"{what} takes a list of inputs ({names}), got {type(inputs).__name__} of shape "
                        f"{tuple(inputs.shape)}: build the inputs ({_type_list(types, fields=True)}) and pass a list")
    if isinstance(inputs, collections.abc.Set):  # no order: the scores could not be matched to the inputs
        raise TypeError(f"{what} takes a list of inputs ({names}), got a {type(inputs).__name__}, which has no order")
    single = isinstance(inputs, (str, bytes, dict, ScoreInput, collections.abc.Mapping))
    columns = _columns_of(inputs)
    if columns is not None:  # a datasets.Dataset slice (ds[:8]) or a dict of lists: rows transposed
        raise TypeError(f"{what} takes a list of inputs ({names}), got a dict of columns ({columns}), as a "
                        "datasets.Dataset slice ds[:n] gives: pass the Dataset itself, a pandas DataFrame, or the "
                        "rows as a list ([dict(zip(d, row)) for row in zip(*d.values())]); one input given alone goes "
                        "in a list")
    if _pandas_one_row(inputs, types):  # df.iloc[0]: listing it would give its cells as inputs
        raise TypeError(f"{what} takes a list of inputs ({names}), got a pandas Series holding one row (fields "
                        f"{[str(k) for k in inputs.index][:8]}): wrap it in a list ([row]), or pass the DataFrame")
    if not single and inputs is not None and isinstance(inputs, collections.abc.Iterable):
        return list(inputs)
    hint = "; wrap a single input in a list" if single else ""
    raise TypeError(f"{what} takes a list of inputs ({names}), got {type(inputs).__name__}{hint}")


def _columns_of(inputs: Any) -> Optional[str]:
    """``"'prompt': 8 values, 'response': 8 values"`` for a mapping whose values are all lists / tuples / 1-d
    arrays of one length (columns, not one input), else None. A single input whose fields are all lists
    (a Conversation of one turn and one image) reads as columns too: the error then names both ways out."""
    if not isinstance(inputs, collections.abc.Mapping) or not inputs:
        return None
    lengths = set()
    for v in inputs.values():
        if isinstance(v, (list, tuple)) or (_is_array(v) and getattr(v, "ndim", None) == 1):
            lengths.add(len(v))
        else:
            return None
    if len(lengths) != 1 or 0 in lengths:
        return None
    return ", ".join(f"{k!r}: {len(v)} values" for k, v in list(inputs.items())[:4])


def _pandas_one_row(inputs: Any, types: tuple) -> bool:
    """Whether ``inputs`` is a pandas Series whose index names the fields of one of ``types`` (one row of a
    DataFrame, ``df.iloc[0]``), not a column of inputs."""
    if type(inputs).__module__.split(".")[0] != "pandas" or getattr(inputs, "ndim", None) != 1 \
            or not hasattr(inputs, "index") or hasattr(inputs, "columns"):
        return False
    keys = {str(k) for k in inputs.index}
    return any(t.matches(dict.fromkeys(keys)) for t in types)


def _one_edit_apart(a: str, b: str) -> bool:
    """Whether ``a`` becomes ``b`` by one inserted, deleted or replaced character, or two swapped neighbours."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def _check_misspelt_fields(kind: type, row: dict, where: str) -> None:
    """A key of a row that is one typo (or a change of case) away from a field of ``kind`` the row does not give
    (``promt``, ``Prompt``, ``respone``) is refused naming both: other keys of a row are ignored (a DataFrame's ids,
    scores), so this one would be silently dropped, and the input scored without its prompt."""
    fields = kind.row_fields()
    if fields is None:
        return
    # the prompt of a TextPair may also come under a published dataset's name (read by _other_prompt)
    extra = {"prompt": _PROMPT_ALIASES} if kind is TextPair else {}
    missing = [a for name, aliases in kind.row_keys.items()
               if not any(row.get(k) is not None for k in (*aliases, *extra.get(name, ()))) for a in aliases]
    for key in row:
        if not isinstance(key, str) or key in fields or len(key) < 4:
            continue
        near = next((a for a in missing if key.lower() == a.lower() or _one_edit_apart(key.lower(), a)), None)
        if near is not None:
            raise DataError(f"{where}: field {key!r} is not one {kind.__name__} reads (did you mean {near!r}?): it "
                            f"would be ignored and the input scored without it; rename it (the fields: "
                            f"{', '.join(fields)})")


def input_type_of(types: Sequence[type], row: dict) -> type:
    """The first of ``types`` whose required fields ``row`` gives (non-null: a table of mixed rows, such as a
    parquet file with an image and a video column, leaves the other field null), else the first whose fields
    it has, else ``types[0]`` (whose reader names what is missing)."""
    return next((t for t in types if t.matches(row, given=True)), next((t for t in types if t.matches(row)), types[0]))


def as_inputs(input_types: Union[type, Sequence[type]], inputs: Any, what: str = "score") -> list:
    """A list of input dataclasses from a list (or any other iterable) of instances, dicts (JSON rows,
    pandas rows) or tuples (the dataclass fields in order). A dict becomes the first of
    ``input_types`` whose keys it has."""
    types = tuple(input_types) if isinstance(input_types, (list, tuple)) else (input_types,)
    out = []
    for i, item in enumerate(_as_list(inputs, types, what)):
        where = f"input {i}"
        item = _as_row(item)
        if isinstance(item, types):
            out.append(_checked(item, where))
        elif isinstance(item, ScoreInput):
            raise TypeError(f"{where} is {_a(type(item).__name__)}; this model scores {_type_list(types)}")
        elif isinstance(item, dict):
            kind = input_type_of(types, item)
            _check_misspelt_fields(kind, item, where)
            out.append(kind.from_record(item, where))
        elif isinstance(item, tuple):
            kind = types[0]
            try:
                built = kind(*item)
            except TypeError as e:
                names = [f.name for f in dataclasses.fields(kind)]
                raise TypeError(f"{where}: a tuple must hold {kind.__name__}'s fields {names}: {e}") from None
            out.append(_checked(built, where))
        else:
            raise TypeError(f"{where} must be {_a(_type_list(types, fields=True))} or a dict, got {type(item).__name__}")
    if not out:
        raise ValueError(f"{what} got no inputs")
    return out


__all__ = ["ScoreInput", "TextPair", "Comparison", "StepSolution", "ImagePrompt", "VideoPrompt", "Conversation",
           "VisualSteps", "Episode", "INPUT_TYPES", "PART_INPUTS", "as_inputs", "input_type_of"]
