"""Reward functions in the shapes RL trainers call, over a local model or a running ``mmreward serve``.

    from mmreward.serve import TRLRewardFunction, OpenRLHFRewardFunction

    # TRL (GRPOTrainer(reward_funcs=[...])): (prompts, completions, **kwargs) -> list[float]
    rm = TRLRewardFunction("runs/rm")                         # a model folder, loaded here
    rm = TRLRewardFunction("http://127.0.0.1:8000")           # or a server (batched with other workers)

    # OpenRLHF (--reward.remote_url / --remote_rm_url reward_func.py holding `reward_func = ...`):
    # (queries, prompts, labels) -> {"rewards": [...], "scores": [...], "extra_logs": {}}; as_function(): a plain
    # function, which OpenRLHF 0.7.1 - 0.9.0 need (they hand it to ray.remote)
    reward_func = OpenRLHFRewardFunction("http://rm-host:8000", api_key=os.environ["RM_KEY"]).as_function()

    # verl (custom_reward_function.path=reward.py, .name=compute_score), per sample or batched:
    compute_score = VerlRewardFunction("http://rm-host:8000")   # the prompt from extra_info["question"]

Text goes to the model's input type: a text RM gets ``TextPair(prompt, completion)`` (a chat
prompt and its completion as one conversation); a step model (PRM) gets ``StepSolution(prompt,
completion cut at step_separator)`` and returns its own score per completion, or with ``refine=``
the refined return ``G_0`` (PRM Clip / Delta, computed where the model runs).

:class:`RewardClient` is the HTTP client both use: connection reuse, requests cut to the server's
``max_items`` and ``max_request_mb``, 503 → wait ``Retry-After`` and retry, a gateway's 502 / 503 / 504
and lost connections retried, 4xx → ``ValueError`` with the server's message.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import time
from typing import Any, Optional, Sequence

from mmreward.core.cli_config import shift_input_index
from mmreward.core.data import DataError
from mmreward.core.inputs import Conversation, StepSolution, TextPair, VisualSteps
from mmreward.core.inputs import _message as _chat_turn

from .protocol import OUTPUTS, ModelSpec, fill_missing, finite, load_model, missing_indices, openrlhf_inputs, \
    openrlhf_response, parse_refine, refine_parts, split_steps, text_input


_ROUTES = ("/score", "/get_reward", "/info", "/healthz", "/metrics")


def _is_url(target: Any) -> bool:
    return isinstance(target, str) and target[:8].lower().startswith(("http://", "https://"))  # schemes: any case


def _server_address_without_http(target: Any) -> Optional[str]:
    """Why ``target`` names a server an adapter cannot reach as it is (``localhost:8000`` with no scheme, a
    ``ws://`` URL), or None. Read as a model folder, it failed with "model folder 'localhost:8000' does not
    exist" or a hub error about repo ids."""
    import os
    import re

    if not isinstance(target, str) or _is_url(target) or os.path.exists(target):
        return None
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", target)
    if scheme:
        return f"{target!r} is a {scheme.group(1)}:// URL: mmreward serve speaks HTTP (http:// or https://)"
    if re.match(r"^[A-Za-z0-9.-]+:\d{1,5}(/.*)?$", target):
        return (f"{target!r} looks like a server address without its scheme: give the URL, "
                f"'http://{target.split('/')[0]}' (not a route), or the path of a model folder")
    return None


def _frames_field(value: Any, where: str) -> Any:
    """An episode's / video's frames held as an array (numpy, torch) → the protocol's ``{"shape": [T, H, W, 3],
    "data": base64 of uint8}``; anything else (a list of base64 images, a path the server refuses) as it is."""
    if not hasattr(value, "shape") or not hasattr(value, "dtype") or isinstance(value, (str, bytes)):
        return value
    import base64

    import numpy as np

    array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"{where}: frames go to the server as uint8 [T, H, W, 3], got {array.dtype} "
                         f"{list(array.shape)} (convert them, e.g. (frames * 255).round().astype(np.uint8))")
    return {"shape": [int(s) for s in array.shape], "data": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()}


