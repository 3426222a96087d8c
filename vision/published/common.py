"""Pieces the published-layout loaders share (weight and JSON readers are in mmreward.core.weights):
file, pickled state dicts read without running code, quiet transformers loading, and the official
image preprocessing of each family (PIL resizes as torchvision / transformers do them on PIL images,
so scores match the official code bit for bit on real images)."""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


from mmreward.core.weights import weight_file_problem


def transformers_weights_error(folder: str, what: str, e: Exception) -> Exception:
    """The CheckpointError for a transformers ``from_pretrained`` of ``folder`` that failed with ``e``: an
    empty / Git LFS pointer / truncated weights file or a missing shard named, a ``pytorch_model.bin`` that
    holds more than tensors refused with what to do (transformers' own message says to load it with
    ``weights_only=False``, which runs code from the file: mmreward never does), else ``e`` with the folder
    and ``what`` it loads."""
    import glob
    import pickle

    from mmreward.core.folders import CheckpointError

    # the weights transformers reads (not a Trainer's pickled training_args.bin beside them)
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")) + glob.glob(os.path.join(folder, "pytorch_model*.bin")))
    for path in files:
        problem = weight_file_problem(path)
        if problem:
            return CheckpointError(problem)
    for path in (p for p in files if p.endswith(".safetensors")):
        try:
            from safetensors import safe_open

            with safe_open(path, "pt"):  # reads the header only: a truncated or damaged file fails here
                pass
        except Exception as bad:  # noqa: BLE001 - safetensors raises several types for a bad header
            return CheckpointError(f"corrupt or truncated weights file {path} ({bad}): a download or copy that did "
                                   "not finish; fetch the file again")
    if isinstance(e, pickle.UnpicklingError):
        bins = [os.path.basename(p) for p in files if p.endswith(".bin")]
        return CheckpointError(f"{folder}: {' / '.join(bins) or 'the weights file'} holds pickled objects besides "
                               "tensors, "
                               "which mmreward does not unpickle (it could run code from the file): use the model's "
                               ".safetensors release, or, where you trust the file, load it once with transformers and "
                               "save_pretrained() it (safetensors)")
    from mmreward.core.weights import weight_shapes

    try:  # a shard its index names that is missing, or that lacks the tensors the index places in it
        weight_shapes(folder)
    except CheckpointError as found:
        return found
    return CheckpointError(f"{folder}: cannot load the {what} weights: {type(e).__name__}: {e}")


def shortest_edge_crop(image: Any, size: int, crop_rounding: str) -> torch.Tensor:
    """PIL image -> float ``[3, size, size]`` in [0, 1]: bicubic resize of the shortest side to ``size``
    (the long side floored, as torchvision's ``Resize(size)`` and CLIP's image processor compute it),
    then a centre crop whose offset is ``round`` (torchvision ``CenterCrop``) or ``floor``
    (transformers ``center_crop``). An image that is not RGB is resized in its own mode and made RGB
    after (PIL resizes palette / 1-bit images nearest, RGBA / LA with premultiplied alpha), as
    torchvision's transforms on a PIL image do; pass an RGB image for pipelines that convert first."""
    from PIL import Image

    from ..images import FULL_RESIZE_MAX_PIXELS, as_rgb

    w, h = image.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if crop_rounding == "round":
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    else:
        top, left = (nh - size) // 2, (nw - size) // 2
    if nw * nh > FULL_RESIZE_MAX_PIXELS and top + size <= nh and left + size <= nw:
        # an extreme aspect ratio (a 1 x 20000 strip: a 224 x 4 480 000 intermediate, gigabytes): resample
        # only the crop, the source box it covers at the same scale (PIL's resize box)
        image = _resize_crop_window(image, size, nw, nh, top, left)
        nw = nh = size
        top = left = 0
    elif (nw, nh) != (w, h):
        image = image.resize((nw, nh), resample=Image.BICUBIC)
    image = as_rgb(image) if image.mode != "RGB" else image
    x = np.asarray(image, dtype=np.float32)[top:top + size, left:left + size] / 255.0
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)


