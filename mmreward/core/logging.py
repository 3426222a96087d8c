"""Metric logging for every trainer: CSV (always), TensorBoard (when installed), a compact console line
(at the steps that are multiples of ``console_every``, counted from the run's start, a resumed run too).

    log = MetricLogger("runs/exp1", tensorboard=True)
    log.log(step=10, train_loss=0.52, lr=1e-4)      # one row; new keys extend the CSV header
    log.close()

The CSV is re-written (atomically) with the full header when a new metric appears, so it always
parses with one header row. A resumed run (``MetricLogger(..., resume_step=k)``) keeps the rows up to
step k, drops later ones (and a last line a killed process left half-written), and continues the
same file, so it ends up equal to the file of an uninterrupted run; TensorBoard events after step k
are purged the same way. ``resume_step=-1`` keeps no row (a run starting again from its beginning);
``None`` starts a new file.
"""
from __future__ import annotations

import csv
import io
import math
import os
import time
import warnings
from typing import Any, Optional

from .folders import atomic_write, atomic_write_text


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def _read_rows(path: str, resume_step: int) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a metrics CSV up to ``resume_step``, in order; reading stops at the first
    row after it, or at a row a killed writer left incomplete."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:  # the codec's own message names no file; the file is kept as it is
        from .folders import CheckpointError  # lazy: folders imports more than a logger needs

        raise CheckpointError(f"{path} is damaged (byte {e.object[e.start:e.start + 1]!r} at offset {e.start} is not "
                              "UTF-8): repair or move the file away to resume the run") from None
    if not text.endswith("\n"):  # the last line was cut off mid-write
        text = text[:text.rfind("\n") + 1]
    lines = list(csv.reader(io.StringIO(text)))
    if not lines:
        return ["step"], []
    columns, rows = lines[0], []
    for values in lines[1:]:
        if len(values) != len(columns):
            break
        try:
            step = int(float(values[0]))
        except ValueError:
            break
        if step > resume_step:
            break
        rows.append(dict(zip(columns, values)))
    return columns, rows


def _prune_tensorboard(tb_dir: str, resume_step: int) -> None:
    """Remove the events after ``resume_step`` from the TensorBoard event files in ``tb_dir``: each file that
    holds any is rewritten atomically under its own name (the files keep their order; one of nothing else
    keeps its header). The writer's ``purge_step`` alone leaves them on disk: TensorBoard's Python reader
    drops them only when it reads the purging file after the stale one (not so when a killed run's file
    sorts after the resumed run's: the same second, a larger pid), and other readers (tbparse, exports,
    the Rust data server) keep them, showing two curves over the same steps. A file that cannot be read
    is left as it is, with a warning."""
    try:
        from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter
    except Exception:  # tensorboard not installed: nothing of it to prune
        return
    try:
        names = sorted(os.listdir(tb_dir))
    except OSError:
        return
    for name in names:
        path = os.path.join(tb_dir, name)
        if name.startswith(".") or "tfevents" not in name or not os.path.isfile(path):
            continue
        try:
            records = list(RawEventFileLoader(path).Load())  # stops at a record a killed writer left cut off
            events = [Event.FromString(r) for r in records]
        except Exception as e:
            warnings.warn(f"{path}: could not be read to drop the events after step {resume_step} ({e}); "
                          "TensorBoard may show them beside the resumed run's", stacklevel=3)
            continue
        if not records:
            if os.path.getsize(path):
                warnings.warn(f"{path}: could not be read to drop the events after step {resume_step} (no event "
                              "record in it); TensorBoard may show them beside the resumed run's", stacklevel=3)
            continue
        # the header stays: a file of nothing but stale events is cut back to it, like metrics.csv, not deleted
        keep = [r for r, e in zip(records, events) if e.step <= resume_step or e.file_version]
        if len(keep) == len(records) and os.path.getsize(path) == sum(len(r) + 16 for r in records):
            continue  # nothing stale, nothing cut off

        def write(tmp: str, keep: list = keep) -> None:
            with open(tmp, "wb") as f:
                w = RecordWriter(f)
                for r in keep:
                    w.write(r)

        atomic_write(path, write)


class MetricLogger:
    def __init__(self, folder: str, *, filename: str = "metrics.csv", tensorboard: bool = True,
                 resume_step: Optional[int] = None, console_every: int = 1, quiet: bool = False):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, filename)
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = ["step"]
        if resume_step is not None and os.path.exists(self.path):
            self.columns, self.rows = _read_rows(self.path, resume_step)
            self._rewrite()
        elif os.path.exists(self.path):
            os.unlink(self.path)
        self.console_every = max(1, console_every)
        self.quiet = quiet
        # the console line is printed when a row's step reaches the next multiple of console_every: the
        # global step, so a run resumed at step k prints at the same steps as an uninterrupted run
        # (counting rows since this logger started printed at k + console_every instead)
        self._last_step = max(resume_step or 0, 0)
        self._t0 = time.time()
        self._tb = None
        if resume_step is not None and os.path.isdir(os.path.join(folder, "tb")):
            # also when this run logs no TensorBoard events: the folder's stale ones would still show
            _prune_tensorboard(os.path.join(folder, "tb"), resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # tensorboard not installed: CSV only
                self._tb = None
            else:
                # the events after the step the run resumes from are removed from the files; purge_step (which
                # drops events at steps >= it) also tells TensorBoard that the run restarted there
                purge = None if resume_step is None else resume_step + 1
                self._tb = SummaryWriter(log_dir=os.path.join(folder, "tb"), purge_step=purge)

    def _line(self, row: dict[str, Any]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([row.get(c, "") for c in self.columns])
        return buf.getvalue()

    def _rewrite(self) -> None:
        header = self._line({c: c for c in self.columns})
        atomic_write_text(self.path, header + "".join(self._line(r) for r in self.rows))

    def log(self, step: int, **metrics: Any) -> None:
        row = {"step": int(step)}
        for k, v in metrics.items():
            if hasattr(v, "item"):
                v = v.item()
            row[k] = v
        new_cols = [k for k in row if k not in self.columns]
        self.rows.append(row)
        if new_cols:
            self.columns.extend(new_cols)
            self._rewrite()
        else:
            with open(self.path, "a", encoding="utf-8", newline="") as f:
                f.write(self._line(row))
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, int(step))
        last, self._last_step = self._last_step, int(step)
        every = self.console_every
        if not self.quiet and (int(step) % every == 0 or int(step) // every > last // every):
            elapsed = time.time() - self._t0
            body = " ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "step")
            print(f"[{elapsed:7.1f}s] step {step}: {body}", flush=True)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one metric, skipping rows without it."""
        xs, ys = [], []
        for r in self.rows:
            v = r.get(key, "")
            if v != "" and v is not None:
                xs.append(int(float(r["step"])))
                ys.append(float(v))
        return xs, ys

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def plot_curves(path: str, curves: dict[str, tuple[list, list]], *, title: str = "", xlabel: str = "step",
                ylabel: str = "") -> str:
    """Save a PNG with one line per named curve (matplotlib imported lazily, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, (xs, ys) in curves.items():
        ax.plot(xs, ys, label=name, marker="o" if len(xs) < 30 else None, markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path
