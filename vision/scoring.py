"""Small pieces every vision scorer shares: eval mode while scoring, the check that a saved folder
holds every asset a model needs to score, and the adapter that turns an image reward model into the
``(prompts, images) -> Tensor`` function ReFL and video scoring call."""
from __future__ import annotations

import contextlib
import os
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
    and are cut to it, naming how many and the first one (its start and its length)."""
    long = [i for i, n in enumerate(lengths) if n > limit]
    if long:
        first = prompts[long[0]]
        text = first if len(first) <= 50 else first[:50] + "..."
        warnings.warn(f"{len(long)} prompt(s) exceed the text encoder's limit of {limit} tokens and were truncated "
                      f"(first: {text!r}, {lengths[long[0]]} tokens)", stacklevel=stacklevel)


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
