"""Image inputs -> float tensors, and the CLIP-style preprocessing done in torch (differentiable).

Scorers accept images as a float tensor ``[B, 3, H, W]`` in [0, 1], a list of ``[3, H, W]`` tensors,
PIL images, uint8 arrays ``[H, W, 3]`` or file paths. Everything becomes a float ``[3, H, W]`` in
[0, 1]; :func:`preprocess` then resizes (shortest side), centre-crops and normalises in torch, so a
gradient flows from the score back to the pixels (ReFL needs that; a PIL round trip would cut it).
"""
from __future__ import annotations

import os
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

ImagesT = Union[torch.Tensor, Sequence[Any], Any]


class ImageLoadError(ValueError):
    """An image file is missing, corrupt or not an image."""


def load_image(path: str):
    """Open ``path`` as an RGB PIL image (decoded now, so a corrupt file fails here, by name)."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ImageLoadError(f"image file {path!r} does not exist")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageLoadError(f"cannot read image {path!r}: {e}") from e


def _array_to_tensor(a: np.ndarray, where: str) -> torch.Tensor:
    if a.ndim == 2:  # grey -> RGB
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"{where}: image array must be [H, W, 3] (or [H, W]), got shape {a.shape}")
    a = a[..., :3]
    if not a.flags.writeable:  # PIL's array view is read-only; torch wants to own writable memory
        a = a.copy()
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0
    if np.issubdtype(a.dtype, np.floating):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)
    raise TypeError(f"{where}: image array must be uint8 or float, got {a.dtype}")


def _one_image(x: Any, where: str) -> torch.Tensor:
    """One image of any accepted kind -> float [3, H, W]."""
    if isinstance(x, (str, os.PathLike)):
        x = load_image(os.fspath(x))
    if isinstance(x, torch.Tensor):
        if x.dim() != 3 or x.shape[0] != 3:
            raise ValueError(f"{where}: image tensor must be [3, H, W], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{where}: image tensor must be float in [0, 1], got {x.dtype}")
        return x
    if isinstance(x, np.ndarray):
        return _array_to_tensor(x, where)
    if hasattr(x, "convert") and hasattr(x, "size"):  # PIL image
        return _array_to_tensor(np.asarray(x.convert("RGB")), where)
    raise TypeError(f"{where}: expected a path, PIL image, array or tensor, got {type(x).__name__}")


def as_image_list(images: ImagesT) -> list[torch.Tensor]:
    """Any accepted image input -> list of float [3, H, W] in [0, 1] (batched tensors stay views)."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a float tensor [B, 3, H, W], got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be float in [0, 1], got {images.dtype}")
        out = list(images.unbind(0))
    elif isinstance(images, (str, os.PathLike)) or hasattr(images, "convert"):
        out = [_one_image(images, "image 0")]
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        out = [_one_image(a, f"image {i}") for i, a in enumerate(images)]
    elif isinstance(images, Sequence) or isinstance(images, np.ndarray):
        out = [_one_image(x, f"image {i}") for i, x in enumerate(images)]
    else:
        raise TypeError(f"images: expected a tensor, a list of images or paths, got {type(images).__name__}")
    if not out:
        raise ValueError("images is empty")
    for i, t in enumerate(out):
        d = t.detach()
        if not torch.isfinite(d).all():
            raise ValueError(f"image {i} holds NaN or inf")
        lo, hi = float(d.min()), float(d.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"image {i} has values in [{lo:.3g}, {hi:.3g}]; float images must be in [0, 1] "
                             "(divide 0-255 images by 255)")
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
    import re

    exts = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
    names = [n for n in os.listdir(folder) if n.lower().endswith(exts)]
    key = lambda n: [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", n)]
    return [os.path.join(folder, n) for n in sorted(names, key=key)]
