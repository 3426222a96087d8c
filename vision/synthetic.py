"""Exactly-labelled image-text data: rendered shapes and prompts that describe them (image scorers),
and colour images with answers / reasoning steps about them (VLM reward models, VisualPRM).

A *scene* is (colour, shape, count, position): ``count`` objects of one colour and shape, all in the
left or right half of the image. Its prompt reads like "a red circle on the left" or "two blue
squares on the right". A *ranked set* pairs one prompt with K images whose scenes agree with the
prompt's scene on 4, 3, … attributes; ``rank = 4 − matching attributes`` (0 = the image the prompt
describes; smaller is better, the convention of :func:`mmreward.ops.listwise_loss`). Labels are exact
by construction, so a scorer's held-out pairwise accuracy measures what it learned.

A *colour image* is noise around one dominant colour (≥ 75 % of the pixels) with a patch of another;
colour rows ask for that colour (preference rows: the right answer is chosen; step rows: each step
claims a colour and is labelled good iff it names the dominant one).

Everything is drawn from one ``numpy.random.Generator`` seeded by the caller: same seed, same data.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 70), "blue": (50, 90, 230), "yellow": (235, 215, 40)}
SHAPES = ("circle", "square", "triangle")
COUNTS = (1, 2, 3)
POSITIONS = ("left", "right")
ATTRIBUTES = ("colour", "shape", "count", "position")
_COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
BACKGROUND = (30, 30, 30)


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    count: int
    position: str

    def prompt(self) -> str:
        noun = self.shape + ("s" if self.count > 1 else "")
        return f"{_COUNT_WORDS[self.count]} {self.colour} {noun} on the {self.position}"

    def matches(self, other: "Scene") -> int:
        """Number of attributes (of 4) on which two scenes agree."""
        return sum(getattr(self, a) == getattr(other, a) for a in ATTRIBUTES)


@dataclass
class RankedSet:
    prompt: str
    images: np.ndarray  # (K, H, W, 3) uint8
    ranks: np.ndarray  # (K,) int64, 0 = best
    scenes: list


def vocabulary() -> list[str]:
    """Every word a synthetic prompt can use (for a word-level tokenizer)."""
    words = {"a", "on", "the", *_COUNT_WORDS.values(), *COLOURS, *POSITIONS}
    words |= {s for s in SHAPES} | {s + "s" for s in SHAPES}
    return sorted(words)


def random_scene(rng: np.random.Generator) -> Scene:
    return Scene(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), int(rng.choice(COUNTS)),
                 str(rng.choice(POSITIONS)))


def scene_with_matches(target: Scene, n_match: int, rng: np.random.Generator) -> Scene:
    """A scene that agrees with ``target`` on exactly ``n_match`` attributes (chosen at random)."""
    keep = set(rng.choice(len(ATTRIBUTES), size=n_match, replace=False).tolist())
    choices = {"colour": list(COLOURS), "shape": list(SHAPES), "count": list(COUNTS), "position": list(POSITIONS)}
    values = {}
    for i, a in enumerate(ATTRIBUTES):
        cur = getattr(target, a)
        if i in keep:
            values[a] = cur
        else:
            others = [v for v in choices[a] if v != cur]
            values[a] = others[int(rng.integers(len(others)))]
    return Scene(**values)


def _shape_mask(shape: str, cy: float, cx: float, r: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if shape == "square":
        # the full bounding box: at ~9 px a smaller square would cover the same pixels as the circle
        return (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    if shape == "triangle":  # apex up: width grows linearly from top to bottom
        top, bottom = cy - r, cy + r
        half = (yy - top) / (2 * r) * r
        return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> np.ndarray:
    g = np.mgrid[0:size, 0:size].astype(np.float32)
    g.flags.writeable = False  # shared between calls
    return g


def render(scene: Scene, size: int = 32, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Draw a scene -> uint8 [size, size, 3]. Objects do not overlap and stay inside their half."""
    if size < 24:
        raise ValueError(f"size must be >= 24 pixels to fit three shapes in one half, got {size}")
    rng = rng if rng is not None else np.random.default_rng(0)
    img = np.empty((size, size, 3), np.float32)
    img[:] = BACKGROUND
    img += rng.normal(0, 6, size=img.shape)  # sensor-like noise so colours are not single values
    yy, xx = _grid(size)
    r = size * 0.14
    half_lo, half_hi = (0.0, size / 2) if scene.position == "left" else (size / 2, float(size))
    # three vertical slots in the half, each object jittered inside its slot; pick `count` slots
    slots = rng.choice(3, size=scene.count, replace=False)
    colour = np.array(COLOURS[scene.colour], np.float32)
    for s in slots:
        slot_h = size / 3
        cy = slot_h * s + slot_h / 2 + rng.uniform(-0.05, 0.05) * slot_h
        cx = rng.uniform(half_lo + r + 1, half_hi - r - 1)
        img[_shape_mask(scene.shape, cy, cx, r, yy, xx)] = colour
    return np.clip(img, 0, 255).astype(np.uint8)


