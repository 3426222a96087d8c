"""Server metrics in the Prometheus text exposition format (``GET /metrics``).

A few thread-safe counters and histograms: the event loop counts requests, the model worker
thread records batch sizes and forward times, and a scrape renders everything at once.
"""
from __future__ import annotations

import bisect
import math
import threading
from typing import Callable, Optional, Sequence

LabelKey = tuple[tuple[str, str], ...]


def _labels(key: LabelKey, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in key]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Counter:
    def __init__(self, name: str, help_text: str):
        self.name, self.help, self.kind = name, help_text, "counter"
        self._values: dict[LabelKey, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(k)} {_number(v)}" for k, v in items] or [f"{self.name} 0"]


class Gauge:
    """A value read at scrape time from ``read()``."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]):
        self.name, self.help, self.kind, self.read = name, help_text, "gauge", read

    def render(self) -> list[str]:
        return [f"{self.name} {_number(self.read())}"]


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]):
        self.name, self.help, self.kind = name, help_text, "histogram"
        self.bounds = sorted(buckets)
        self._series: dict[LabelKey, list] = {}  # key -> [counts per bucket (+Inf last), sum, count]
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._series.setdefault(key, [[0] * (len(self.bounds) + 1), 0.0, 0])
            series[0][bisect.bisect_left(self.bounds, value)] += 1
            series[1] += value
            series[2] += 1

    def count(self, **labels: str) -> int:
        series = self._series.get(tuple(sorted(labels.items())))
        return series[2] if series else 0

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, ([*v[0]], v[1], v[2])) for k, v in self._series.items())
        lines = []
        for key, (counts, total, n) in items:
            running = 0
            for bound, c in zip([*self.bounds, math.inf], counts):
                running += c
                le = 'le="' + _number(bound) + '"'
                lines.append(f"{self.name}_bucket{_labels(key, le)} {running}")
            lines.append(f"{self.name}_sum{_labels(key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(key)} {n}")
        return lines


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """Everything ``/metrics`` shows; ``queue_depth`` is read from the backend at scrape time."""

    def __init__(self, queue_depth: Optional[Callable[[], float]] = None):
        p = "mmreward_serve_"
        self.requests = Counter(p + "requests_total", "HTTP requests by endpoint and status code")
        self.errors = Counter(p + "errors_total", "failed requests by endpoint and kind (bad_request, auth, "
                                                   "too_large, queue_full, shutdown, input_rejected, "
                                                   "model_error, client_gone, internal; no_route / wrong_method under "
                                                   "endpoint (routing))")
        self.items = Counter(p + "items_total", "inputs scored")
        self.cancelled = Counter(p + "cancelled_total", "requests whose client disconnected before the answer")
        self.latency = Histogram(p + "request_seconds", "request latency by endpoint (seconds)", LATENCY_BUCKETS)
        self.batch_size = Histogram(p + "batch_size", "inputs per model forward", SIZE_BUCKETS)
        self.forward = Histogram(p + "forward_seconds", "time of one model forward (seconds)", LATENCY_BUCKETS)
        self.queue_wait = Histogram(p + "queue_wait_seconds", "time a request waits before its forward starts",
                                    LATENCY_BUCKETS)
        self.missing_rewards = Counter(p + "missing_rewards_total", "rewards that were not finite on /get_reward, by "
                                       "whether --missing-reward filled them (filled=true) or they went out as null "
                                       "(filled=false)")
        self._metrics: list = [self.requests, self.errors, self.items, self.cancelled, self.latency,
                               self.batch_size, self.forward, self.queue_wait, self.missing_rewards]
        if queue_depth is not None:
            self._metrics.append(Gauge(p + "queue_depth", "inputs waiting for a forward", queue_depth))

    def render(self) -> str:
        out = []
        for m in self._metrics:
            out += [f"# HELP {m.name} {m.help}", f"# TYPE {m.name} {m.kind}", *m.render()]
        return "\n".join(out) + "\n"


__all__ = ["Counter", "Gauge", "Histogram", "ServeMetrics"]
