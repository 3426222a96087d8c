"""Settings of a reward server: one dataclass per concern, one ``--flag`` per field (``mmreward serve --help``)."""
from __future__ import annotations

import ipaddress
import math
import numbers
import os
import threading
from dataclasses import dataclass, field, fields
from typing import Optional

from .batcher import check_batching

API_KEY_ENV = "MMREWARD_SERVE_API_KEY"

# annotation -> (accepted types, what the error says); bools are never numbers here
_TYPES = {"int": ((int,), "an integer"), "float": ((numbers.Real,), "a number"),
          "bool": ((bool,), "true or false"), "str": ((str,), "a string")}


def check_types(config: object, loose: tuple = ()) -> None:
    """Each field of a config dataclass has its annotated type (``loose`` fields are checked where they
    are used): set from Python, ``refine_delta="no"`` would switch Delta refinement on, ``port=True``
    bind port 1 and ``host=None`` every interface."""
    for f in fields(config):
        if f.name in loose:
            continue
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        optional = annotation.startswith("Optional[")
        kinds, what = _TYPES.get(annotation[len("Optional["):-1] if optional else annotation, (None, ""))
        value = getattr(config, f.name)
        if kinds is None or (optional and value is None):
            continue
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise TypeError(f"{type(config).__name__}.{f.name} must be {what}{' or None' if optional else ''}, "
                            f"got {value!r}")


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's
MIN_LIMIT_BYTES = 1024  # the smallest --max-request-mb / --max-decoded-mb (1 KiB): below it no useful request fits


def sendable_api_key(key: str) -> bool:
    """Whether ``key`` can travel as ``Authorization: Bearer KEY``: printable ASCII without spaces (a header
    strips surrounding spaces and cannot carry other characters; the server refuses any other key)."""
    return key.isascii() and key.isprintable() and key.split() == [key]


