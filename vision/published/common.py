"""Pieces the published-layout loaders share (weight and JSON readers are in mmreward.core.weights):
file, pickled state dicts read without running code, quiet transformers loading, and the official
image preprocessing of each family (PIL resizes as torchvision / transformers do them on PIL images,
so scores match the official code bit for bit on real images)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def shortest_edge_crop(image: Any, size: int, crop_rounding: str) -> torch.Tensor:
    """PIL image -> float ``[3, size, size]`` in [0, 1]: bicubic resize of the shortest side to ``size``
    (the long side floored, as torchvision's ``Resize(size)`` and CLIP's image processor compute it),
    then a centre crop whose offset is ``round`` (torchvision ``CenterCrop``) or ``floor``
    (transformers ``center_crop``)."""
    from PIL import Image

    w, h = image.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), resample=Image.BICUBIC)
    if crop_rounding == "round":
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    else:
        top, left = (nh - size) // 2, (nw - size) // 2
    x = np.asarray(image, dtype=np.float32)[top:top + size, left:left + size] / 255.0
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)


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


def shortest_edge_crop_batch(images: Sequence[Any], wheres: Sequence[str], size: int, crop_rounding: str,
                             mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Images as given -> normalised ``[B, 3, size, size]`` through :func:`shortest_edge_crop` on their
    RGB PIL form (decoded straight from the file / array, no float round trip)."""
    from ..images import to_pil

    return torch.stack([normalise(shortest_edge_crop(to_pil(x, where), size, crop_rounding), mean, std)
                        for x, where in zip(images, wheres)])


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


__all__ = ["needs_grad",
           "shortest_edge_crop", "shortest_edge_crop_batch", "longest_edge_pad", "normalise"]
