"""``ImageScorer``: the base of every image-text reward model (ImageReward-style scorers here; CLIP
score, PickScore, HPS … loaders subclass it too).

It implements the reward-model contract (:class:`mmreward.core.model.RewardScorer`) for
:class:`~mmreward.core.inputs.ImagePrompt` and :class:`~mmreward.core.inputs.VideoPrompt`:

* images arrive as paths, PIL images, uint8 / float arrays or tensors (:mod:`.images`); videos as
  files, frame folders, uint8 ``[T, H, W, 3]`` arrays or float ``[T, 3, H, W]`` tensors (:mod:`.video`);
  every decoding error names the input (``input 3 frame 7: …``) and the file;
* pixels are resized, centre-cropped and normalised in torch, batched ``batch_size`` frames at a
  time, and scored in eval mode;
* ``score`` of an image is its reward; of a video, the mean of its frames' rewards;
  ``score_parts`` gives the per-frame rewards (one value for an image);
* scoring runs without autograd **unless** an input is a float tensor that requires grad: then the
  score is differentiable in those pixels (ReFL backpropagates through it).

A subclass keeps ``image_size`` / ``image_mean`` / ``image_std`` in its dataclass ``config`` and
implements ``reward(prompts, pixel_values[B, 3, S, S]) -> Tensor[B]``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, ClassVar, Iterator, Optional, Sequence

import torch
from torch import nn

from mmreward.core.data import DataError
from mmreward.core.inputs import ImagePrompt, VideoPrompt
from mmreward.core.model import RewardScorer

from .images import open_image, preprocess, split_images, to_tensor
from .scoring import eval_mode, summed_notes
from .video import batches, stream_video_frames

RewardFn = Callable[[list, torch.Tensor], torch.Tensor]


def _requires_grad(x: Any) -> bool:
    """An image or video (tensor, or list of frames) whose pixels require grad: scoring keeps autograd on."""
    if isinstance(x, torch.Tensor):
        return x.requires_grad
    return isinstance(x, (list, tuple)) and any(isinstance(f, torch.Tensor) and f.requires_grad for f in x)


def _frame_size(frame: Any) -> Optional[tuple]:
    """``(H, W)`` of one in-memory video frame, or None where its kind is not known (its decoder then
    names the problem)."""
    if isinstance(frame, torch.Tensor) and frame.dim() == 3:
        return tuple(frame.shape[-2:])
    if hasattr(frame, "ndim") and hasattr(frame, "shape") and frame.ndim in (2, 3):  # numpy array
        return tuple(frame.shape[:2])
    if hasattr(frame, "convert") and hasattr(frame, "size"):  # PIL image
        return (frame.size[1], frame.size[0])
    return None


def _same_size_frames(frames: Iterator[Any], where: str) -> Iterator[Any]:
    """The frames of a video given as a list, checked to share one size (as a file's or a frame folder's
    are): a frame of another size is an error naming both sizes, never resized on its own. Paths are
    opened here (once: the opened image goes on to the scorer)."""
    first = None
    for t, frame in enumerate(frames):
        if isinstance(frame, (str, os.PathLike)):
            frame = open_image(os.fspath(frame), f"{where} frame {t}")
        size = _frame_size(frame)
        if size is not None:
            if first is None:
                first = (t, size)
            elif size != first[1]:
                raise ValueError(f"{where} frame {t} is {size[0]}x{size[1]} pixels, frame {first[0]} "
                                 f"{first[1][0]}x{first[1][1]}: the frames of a video must have one size")
        yield frame


def _prompt(prompt: Any, where: str) -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"{where}: prompt must be a string, got {type(prompt).__name__}")
    return prompt


def _check_has_prompt(scorer: "ImageScorer", prompt: Any, where: str) -> None:
    """A scorer whose score depends on the prompt refuses an image without one: an empty prompt gives a
    number that looks like a score but measures nothing the user asked (a forgotten ``--prompt``)."""
    if isinstance(prompt, str) and not prompt.strip() and scorer.uses_prompt:
        raise ValueError(f"{where}: no prompt: this {type(scorer).__name__} scores an image against the text it "
                         "should match; give each image its prompt ('prompt' field, --prompt)")


class ImageScorer(RewardScorer, nn.Module):
    """Base class of image-text scorers; see the module docstring."""

    input_types: ClassVar[tuple] = (ImagePrompt, VideoPrompt)

    def reward(self, prompts: Sequence[str], pixel_values: torch.Tensor) -> torch.Tensor:
        """Rewards ``[B]`` of normalised ``pixel_values`` ``[B, 3, S, S]`` against ``prompts`` (len B)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement reward")

    @property
    def uses_prompt(self) -> bool:
        """Whether scores depend on the prompt; those that do refuse an image without one (an aesthetic
        predictor, which scores the image alone, overrides this)."""
        return True

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def pixel_values(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Float ``[3, H, W]`` images in [0, 1] -> normalised ``[B, 3, S, S]`` on the model's device and
        in its dtype (differentiable)."""
        p, c = next(self.parameters()), self.config
        # half-precision models (dtype="bf16" / "fp16") get pixels preprocessed in float32 and then cast, as the
        # official pipelines do: the antialiased bicubic resize has no bfloat16 kernel on CPU (a bf16 model
        # could not score there at all) and resizing in 8 mantissa bits would shift the pixels
        work = torch.float32 if p.dtype in (torch.bfloat16, torch.float16) else p.dtype
        pixels = preprocess([t.to(p.device, work) for t in images], c.image_size, c.image_mean, c.image_std)
        return pixels.to(p.dtype)

    def pixel_batch(self, images: Sequence[Any], wheres: Sequence[str]) -> torch.Tensor:
        """Images as given (paths, PIL, arrays, tensors; ``wheres`` name them in errors) -> normalised
        ``[B, 3, S, S]``. Scorers whose official preprocessing works on the decoded image (PIL resizes)
        override this; the default decodes to float tensors and calls :meth:`pixel_values`."""
        return self.pixel_values([to_tensor(x, where) for x, where in zip(images, wheres)])

    def frame_scores(self, items: Sequence, batch_size: int,
                     reward: Optional[RewardFn] = None) -> tuple[torch.Tensor, list[int]]:
        """``(scores of every image / video frame in order (float32, CPU), frames per input)`` with
        ``reward`` (default :meth:`reward`). Video files are decoded while they are scored, one batch
        of frames at a time: memory holds a batch, not a whole video."""
        counts = [0] * len(items)

        def frames() -> Iterator[tuple[Any, Any, str]]:  # (prompt, image, where) per frame
            for i, item in enumerate(items):
                _check_has_prompt(self, item.prompt, f"input {i}")
                if not isinstance(item, VideoPrompt):
                    counts[i] = 1
                    yield item.prompt, item.image, f"input {i}"
                    continue
                try:
                    video, _ = stream_video_frames(item.video, f"input {i}")
                    if isinstance(item.video, (list, tuple)):
                        video = _same_size_frames(video, f"input {i}")
                    for t, f in enumerate(video):
                        counts[i] += 1
                        yield item.prompt, f, f"input {i} frame {t}"
                except DataError as e:  # a file / frame folder error names the file: add which input gave it
                    if str(e).startswith((f"input {i}:", f"input {i} ")):  # a listed frame's error names it already
                        raise
                    raise type(e)(f"input {i}: {e}") from e

        grad = torch.is_grad_enabled() and any(_requires_grad(it.video if isinstance(it, VideoPrompt) else it.image)
                                               for it in items)
        reward = reward or self.reward
        out = []
        # each batch's warnings (a prompt cut, an animated image) told once for the call, counted over its inputs
        with summed_notes([it.prompt for it in items]), eval_mode(self), \
                (contextlib.nullcontext() if grad else torch.no_grad()):
            for chunk in batches(frames(), batch_size):
                prompts = [_prompt(p, where) for p, _, where in chunk]
                pixels = self.pixel_batch([x for _, x, _ in chunk], [where for _, _, where in chunk])  # (b, 3, S, S)
                out.append(reward(prompts, pixels).float().cpu())
        return torch.cat(out), counts

    def _score_parts(self, items: list, batch_size: int) -> list[torch.Tensor]:
        scores, counts = self.frame_scores(items, batch_size)
        return list(scores.split(counts))

    def _score(self, items: list, batch_size: int) -> torch.Tensor:
        return torch.stack([frames.mean() for frames in self._score_parts(items, batch_size)])

    @torch.no_grad()
    def rank(self, prompt: str, images: Any, batch_size: Optional[int] = None) -> tuple[list[int], torch.Tensor]:
        """``(ranking, scores)`` of a batch of images (a tensor ``[B, 3, H, W]``, an array
        ``[B, H, W, 3]`` or a list) for one prompt: image indices best first, scores ``[B]`` in input order."""
        items = [ImagePrompt(prompt, x) for x in split_images(images)]
        if not items:
            raise ValueError("rank: images is empty (give at least one image to rank)")
        scores = self.score(items, batch_size=batch_size)
        return torch.argsort(scores, descending=True, stable=True).tolist(), scores