@dataclass
class ServeConfig:
    """How the HTTP server batches, limits and guards requests."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to bind; anything but loopback needs an API key"})
    port: int = field(default=8000, metadata={"help": "TCP port (0: any free port)"})
    device: str = field(default="cpu", metadata={"help": "device the model runs on: cpu, cuda, cuda:N or auto"})
    dtype: Optional[str] = field(default=None, metadata={"help": "cast the model to fp32 / bf16 / fp16 (default: as saved)"})
    max_batch: int = field(default=32, metadata={"help": "most inputs in one forward"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "longest wait for more requests before a forward starts"})
    bucket_batches: int = field(default=4, metadata={
        "help": "under backlog, take up to this many batches at once and group them by input length (less padding)"})
    max_padding: Optional[float] = field(default=0.25, metadata={
        "help": "split a length-sorted batch where padding to its longest input would add more than this fraction "
                "of compute (none: never split)"})
    max_queue: int = field(default=1024, metadata={"help": "most inputs waiting; beyond it requests get 503 + Retry-After"})
    max_items: int = field(default=256, metadata={"help": "most inputs in one request"})
    max_request_mb: float = field(default=32.0, metadata={"help": "largest request body, in MB of 2^20 bytes (MiB)"})
    max_image_pixels: int = field(default=4096 * 4096, metadata={"help": "largest decoded image or video frame (pixels)"})
    max_decoded_mb: float = field(default=512.0, metadata={
        "help": "most decoded image / frame bytes in one request, in MB of 2^20 bytes (MiB)"})
    api_key: Optional[str] = field(default=None, metadata={
        "help": f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}); needed when binding beyond loopback",
        "none_help": f"'none' is the default (${API_KEY_ENV}, else no key)"})
    step_separator: str = field(default="\n\n", metadata={
        "help": "splits a text response into steps for step models (PRMs) on /get_reward and the TRL adapter"})
    openrlhf_split: bool = field(default=False, metadata={
        "help": "/get_reward: score (prompt, response) with the response cut from the query after its prompt, "
                "instead of the whole query as one text (OpenRLHF's serve_rm)"})
    refine_clip: Optional[float] = field(default=None, metadata={
        "help": "/get_reward with a step model: Clip refinement min(r - eta, 0) of the step scores (None: off)"})
    refine_delta: bool = field(default=False, metadata={
        "help": "/get_reward with a step model: Delta refinement r_k - r_(k+1) of the step scores"})
    refine_gamma: float = field(default=1.0, metadata={"help": "discount of the refined returns-to-go"})
    missing_reward: Optional[float] = field(default=None, metadata={
        "help": "/get_reward: the reward sent for an input the model gives no finite reward (a judge without a "
                "verdict, a PRM solution with no scored step); default none: null, which OpenRLHF cannot read "
                "(its torch.tensor(rewards) fails), so set it when serving OpenRLHF, e.g. -1.0"})
    retry_after_s: int = field(default=1, metadata={
        "help": "Retry-After seconds sent with a 503: the queue is full, or the shutdown cut the request off"})
    shutdown_timeout_s: float = field(default=30.0, metadata={
        "help": "on SIGTERM / Ctrl-C, how long in-flight and queued requests may take before the server answers "
                "them 503 and stops (inf: wait for them however long it takes)"})
    log_level: str = field(default="warning", metadata={
        "help": f"log level of the server (uvicorn and mmreward.serve): {' | '.join(LOG_LEVELS)} (info logs every "
                "request; warning logs refused requests and model failures)"})

    def __post_init__(self):
        check_types(self, loose=("device", "dtype"))  # torch.device / torch.dtype: mmreward.load checks them
        if str(self.device).strip().lower().split(":")[0] == "meta":  # a str or a torch.device
            # mmreward.load opens a model on the meta device (shapes, no numbers) to describe it; a server would
            # start and then answer every request with an error (`mmreward serve --device meta` is refused too)
            raise ValueError(f"ServeConfig.device {self.device!r}: the meta device holds tensor shapes but no "
                             "numbers, so nothing can be served on it; use cpu, cuda, cuda:N or auto")
        for name in ("max_batch", "bucket_batches", "max_queue", "max_items", "max_image_pixels", "retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.max_padding is not None and not self.max_padding >= 0:
            raise ValueError(f"max_padding must be >= 0 or None, got {self.max_padding!r}")
        check_batching(self.max_batch, self.max_wait_ms)
        if not self.shutdown_timeout_s >= 0:
            raise ValueError(f"shutdown_timeout_s must be >= 0, got {self.shutdown_timeout_s!r}")
        if math.isfinite(self.shutdown_timeout_s) and self.shutdown_timeout_s > threading.TIMEOUT_MAX:
            # waiting for the model worker that long overflows the platform's clock (OverflowError at shutdown)
            raise ValueError(f"shutdown_timeout_s must be at most {threading.TIMEOUT_MAX:.0f} s, got "
                             f"{self.shutdown_timeout_s!r}; inf waits for every request however long it takes")
        for name in ("max_request_mb", "max_decoded_mb"):  # 0 would refuse every request; inf breaks int() per request
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
            if value * 2**20 < MIN_LIMIT_BYTES:  # 1e-9 MB is 0 bytes: every request would get a 413
                raise ValueError(f"{name} must be at least {MIN_LIMIT_BYTES / 2**20:g} MB ({MIN_LIMIT_BYTES} bytes): "
                                 f"{value!r} MB is {int(value * 2**20)} bytes, too small for any request")
        if self.refine_clip is not None and not math.isfinite(self.refine_clip):
            raise ValueError(f"refine_clip must be a finite number or None, got {self.refine_clip!r}")
        if self.missing_reward is not None and not math.isfinite(self.missing_reward):
            raise ValueError(f"missing_reward must be a finite number or None, got {self.missing_reward!r}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.max_queue < self.max_items:
            raise ValueError(f"max_queue ({self.max_queue}) must hold at least one full request (max_items "
                             f"{self.max_items})")
        if self.host.startswith("[") and self.host.endswith("]"):
            # a URL's spelling of an IPv6 address: it resolves to nothing, and check_bind read it as a public host
            raise ValueError(f"host {self.host!r}: give the IPv6 address without brackets (--host "
                             f"{self.host[1:-1]}); brackets belong in URLs only")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if not 0.0 <= self.refine_gamma <= 1.0:
            raise ValueError(f"refine_gamma must be in [0, 1], got {self.refine_gamma}")
        if self.refine_gamma != 1.0 and self.refine is None:  # it discounts refined returns only: ignored alone
            raise ValueError(f"refine_gamma ({self.refine_gamma:g}) discounts the refined step rewards: give "
                             "refine_clip or refine_delta too (--refine-clip / --refine-delta), or leave it out")
        if not self.step_separator:
            raise ValueError("step_separator must not be empty")
        if self.api_key == "":
            # an empty key (e.g. --api-key "$UNSET") would silently serve without authentication
            raise ValueError(f"api_key is empty: give a key, or leave --api-key out to use ${API_KEY_ENV}")
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
            where = f"${API_KEY_ENV}"
        else:
            where = "api_key"
        if self.api_key is not None and not sendable_api_key(self.api_key):
            # a client sends the key in an HTTP header: surrounding spaces are stripped there and other
            # characters cannot be sent, so such a key would lock every client out
            raise ValueError(f"{where} must be printable ASCII without spaces (it travels as 'Authorization: "
                             "Bearer KEY')")

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 2**20)

    @property
    def max_decoded_bytes(self) -> int:
        return int(self.max_decoded_mb * 2**20)

    @property
    def refine(self) -> Optional[dict]:
        """The server-side step refinement for /get_reward, or None when off."""
        if self.refine_clip is None and not self.refine_delta:
            return None
        return {"clip": self.refine_clip, "delta": self.refine_delta, "gamma": self.refine_gamma}

    def check_bind(self) -> None:
        """Refuse to listen beyond loopback without an API key."""
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(f"binding {self.host} exposes the model beyond this machine: set --api-key (or "
                             f"${API_KEY_ENV}); clients then send 'Authorization: Bearer KEY'")


@dataclass
class RayServeConfig:
    """Ray Serve scale-out: model replicas with Ray's own batching (``--max-batch`` / ``--max-wait-ms``)
    and autoscaling."""

    replicas: int = field(default=1, metadata={"help": "model replicas (fixed count; see --max-replicas to autoscale)"})
    min_replicas: Optional[int] = field(default=None, metadata={"help": "autoscaling floor (default: --replicas)"})
    max_replicas: Optional[int] = field(default=None, metadata={"help": "autoscale up to this many replicas (None: fixed)"})
    target_ongoing_requests: float = field(default=4.0, metadata={
        "help": "autoscaling target of in-flight batch calls per replica"})
    max_ongoing_requests: int = field(default=64, metadata={"help": "in-flight batch calls one replica accepts"})
    max_queued_requests: int = field(default=-1, metadata={
        "help": "calls queued per caller before Ray refuses them (503); -1: unbounded"})
    max_concurrent_batches: int = field(default=1, metadata={"help": "forwards one replica runs at once"})
    replica_cpus: float = field(default=1.0, metadata={"help": "CPUs Ray reserves per model replica"})
    replica_gpus: float = field(default=0.0, metadata={"help": "GPUs Ray reserves per model replica"})
    ingress_replicas: int = field(default=1, metadata={"help": "HTTP front replicas (request parsing, image decoding)"})
    ray_address: Optional[str] = field(default=None, metadata={
        "help": "Ray cluster to join ('auto' or ray://...); default: start a local Ray"})

    def __post_init__(self):
        check_types(self)
        for name in ("replicas", "max_ongoing_requests", "max_concurrent_batches", "ingress_replicas"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.min_replicas is not None and self.max_replicas is None:  # it would be ignored
            raise ValueError("min_replicas is the autoscaling floor: give max_replicas too (--max-replicas)")
        lo = self.min_replicas if self.min_replicas is not None else self.replicas
        if self.max_replicas is not None and not 0 <= lo <= self.max_replicas:
            raise ValueError(f"need 0 <= min_replicas ({lo}) <= max_replicas ({self.max_replicas})")
        if not (0 <= self.replica_cpus < math.inf and 0 <= self.replica_gpus < math.inf):  # Ray fails on inf at deploy
            raise ValueError(f"replica_cpus / replica_gpus must be finite numbers >= 0, got {self.replica_cpus} / "
                             f"{self.replica_gpus}")
        if not (math.isfinite(self.target_ongoing_requests) and self.target_ongoing_requests > 0):
            raise ValueError(f"target_ongoing_requests must be a finite number > 0, got {self.target_ongoing_requests!r}")
        if self.max_queued_requests != -1 and self.max_queued_requests < 1:
            raise ValueError(f"max_queued_requests must be -1 (unbounded) or >= 1, got {self.max_queued_requests}")

    def autoscaling(self) -> Optional[dict]:
        """Ray Serve's ``autoscaling_config``, or None for a fixed replica count."""
        if self.max_replicas is None:
            return None
        lo = self.min_replicas if self.min_replicas is not None else self.replicas
        return {"min_replicas": lo, "max_replicas": self.max_replicas,
                "initial_replicas": max(lo, min(self.replicas, self.max_replicas)),
                "target_ongoing_requests": self.target_ongoing_requests}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["API_KEY_ENV", "RayServeConfig", "ServeConfig", "check_types", "is_loopback"]
