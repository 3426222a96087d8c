"""Dynamic batching: inputs of concurrent requests scored together, results scattered back.

    batcher = DynamicBatcher(model, max_batch=32, max_wait_ms=5, max_queue=1024)
    scores = await batcher.score(items, "scores")        # from any number of coroutines at once
    parts = await batcher.score(steps, "parts")          # per-step / per-frame scores

One worker thread owns the model. It waits for the first request, then up to ``max_wait_ms`` for
more (or until ``max_batch`` inputs are waiting), takes up to ``bucket_batches`` batches' worth of
queued inputs, orders them by length and runs forwards of at most ``max_batch`` inputs, cut
where padding to the longest input would cost more than ``max_padding`` × the real length (a CPU
forward costs what its padded tokens cost). A request is answered as soon as the forward holding
its last input ends.

A forward that raises is retried request by request, so an input the model rejects fails its own
request only; a request that fails is retried input by input, so its error names the input at fault
by its index in the request (and a request whose inputs all pass alone is answered). The queue is
bounded in inputs: past ``max_queue`` :class:`QueueFull` is raised at once (the server answers 503 +
Retry-After). Requests whose caller gave up (cancelled futures) are dropped before their forward.

:func:`score_jobs` is the batch step itself (length grouping, forwards, error isolation); the Ray
Serve deployment runs it on the batches Ray gathers.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import re
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from mmreward.core.data import DataError
from mmreward.core.inputs import Comparison, Episode, StepSolution, TextPair, VideoPrompt, VisualSteps

from .metrics import ServeMetrics

logger = logging.getLogger("mmreward.serve")


# an hour: longer is no batching window, and an infinite or NaN wait kills the worker thread inside
# Condition.wait (OverflowError), after which every request hangs
MAX_WAIT_MS = 3.6e6


def check_batching(max_batch: Any, max_wait_ms: Any) -> None:
    """Refuse settings that would hang or break the worker thread."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
    if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or not 0 <= max_wait_ms <= MAX_WAIT_MS:
        raise ValueError(f"max_wait_ms must be a number in [0, {MAX_WAIT_MS:g}], got {max_wait_ms!r}")


class QueueFull(RuntimeError):
    """The batcher holds ``max_queue`` inputs already; retry after ``retry_after`` seconds."""


class InputRejected(ValueError):
    """The model refused an input of this request (the message is the model's)."""

    model_traceback: Optional[str] = None  # where in the model it was raised, unless a ValueError (see _as_failure)


class ModelFailure(RuntimeError):
    """The model failed on this request for a reason not attributed to its inputs."""

    model_traceback: Optional[str] = None  # the model's exception with its traceback, for the server's log


class WorkerDown(RuntimeError):
    """The batcher's model worker thread is not running (it crashed outside a forward): nothing can be
    scored until the server restarts. The server answers 503 without Retry-After, and ``/healthz``
    answers 503 with the reason (:meth:`DynamicBatcher.health`)."""


# errors a model raises for bad inputs; anything else is a model failure
_INPUT_ERRORS = (DataError, ValueError, TypeError, KeyError, IndexError)


@dataclass
class Job:
    """Inputs of one request (or one slice of a large one) scored the same way."""

    items: list
    mode: str  # "scores": one float per input; "parts": one list per input (steps / frames)
    future: Any = None  # asyncio.Future settled with the results (or an exception)
    loop: Any = None
    enqueued: float = field(default_factory=time.perf_counter)
    offset: int = 0  # index of its first input in the request (errors name the request's input)

    def cancelled(self) -> bool:
        return self.future is not None and self.future.done()


def item_length(item: Any) -> int:
    """A cheap size of one input for length grouping: characters of text, number of frames."""
    def chars(x: Any) -> int:
        if isinstance(x, str):
            return len(x)
        if isinstance(x, (list, tuple)):
            return sum(chars(m.get("content", "") if isinstance(m, dict) else m) for m in x)
        return 0

    if isinstance(item, TextPair):
        return chars(item.prompt) + chars(item.response)
    if isinstance(item, Comparison):
        return chars(item.prompt) + chars(item.first) + chars(item.second)
    if isinstance(item, (StepSolution, VisualSteps)):
        return chars(getattr(item, "problem", getattr(item, "question", ""))) + chars(item.steps)
    if isinstance(item, (Episode, VideoPrompt)):
        frames = item.frames if isinstance(item, Episode) else item.video
        return len(frames) if hasattr(frames, "__len__") and not isinstance(frames, str) else 0
    return 0


