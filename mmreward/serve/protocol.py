"""What goes over the wire: request bodies → score inputs, and results → JSON (no HTTP framework here).

``POST /score`` (native, every modality)::

    {"inputs": [{"prompt": "2+2?", "response": "4"}, ...],    # dicts with the fields of the model's input type
     "output": "scores" | "parts",                             # default: "parts" for steps / videos / episodes
     "refine": {"clip": 0.5, "delta": false, "gamma": 1.0}}    # optional, step models: PRM Clip / Delta refinement
    -> {"scores": [float, ...]}  |  {"parts": [[float, ...], ...]}
       (+ "step_rewards", "returns" with refine; "scores" is then each input's refined return G_0)

Images are base64 strings (``data:image/png;base64,...`` accepted) of PNG / JPEG / WebP bytes; video
frames and episode frames are a list of such images or ``{"shape": [T, H, W, 3], "data": base64 of
the raw uint8 bytes}``. The server never reads a path or a URL that a client sends.

``POST /get_reward`` (OpenRLHF's remote reward model, ``--remote_rm_url``)::

    {"query": [str, ...], "prompts": [str, ...], "labels": [...]}
    -> {"rewards": [float, ...], "scores": [float, ...], "extra_logs": {}}

Non-finite rewards are sent as ``null`` (TRL reads ``None`` as NaN).

Nothing a client sends is silently ignored: unknown fields of the body or of an input row
(:data:`ROW_FIELDS`), a key given twice in one object, unknown query parameters, lone UTF-16
surrogates, JSON nested too deeply for Python's parser and over-long integers are 400s naming the
field or input.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from mmreward.core.data import DataError, describe
from mmreward.core.inputs import INPUT_TYPES, PART_INPUTS, Conversation, Episode, ImagePrompt, StepSolution, TextPair, \
    VideoPrompt, VisualSteps, _message, as_inputs

from .config import ServeConfig

OUTPUTS = ("scores", "parts")
# inputs whose parts are steps: the only ones PRM Clip / Delta refinement is defined on (a video's or an
# episode's per-frame scores are not step rewards)
STEP_INPUTS = (StepSolution, VisualSteps)
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
_INPUT_CLASSES = {cls.__name__: cls for cls in INPUT_TYPES.values()}


class RequestError(ValueError):
    """A request the server refuses: ``status`` is its HTTP code, ``kind`` its metrics label, and the
    message names the field or limit at fault."""

    def __init__(self, status: int, message: str, kind: str = "bad_request"):
        super().__init__(message)
        self.status, self.kind = status, kind


# ------------------------------------------------------------------ the model, as clients see it
@dataclass(frozen=True)
class ModelSpec:
    """What a served model takes: its ``model_type``, input dataclasses and whether it has per-step /
    per-frame scores."""

    model_type: str
    input_types: tuple
    has_parts: bool
    # the text model's tokenizer tokens an OpenRLHF query may carry (see :func:`clean_query`): its pad and eos
    # tokens, and its bos token when the tokenizer puts one before every text itself (None: nothing to strip)
    query_tokens: Optional[tuple] = None  # (pad, eos, bos), each a string or None

    @classmethod
    def of(cls, model: Any) -> "ModelSpec":
        types = tuple(getattr(model, "input_types", ()) or ())
        if not types or not callable(getattr(model, "score", None)):
            raise TypeError(f"{type(model).__name__} is not a reward model on the mmreward contract "
                            "(RewardScorer with input_types and score)")
        has_parts = getattr(type(model), "has_parts", None)
        tokens = _query_tokens(getattr(model, "tokenizer", None)) if (TextPair in types or StepSolution in types) \
            else None
        return cls(str(getattr(model, "model_type", "") or type(model).__name__), types,
                   bool(has_parts()) if callable(has_parts) else False, tokens)

    def to_json(self) -> dict:
        out = {"model_type": self.model_type, "inputs": [t.__name__ for t in self.input_types], "parts": self.has_parts}
        if self.query_tokens is not None:
            out["query_tokens"] = dict(zip(("pad", "eos", "bos"), self.query_tokens))
        return out

    @classmethod
    def from_json(cls, data: dict) -> "ModelSpec":
        unknown = [n for n in data["inputs"] if n not in _INPUT_CLASSES]
        if unknown:
            raise TypeError(f"input types {unknown} are not in mmreward.core.inputs")
        tokens = data.get("query_tokens")  # absent from older servers' /info
        tokens = tuple(tokens.get(k) if isinstance(tokens.get(k), str) and tokens.get(k).strip() else None
                       for k in ("pad", "eos", "bos")) if isinstance(tokens, dict) else None
        if tokens and tokens[0] is None:
            tokens = (tokens[1],) + tokens[1:]  # no pad: padded with the eos, as _query_tokens reads it
        return cls(data["model_type"], tuple(_INPUT_CLASSES[n] for n in data["inputs"]), bool(data["parts"]),
                   tokens if tokens and any(tokens) else None)

    def names(self) -> str:
        return " / ".join(t.__name__ for t in self.input_types)

    @property
    def has_media(self) -> bool:
        """Whether its inputs carry images or frames (decoded from base64 by the server)."""
        return any(t in _MEDIA_FIELDS for t in self.input_types)


def _query_tokens(tokenizer: Any) -> Optional[tuple]:
    """``(pad, eos, bos)`` of a text model's tokenizer, for :func:`clean_query`: the pad and eos token strings,
    and the bos string only when the tokenizer adds it to every text it encodes (a query decoded with its bos
    would otherwise get a second one). None when the model has no such tokenizer."""
    if tokenizer is None:
        return None

    def token(name: str) -> Optional[str]:
        value = getattr(tokenizer, name, None)
        # a token that is only whitespace (a pad set to " ") would strip the text's own spaces: not one
        return value if isinstance(value, str) and value.strip() else None

    pad, eos, bos = token("pad_token"), token("eos_token"), token("bos_token")
    # no pad token: OpenRLHF's get_tokenizer pads with the eos (pad_token = eos_token), so the batch padding of
    # its queries is a run of eos tokens, which serve_rm strips as padding
    pad = pad if pad is not None else eos
    if bos is not None:
        try:  # does the tokenizer put bos before a text itself (Llama), or is it only a chat template's text?
            bos_id = getattr(tokenizer, "bos_token_id", None)
            with_special = list(tokenizer("a", add_special_tokens=True)["input_ids"])
            plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
            adds = bos_id is not None and with_special[:1] == [bos_id] and plain[:1] != [bos_id]
            if adds:  # as a decode writes it: "<s>a" (byte-level BPE) or "<s> a" (SentencePiece, word level)
                joint = tokenizer.decode(with_special, skip_special_tokens=False)
                gap = joint[len(bos):-1] if joint.startswith(bos) and joint.endswith("a") else ""
                bos = bos + gap if gap.isspace() else bos  # kept with the bos: clean_query removes both
        except Exception:  # noqa: BLE001 - not an HF tokenizer: leave bos alone
            adds = False
        bos = bos if adds else None
    tokens = (pad, eos, bos)
    return tokens if any(tokens) else None


def clean_query(text: str, spec: "ModelSpec", bos: bool = True) -> str:
    """An OpenRLHF query (``tokenizer.decode(prompt + response ids, skip_special_tokens=False)``) as the text
    its model scores, as OpenRLHF's ``serve_rm`` reads it: the run of pad / eos tokens that left padding put
    before the prompt is removed; a run of pad tokens after the response (right padding of OpenRLHF <= 0.8)
    is removed when it follows the eos or holds two or more pads (one pad right after the text may be the
    policy's own end token), and when pad and eos are one token the run becomes the one eos; a
    leading bos is removed (unless ``bos=False``) when the model's tokenizer adds its own (``serve_rm``
    tokenizes the query with ``add_special_tokens=False``; the model here encodes with its special tokens, so
    the bos would be doubled). A query without them (OpenRLHF 0.9+) is unchanged."""
    if spec.query_tokens is None:
        return text
    import re

    pad, eos, bos_token = spec.query_tokens
    # longest first: a regex alternation takes the first that matches, so with a pad that opens the eos
    # ("<|end|>" / "<|end|>x") the shorter would be cut off the longer and leave its tail as text
    edge = [re.escape(t) for t in sorted({t for t in (pad, eos) if t}, key=len, reverse=True)]
    if edge:  # with the spaces a decode writes between special tokens
        text = re.sub("^(?:(?:" + "|".join(edge) + r")\s*)+", "", text)
    if pad:
        end, runs = len(text), 0
        while True:  # indices, not a regex or slices: a long run of pads must not make this quadratic
            at = end
            while runs and at and text[at - 1].isspace():  # spaces between the pads, not before the run
                at -= 1
            if at < len(pad) or not text.startswith(pad, at - len(pad)):
                break
            end, runs = at - len(pad), runs + 1
        out = text[:end]
        if runs and pad == eos:
            text = out + eos
        elif runs >= 2 or (runs and eos and out.rstrip().endswith(eos)):
            text = out  # padding after the response's eos, or more pads than a response ends with
        # else one pad right after the text: the policy's own end token (e.g. Qwen's <|endoftext|>), kept as
        # OpenRLHF 0.9+ sends it
    if bos and bos_token:
        core = bos_token.rstrip()  # the token, then the whitespace a decode writes after it (_query_tokens)
        if text.startswith(core):
            text = text[len(core):]
            gap = bos_token[len(core):]
            if gap and text.startswith(gap):
                text = text[len(gap):]
    return text


def load_model(model: Any, device: Any = "cpu", dtype: Any = None) -> Any:
    """``model`` itself (checked to be on the contract), or what ``mmreward.load`` opens at that path."""
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        from mmreward.registry import load

        model = load(model, device=device, dtype=dtype)
    ModelSpec.of(model)
    return model


@dataclass
class ScoreRequest:
    items: list  # input dataclasses, decoded
    output: str  # "scores" | "parts"
    refine: Optional[dict] = None


# ------------------------------------------------------------------ JSON
def parse_json(body: bytes, content_type: str = "") -> Any:
    """A request body as JSON; ``content_type`` (the request's header) only sharpens the error of a body that
    is no JSON at all."""
    if not body:
        raise RequestError(400, "empty request body: send a JSON object")
    try:
        data = json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise RequestError(400, f"malformed JSON: field {e.args[0]!r} is given twice in one object (only one "
                                "would be read)") from None
    except UnicodeDecodeError:
        raise RequestError(400, "request body is not UTF-8 JSON" + _not_json_hint(body, content_type)) from None
    except json.JSONDecodeError as e:
        raise RequestError(400, f"malformed JSON: {e.msg.removesuffix(' at')} at line {e.lineno} column {e.colno}"
                           + _not_json_hint(body, content_type)) from None
    except RecursionError:  # [[[[...]]]] thousands deep: not a request body
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    except ValueError as e:  # an integer of more than 4300 digits (Python's int-parsing limit)
        raise RequestError(400, f"malformed JSON: {str(e).split(';')[0]}") from None
    if b"\\ud" in body or b"\\uD" in body or not (body.isascii() or _utf8(body)):
        # \udXXX escapes, surrogates encoded as raw bytes (json.loads decodes with "surrogatepass") or UTF-16 /
        # UTF-32 bodies: check that each surrogate has its pair
        try:
            _check_unicode(data, "the request")
        except RecursionError:
            raise RequestError(400, "malformed JSON: nested too deeply") from None
    return data


_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"))


def _not_json_hint(body: bytes, content_type: str) -> str:
    """What a body that is not JSON was most likely meant as, for its 400: image bytes sent without their
    ``image/*`` Content-Type (``requests.post(url, data=open("x.png", "rb"))`` sends none), or form data
    (``requests.post(url, data={...})`` instead of ``json=``). Empty when there is nothing to say."""
    kind = next((fmt for magic, fmt in _IMAGE_MAGIC if body.startswith(magic)), None)
    if kind is None and body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        kind = "webp"
    if kind is not None:
        return (f": the body is a {kind.upper()} image; POST it to /score with 'Content-Type: image/{kind}' (and "
                f"?prompt=...) for an image scorer, or send it base64 in a JSON input row")
    media = content_type.split(";")[0].strip().lower()
    if media in ("application/x-www-form-urlencoded", "multipart/form-data") and body.lstrip()[:1] not in (b"{", b"["):
        return (f" (the body is form data, Content-Type {media}): send the JSON object itself, e.g. "
                "requests.post(url, json=body), not data= / files=")
    return ""


def _utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list) -> dict:
    """A JSON object as a dict, refusing a key given twice (Python's parser keeps the last silently:
    ``{"prompt": "a", "prompt": "b"}`` would score "b")."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _check_unicode(value: Any, where: str) -> None:
    """Refuse strings holding a lone UTF-16 surrogate (``"\\ud800"`` is valid JSON but no text: a
    tokenizer fails on it with an obscure TypeError deep in the forward)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise RequestError(400, f"{where} holds an unpaired UTF-16 surrogate {value[e.start]!r} at character "
                                    f"{e.start}: send valid Unicode text") from None
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_unicode(v, f"input {i}" if where == "field 'inputs'" else f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_unicode(k, f"{where}: a field name")
            if where == "the request":
                inner = f"field {k!r}"
            elif where.startswith("input ") and ":" not in where:  # a row: "input 3: field 'response'"
                inner = f"{where}: field {k!r}"
            else:  # deeper: "input 3: field 'messages'[0].content"
                inner = f"{where}.{k}"
            _check_unicode(v, inner)


def finite(value: Any) -> Any:
    """JSON-safe numbers: non-finite floats become None (nested lists kept; None stays None)."""
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value if value is not None and math.isfinite(value) else None


def field_names(names: Sequence[Any]) -> str:
    """Field names a client sent, for an error message: at most 5 shown, each cut to 40 characters (a client
    can send any key: a 100 KB one, or thousands, came back whole in the 400)."""
    shown = ", ".join(describe(str(n), 40) for n in list(names)[:5])
    return f"[{shown}{f', and {len(names) - 5} more' if len(names) > 5 else ''}]"


def _object(data: Any, allowed: Sequence[str], what: str) -> dict:
    if not isinstance(data, dict):
        raise RequestError(400, f"{what} must be a JSON object, got {describe(data)}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise RequestError(400, f"{what} has unknown field(s) {field_names(unknown)}; fields: "
                                f"{', '.join(allowed)}")
    return data


def _list_field(data: dict, name: str, config: ServeConfig, required: bool = True,
                allow_empty: bool = False) -> Optional[list]:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, list) or not (value or allow_empty):
        raise RequestError(400, f"field {name!r} must be a {'' if allow_empty else 'non-empty '}list, got "
                                f"{describe(value)}")
    if len(value) > config.max_items:
        raise RequestError(413, f"field {name!r} has {len(value)} items; the limit is {config.max_items} per request "
                                "(--max-items)", "too_large")
    return value


# ------------------------------------------------------------------ /score
def parse_score_request(data: Any, spec: ModelSpec, config: ServeConfig) -> ScoreRequest:
    """A ``/score`` body → decoded inputs (images / frames decoded; RequestError naming the field otherwise)."""
    data = _object(data, ("inputs", "output", "refine"), "the request")
    raw = _list_field(data, "inputs", config)
    refine = parse_refine(data.get("refine"), spec)
    output = data.get("output")
    if output is not None and output not in OUTPUTS:
        raise RequestError(400, f"field 'output' must be one of {list(OUTPUTS)}, got {describe(output)}")
    if output == "parts" and not spec.has_parts:
        raise RequestError(400, f"output 'parts' needs a step / frame model; this {spec.model_type} model scores "
                                "whole inputs")
    if refine and output == "scores":
        raise RequestError(400, "refine works on step scores: leave 'output' out or set it to 'parts'")
    for i, row in enumerate(raw):
        check_row_fields(row, f"input {i}", spec)
    budget = _DecodeBudget(config)
    rows = [decode_media(row, f"input {i}", spec, budget) for i, row in enumerate(raw)]
    items = to_inputs(rows, spec)
    if refine:  # a model that takes steps and something else: only its steps are refined
        for i, x in enumerate(items):
            if not isinstance(x, STEP_INPUTS):
                raise RequestError(400, f"input {i} is a {type(x).__name__}: refine works on step inputs "
                                        f"({' / '.join(t.__name__ for t in STEP_INPUTS)}) only")
    if output is None:  # absent or null: the default (0, "" or false are mistakes, not the default)
        # per-step / per-frame scores where the request holds steps, videos or episodes; an image
        # scorer's images get one score each, as the raw image body does
        parts = spec.has_parts and any(isinstance(x, PART_INPUTS) for x in items)
        output = "parts" if parts or refine else "scores"
    return ScoreRequest(items, output, refine)


def parse_image_upload(body: bytes, prompt: str, spec: ModelSpec, config: ServeConfig) -> ScoreRequest:
    """``POST /score?prompt=...`` with a raw ``image/png`` / ``image/jpeg`` body: one ImagePrompt."""
    if ImagePrompt not in spec.input_types:
        raise RequestError(415, f"an image body needs an image scorer; this model scores {spec.names()}", "bad_request")
    if not body:
        raise RequestError(400, "empty image body")
    image = image_from_bytes(body, "the request body", _DecodeBudget(config))
    return ScoreRequest(to_inputs([ImagePrompt(prompt, image)], spec), "scores")


def to_inputs(rows: list, spec: ModelSpec) -> list:
    try:
        return as_inputs(spec.input_types, rows, "/score")
    except (DataError, TypeError, ValueError) as e:
        raise RequestError(400, str(e)) from None


def parse_refine(value: Any, spec: ModelSpec) -> Optional[dict]:
    """``{"clip": float | null, "delta": bool, "gamma": float}`` → validated dict (None: no refinement)."""
    if value is None:
        return None
    value = _object(value, ("clip", "delta", "gamma"), "field 'refine'")
    steps = [t.__name__ for t in spec.input_types if t in STEP_INPUTS]
    if not spec.has_parts or not steps:
        # per-frame scores (a video scorer, Diffusion Reward) are no step rewards: Clip / Delta refinement of
        # them would answer a number that is neither the model's score nor a refined process reward
        what = (f"scores per frame ({spec.names()}), not per step" if spec.has_parts
                else "has no step scores")
        raise RequestError(400, f"refine needs a step model (PRM / VisualPRM: PRM Clip / Delta refinement of step "
                                f"scores); this {spec.model_type} model {what}")
    clip, delta, gamma = value.get("clip"), value.get("delta", False), value.get("gamma", 1.0)
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not _finite_float(clip)):
        raise RequestError(400, f"refine.clip must be a finite number or null, got {describe(clip)}")
    if not isinstance(delta, bool):
        raise RequestError(400, f"refine.delta must be true or false, got {describe(delta)}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
        raise RequestError(400, f"refine.gamma must be a number in [0, 1], got {describe(gamma)}")
    if clip is None and not delta:
        if gamma != 1.0:  # it discounts refined step rewards only: alone it was dropped, the raw parts answered
            raise RequestError(400, f"refine.gamma ({gamma:g}) discounts the refined step rewards: give refine.clip "
                                    "or refine.delta: true too, or leave gamma out (as --refine-gamma needs "
                                    "--refine-clip / --refine-delta)")
        return None
    return {"clip": None if clip is None else float(clip), "delta": delta, "gamma": float(gamma)}


def _finite_float(value: Any) -> bool:
    """Whether a JSON number is a finite float (an integer of 400 digits is not: float() overflows)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def refine_parts(parts: list[list[float]], refine: dict) -> dict:
    """PRM Clip / Delta refinement (:func:`mmreward.ops.refine_process_rewards`) of per-step scores:
    ``{"step_rewards", "returns", "scores"}`` with ``scores`` = each input's refined return ``G_0``."""
    import torch

    from mmreward.ops import refine_process_rewards

    # an input with a non-finite step score gets None for all of its refined values (its reward is
    # non-finite, sent as null): refinement is per input, and refine_process_rewards refuses NaN / inf, so
    # one such input would otherwise fail every other input of the batch
    ok = [all(v is not None and math.isfinite(v) for v in p) for p in parts]
    good = [p for p, k in zip(parts, ok) if k]
    refined_rows: list = []
    return_rows: list = []
    if good:
        lengths = [len(p) for p in good]
        flat = torch.tensor([v for p in good for v in p], dtype=torch.float32)  # (S,)
        refined, returns = refine_process_rewards(flat, torch.tensor(lengths), clip=refine["clip"],
                                                  delta=refine["delta"], gamma=refine["gamma"])
        refined_rows = [r.tolist() for r in refined.split(lengths)]
        return_rows = [g.tolist() for g in returns.split(lengths)]
    refined_it, returns_it = iter(refined_rows), iter(return_rows)
    step_rewards = [next(refined_it) if k else [None] * len(p) for p, k in zip(parts, ok)]
    all_returns = [next(returns_it) if k else [None] * len(p) for p, k in zip(parts, ok)]
    return {"step_rewards": step_rewards, "returns": all_returns,
            "scores": [g[0] if g else None for g in all_returns]}


def score_response(results: list, output: str, refine: Optional[dict]) -> dict:
    """The ``/score`` answer for one request's results (floats, or per-part lists)."""
    if output == "scores":
        return {"scores": finite(results)}
    body = {"parts": finite(results)}
    if refine:
        body.update({k: finite(v) for k, v in refine_parts(results, refine).items()})
    return body


# ------------------------------------------------------------------ images and frames
class _DecodeBudget:
    """Decoded bytes of one request, against ``max_decoded_mb``."""

    def __init__(self, config: ServeConfig):
        self.config, self.used = config, 0

    def take(self, nbytes: int, where: str) -> None:
        self.used += nbytes
        if self.used > self.config.max_decoded_bytes:
            raise RequestError(413, f"{where}: decoded images / frames exceed {self.config.max_decoded_mb:g} MB in "
                                    "this request (--max-decoded-mb)", "too_large")


# field name -> kind, for the input types that carry media: "image" (one image), "images" (one or a list),
# "frames" (a video / episode)
# (the keys of each media field as its input type declares them)
_MEDIA_FIELDS = {
    ImagePrompt: dict.fromkeys(ImagePrompt.row_keys["image"], "image"),
    Conversation: dict.fromkeys(Conversation.row_keys["images"], "images"),
    VisualSteps: dict.fromkeys(VisualSteps.row_keys["images"], "images"),
    VideoPrompt: dict.fromkeys(VideoPrompt.row_keys["video"], "frames"),
    Episode: dict.fromkeys(Episode.row_keys["frames"], "frames"),
}

# the fields (with their aliases) a JSON row of each input type may hold: anything else is a typo the
# model would silently ignore ({"succes": [...]} scores an episode without its success flags). Each input
# type declares them once (ScoreInput.row_keys, which its from_record reads); this is that declaration.
ROW_FIELDS = {t: t.row_fields() for t in INPUT_TYPES.values()}


def _row_fields(t: type) -> Optional[tuple]:
    """The keys a row of input type ``t`` may hold (None: a type that declares none, e.g. another package's)."""
    fields = getattr(t, "row_fields", None)
    return fields() if callable(fields) else None


def check_row_fields(row: Any, where: str, spec: ModelSpec) -> None:
    """A JSON row with a field no input type of the model reads is a 400 naming it."""
    declared = [_row_fields(t) for t in spec.input_types]
    if not isinstance(row, dict) or any(d is None for d in declared):
        return  # not a row (as_inputs names it), or an input type of another package: its own rules
    allowed = {name for d in declared for name in d}
    unknown = sorted(map(str, set(row) - allowed))
    if unknown:
        raise RequestError(400, f"{where} has unknown field(s) {field_names(unknown)}; rows of {spec.names()} "
                                f"have {', '.join(sorted(allowed))}")


def decode_media(row: Any, where: str, spec: ModelSpec, budget: _DecodeBudget) -> Any:
    """A JSON input with its base64 images / frames decoded (PIL RGB images; uint8 ``[T, H, W, 3]`` frames)."""
    if not isinstance(row, dict):
        return row  # as_inputs names the bad row
    fields: dict = {}
    for t in spec.input_types:
        for name, kind in _MEDIA_FIELDS.get(t, {}).items():
            if fields.get(name) != "images":  # a field that takes a list in any input type takes one
                fields[name] = kind
    out = dict(row)
    for name, kind in fields.items():
        if row.get(name) is None:
            continue
        here = f"{where}: field {name!r}"
        if kind == "frames":
            out[name] = decode_frames(row[name], here, budget)
        elif kind == "images" and isinstance(row[name], list):
            out[name] = [decode_image(v, f"{here}[{j}]", budget) for j, v in enumerate(row[name])]
        elif isinstance(row[name], list):  # ImagePrompt scores one image: a list would reach the model
            raise RequestError(400, f"{here} must be one base64 image, got a list of {len(row[name])} (send one "
                                    "input per image)")
        else:
            out[name] = decode_image(row[name], here, budget)
    return out


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise RequestError(400, f"{where} must be a base64 string of image bytes, got {describe(value)}")
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # base64 wrapped in lines (`base64 FILE`, Python's base64.encodebytes, MIME): the line breaks carry no data
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{where} is not valid base64 (the server takes image bytes as base64, never a file "
                                "path or URL)") from None


def decode_image(value: Any, where: str, budget: _DecodeBudget) -> Any:
    """base64 PNG / JPEG / WebP → an RGB ``PIL.Image``."""
    return image_from_bytes(_b64(value, where), where, budget)


def image_from_bytes(raw: bytes, where: str, budget: _DecodeBudget) -> Any:
    """PNG / JPEG / WebP bytes → an RGB ``PIL.Image`` (its size checked before the pixels are decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:  # its message holds only the repr of our BytesIO
        raise RequestError(400, f"{where} is not a decodable {'/'.join(IMAGE_FORMATS)} image ({len(raw)} bytes "
                                f"starting {raw[:8]!r})") from None
    except (OSError, ValueError) as e:
        raise RequestError(400, f"{where} is not a decodable {'/'.join(IMAGE_FORMATS)} image ({e})") from None
    w, h = img.size
    if w * h > budget.config.max_image_pixels:
        raise RequestError(413, f"{where} is {w}x{h} pixels; the limit is {budget.config.max_image_pixels} "
                                "(--max-image-pixels)", "too_large")
    budget.take(w * h * 3, where)
    from mmreward.vision.images import as_rgb

    try:
        return as_rgb(img)
    except (OSError, ValueError, SyntaxError) as e:  # truncated / corrupt pixel data
        raise RequestError(400, f"{where} is a corrupt {img.format} image ({e})") from None


def decode_frames(value: Any, where: str, budget: _DecodeBudget) -> Any:
    """A list of base64 images, or ``{"shape": [T, H, W, 3], "data": base64 uint8}`` → uint8 ``[T, H, W, 3]``."""
    import numpy as np

    if isinstance(value, dict):
        _object(value, ("shape", "data"), where)
        shape = value.get("shape")
        if not (isinstance(shape, list) and len(shape) == 4 and shape[3] == 3
                and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
            raise RequestError(400, f"{where}.shape must be [T, H, W, 3] with positive integers, got {describe(shape)}")
        if shape[1] * shape[2] > budget.config.max_image_pixels:
            raise RequestError(413, f"{where}: frames of {shape[2]}x{shape[1]} pixels exceed the limit of "
                                    f"{budget.config.max_image_pixels} (--max-image-pixels)", "too_large")
        raw = _b64(value.get("data"), f"{where}.data")
        expected = math.prod(shape)
        if len(raw) != expected:
            raise RequestError(400, f"{where}.data holds {len(raw)} bytes; shape {shape} needs {expected} (uint8)")
        budget.take(expected, where)
        return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()
    if not isinstance(value, list) or not value:
        raise RequestError(400, f"{where} must be a non-empty list of base64 images or {{'shape', 'data'}}, "
                                f"got {describe(value)}")
    frames = [np.asarray(decode_image(v, f"{where}[{t}]", budget)) for t, v in enumerate(value)]  # each (H, W, 3)
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise RequestError(400, f"{where}: frames differ in size {sorted(sizes)[:3]}; all frames must match")
    return np.stack(frames)  # (T, H, W, 3)


# ------------------------------------------------------------------ text from RL trainers
def _plain(text: Any) -> str:
    """A message list's contents joined (a tool-call turn's null content is no text), or the string itself."""
    if isinstance(text, list):
        return "\n".join(str(m.get("content") or "") if isinstance(m, dict) else str(m) for m in text)
    return "" if text is None else str(text)


def split_steps(response: str, separator: str) -> list[str]:
    """A response's steps: the non-blank pieces between separators (the whole response if none)."""
    steps = [s for s in response.split(separator) if s.strip()]
    return steps or [response]


def _text_unicode(value: Any, where: str) -> None:
    """A DataError naming ``where`` for a lone UTF-16 surrogate in trainer text (a tokenizer fails on it
    with an obscure error deep in the forward; the server refuses it as a 400 about "input K")."""
    try:
        _check_unicode(value, where)
    except RequestError as e:
        raise DataError(str(e)) from None
    except RecursionError:
        raise DataError(f"{where} is nested too deeply") from None


def _check_text(value: Any, where: str, name: str, allow_none: bool) -> Any:
    """A prompt / response from an RL trainer is a string or a list of chat messages (a prompt may be
    absent); messages come back normalised as :class:`TextPair` reads them (text parts joined, a
    tool-call turn's null content as "")."""
    if (value is None and allow_none) or isinstance(value, str):
        _text_unicode(value, f"{where}: field {name!r}")
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(m, dict) for m in value):
        _text_unicode(value, f"{where}: field {name!r}")
        return [_message(m, f"{where}: field {name!r}[{j}]") for j, m in enumerate(value)]
    raise DataError(f"{where}: field {name!r} must be a string or a list of messages {{'role': str, 'content': str}}, "
                    f"got {describe(value)}")


def text_input(prompt: Any, response: Any, spec: ModelSpec, separator: str, where: str) -> Any:
    """One (prompt, response) from an RL trainer as the model's input: a :class:`TextPair` (a chat
    prompt and its completion joined into one conversation) or a :class:`StepSolution` (the response
    cut into steps)."""
    # checked here for both kinds of model: the step-model path and chat joining below would otherwise turn
    # None, 5 or a dict into the text "None", "5" or its repr and score that
    prompt = _check_text(prompt, where, "prompt", allow_none=True)
    response = _check_text(response, where, "response", allow_none=False)
    if TextPair in spec.input_types:
        if isinstance(prompt, list) or isinstance(response, list):
            turns = (prompt if isinstance(prompt, list) else ([{"role": "user", "content": prompt}] if prompt else []))
            reply = response if isinstance(response, list) else [{"role": "assistant", "content": str(response)}]
            return TextPair.from_record({"messages": [*turns, *reply]}, where)
        return TextPair.from_record({"prompt": prompt, "response": response}, where)
    if StepSolution in spec.input_types:
        if isinstance(prompt, list):  # the problem is what the user asked last
            users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
            prompt = users[-1].get("content", "") if users else _plain(prompt)
        return StepSolution(_plain(prompt), split_steps(_plain(response), separator))
    raise RequestError(400, f"this endpoint sends text, but the model scores {spec.names()}: use /score")


def parse_openrlhf(data: Any, spec: ModelSpec, config: ServeConfig) -> list:
    """OpenRLHF's ``{"query", "prompts", "labels"}`` body → inputs (see :func:`openrlhf_inputs`)."""
    data = _object(data, ("query", "prompts", "labels"), "the request")
    # an empty list is a valid request: OpenRLHF shards each batch over its --remote_rm_url servers in
    # ceil(n / servers) slices, so with one query per call (0.10+) every server after the first gets
    # {"query": [], "prompts": [], "labels": []}, and any error there loses the reward of the whole call
    queries = _list_field(data, "query", config, allow_empty=True)
    prompts = _list_field(data, "prompts", config, required=False, allow_empty=True)
    # labels are ignored, but OpenRLHF slices them with the queries: another length is a caller's bug (its
    # labels no longer line up with its queries), refused as the adapters refuse it
    labels = data.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(queries)):
        raise RequestError(400, f"got {len(queries)} queries but {_describe_labels(labels)}: 'labels' must be null "
                                "or a list with one label per query")
    return openrlhf_inputs(queries, prompts, spec, config.step_separator, config.openrlhf_split)


def _describe_labels(labels: Any) -> str:
    return f"{len(labels)} labels" if isinstance(labels, list) else f"labels {describe(labels)}"


def openrlhf_inputs(queries: Sequence[Any], prompts: Optional[Sequence[Any]], spec: ModelSpec, separator: str,
                    split: bool = False) -> list:
    """OpenRLHF's queries (each the decoded prompt + response) → inputs. A text RM scores each query
    as one text, as OpenRLHF's ``serve_rm`` does; with ``split`` (and always for step models) the
    response is the query after its prompt."""
    if prompts is not None and len(prompts) != len(queries):
        raise RequestError(400, f"got {len(queries)} queries but {len(prompts)} prompts")
    split = split or TextPair not in spec.input_types
    items = []
    for i, q in enumerate(queries):
        p = prompts[i] if prompts is not None else None
        where = f"query {i}"
        if not isinstance(q, str):
            raise RequestError(400, f"{where} must be a string, got {describe(q)}")
        if p is not None and not isinstance(p, str):
            raise RequestError(400, f"prompts[{i}] must be a string, got {describe(p)}")
        # the batch padding around the query goes, and the bos the model's tokenizer adds again (clean_query)
        q = clean_query(q, spec, bos=not split)
        try:
            if not split:
                items.append(text_input(None, q, spec, separator, where))
            elif p is not None and q.startswith(p):
                items.append(text_input(clean_query(p, spec), q[len(p):], spec, separator, where))
            elif p is not None and clean_query(q, spec).startswith(clean_query(p, spec)):
                # the prompt sent with the batch padding / bos the query lost in clean_query (a prompt decoded
                # from the same padded ids), or without the bos the query carries: both read without them
                pc = clean_query(p, spec)
                items.append(text_input(pc, clean_query(q, spec)[len(pc):], spec, separator, where))
            elif p is None and TextPair not in spec.input_types:
                items.append(text_input("", clean_query(q, spec), spec, separator, where))
            elif p is None:
                raise RequestError(400, f"{where} has no prompt to cut the response after (--openrlhf-split): send "
                                        "'prompts', one per query, or serve without --openrlhf-split")
            else:
                raise RequestError(400, f"{where} does not start with its prompt, so the response cannot be cut out "
                                        "(send 'prompts' that prefix each query, or serve without --openrlhf-split)")
        except DataError as e:
            raise RequestError(400, str(e)) from None
    return items


def openrlhf_response(rewards: list, missing_reward: Optional[float] = None) -> dict:
    """OpenRLHF's answer ``{"rewards", "scores", "extra_logs"}``: a non-finite reward is null, or
    ``missing_reward`` when given (OpenRLHF puts the rewards in ``torch.tensor``, which cannot read null)."""
    rewards = fill_missing(finite(rewards), missing_reward)
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}


def missing_indices(rewards: Sequence[Any]) -> list:
    """The indices of the rewards that are None (no finite reward)."""
    return [i for i, r in enumerate(rewards) if r is None]


def fill_missing(rewards: list, missing_reward: Optional[float]) -> list:
    """``rewards`` with each None replaced by ``missing_reward`` (unchanged when it is None)."""
    if missing_reward is None:
        return rewards
    return [float(missing_reward) if r is None else r for r in rewards]


__all__ = ["ROW_FIELDS", "ModelSpec", "RequestError", "ScoreRequest", "check_row_fields", "decode_frames",
           "decode_image", "field_names", "fill_missing", "finite", "image_from_bytes", "load_model",
           "missing_indices", "openrlhf_inputs", "openrlhf_response", "clean_query",
           "parse_image_upload", "parse_json", "parse_openrlhf", "parse_refine", "parse_score_request", "refine_parts",
           "score_response", "split_steps", "text_input"]