def ranked_sets(n: int, set_size: int = 4, image_size: int = 32, seed: int = 0) -> list[RankedSet]:
    """``n`` ranked sets of ``set_size`` images (distinct match counts, so no ties within a set)."""
    if not 2 <= set_size <= len(ATTRIBUTES) + 1:
        raise ValueError(f"set_size must be in [2, {len(ATTRIBUTES) + 1}], got {set_size}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        target = random_scene(rng)
        # always include the described image; the other match counts are drawn without replacement
        n_matches = [4] + rng.choice(4, size=set_size - 1, replace=False).tolist()
        scenes = [scene_with_matches(target, m, rng) for m in n_matches]
        images = np.stack([render(s, image_size, rng) for s in scenes])
        ranks = np.array([len(ATTRIBUTES) - target.matches(s) for s in scenes], np.int64)
        order = rng.permutation(set_size)  # the best image is not always first
        out.append(RankedSet(target.prompt(), images[order], ranks[order], [scenes[i] for i in order]))
    return out


def write_jsonl(sets: list[RankedSet], folder: str, name: str = "data.jsonl") -> str:
    """Save sets as PNG files + a JSONL of ``{"prompt", "images": [paths], "ranks": [...]}`` rows
    (the format ``mmreward vision train --data file.jsonl`` reads; paths relative to the file)."""
    from PIL import Image

    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        for i, s in enumerate(sets):
            paths = []
            for j, img in enumerate(s.images):
                rel = os.path.join("images", f"{i:05d}_{j}.png")
                Image.fromarray(img).save(os.path.join(folder, rel))
                paths.append(rel)
            f.write(json.dumps({"prompt": s.prompt, "images": paths, "ranks": s.ranks.tolist()}) + "\n")
    return path


# ------------------------------------------------------------------ colour rows for the VLM reward models
COLOUR_WORDS = ["what", "colour", "is", "the", "image", "it", "not", "step", "look", "at", "so", *COLOURS]


def colour_image(colour: str, rng: np.random.Generator, size: int = 56) -> np.ndarray:
    """uint8 (size, size, 3) image whose dominant colour (≥ 75% of pixels) is ``colour``; noisy,
    with one small patch of another colour, so the answer must come from the pixels' majority."""
    img = np.empty((size, size, 3), np.int16)
    img[:] = COLOURS[colour]
    other = COLOURS[rng.choice([c for c in COLOURS if c != colour])]
    s = size // 3
    y, x = rng.integers(0, size - s, 2)
    img[y:y + s, x:x + s] = other
    img += rng.integers(-25, 26, img.shape).astype(np.int16)
    return img.clip(0, 255).astype(np.uint8)


def colour_preference_rows(n: int, seed: int, size: int = 56) -> list[dict]:
    """Pairwise rows: the chosen answer names the image's dominant colour, the rejected one another."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    rows = []
    for _ in range(n):
        c = names[rng.integers(len(names))]
        wrong = names[rng.choice([i for i in range(len(names)) if names[i] != c])]
        q = {"role": "user", "content": "what colour is the image"}
        rows.append({"images": [colour_image(c, rng, size)],
                     "conversations_chosen": [q, {"role": "assistant", "content": f"the image is {c}"}],
                     "conversations_rejected": [q, {"role": "assistant", "content": f"the image is {wrong}"}]})
    return rows


def colour_step_rows(n: int, seed: int, max_steps: int = 3, size: int = 56,
                     colours: Sequence[str] = tuple(COLOURS)) -> list[dict]:
    """VisualPRM rows with exact step labels: each step claims a colour ("so it is red"); it is good
    (label 1.0) iff that is the image's dominant colour. About half the steps are good."""
    rng = np.random.default_rng(seed)
    names = list(colours)
    rows = []
    for _ in range(n):
        c = names[rng.integers(len(names))]
        steps, labels = [], []
        for _k in range(int(rng.integers(1, max_steps + 1))):
            good = bool(rng.random() < 0.5)
            claim = c if good else names[rng.choice([i for i in range(len(names)) if names[i] != c])]
            steps.append(f"look at the image so it is {claim}")
            labels.append(1.0 if good else 0.0)
        rows.append({"images": [colour_image(c, rng, size)], "question": "what colour is the image",
                     "steps": steps, "labels": labels})
    return rows
