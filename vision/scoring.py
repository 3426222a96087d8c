"""Small pieces every vision scorer shares: eval mode while scoring, the check that a saved folder
holds every asset a model needs to score, and the adapter that turns an image reward model into the
``(prompts, images) -> Tensor`` function ReFL and video scoring call."""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from mmreward.core.folders import CheckpointError
from mmreward.core.inputs import ImagePrompt
from mmreward.core.model import RewardScorer, eval_while_scoring

PixelScorer = Callable[[list, torch.Tensor], torch.Tensor]


def user_path(path: Any, output: bool = False) -> Any:
    """``path`` with a leading ``~`` read as the home folder, as a shell reads it (the CLIs get it quoted, a
    Python user passes it as a string): an input path only when no such literal path exists, an output path
    always (as ``TrainConfig.output_dir``), so that a folder named ``~`` in the working folder is never made."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path.startswith("~"):
        return path
    if output:
        return os.path.expanduser(path)
    from mmreward.core.data import data_path

    return data_path(path)  # as read_records reads a data file


def model_folder(path: Any) -> Any:
    """The model folder ``path`` names, as ``mmreward.load`` reads it: ``~`` expanded and a training run's
    folder (``train_config.json`` / snapshots, the final model in ``model/``) read as its ``model/``."""
    path = user_path(path)
    if isinstance(path, str) and os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        from mmreward.core.checkpoint import pick_run_model
        from mmreward.registry import not_a_model_folder

        model = pick_run_model(path, lambda model_type: True)
        if model is not None:
            return model
        problem = not_a_model_folder(path)  # a snapshot, an unfinished run: what to open or run instead
        if problem is not None:
            raise FileNotFoundError(problem)
    return path


def warn_truncated(prompts: Sequence[str], lengths: Sequence[int], limit: int, stacklevel: int = 4) -> None:
    """Warn when prompts (``lengths``: their token counts untruncated) exceed the text encoder's ``limit``
    and are cut to it, naming how many and the first one (its start and its length). Inside
    :func:`summed_notes` (a scoring call, batch after batch) the cut prompts are held instead, and told
    once, summed over the call's inputs."""
    long = [i for i, n in enumerate(lengths) if n > limit]
    held = _NOTES.get()
    if long and held is not None:
        for i in long:
            held.cut.setdefault(prompts[i], (int(lengths[i]), int(limit)))
        return
    if long:
        first = prompts[long[0]]
        warnings.warn(f"{len(long)} prompt(s) exceed the text encoder's limit of {limit} tokens and were truncated "
                      f"(first: {_start(first)!r}, {lengths[long[0]]} tokens)", stacklevel=stacklevel)


def _start(text: str) -> str:
    return text if len(text) <= 50 else text[:50] + "..."


def note_animated(path: str, where: str) -> None:
    """An animated file (GIF / WebP / APNG) opened as one image, of which only the first frame is read: told
    by :func:`summed_notes` once per scoring call (a warning of its own outside one), never silently."""
    held = _NOTES.get()
    if held is not None:
        held.animated[0] += 1
        held.animated[1] = held.animated[1] or path
        return
    warnings.warn(f"{where + ': ' if where else ''}{path!r} is an animated image: only its first "
                  "frame is read as an image; give it as a video ('video' field, VideoPrompt) to score every frame",
                  stacklevel=_user_stacklevel())


class _Notes:
    """What the batches of one scoring call would each warn about, summed: the prompts cut (prompt ->
    (length, limit)) and the animated files read as one image ([count, the first one's path])."""

    def __init__(self) -> None:
        self.cut: dict[str, tuple[int, int]] = {}
        self.animated: list = [0, None]


_NOTES: contextvars.ContextVar = contextvars.ContextVar("mmreward_vision_notes", default=None)


def _user_stacklevel() -> int:
    """The ``stacklevel`` that names, in a warning its caller gives, the first line outside mmreward (the user's
    scoring call), so that Python's once-per-line warning filter sees the user's line, not mmreward's own."""
    frame, level = sys._getframe(2), 2
    while frame is not None and str(frame.f_globals.get("__name__", "")).split(".")[0] in ("mmreward", "contextlib"):
        frame, level = frame.f_back, level + 1
    return level