def _resize_crop_window(image: Any, size: int, nw: int, nh: int, top: int, left: int) -> Any:
    """The ``size`` x ``size`` window at (top, left) of PIL's bicubic resize of ``image`` to (nw, nh),
    without the full resize. PIL resizes horizontally then vertically; so does this, each pass on
    the source box of the window at the full resize's scale (PIL's ``box``) and the horizontal one on
    the rows the vertical one reads only: the same pixels as the full resize (up to float rounding of
    the box, and of nearest-neighbour picks for palette / 1-bit images)."""
    import math

    from PIL import Image

    w, h = image.size
    sx, sy = w / nw, h / nh
    y0, y1 = top * sy, (top + size) * sy
    reach = 2.0 * max(sy, 1.0) + 2.0  # bicubic support (2 px, widened when downsampling) + rounding slack
    lo, hi = max(0, math.floor(y0 - reach)), min(h, math.ceil(y1 + reach))
    rows = image.crop((0, lo, w, hi)) if (lo, hi) != (0, h) else image
    rows = rows.resize((size, hi - lo), resample=Image.BICUBIC, box=(left * sx, 0, (left + size) * sx, hi - lo))
    return rows.resize((size, size), resample=Image.BICUBIC, box=(0, y0 - lo, size, y1 - lo))


def longest_edge_pad(image: torch.Tensor, size: int) -> torch.Tensor:
    """float ``[3, H, W]`` -> ``[3, size, size]``: HPSv2's ``ResizeMaxSize`` — bicubic antialiased
    resize of the longest side to ``size`` (torchvision on a float tensor), black padding centred with
    the odd pixel right / bottom. A short side that would round to 0 px keeps one pixel (HPSv2 fails
    there; a thin strip still has content to score). Differentiable."""
    h, w = image.shape[-2:]
    scale = size / float(max(h, w))
    if scale != 1.0:
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        image = F.interpolate(image.unsqueeze(0), size=(nh, nw), mode="bicubic", align_corners=False,
                              antialias=True).squeeze(0)
        ph, pw = size - nh, size - nw
        image = F.pad(image, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
    if tuple(image.shape[-2:]) != (size, size):  # HPSv2 would fail here; pad the short side instead
        ph, pw = size - image.shape[-2], size - image.shape[-1]
        image = F.pad(image, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
    return image


def needs_grad(images: Sequence[Any]) -> bool:
    return any(isinstance(x, torch.Tensor) and x.requires_grad for x in images)


def split_by_grad(images: Sequence[Any], wheres: Sequence[str], official: Callable[[list, list], torch.Tensor],
                  differentiable: Callable[[list, list], torch.Tensor]) -> torch.Tensor:
    """``[B, 3, S, S]``: the images that require grad through ``differentiable`` (a torch resize), the
    others through ``official`` (the PIL path), in input order — so an image scores the same whether
    or not a differentiable one shares its batch."""
    grad = [isinstance(x, torch.Tensor) and x.requires_grad for x in images]
    if not any(grad):
        return official(list(images), list(wheres))
    if all(grad):
        return differentiable(list(images), list(wheres))
    rows: list = [None] * len(images)
    for flag, fn in ((True, differentiable), (False, official)):
        idx = [i for i, g in enumerate(grad) if g == flag]
        for i, row in zip(idx, fn([images[i] for i in idx], [wheres[i] for i in idx]).unbind(0)):
            rows[i] = row
    return torch.stack(rows)


def shortest_edge_crop_batch(images: Sequence[Any], wheres: Sequence[str], size: int, crop_rounding: str,
                             mean: Sequence[float], std: Sequence[float], rgb_first: bool = True) -> torch.Tensor:
    """Images as given -> normalised ``[B, 3, size, size]`` through :func:`shortest_edge_crop` on their
    PIL form (decoded straight from the file / array, no float round trip): made RGB before the resize
    (``rgb_first``: transformers' image processors) or after it (torchvision's ``Resize`` on the image
    as opened, ImageReward)."""
    from ..images import to_pil, to_pil_any_mode

    decode = to_pil if rgb_first else to_pil_any_mode
    return torch.stack([normalise(shortest_edge_crop(decode(x, where), size, crop_rounding), mean, std)
                        for x, where in zip(images, wheres)])


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


__all__ = ["needs_grad", "split_by_grad", "weight_file_problem", "transformers_weights_error",
           "shortest_edge_crop", "shortest_edge_crop_batch", "longest_edge_pad", "normalise"]