def _forward(model: Any, items: list, mode: str) -> list:
    """One forward: floats, or one list of floats per input."""
    import torch

    # the whole forward in one batch, where batch_size counts inputs; an episode model's counts frames / windows
    # of one episode (Diffusion Reward draws its chain noise per batch of windows: its saved size keeps the
    # rewards as fitted, and served scores equal mmreward.load's)
    kw = {"batch_size": len(items)} if getattr(model, "batch_size_counts_inputs", True) else {}
    with torch.inference_mode():
        if mode == "parts":
            return [[float(v) for v in t.reshape(-1).tolist()] for t in model.score_parts(items, **kw)]
        return [float(v) for v in model.score(items, **kw).tolist()]


def _as_failure(e: BaseException, index: int) -> Exception:
    """The error of an input scored alone, naming it by its index in the request. A model's own
    "input 0" (its position in that one-input forward) becomes "input {index}"."""
    message = str(e) or type(e).__name__
    if re.match(r"input 0\b", message):
        message = f"input {index}" + message[len("input 0"):]
    else:
        message = f"input {index}: " + (message if isinstance(e, _INPUT_ERRORS) else f"{type(e).__name__}: {message}")
    failure = InputRejected(message) if isinstance(e, _INPUT_ERRORS) else ModelFailure(message)
    if not isinstance(e, ValueError):  # a ValueError / DataError is the model refusing the input: its message says it
        # all; anything else (a KeyError as much as a RuntimeError) is as likely a bug in the model, and the server's
        # log is the only place its user can see where it was raised
        failure.model_traceback = _traceback_text(e)
    return failure


def _traceback_text(e: BaseException) -> str:
    """``e`` with its traceback, as text: the exception itself is not kept, since its frames hold the forward's
    tensors (GPU memory) until the garbage collector reaches them."""
    return "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()


def _chunks(jobs: list[Job], max_batch: int, max_padding: Optional[float]) -> list[list[tuple[int, int]]]:
    """The forwards for ``jobs``' inputs: ``(job, input)`` slots ordered by mode (one forward runs one
    method) and length, cut at ``max_batch`` inputs and where padding every input of a forward to its
    longest would cost more than ``max_padding`` × the real length."""
    lengths = {(j, k): item_length(item) for j, job in enumerate(jobs) for k, item in enumerate(job.items)}
    slots = sorted(lengths, key=lambda s: (jobs[s[0]].mode, lengths[s]))
    chunks, current, total = [], [], 0
    for s in slots:
        longest = lengths[s]  # ascending order: the newcomer is the longest
        padded = (len(current) + 1) * longest
        if current and (len(current) == max_batch or jobs[current[0][0]].mode != jobs[s[0]].mode or (
                max_padding is not None and padded > (1.0 + max_padding) * (total + longest))):
            chunks.append(current)
            current, total = [], 0
        current.append(s)
        total += lengths[s]
    if current:
        chunks.append(current)
    return chunks