@contextlib.contextmanager
def summed_notes(prompts: Sequence[str]) -> Iterator[None]:
    """Hold the warnings the batches of one scoring call give (:func:`warn_truncated`, :func:`note_animated`)
    and warn once for the call, counted over its inputs (``prompts``: each input's prompt). A call scored in
    batches of 16 warned once per batch ("1 prompt(s) exceed …" hundreds of times over a file, none with the
    count). The truncation warning also says ``truncated N of M prompts to max_length=L tokens (…)``, the form
    ``mmreward score`` sums over the chunks of a file into one line."""
    held = _Notes()
    token = _NOTES.set(held)
    try:
        yield
    finally:
        _NOTES.reset(token)
    level = _user_stacklevel()
    if held.cut:
        cuts = [held.cut[p][0] - held.cut[p][1] for p in prompts if isinstance(p, str) and p in held.cut]
        if not cuts:  # a scorer that cut prompts of its own making: count those
            cuts = [n - limit for n, limit in held.cut.values()]
        first = next((p for p in prompts if isinstance(p, str) and p in held.cut), next(iter(held.cut)))
        limit = held.cut[first][1]
        warnings.warn(f"{len(cuts)} prompt(s) exceed the text encoder's limit of {limit} tokens and were truncated "
                      f"(first: {_start(first)!r}, {held.cut[first][0]} tokens): truncated {len(cuts)} of "
                      f"{len(prompts)} prompts to max_length={limit} tokens (right: {sum(cuts)} prompt and 0 "
                      f"response tokens cut, up to {max(cuts)} from one input)", stacklevel=level)
    if held.animated[0]:
        n, path = held.animated
        warnings.warn(f"{n} animated image(s) were read by their first frame only (first: {path!r}): give an "
                      "animated file as a video ('video' field, VideoPrompt) to score every frame", stacklevel=level)


def tokenize_truncating(tokenizer: Any, prompts: Sequence[str], max_length: int) -> dict:
    """``tokenizer(prompts)`` padded and truncated to ``max_length`` as the official scorers tokenise, with a
    :func:`warn_truncated` warning for the prompts that were cut (only rows that reach ``max_length`` are
    tokenised again to tell)."""
    tok = tokenizer(list(prompts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    full = tok["attention_mask"].sum(dim=1).tolist()
    at_limit = [i for i, n in enumerate(full) if n >= max_length]
    if at_limit:
        lengths = [len(ids) for ids in tokenizer([prompts[i] for i in at_limit])["input_ids"]]
        warn_truncated([prompts[i] for i in at_limit], lengths, max_length, stacklevel=5)
    return tok


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Scores come from the model in eval mode (no dropout); the mode of each of its submodules is restored
    after (a backbone the caller froze in eval mode inside a model in train mode stays so, where
    ``module.train(was)`` would turn its dropout back on). Threads evaluating one model at once share one
    eval period (the scoring contract's, :func:`mmreward.core.model.eval_while_scoring`): none of them runs
    with dropout on because another one finished first."""
    with eval_while_scoring(module):
        yield module


def require_assets(folder: str, assets: Mapping[str, str]) -> None:
    """CheckpointError naming the first missing asset: ``assets`` maps a path inside ``folder`` to
    what it is (e.g. ``{"tokenizer": "the text tokenizer"}``)."""
    for rel, what in assets.items():
        if not os.path.exists(os.path.join(folder, rel)):
            raise CheckpointError(f"{folder} is incomplete: {rel} ({what}, needed to score) is missing")


def as_pixel_scorer(scorer: Any) -> PixelScorer:
    """``(prompts, images[B, 3, H, W] in [0, 1]) -> Tensor[B]`` from a reward model that scores
    :class:`ImagePrompt` (differentiable when the model is), or ``scorer`` itself when it is already
    such a function."""
    if isinstance(scorer, RewardScorer):
        if ImagePrompt not in scorer.input_types:
            raise TypeError(f"{type(scorer).__name__} does not score images (it reads "
                            f"{' / '.join(t.__name__ for t in scorer.input_types)})")

        def score(prompts: list, images: torch.Tensor) -> torch.Tensor:
            # zip would pair a short list (or a bare string's letters) with the first images silently
            if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or len(prompts) != len(images):
                got = f"a {type(prompts).__name__}" if not isinstance(prompts, (list, tuple)) else f"{len(prompts)} prompts"
                raise ValueError(f"give one prompt per image: {len(images)} images, got {got}")
            items = [ImagePrompt(p, x) for p, x in zip(prompts, images.unbind(0))]
            return scorer.score(items, batch_size=len(items))

        return score
    if callable(scorer):
        return scorer
    raise TypeError(f"scorer must be an image reward model or a function (prompts, images) -> Tensor, "
                    f"got {type(scorer).__name__}")
