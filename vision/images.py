"""Image inputs -> float tensors or PIL images, and the CLIP-style preprocessing done in torch
(differentiable).

An image is given as a file path, a PIL image, a uint8 array ``[H, W, 3]`` (or ``[H, W]`` grey), a
float array ``[H, W, 3]`` in [0, 1], or a tensor ``[3, H, W]`` (float in [0, 1] or uint8).
:func:`to_tensor` turns any of them into a float ``[3, H, W]`` in [0, 1] (a float tensor stays the
same tensor, so gradients flow); :func:`preprocess` then resizes (shortest side), centre-crops and
normalises in torch, so a gradient flows from a score back to the pixels (ReFL needs that; a PIL
round trip would cut it). :func:`to_pil` gives the RGB PIL image a transformers processor wants.
Every error names the image (``where``) and, for files, the path.
"""
from __future__ import annotations

import os
import re
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmreward.core.data import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageLoadError(DataError):
    """An image file is missing, corrupt or not an image."""


def load_image(path: str, where: str = ""):
    """Open ``path`` as an RGB PIL image (decoded now, so a corrupt file fails here, by name;
    ``where`` prefixes the error, e.g. ``input 3``)."""
    from PIL import Image, UnidentifiedImageError

    prefix = f"{where}: " if where else ""
    if not os.path.isfile(path):
        raise ImageLoadError(f"{prefix}image file {path!r} does not exist")
    try:
        with Image.open(path) as im:
            return as_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageLoadError(f"{prefix}cannot read image {path!r}: {e}") from e


def as_rgb(im):
    """An RGB copy of a PIL image. 16-bit greys (modes ``I;16*`` and ``I``, as 16-bit PNGs open) are
    scaled from 0-65535 first: PIL's own conversion clips them at 255, a nearly white image."""
    from PIL import Image

    if im.mode.startswith("I"):
        grey = np.clip(np.rint(np.asarray(im, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return im.convert("RGB")


def _array_to_tensor(a: np.ndarray, where: str) -> torch.Tensor:
    if a.ndim == 2:  # grey -> RGB
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"{where}: image array must be [H, W, 3] (or [H, W]), got shape {a.shape}")
    a = np.ascontiguousarray(a[..., :3])  # PIL's array view is read-only; torch wants writable memory
    if a.dtype == np.uint8:
        return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255.0
    if np.issubdtype(a.dtype, np.floating):
        return torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)
    raise TypeError(f"{where}: image array must be uint8 or float, got {a.dtype}")


def _check_range(t: torch.Tensor, where: str) -> torch.Tensor:
    d = t.detach()
    if d.numel() == 0:  # an empty image: to_tensor names it
        return t
    if not torch.isfinite(d).all():
        raise ValueError(f"{where}: image holds NaN or inf")
    lo, hi = float(d.min()), float(d.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"{where}: image has values in [{lo:.3g}, {hi:.3g}]; float images must be in [0, 1] "
                         "(divide 0-255 images by 255)")
    return t


def to_tensor(x: Any, where: str = "image") -> torch.Tensor:
    """One image of any accepted kind -> float ``[3, H, W]`` in [0, 1] (float tensors pass through)."""
    t = _any_to_tensor(x, where)
    if t.shape[-2] == 0 or t.shape[-1] == 0:
        raise ValueError(f"{where}: image is empty ({t.shape[-2]}x{t.shape[-1]} pixels)")
    return t


def _any_to_tensor(x: Any, where: str) -> torch.Tensor:
    if isinstance(x, (str, os.PathLike)):
        x = load_image(os.fspath(x), where)
    if isinstance(x, torch.Tensor):
        if x.dim() != 3 or x.shape[0] != 3:
            raise ValueError(f"{where}: image tensor must be [3, H, W], got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            return x.float() / 255.0
        if not x.is_floating_point():
            raise TypeError(f"{where}: image tensor must be float in [0, 1] or uint8, got {x.dtype}")
        return _check_range(x, where)
    if isinstance(x, np.ndarray):
        return _check_range(_array_to_tensor(x, where), where)
    if hasattr(x, "convert") and hasattr(x, "size"):  # PIL image
        return _array_to_tensor(np.asarray(as_rgb(x)), where)
    raise TypeError(f"{where}: expected a path, PIL image, array or tensor, got {type(x).__name__}")


def to_pil(x: Any, where: str = "image"):
    """One image of any accepted kind -> RGB PIL image (what transformers processors take)."""
    from PIL import Image

    if isinstance(x, Image.Image):
        return as_rgb(x)
    if isinstance(x, (str, os.PathLike)):
        return load_image(os.fspath(x), where)
    t = to_tensor(x, where).detach()
    return Image.fromarray((t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def split_images(images: Any) -> list:
    """A batch of images -> one entry per image: a float tensor ``[B, 3, H, W]`` (views, gradients
    kept), a uint8 array ``[B, H, W, 3]``, or a list of single images."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a tensor [B, 3, H, W], got shape {tuple(images.shape)}")
        return list(images.unbind(0))
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    raise TypeError(f"images: expected a tensor [B, 3, H, W], an array [B, H, W, 3] or a list of images, "
                    f"got {type(images).__name__}")


def as_image_list(images: Any) -> list[torch.Tensor]:
    """A batch of images (see :func:`split_images`) -> list of float ``[3, H, W]`` in [0, 1]."""
    out = [to_tensor(x, f"image {i}") for i, x in enumerate(split_images(images))]
    if not out:
        raise ValueError("images is empty")
    return out


def resize_center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 3, size, size]: bicubic resize of the shortest side, then centre crop (CLIP)."""
    h, w = img.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        img = F.interpolate(img, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - size) // 2, (nw - size) // 2
        img = img[..., top:top + size, left:left + size]
    return img


def preprocess(images: list[torch.Tensor], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """List of float [3, H, W] in [0, 1] -> normalised pixel values [B, 3, size, size] (differentiable)."""
    same = all(t.shape == images[0].shape for t in images)
    if same:  # one batched resize
        x = resize_center_crop(torch.stack(images), size)  # (B, 3, S, S)
    else:
        x = torch.cat([resize_center_crop(t.unsqueeze(0), size) for t in images])
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def list_image_files(folder: str) -> list[str]:
    """Image files of a folder in natural order (frame2 before frame10)."""
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)]
    key = lambda n: [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", n)]  # noqa: E731
    return [os.path.join(folder, n) for n in sorted(names, key=key)]