def score_jobs(model: Any, jobs: list[Job], max_batch: int, max_padding: Optional[float] = None,
               on_done: Optional[Callable[[int, Any], None]] = None,
               on_forward: Optional[Callable[[int, float], None]] = None) -> list:
    """Score every job's inputs in forwards of at most ``max_batch`` inputs grouped by mode and
    length (see :func:`_chunks`). Returns one outcome per job — its results, or an
    :class:`InputRejected` / :class:`ModelFailure` — and calls ``on_done(job_index, outcome)`` as
    soon as a job is complete. ``on_forward(batch_size, seconds)`` sees every forward."""
    results = [[None] * len(job.items) for job in jobs]
    missing = [len(job.items) for job in jobs]
    outcomes: list = [None] * len(jobs)

    def settle(j: int, outcome: Any) -> None:
        outcomes[j] = outcome
        if on_done is not None:
            on_done(j, outcome)

    def run(slots: list[tuple[int, int]]) -> list:
        t0 = time.perf_counter()
        values = _forward(model, [jobs[j].items[k] for j, k in slots], jobs[slots[0][0]].mode)
        if len(values) != len(slots):
            raise RuntimeError(f"the model returned {len(values)} results for {len(slots)} inputs")
        if on_forward is not None:
            on_forward(len(slots), time.perf_counter() - t0)
        return values

    def fill(slots: list[tuple[int, int]], values: list) -> None:
        for (j, k), v in zip(slots, values):
            results[j][k] = v
            missing[j] -= 1
            if missing[j] == 0 and outcomes[j] is None:
                settle(j, results[j])

    for chunk in _chunks(jobs, max_batch, max_padding):
        live = [s for s in chunk if outcomes[s[0]] is None and not jobs[s[0]].cancelled()]  # gone: skip the rest
        if not live:
            continue
        try:
            fill(live, run(live))
            continue
        except Exception:  # noqa: BLE001 - isolate the request at fault: retry each one alone
            pass
        for j in dict.fromkeys(j for j, _ in live):
            own = sorted(s for s in live if s[0] == j)  # in request order
            try:
                fill(own, run(own))
            except Exception as e:  # noqa: BLE001 - find the input at fault: score them one by one
                if len(own) == 1:  # that one alone already
                    settle(j, _as_failure(e, jobs[j].offset + own[0][1]))
                    continue
                for s in own:
                    try:
                        fill([s], run([s]))
                    except Exception as e:  # noqa: BLE001 - the error becomes this request's answer
                        settle(j, _as_failure(e, jobs[j].offset + s[1]))
                        break
                # every input scored alone (the failure was the batch's, e.g. out of memory): answered by fill
    return outcomes