def _image_array(value: Any, where: str) -> Any:
    """An image held as an array, in the layouts ``model.score`` reads (numpy ``[H, W, 3]`` / ``[H, W, 4]`` /
    ``[H, W]``, torch ``[3, H, W]``; uint8, or float in [0, 1]) → an RGB PIL image of the same pixels. A float
    image that 8 bits cannot hold exactly is refused: the server would score other pixels than in-process."""
    import numpy as np
    from PIL import Image

    if hasattr(value, "detach"):  # torch: channels first
        array = value.detach().cpu().numpy()
        if array.ndim != 3 or array.shape[0] != 3:
            raise ValueError(f"{where}: an image tensor must be [3, H, W], got {list(array.shape)}")
        array = array.transpose(1, 2, 0)
    else:
        array = np.asarray(value)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise ValueError(f"{where}: an image array must be [H, W, 3] (or [H, W]), got shape {list(array.shape)}")
        array = array[..., :3]  # model.score reads RGBA arrays' colour channels only
    if np.issubdtype(array.dtype, np.floating):
        scaled = array.astype(np.float64) * 255.0
        levels = np.rint(scaled)
        if not (np.isfinite(scaled).all() and np.abs(scaled - levels).max(initial=0) <= 1e-3
                and levels.min(initial=0) >= 0 and levels.max(initial=0) <= 255):
            raise ValueError(f"{where}: a float image goes to the server as 8-bit PNG, and its values are not "
                             "multiples of 1/255 in [0, 1]; send (image * 255).round() as uint8, or score it in-process")
        array = levels.astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"{where}: an image array must be uint8 or float in [0, 1], got {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def _image_field(value: Any, where: str) -> Any:
    """A PIL image or an image array → base64 PNG (lossless: the server decodes the pixels the model
    in-process would get); anything else (a base64 string, a path the server refuses) as it is."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (str, bytes)):
        value = _image_array(value, where)
    if not (hasattr(value, "save") and hasattr(value, "mode") and hasattr(value, "size")):
        return value
    import base64
    import io

    buf = io.BytesIO()
    try:
        value.save(buf, format="PNG")
    except (OSError, ValueError, KeyError) as e:  # a mode PNG cannot hold (CMYK, LAB ...)
        raise ValueError(f"{where}: a PIL image in mode {value.mode!r} cannot be sent as PNG ({e}); convert it to "
                         "RGB first (image.convert('RGB'))") from None
    return base64.b64encode(buf.getvalue()).decode()


def _sendable(key: str, value: Any, where: str) -> Any:
    """A field of an input row as JSON can carry it: frames as :func:`_frames_field`, PIL images and image
    arrays as base64 PNG, other arrays (an episode's ``success`` flags) and numpy numbers as lists / Python numbers."""
    if key in ("frames", "episode", "video"):
        return _frames_field(value, where)
    if key in ("image", "images"):
        if isinstance(value, (list, tuple)):
            return [_image_field(v, f"{where}[{j}]") for j, v in enumerate(value)]
        return _image_field(value, where)
    if hasattr(value, "tolist") and hasattr(value, "dtype") and not isinstance(value, (str, bytes)):
        return (value.detach().cpu() if hasattr(value, "detach") else value).tolist()
    return value


def _json_bytes(value: Any, where: str) -> bytes:
    """``value`` as the compact UTF-8 JSON the client sends; a value JSON cannot carry is a ValueError
    naming ``where`` (rather than a serializer's error about the whole body)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where} holds an unpaired UTF-16 surrogate: send valid Unicode text") from None
    except (TypeError, ValueError) as e:  # a PIL image, a tensor, NaN ...
        raise ValueError(f"{where} cannot be sent as JSON ({e}); images go as base64 strings, numbers must be "
                         "finite") from None


def _slices(columns: dict, fixed: dict, max_items: int, max_bytes: Optional[int], what: str) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges cutting the equally long lists of ``columns`` (None: a column sent as
    null) into request bodies ``{**fixed, name: column[start:stop], ...}`` of at most ``max_items``
    entries and ``max_bytes`` bytes. An entry too large for a body of its own is a ValueError naming it
    (before anything is sent)."""
    n = max(len(c) for c in columns.values() if c is not None)
    if max_bytes is None:
        return [(i, min(i + max_items, n)) for i in range(0, n, max_items)]
    live = [name for name, c in columns.items() if c is not None]
    # the body with every column empty, then each entry adds its JSON and one comma per column after the first
    base = len(_json_bytes({**fixed, **{name: ([] if name in live else None) for name in columns}}, "the request"))
    sizes = [sum(len(_json_bytes(columns[name][i], f"{what} {i}" + (f" ({name})" if len(live) > 1 else "")))
                 for name in live) for i in range(n)]
    out, start, size = [], 0, base
    for i, s in enumerate(sizes):
        if base + s > max_bytes:
            raise ValueError(f"{what} {i} is {s} bytes as JSON: with the request around it ({base} bytes) it exceeds "
                             f"the server's request limit of {max_bytes} bytes (mmreward serve --max-request-mb); "
                             "send it smaller (e.g. fewer or smaller images) or raise the limit")
        extra = s + (len(live) if i > start else 0)
        if i > start and (i - start >= max_items or size + extra > max_bytes):
            out.append((start, i))
            start, size, extra = i, base, s
        size += extra
    out.append((start, n))
    return out


class RewardClient:
    """A client of ``mmreward serve``: ``info()``, ``score(inputs, ...)``, ``get_reward(queries, ...)``.

    Requests are cut to the server's ``max_items`` inputs and ``max_request_mb`` body size (read from
    ``/info``; ``max_request_bytes`` sets a body limit of its own, e.g. for a proxy in front)."""

    def __init__(self, url: str, *, api_key: Optional[str] = None, timeout: float = 120.0, retries: int = 5,
                 max_request_bytes: Optional[int] = None):
        if not _is_url(url):
            raise ValueError(f"server URL must start with http:// or https://, got {url!r}")
        if url.rstrip("/").endswith(_ROUTES):  # OpenRLHF's --remote_rm_url names the route; this client adds it
            raise ValueError(f"give the server's base URL (http://host:port), not a route: got {url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if max_request_bytes is not None and (isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int)
                                              or max_request_bytes < 64):
            raise ValueError(f"max_request_bytes must be an integer >= 64 or None, got {max_request_bytes!r}")
        if api_key is not None:
            if not isinstance(api_key, str):
                raise TypeError(f"api_key must be a string or None, got {type(api_key).__name__}")
            # a key read from a file or a shell variable often ends in a newline: an HTTP header cannot carry it
            # (httpx failed every try with "Illegal header value", reported as a lost connection), nor a key
            # that is not printable ASCII (a UnicodeEncodeError); the server's keys are never either
            api_key = api_key.strip()
            if not api_key:
                raise ValueError("api_key is empty: give the server's key, or None for a server without one")
            from .config import sendable_api_key

            if not sendable_api_key(api_key):
                raise ValueError("api_key must be printable ASCII without spaces (it travels as 'Authorization: "
                                 "Bearer KEY', and the server accepts no other keys)")
        self.url, self.api_key, self.timeout, self.retries = url.rstrip("/"), api_key, timeout, retries
        self.max_request_bytes = max_request_bytes
        self._http = None
        self._info: Optional[dict] = None

    def __getstate__(self) -> dict:  # picklable for trainers that copy reward functions to workers
        return {**self.__dict__, "_http": None}

    def _client(self) -> Any:
        if self._http is None:
            from mmreward.core.extras import needs_extra

            with needs_extra("serve", what="a reward-server URL"):
                import httpx

            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._http = httpx.Client(timeout=self.timeout, headers=headers)
        return self._http

    def _request(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        from mmreward.core.extras import needs_extra

        with needs_extra("serve", what="a reward-server URL"):
            import httpx

        last = ""
        for attempt in range(self.retries + 1):
            try:  # the body encoded as the size limits were computed (compact UTF-8)
                r = self._client().request(method, self.url + path, content=None if body is None else
                                           _json_bytes(body, "the request"),
                                           headers=None if body is None else {"content-type": "application/json"})
            except httpx.ReadTimeout:
                # the server took the request and has not answered in time (a slow model, a long queue): sending it
                # again would score it again on the same busy server (each retry a full forward more) and keep the
                # trainer waiting up to retries + 1 timeouts; a gateway's 504 or a lost connection is retried below
                raise TimeoutError(f"{method} {self.url + path} got no answer within timeout={self.timeout:g} s "
                                   "(not retried: the server may still be scoring it); raise timeout=, or send "
                                   "fewer inputs per call") from None
            except httpx.TransportError as e:  # refused / reset / connect timeout: the server may be restarting
                last = f"{type(e).__name__}: {e}"
                if attempt < self.retries:  # no wait after the last try
                    time.sleep(min(2.0 ** attempt * 0.1, 5.0))
                continue
            if (r.status_code == 503 and "retry-after" in r.headers) or (
                    r.status_code in (502, 503, 504) and not _is_server_error(r)):
                # busy (queue full), or a gateway in front whose server is restarting or slow (502 / 503 /
                # 504 that are not the server's own JSON): wait and retry. The server's own 503 without
                # Retry-After (its model worker is down) is raised at once below: retrying cannot help
                last = _message(r)
                if attempt < self.retries:
                    time.sleep(_retry_after(r.headers.get("retry-after"), self.timeout))
                continue
            if r.status_code >= 400:
                kind = ValueError if r.status_code < 500 else RuntimeError
                raise kind(f"{method} {self.url + path} -> {r.status_code}: {_message(r)}")
            try:
                return r.json()
            except ValueError:  # a proxy's HTML page, a truncated body: not the server's answer
                raise RuntimeError(f"{method} {self.url + path} -> {r.status_code} with a body that is not JSON "
                                   f"({r.headers.get('content-type', 'no content-type')}): {r.text[:200]!r}; is "
                                   "this URL an mmreward server?") from None
        raise ConnectionError(f"{method} {self.url + path} failed after {self.retries + 1} tries: {last}")

    def _sliced_request(self, path: str, body: dict, start: int) -> dict:
        """``POST path`` of the slice of the caller's inputs that begins at ``start``: an error naming one of
        its inputs ("input 1", "query 1", "prompts[1]": the server counts from the slice) names it as the
        caller counts (input ``start + 1``), as the same inputs scored in-process are named."""
        try:
            return self._request("POST", path, body)
        except (ValueError, RuntimeError) as e:
            if not start or type(e) not in (ValueError, RuntimeError):
                raise
            raise type(e)(shift_input_index(str(e), start)) from None

    def info(self) -> dict:
        """The served model: ``model_type``, ``inputs``, ``parts``, limits (fetched once)."""
        if self._info is None:
            self._info = self._request("GET", "/info")
        return self._info

    def _limits(self, n: int) -> tuple[int, Optional[int]]:
        """Most inputs and body bytes per request: the server's (``/info``), and this client's ``max_request_bytes``."""
        info = self.info()
        max_items = max(1, int(info.get("max_items") or n or 1))
        limits = [b for b in (self.max_request_bytes,
                              int(info["max_request_mb"] * 2**20) if info.get("max_request_mb") else None) if b]
        return max_items, (min(limits) if limits else None)

    def score(self, inputs: Sequence[Any], *, output: Optional[str] = None, refine: Optional[dict] = None) -> dict:
        """``POST /score`` in slices of the server's ``max_items`` inputs and ``max_request_mb`` bytes;
        the answers' lists joined. An input too large for a request of its own is a ValueError naming it,
        raised before anything is sent."""
        rows = [dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x for x in inputs]
        if not rows:
            raise ValueError("score got no inputs")
        rows = [{k: _sendable(k, v, f"input {i}.{k}") for k, v in row.items()} if isinstance(row, dict) else row
                for i, row in enumerate(rows)]
        fixed: dict = {}
        if output:
            fixed["output"] = output
        if refine:
            fixed["refine"] = refine
        merged: dict = {}
        # the column the answer must hold ("scores" with refine; the server's default without output)
        key = "scores" if refine or output == "scores" else "parts" if output == "parts" else None
        # without output, later slices carry the first one's column: their bodies are sized with room for it
        sized = fixed if key else {**fixed, "output": max(OUTPUTS, key=len)}
        for start, stop in _slices({"inputs": rows}, sized, *self._limits(len(rows)), "input"):
            answer = self._sliced_request("/score", {"inputs": rows[start:stop], **fixed}, start)
            where = f"POST {self.url}/score (inputs {start}..{stop - 1})"
            if key == "scores":  # the column the adapters read: numbers or nulls, one per input
                scores = _answer_column(answer, "scores", stop - start, where)
                answer = {**answer, "scores": scores}
            elif not isinstance(answer, dict) or not set(answer) & ({key} if key else {"scores", "parts"}):
                raise RuntimeError(f"{where} answered no {key or 'scores / parts'!r}: {str(answer)[:120]}; is this "
                                   "URL an mmreward server?")
            if key is None:  # the server's default for the first slice holds for the rest: one column in all
                key = fixed["output"] = "parts" if "parts" in answer else "scores"
            for name, values in answer.items():
                if not isinstance(values, list) or len(values) != stop - start:
                    raise RuntimeError(f"{where} answered {name!r} with {_describe_len(values)}, expected "
                                       f"{stop - start} (one per input)")
                merged.setdefault(name, []).extend(values)
        return merged

    def get_reward(self, queries: Sequence[str], prompts: Optional[Sequence[str]] = None,
                   labels: Optional[Sequence[Any]] = None) -> dict:
        """``POST /get_reward`` (OpenRLHF's protocol), in slices of the server's ``max_items``; the
        answers' ``rewards`` / ``scores`` joined."""
        queries = list(queries)
        prompts = None if prompts is None else list(prompts)
        labels = None if labels is None else list(labels)
        if prompts is not None and len(prompts) != len(queries):
            raise ValueError(f"got {len(queries)} queries but {len(prompts)} prompts")
        if labels is not None and len(labels) != len(queries):
            raise ValueError(f"got {len(queries)} queries but {len(labels)} labels")
        if not queries:
            raise ValueError("get_reward got no queries")
        columns = {"query": queries, "prompts": prompts, "labels": labels}
        merged: dict = {}
        for start, stop in _slices(columns, {}, *self._limits(len(queries)), "query"):
            answer = self._sliced_request("/get_reward", {
                name: None if values is None else values[start:stop] for name, values in columns.items()}, start)
            where = f"POST {self.url}/get_reward (queries {start}..{stop - 1})"
            rewards = _answer_column(answer, "rewards", stop - start, where)
            answer = {**answer, "rewards": rewards}
            if "scores" in answer:
                answer["scores"] = _answer_column(answer, "scores", stop - start, where)
            for key, value in answer.items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
                elif isinstance(value, dict):
                    merged.setdefault(key, {}).update(value)
                else:
                    merged[key] = value
        return merged


def as_batch(values: Any, name: str) -> list:
    """A trainer's batch argument as a list, one entry per sample. A string would otherwise be scored one
    sample per character, and None, a dict or a set has no sample order; numpy object arrays (verl's) pass."""
    from collections.abc import Mapping, Set

    if values is None or isinstance(values, (str, bytes, Mapping, Set)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a list (one entry per sample), got {type(values).__name__}")
    return list(values)


def _labels_json(labels: Optional[list]) -> Optional[list]:
    """OpenRLHF's labels as JSON for ``/get_reward``: numpy / torch values as Python ones, and labels JSON
    cannot carry at all (objects of a custom dataset) sent as null. The server ignores labels (as the
    in-process path does), so they must never fail a training step."""
    if labels is None:
        return None
    out = [x.tolist() if callable(getattr(x, "tolist", None)) else x for x in labels]
    try:
        _json_bytes(out, "labels")
    except ValueError:
        return None
    return out


def _retry_after(value: Optional[str], timeout: float) -> float:
    """Seconds to wait for a 503's ``Retry-After``: delay-seconds, or an HTTP date (RFC 9110); a value that
    is neither waits 1 s. Capped at the client's ``timeout`` (and 60 s): a proxy asking for an hour
    would otherwise hang the trainer."""
    import email.utils

    seconds = 1.0
    if value is not None:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
                seconds = when.timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = 1.0
    if seconds != seconds:  # NaN
        seconds = 1.0
    return min(max(seconds, 0.0), float(timeout), 60.0)


def _answer_column(answer: Any, key: str, n: int, where: str) -> list:
    """``answer[key]``, checked to be a list of ``n`` numbers or nulls (non-finite numbers → None): an
    answer of another length or kind would be joined out of step with the inputs, every later reward
    going to the wrong sample."""
    if not isinstance(answer, dict):
        raise RuntimeError(f"{where} answered {type(answer).__name__}, not a JSON object; is this URL an mmreward "
                           "server?")
    if key not in answer:
        raise RuntimeError(f"{where} answered no {key!r} (fields {sorted(map(str, answer))[:8]}); is this URL an "
                           "mmreward server?")
    values = answer[key]
    if not isinstance(values, list) or len(values) != n:
        raise RuntimeError(f"{where} answered {_describe_len(values)} for {key!r}, expected {n} (one per input); is "
                           "this URL an mmreward server?")
    for i, v in enumerate(values):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise RuntimeError(f"{where} answered {v!r} as {key}[{i}], not a number or null")
    return finite(values)


def _is_server_error(response: Any) -> bool:
    """Whether an error response is mmreward serve's own ``{"error": ..., "status": ...}``."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "error" in body and "status" in body


def _describe_len(values: Any) -> str:
    return f"{len(values)} value(s)" if isinstance(values, list) else repr(values)[:80]


def _message(response: Any) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:500]


class _Rewarder:
    """A local model or a :class:`RewardClient`, scoring text from RL trainers."""

    def __init__(self, model: Any, *, api_key: Optional[str], device: str, batch_size: Optional[int],
                 step_separator: str, refine: Optional[dict], timeout: float):
        address = _server_address_without_http(model)
        if address:
            raise ValueError(address)
        if _is_url(model):
            self.client: Optional[RewardClient] = RewardClient(model, api_key=api_key, timeout=timeout)
            self.model = None
        else:
            self.client = None
            self.model = load_model(model, device)
        if not isinstance(step_separator, str) or not step_separator:  # str.split("") is "empty separator"
            raise ValueError(f"step_separator must be a non-empty string, got {step_separator!r}")
        self.batch_size = batch_size
        self.step_separator = step_separator
        self._refine = refine
        self._spec: Optional[ModelSpec] = None
        # a bad refine= is refused here, not at the trainer's first reward call (after its first rollout): its
        # fields now, and for a model in this process whether it has step scores to refine
        parse_refine(refine, ModelSpec("a step model", (StepSolution,), True))
        if self.client is None:
            self.refine()

    @property
    def spec(self) -> ModelSpec:
        """What the model takes (asked of the server on first use)."""
        if self._spec is None:
            self._spec = ModelSpec.from_json(self.client.info()) if self.client else ModelSpec.of(self.model)
        return self._spec

    def text_spec(self) -> ModelSpec:
        """:attr:`spec`, checked to be a model trainers' text reaches (a text RM / judge, or a step model): any
        other is one error naming this adapter, not a protocol message about an endpoint or a query's prompt."""
        spec = self.spec
        if TextPair not in spec.input_types and StepSolution not in spec.input_types:
            raise ValueError(f"{type(self).__name__} gives the model the trainer's text (prompt and response), but "
                             f"the model scores {spec.names()}: use /score (RewardClient.score) for such inputs; a "
                             "trainer's reward function needs a text reward model / judge (TextPair) or a step "
                             "model (StepSolution)")
        return spec

    def refine(self) -> Optional[dict]:
        return parse_refine(self._refine, self.spec)

    def local_rewards(self, items: list) -> list[float]:
        import torch

        refine = self.refine()
        with torch.inference_mode():
            if refine:
                parts = [t.reshape(-1).tolist() for t in self.model.score_parts(items, batch_size=self.batch_size)]
                return refine_parts(parts, refine)["scores"]
            return self.model.score(items, batch_size=self.batch_size).tolist()

    def rewards_of(self, items: list) -> list[Optional[float]]:
        """One reward per input, here or on the server (refined returns with ``refine``)."""
        if not items:  # an empty batch has no rewards; the model and the server refuse no inputs
            return []
        if self.client is None:
            return finite(self.local_rewards(items))
        refine = self.refine()
        return self.client.score(items, output="parts" if refine else "scores", refine=refine)["scores"]


def _split_images(message: Any, where: str) -> tuple[Any, list, int]:
    """One chat turn whose content may be a list of parts (TRL's multimodal prompts: ``{"type": "image",
    "image": <PIL>}`` and ``{"type": "text", "text": ...}``) → (the turn with its text parts joined as one
    string, its images in order, its count of image placeholders without an image)."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), (list, tuple)):
        return message, [], 0
    images, placeholders, texts = [], 0, []
    for part in message["content"]:
        if isinstance(part, dict) and part.get("type") == "image":
            if part.get("image") is not None:
                images.append(part["image"])
            else:
                placeholders += 1
        else:
            texts.append(part)
    content = _chat_turn({**message, "content": texts}, where)["content"] if texts else ""
    return {**message, "content": content}, images, placeholders


def _column_images(value: Any, where: str) -> list:
    """A sample's entry of TRL's ``images`` / ``image`` column: None (no image), one image or a list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        if any(v is None for v in value):
            raise ValueError(f"{where} holds None among its images")
        return list(value)
    return [value]


def _trl_messages(value: Any, role: str, where: str) -> tuple[list, list, int]:
    """A TRL prompt / completion (a string, None for no prompt, or chat messages) → (messages with string
    contents, the images of their image parts, the count of image placeholders without an image)."""
    if value is None:
        return [], [], 0
    if isinstance(value, str):
        return ([{"role": role, "content": value}] if value or role == "assistant" else []), [], 0
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(m, dict) for m in value):
        raise ValueError(f"{where} must be a string or a list of messages {{'role': str, 'content': str | parts}}, "
                         f"got {type(value).__name__}")
    messages, images, placeholders = [], [], 0
    for j, m in enumerate(value):
        turn, found, empty = _split_images(m, f"{where}[{j}]")
        messages.append(_chat_turn(turn, f"{where}[{j}]"))
        images += found
        placeholders += empty
    return messages, images, placeholders


class TRLRewardFunction(_Rewarder):
    """A TRL ``reward_funcs`` entry: ``fn(prompts, completions, **kwargs) -> list[float]`` (standard or
    conversational prompts / completions; TRL's other keyword arguments are accepted and ignored).
    ``name`` is the name TRL logs the reward under (``rewards/<name>``).

    Over a VLM reward model (one that scores :class:`Conversation`) each sample is scored as
    ``Conversation(prompt + completion, images)``, over a VisualPRM (:class:`VisualSteps`) as
    ``VisualSteps(last user text, completion cut at step_separator, images)``; the images are those of the
    prompt's image parts (TRL puts the dataset's images there for a VLM policy), else the dataset's
    ``images`` / ``image`` column that TRL passes as a keyword. A sample without images is an error unless
    ``require_images=False``; :meth:`inputs` shows what a call scores."""

    def __init__(self, model: Any, *, name: str = "mmreward", api_key: Optional[str] = None, device: str = "cpu",
                 batch_size: Optional[int] = None, step_separator: str = "\n\n", refine: Optional[dict] = None,
                 timeout: float = 120.0, require_images: bool = True):
        if not isinstance(require_images, bool):
            raise TypeError(f"require_images must be True or False, got {require_images!r}")
        super().__init__(model, api_key=api_key, device=device, batch_size=batch_size, step_separator=step_separator,
                         refine=refine, timeout=timeout)
        if not isinstance(name, str) or not name:  # TRL logs the reward as rewards/<name>
            raise ValueError(f"name must be a non-empty string (TRL logs rewards/<name>), got {name!r}")
        self.__name__ = name
        self.require_images = require_images

    def _image_input(self) -> Optional[type]:
        """:class:`Conversation` / :class:`VisualSteps` for a model that scores images with the text (a VLM RM,
        a VisualPRM), else None (a text model: :func:`text_input`)."""
        types = self.spec.input_types
        if TextPair in types or StepSolution in types:
            return None
        return Conversation if Conversation in types else VisualSteps if VisualSteps in types else None

    def _conversations(self, prompts: list, completions: list, kwargs: dict) -> list:
        """TRL's prompts, completions and image column → one :class:`Conversation` (a VLM RM) or
        :class:`VisualSteps` (a VisualPRM: the last user turn's text, the completion cut into steps) per sample."""
        kind = self._image_input()
        column_name = "images" if kwargs.get("images") is not None else "image" if kwargs.get("image") is not None \
            else None
        column = None
        if column_name is not None:
            column = as_batch(kwargs[column_name], column_name)
            if len(column) != len(prompts):
                raise ValueError(f"got {len(prompts)} prompts but {len(column)} entries in the {column_name!r} column")
        items = []
        for i, (p, c) in enumerate(zip(prompts, completions)):
            where = f"completion {i}"
            turns, images, placeholders = _trl_messages(p, "user", f"prompts[{i}]")
            reply, reply_images, reply_placeholders = _trl_messages(c, "assistant", f"completions[{i}]")
            images, placeholders = images + reply_images, placeholders + reply_placeholders
            given = [] if column is None else _column_images(column[i], f"{column_name}[{i}]")
            if images and placeholders:
                raise ValueError(f"{where}: its prompt holds {len(images)} image(s) and {placeholders} image "
                                 "placeholder(s) without an image; give every {'type': 'image'} part its image")
            if images and given and len(given) != len(images):
                raise ValueError(f"{where}: its prompt holds {len(images)} image(s) but {column_name}[{i}] has "
                                 f"{len(given)}; they must be the same images")
            if placeholders and len(given) != placeholders:
                raise ValueError(f"{where}: its prompt has {placeholders} image placeholder(s) but "
                                 + (f"{column_name}[{i}] has {len(given)} image(s)" if column is not None else
                                    "no 'images' / 'image' column was passed"))
            images = images or given
            if not images and self.require_images:
                raise ValueError(
                    f"{where}: the reward model reads images (it scores {kind.__name__}) but sample "
                    f"{i} has none: " + (f"{column_name}[{i}] is {column[i]!r:.40}" if column is not None else
                                         "TRL passed no 'images' / 'image' column and its prompt has no image parts")
                    + "; give the dataset an 'image' or 'images' column (TRL passes it to reward functions), or "
                    "require_images=False to score text-only samples")
            try:
                if kind is VisualSteps:  # the question is what the user asked last; the completion cut into steps
                    users = [m["content"] for m in turns if m.get("role") == "user"]
                    question = users[-1] if users else "\n".join(m["content"] for m in turns)
                    answer = "\n".join(m["content"] for m in reply if m.get("role") == "assistant") or \
                        "\n".join(m["content"] for m in reply)
                    items.append(VisualSteps.from_record({"question": question, "steps": split_steps(
                        answer, self.step_separator), "images": images}, where))
                else:
                    items.append(Conversation.from_record({"messages": [*turns, *reply], "images": images}, where))
            except DataError as e:
                raise ValueError(str(e)) from None
        return items

    def inputs(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list:
        """The :class:`Conversation` / :class:`VisualSteps` inputs a call with these arguments scores (for a
        model that reads images)."""
        prompts, completions = as_batch(prompts, "prompts"), as_batch(completions, "completions")
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        return self._conversations(prompts, completions, kwargs)

    def __call__(self, /, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Optional[float]]:
        # self is positional-only: TRL passes every dataset column as a keyword, and a column named "self" must
        # land in kwargs, not fail the step with "got multiple values for argument 'self'"
        prompts, completions = as_batch(prompts, "prompts"), as_batch(completions, "completions")
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        if self._image_input() is not None:  # a VLM RM / VisualPRM: the prompt, the completion and the sample's images
            return self.rewards_of(self._conversations(prompts, completions, kwargs))
        spec = self.text_spec()
        return self.rewards_of([text_input(p, c, spec, self.step_separator, f"completion {i}")
                                for i, (p, c) in enumerate(zip(prompts, completions))])


class OpenRLHFRewardFunction(_Rewarder):
    """OpenRLHF's ``reward_func(queries, prompts, labels)``: put ``reward_func = OpenRLHFRewardFunction(...)
    .as_function()`` in a ``.py`` file and pass it as ``--reward.remote_url`` (``--remote_rm_url`` before
    0.11). Answers what ``POST /get_reward`` answers. ``split``: score (prompt, response) instead of the whole
    query (step models always split).

    OpenRLHF 0.9.1+ (and before 0.7.1) calls the object in the file as it is; 0.7.1 - 0.9.0 wrap it in
    ``ray.remote(reward_func)``, which takes only a plain function (an instance is "TypeError: The @ray.remote
    decorator must be applied to either a function or a class" at startup): :meth:`as_function` is one, for
    every release."""

    def __init__(self, model: Any, *, api_key: Optional[str] = None, device: str = "cpu",
                 batch_size: Optional[int] = None, step_separator: str = "\n\n", refine: Optional[dict] = None,
                 split: bool = False, timeout: float = 180.0, missing_reward: Optional[float] = None):
        if missing_reward is not None and (isinstance(missing_reward, bool) or not isinstance(
                missing_reward, numbers.Real) or not math.isfinite(missing_reward)):
            raise ValueError(f"missing_reward must be a finite number or None, got {missing_reward!r}")
        super().__init__(model, api_key=api_key, device=device, batch_size=batch_size, step_separator=step_separator,
                         refine=refine, timeout=timeout)
        if self.client is not None and (refine or split or step_separator != "\n\n"):
            raise ValueError("refine / split / step_separator of a server are set where it runs "
                             "(mmreward serve --refine-clip / --refine-delta / --openrlhf-split / --step-separator)")
        self.split = split
        self.missing_reward = None if missing_reward is None else float(missing_reward)
        self._warned_missing = False

    def _fill(self, answer: dict, queries: list) -> dict:
        """``answer`` with the rewards that are None (no finite reward) set to ``missing_reward``; without it,
        one warning (per reward function) naming the first such query: OpenRLHF cannot read None."""
        missing = missing_indices(answer.get("rewards", []))
        if not missing:
            return answer
        if self.missing_reward is not None:
            return {**answer, **{k: fill_missing(answer[k], self.missing_reward) for k in ("rewards", "scores")
                                 if isinstance(answer.get(k), list)}}
        if not self._warned_missing:
            self._warned_missing = True
            import warnings

            warnings.warn(f"{type(self).__name__}: query {missing[0]} {str(queries[missing[0]])[:80]!r} ({len(missing)} "
                          f"of {len(answer['rewards'])} in "
                          "this batch) has no finite reward and is returned as None, which OpenRLHF cannot read "
                          "(torch.tensor of the rewards fails: 'Could not infer dtype of NoneType'); pass "
                          "missing_reward=VALUE (e.g. -1.0) to return that instead. Warned once.", RuntimeWarning,
                          stacklevel=3)
        return answer

    def __call__(self, /, queries: Sequence[str], prompts: Optional[Sequence[str]] = None,
                 labels: Optional[Sequence[Any]] = None, **kwargs: Any) -> dict:
        # OpenRLHF's reward_func convention is reward_func(queries, prompts, labels, **kwargs): keyword arguments
        # a release adds are accepted and ignored, as TRL's and verl's are
        queries = as_batch(queries, "queries")
        prompts = None if prompts is None else as_batch(prompts, "prompts")
        labels = None if labels is None else as_batch(labels, "labels")
        # checked here, not only by the server: its answer would be an HTTP error about the request
        if prompts is not None and len(prompts) != len(queries):
            raise ValueError(f"got {len(queries)} queries but {len(prompts)} prompts")
        if labels is not None and len(labels) != len(queries):  # as the server's client refuses it
            raise ValueError(f"got {len(queries)} queries but {len(labels)} labels")
        if not queries:
            return openrlhf_response([])
        spec = self.text_spec()  # a server's asked once (its /info); its /get_reward would blame the queries
        if self.client is not None:
            return self._fill(self.client.get_reward(queries, prompts, _labels_json(labels)), queries)
        items = openrlhf_inputs(queries, prompts, spec, self.step_separator, self.split)
        return self._fill(openrlhf_response(self.local_rewards(items)), queries)

    def as_function(self, output: str = "lists") -> Any:
        """This reward function as a plain Python function ``reward_func(queries, prompts=None, labels=None,
        **kwargs)``: what OpenRLHF 0.7.1 - 0.9.0 need (they pass the file's ``reward_func`` to ``ray.remote``,
        which refuses callable objects; Ray's cloudpickle carries the function, and this object with it, to its
        workers). Later releases take either.

        ``output`` is what it returns, as each release reads a reward function's answer:

        * ``"lists"``: the ``/get_reward`` answer ``{"rewards": [...], "scores": [...], "extra_logs": {}}``
          (OpenRLHF 0.8.11+ read it with ``torch.as_tensor`` / ``torch.tensor``);
        * ``"tensors"``: the same dict with float32 tensors, as OpenRLHF's example ``reward_func`` returns it:
          0.8.3 - 0.8.10 join the answers with ``torch.cat``, which refuses lists; later releases take it too;
        * ``"tensor"``: the rewards tensor alone, what 0.7.1 - 0.8.2 expect (they ``torch.cat`` the answers).

        A tensor cannot hold a missing reward (None): with ``"tensors"`` / ``"tensor"``, an input without a finite
        reward and no ``missing_reward`` is a ValueError naming the query."""
        if output not in _FUNCTION_OUTPUTS:
            raise ValueError(f"output must be one of {list(_FUNCTION_OUTPUTS)}, got {output!r}")
        rewarder = self

        def reward_func(queries: Sequence[str], prompts: Optional[Sequence[str]] = None,
                        labels: Optional[Sequence[Any]] = None, **kwargs: Any) -> Any:
            answer = rewarder(queries, prompts, labels, **kwargs)
            return answer if output == "lists" else _as_tensors(answer, queries, output)

        reward_func.__doc__ = f"OpenRLHF reward_func over {type(self).__name__}"
        reward_func.reward_function = self  # the object behind it (its client, model and settings)
        return reward_func


_FUNCTION_OUTPUTS = ("lists", "tensors", "tensor")


def _as_tensors(answer: dict, queries: Sequence[Any], output: str) -> Any:
    """A ``/get_reward`` answer with float32 tensors (``output="tensors"``), or its rewards tensor alone
    (``"tensor"``); a None reward (no finite reward, no ``missing_reward``) is a ValueError naming the query."""
    import torch

    missing = missing_indices(answer["rewards"])
    if missing:
        i = missing[0]
        raise ValueError(f"query {i} {str(list(queries)[i])[:80]!r} ({len(missing)} of {len(answer['rewards'])}) "
                         f"has no finite reward, which a tensor cannot hold (as_function(output={output!r})); pass "
                         "missing_reward=VALUE (e.g. -1.0) to OpenRLHFRewardFunction")
    rewards = torch.tensor(answer["rewards"], dtype=torch.float32)
    if output == "tensor":
        return rewards
    out = dict(answer)
    out["rewards"] = rewards
    out["scores"] = torch.tensor(answer.get("scores", answer["rewards"]), dtype=torch.float32)
    out["extra_logs"] = {k: torch.as_tensor(v) for k, v in (answer.get("extra_logs") or {}).items()}
    return out


class VerlRewardFunction(_Rewarder):
    """verl's custom reward function (``custom_reward_function.path`` / ``.name``), for both of its
    reward managers: per sample (``naive``) ``fn(data_source, solution_str, ground_truth, extra_info)
    -> float`` and batched (``reward_manager=batch``) ``fn(data_sources, solution_strs, ground_truths,
    extra_infos) -> list[float]``. verl passes no prompt, so it is read from ``extra_info[prompt_key]``
    (``"question"``, where verl's example data keeps it; a string or chat messages); ``prompt_key=None``
    scores the response alone. ``data_source`` and ``ground_truth`` play no part in a learned reward.
    A non-finite reward is NaN (verl writes rewards into a float tensor; TRL's None would fail there), or
    ``missing_reward`` when given: verl's advantages do not skip NaN (one NaN makes its GRPO group's mean, and
    then the loss, NaN), so without it the first such sample is named in one ``RuntimeWarning``."""

    def __init__(self, model: Any, *, prompt_key: Optional[str] = "question", api_key: Optional[str] = None,
                 device: str = "cpu", batch_size: Optional[int] = None, step_separator: str = "\n\n",
                 refine: Optional[dict] = None, timeout: float = 180.0, missing_reward: Optional[float] = None):
        if missing_reward is not None and (isinstance(missing_reward, bool) or not isinstance(
                missing_reward, numbers.Real) or not math.isfinite(missing_reward)):
            raise ValueError(f"missing_reward must be a finite number or None, got {missing_reward!r}")
        if prompt_key is not None and not isinstance(prompt_key, str):
            raise TypeError(f"prompt_key must be a string (a key of verl's extra_info) or None, got {prompt_key!r}")
        super().__init__(model, api_key=api_key, device=device, batch_size=batch_size, step_separator=step_separator,
                         refine=refine, timeout=timeout)
        self.prompt_key = prompt_key
        self.missing_reward = None if missing_reward is None else float(missing_reward)
        self._warned_missing = False
        self.__name__ = "compute_score"

    def _prompt(self, extra_info: Any, i: int) -> Any:
        if self.prompt_key is None:
            return None
        if not isinstance(extra_info, dict) or self.prompt_key not in extra_info:
            have = sorted(extra_info) if isinstance(extra_info, dict) else type(extra_info).__name__
            raise ValueError(f"sample {i}: verl passes no prompt, and its extra_info has no {self.prompt_key!r} "
                             f"(it has {have}); put the prompt there, set prompt_key, or prompt_key=None to score "
                             "the response alone")
        prompt = extra_info[self.prompt_key]
        if type(prompt).__module__ == "numpy" and getattr(prompt, "ndim", None) == 1 and prompt.dtype == object:
            prompt = prompt.tolist()  # chat messages of a parquet row read with pandas / pyarrow: an object array
        if prompt is None:  # a missing question, not "no prompt": scoring the response alone would be silent
            raise ValueError(f"sample {i}: extra_info[{self.prompt_key!r}] is None; put the prompt there, or "
                             "prompt_key=None to score responses alone")
        return prompt

    def rewards(self, solution_strs: Sequence[Any], extra_infos: Optional[Sequence[Any]] = None) -> list[float]:
        """One float per solution (NaN where the model's reward is not finite)."""
        solution_strs = as_batch(solution_strs, "solution_strs")
        extra_infos = None if extra_infos is None else as_batch(extra_infos, "extra_infos")
        if extra_infos is None:
            extra_infos = [None] * len(solution_strs)
        if len(extra_infos) != len(solution_strs):
            raise ValueError(f"got {len(solution_strs)} solutions but {len(extra_infos)} extra_infos")
        spec = self.text_spec()
        rewards = self.rewards_of([text_input(self._prompt(x, i), s, spec, self.step_separator, f"sample {i}")
                                   for i, (s, x) in enumerate(zip(solution_strs, extra_infos))])
        # verl writes each reward into a float tensor (reward_tensor[i, last] = reward): None, TRL's "no reward",
        # fails there with "can't assign a NoneType"; a non-finite reward is NaN, as the model gave it, or
        # missing_reward
        missing = missing_indices(rewards)
        if missing and self.missing_reward is not None:
            return [self.missing_reward if r is None else r for r in rewards]
        if missing and not self._warned_missing:
            self._warned_missing = True
            import warnings

            warnings.warn(f"{type(self).__name__}: sample {missing[0]} {str(solution_strs[missing[0]])[:80]!r} "
                          f"({len(missing)} of {len(rewards)} in this call) has no finite reward and is returned as "
                          "NaN, which verl's advantages do not skip (its GRPO group, then the loss, becomes NaN); pass "
                          "missing_reward=VALUE (e.g. -1.0) to return that instead. Warned once.", RuntimeWarning,
                          stacklevel=3)
        return [float("nan") if r is None else r for r in rewards]

    def __call__(self, /, data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                 extra_info: Any = None, *, data_sources: Any = None, solution_strs: Optional[Sequence[Any]] = None,
                 ground_truths: Any = None, extra_infos: Optional[Sequence[Any]] = None, **kwargs: Any) -> Any:
        if solution_strs is not None:  # BatchRewardManager
            return self.rewards(solution_strs, extra_infos)
        if (isinstance(solution_str, (list, tuple)) or (type(solution_str).__module__ == "numpy" and not isinstance(
                solution_str, str) and getattr(solution_str, "ndim", 0) == 1)) and not (
                len(solution_str) and all(isinstance(m, dict) for m in solution_str)):  # (messages: one sample)
            # the batched form called positionally: fn(data_sources, solution_strs, ground_truths, extra_infos)
            # (verl calls it by keyword); a list of texts is no one sample's solution_str
            if extra_info is not None and (isinstance(extra_info, (str, dict)) or not hasattr(extra_info, "__len__")):
                raise TypeError(f"solution_str is a {type(solution_str).__name__} (a batch?) but extra_info is a "
                                f"{type(extra_info).__name__}; call the batched form as fn(data_sources=, "
                                "solution_strs=, ground_truths=, extra_infos=)")
            return self.rewards(solution_str, extra_info)
        if solution_str is None:
            raise ValueError("verl calls a reward function with solution_str= (per sample) or solution_strs= (batched)")
        return self.rewards([solution_str], [extra_info])[0]


__all__ = ["OpenRLHFRewardFunction", "RewardClient", "TRLRewardFunction", "VerlRewardFunction"]
