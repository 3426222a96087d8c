"""Tiny reward models on the mmreward contract, one per kind of input the server carries.

Each is deterministic and input-sensitive (distinct inputs get distinct scores), so a test can tell
a swapped or lost answer from a right one. ``delay_s`` slows each forward (backpressure and
disconnect tests); a response / step containing ``fail_word`` makes the model raise ValueError
(the "model raises on one item" test). Every forward's texts land in ``model.forwards``.
"""
from __future__ import annotations

import base64
import io
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from mmreward.core.inputs import Episode, ImagePrompt, StepSolution, TextPair, VideoPrompt
from mmreward.core.model import RewardScorer


@dataclass
class ToyConfig:
    vocab: int = field(default=2048, metadata={"help": "hashed word buckets"})
    dim: int = field(default=8, metadata={"help": "embedding width"})
    delay_s: float = field(default=0.0, metadata={"help": "sleep per forward"})
    fail_word: str = field(default="explode", metadata={"help": "an input holding this word makes the forward raise"})


def _words(text) -> list[int]:
    if isinstance(text, list):
        text = " ".join(m["content"] for m in text)
    return [zlib.crc32(w.encode()) for w in (text or "").split()] or [0]


class _Toy(RewardScorer, torch.nn.Module):
    config_class = ToyConfig

    def __init__(self, config: ToyConfig | None = None):
        super().__init__()
        self.config = config or ToyConfig()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Parameter(torch.randn(self.config.vocab, self.config.dim, generator=g))
        self.head = torch.nn.Parameter(torch.randn(self.config.dim, generator=g))
        self.forwards: list[list[str]] = []  # the texts of every forward, in order

    def _texts(self, texts: list) -> torch.Tensor:
        """(N,) scores of N texts: masked mean of hashed word embeddings over a padded batch."""
        ids = [[w % self.config.vocab for w in _words(t)] for t in texts]
        T = max(len(x) for x in ids)
        pad = torch.zeros(len(ids), T, dtype=torch.long)  # (N, T)
        mask = torch.zeros(len(ids), T)
        for i, x in enumerate(ids):
            pad[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        h = (self.emb[pad] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (N, D)
        lengths = mask.sum(1)
        return torch.tanh(h @ self.head) + 0.001 * lengths  # length term: distinct scores for distinct inputs

    def _enter(self, texts: list) -> None:
        for t in texts:
            if self.config.fail_word in str(t):
                raise ValueError(f"toy model refuses inputs containing {self.config.fail_word!r}")
        self.forwards.append([str(t) for t in texts])
        if self.config.delay_s:
            time.sleep(self.config.delay_s)


class ToyTextScorer(_Toy):
    model_type = "serve_toy_text"
    input_types = (TextPair,)

    def _score(self, items, batch_size):
        texts = [f"{it.prompt or ''} || {it.response if isinstance(it.response, str) else _join(it.response)}"
                 for it in items]
        self._enter(texts)
        return self._texts(texts).float()


def _join(messages) -> str:
    return " ".join(f"{m['role']}: {m['content']}" for m in messages)


class ToyStepScorer(_Toy):
    """PRM-like: one score per step, from the problem and the step; ``score`` = the lowest step."""

    model_type = "serve_toy_steps"
    input_types = (StepSolution,)

    def _score_parts(self, items, batch_size):
        flat = [f"{it.problem} :: {s}" for it in items for s in it.steps]
        self._enter(flat)
        return list(self._texts(flat).float().split([len(it.steps) for it in items]))

    def _score(self, items, batch_size):
        return torch.stack([p.min() for p in self._score_parts(items, batch_size)])


def to_rgb(image) -> np.ndarray:
    """A PIL image, PNG / JPEG bytes or their base64 → uint8 (H, W, 3)."""
    from PIL import Image

    if isinstance(image, str):
        image = base64.b64decode(image)
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    return np.asarray(image.convert("RGB"))


class ToyImageScorer(_Toy):
    """Mean colour of the image against a prompt-dependent direction."""

    model_type = "serve_toy_image"
    input_types = (ImagePrompt,)

    def _score(self, items, batch_size):
        self._enter([it.prompt for it in items])
        out = []
        for it in items:
            rgb = torch.from_numpy(to_rgb(it.image).astype(np.float32) / 255.0)  # (H, W, 3)
            w = self.emb[_words(it.prompt)[0] % self.config.vocab, :3]
            out.append((rgb.mean((0, 1)) * w).sum() + 0.01 * rgb.std())
        return torch.stack(out).float()


class ToyEpisodeScorer(_Toy):
    """Per-frame reward: the change of mean brightness from the previous frame (Diffusion-Reward-like
    per-frame output); ``score`` = their sum."""

    model_type = "serve_toy_episode"
    input_types = (Episode,)

    @staticmethod
    def frames_of(item):
        return item.frames

    def _score_parts(self, items, batch_size):
        self._enter([getattr(it, "prompt", "") for it in items])
        out = []
        for it in items:
            f = torch.as_tensor(np.asarray(self.frames_of(it)), dtype=torch.float32).mean((1, 2, 3)) / 255.0  # (T,)
            out.append(torch.cat([f[:1], f[1:] - f[:-1]]))
        return out

    def _score(self, items, batch_size):
        return torch.stack([p.sum() for p in self._score_parts(items, batch_size)])


class ToyVideoScorer(ToyEpisodeScorer):
    """The same per-frame reward over a prompted video."""

    model_type = "serve_toy_video"
    input_types = (VideoPrompt,)

    @staticmethod
    def frames_of(item):
        return item.video


def png_b64(rgb: np.ndarray, fmt: str = "PNG") -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


ALL = (ToyTextScorer, ToyStepScorer, ToyImageScorer, ToyEpisodeScorer, ToyVideoScorer)


def assert_same_scores(got, expected, tol=1e-6):
    """``got`` equals ``expected`` up to float rounding of a different batch shape (~1e-7 here), and
    the expected scores are more than ``2 * tol`` apart, so a swapped or duplicated answer fails."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    gaps = np.abs(expected[:, None] - expected[None, :])[~np.eye(len(expected), dtype=bool)]
    assert gaps.size == 0 or gaps.min() > 2 * tol, "test inputs must have distinct scores"
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)