class DynamicBatcher:
    """Batches concurrent ``score`` calls onto one model worker thread (see the module docstring)."""

    def __init__(self, model: Any, *, max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 1024,
                 bucket_batches: int = 4, max_padding: Optional[float] = 0.25, metrics: Optional[ServeMetrics] = None):
        check_batching(max_batch, max_wait_ms)
        self.model = model
        self.max_batch, self.max_wait, self.max_padding = max_batch, max_wait_ms / 1000.0, max_padding
        self.max_queue, self.window = max_queue, max_batch * bucket_batches
        self.metrics = metrics
        self._queue: collections.deque[Job] = collections.deque()
        self._queued_items = 0
        self._cond = threading.Condition()
        self._closing = False
        self._crash: Optional[str] = None  # why the worker thread died, if it did
        self._taken: list[Job] = []  # the jobs the worker is scoring
        self._worker = threading.Thread(target=self._run, name="mmreward-serve-model", daemon=True)
        self._worker.start()

    @property
    def queue_depth(self) -> int:
        return self._queued_items

    def health(self) -> Optional[str]:
        """None while the worker can score; otherwise why not (its crash, or shutting down)."""
        if self._crash is not None:
            return f"the model worker thread crashed ({self._crash}): restart the server"
        if not self._worker.is_alive():
            return "the model worker thread is not running" + (" (the server is shutting down)" if self._closing else "")
        if self._closing:
            return "the server is shutting down"
        return None

    async def score(self, items: list, mode: str = "scores") -> list:
        """Results for ``items`` in order (floats, or lists for ``mode="parts"``), batched with
        whatever else is waiting. Raises QueueFull, InputRejected or ModelFailure."""
        loop = asyncio.get_running_loop()
        jobs = [Job(items[i:i + self.max_batch], mode, loop.create_future(), loop, offset=i)
                for i in range(0, len(items), self.max_batch)]
        with self._cond:
            if self._closing:
                raise QueueFull("the server is shutting down")
            if self._crash is not None or not self._worker.is_alive():  # queued, it would wait forever
                raise WorkerDown(self.health() or "the model worker thread is not running")
            if self._queued_items + len(items) > self.max_queue:
                raise QueueFull(f"{self._queued_items} inputs are queued (limit {self.max_queue})")
            self._queue.extend(jobs)
            self._queued_items += len(items)
            self._cond.notify()
        try:
            parts = await asyncio.gather(*(job.future for job in jobs))
        except BaseException:
            self._drop(jobs)  # the caller gave up (disconnect) or another slice failed: skip the rest
            raise
        return [r for part in parts for r in part]

    def _drop(self, jobs: list[Job]) -> None:
        """Cancel ``jobs`` and take those still queued out of the queue at once: a gone client's inputs
        neither count in ``queue_depth`` nor hold ``max_queue`` room until the worker reaches them."""
        with self._cond:
            for job in jobs:
                job.future.cancel()
                for i, queued in enumerate(self._queue):  # by identity: Job's == would compare the inputs
                    if queued is job:
                        del self._queue[i]
                        self._queued_items -= len(job.items)
                        break

    def running(self) -> bool:
        """Whether the worker thread is still alive (after :meth:`close`: a forward it has not finished)."""
        return self._worker.is_alive()

    def close(self, timeout: Optional[float] = None) -> None:
        """Stop taking requests, finish the queued ones, stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._worker.join(timeout)

    # -------------------------------------------------------------- worker thread
    def _take(self) -> Optional[list[Job]]:
        """Block until a batch is due; pop up to ``window`` inputs' worth of live jobs (None: closed)."""
        with self._cond:
            while True:
                while self._queue and self._queue[0].cancelled():
                    self._queued_items -= len(self._queue.popleft().items)
                if self._queue:
                    due = self._queue[0].enqueued + self.max_wait
                    now = time.perf_counter()
                    if self._queued_items >= self.max_batch or now >= due or self._closing:
                        break
                    self._cond.wait(due - now)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()
            jobs, n = [], 0
            while self._queue and (not jobs or n + len(self._queue[0].items) <= self.window):
                job = self._queue.popleft()
                self._queued_items -= len(job.items)
                if not job.cancelled():
                    jobs.append(job)
                    n += len(job.items)
            return jobs

    def _run(self) -> None:
        try:
            self._serve_queue()
        except BaseException as e:  # noqa: BLE001 - a dead worker: fail what waits, and let health() say so
            with self._cond:
                self._crash = f"{type(e).__name__}: {e}"
                jobs, self._queued_items = self._taken + list(self._queue), 0  # taken: popped, maybe not settled
                self._queue.clear()
            logger.error("mmreward serve: the model worker thread crashed", exc_info=e)
            for job in jobs:
                _settle(job, WorkerDown(f"the model worker thread crashed ({self._crash}): restart the server"))

    def _serve_queue(self) -> None:
        while True:
            self._taken = []
            jobs = self._take()
            if jobs is None:
                return
            self._taken = jobs
            if not jobs:
                continue
            started = time.perf_counter()
            if self.metrics is not None:
                for job in jobs:
                    self.metrics.queue_wait.observe(started - job.enqueued)
            try:
                score_jobs(self.model, jobs, self.max_batch, self.max_padding,
                           on_done=lambda j, out: _settle(jobs[j], out), on_forward=self._record_forward)
            except BaseException as e:  # noqa: BLE001 - never leave a caller waiting
                text = _traceback_text(e)  # logged by the server
                for job in jobs:
                    failure = ModelFailure(f"{type(e).__name__}: {e}")
                    failure.model_traceback = text
                    _settle(job, failure)

    def _record_forward(self, size: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.batch_size.observe(size)
            self.metrics.forward.observe(seconds)


def _settle(job: Job, outcome: Any) -> None:
    def apply() -> None:
        if job.future.done():  # cancelled meanwhile
            return
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)

    try:
        job.loop.call_soon_threadsafe(apply)
    except RuntimeError:  # the event loop is closed: nobody is waiting any more
        pass


__all__ = ["DynamicBatcher", "InputRejected", "Job", "ModelFailure", "QueueFull", "WorkerDown", "item_length",
           "score_jobs"]
