"""Evaluation videos with the per-step reward drawn on them, and learning-curve plots."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from mmreward.core.folders import atomic_write


def annotate_frames(frames: np.ndarray, rewards: Sequence[float], success: Optional[Sequence[bool]] = None,
                    scale: int = 2, label: str = "reward") -> np.ndarray:
    """uint8 ``[T+1, H, W, 3]`` frames → ``[T+1, H·scale + 40, W·scale, 3]``: each frame enlarged, with
    the step, the reward of the transition into it (``rewards`` has T values) and a running plot of
    the rewards so far in a strip below."""
    import cv2

    frames = np.asarray(frames)
    r = np.asarray(rewards, dtype=np.float64)
    if len(r) != len(frames) - 1:
        raise ValueError(f"need one reward per transition ({len(frames) - 1}), got {len(r)}")
    h, w = frames.shape[1] * scale, frames.shape[2] * scale
    strip = 40
    lo, hi = (float(r.min()), float(r.max())) if len(r) else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    xs = np.linspace(0, w - 1, max(len(r), 1))
    ys = strip - 4 - (r - lo) / (hi - lo) * (strip - 8)
    out = np.zeros((len(frames), h + strip, w, 3), np.uint8)
    for t, f in enumerate(frames):
        canvas = out[t]
        canvas[:h] = cv2.resize(f, (w, h), interpolation=cv2.INTER_NEAREST)
        if t > 1:
            pts = np.stack([xs[:t], h + ys[:t]], 1).astype(np.int32)
            cv2.polylines(canvas, [pts], False, (80, 200, 255), 1)
        text = f"t={t}" + (f" {label}={r[t - 1]:+.2f}" if t > 0 else "")
        cv2.putText(canvas, text, (2, h + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.32, (255, 255, 255), 1, cv2.LINE_AA)
        if success is not None and t > 0 and success[t - 1]:
            cv2.putText(canvas, "success", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1, cv2.LINE_AA)
    return out


def write_eval_video(path: str, frames: np.ndarray, rewards: Sequence[float],
                     success: Optional[Sequence[bool]] = None, fps: float = 20.0, label: str = "reward") -> str:
    """The annotated episode as a video at ``path``, written whole or not at all (a killed writer's
    leftovers are hidden ``.tmp`` folders that the next run removes)."""
    from mmreward.core.checkpoint import staged_file

    from ..data.video import write_video

    with staged_file(path) as tmp:
        write_video(tmp, annotate_frames(frames, rewards, success, label=label), fps=fps)
    return path


def plot_learning_curves(path: str, runs: dict[str, dict[str, Sequence[float]]], *, title: str = "") -> str:
    """Two panels (success rate, return) against environment frames, one line per run. ``runs`` maps
    a run name to ``{"frames": [...], "success_rate": [...], "episode_return": [...]}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for name, run in runs.items():
        for ax, key in zip(axes, ("success_rate", "episode_return")):
            ax.plot(run["frames"], run[key], label=name, marker="o", markersize=3)
    return save_learning_figure(fig, axes, path, title=title, legend=len(runs) > 1)


def save_learning_figure(fig, axes, path: str, *, title: str = "", legend: bool = True, legend_size=None) -> str:
    """Label a (success rate, return) pair of axes against frames and write the figure atomically."""
    import matplotlib.pyplot as plt

    for ax, lab in zip(axes, ("eval success rate", "eval return (env reward)")):
        ax.set_xlabel("environment frames")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.05, 1.05)
    if legend:
        axes[0].legend(fontsize=legend_size)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path
