"""Image inputs -> float tensors or PIL images, and the CLIP-style preprocessing done in torch
(differentiable).

An image is given as a file path, encoded file bytes (PNG / JPEG ..., as a dataset's binary column holds
them) or a ``datasets`` Image value ``{"bytes", "path"}``, a PIL image, a uint8 array ``[H, W, 3]`` (or ``[H, W]`` grey), a
float array ``[H, W, 3]`` in [0, 1], or a tensor ``[3, H, W]`` (float in [0, 1] or uint8).
:func:`to_tensor` turns any of them into a float ``[3, H, W]`` in [0, 1] (a float tensor stays the
same tensor, so gradients flow); :func:`preprocess` then resizes (shortest side), centre-crops and
normalises in torch, so a gradient flows from a score back to the pixels (ReFL needs that; a PIL
round trip would cut it). :func:`to_pil` gives the RGB PIL image a transformers processor wants.
Every error names the image (``where``) and, for files, the path. A path may be a ``file://`` path or a
base64 ``data:image`` URI (as in Qwen's message format); URLs are refused (nothing is downloaded).
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmreward.core.data import DataError, data_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageLoadError(DataError):
    """An image file is missing, corrupt or not an image."""


def _remote_kind(path: str) -> str:
    """``'a URL'`` / ``'a data: URI'`` when ``path`` is one (never fetched: scoring is offline), else ``''``."""
    low = path[:16].lower()
    if low.startswith(("http://", "https://", "ftp://", "s3://", "gs://")):
        return "a URL"
    if low.startswith("data:"):
        return "a data: URI"
    return ""


def local_path(path: str) -> str:
    """``path`` without a ``file://`` prefix (``file:///data/a.png`` -> ``/data/a.png``, as qwen-vl-utils
    reads Qwen's message format)."""
    return path[7:] if path[:7].lower() == "file://" else path


def _data_uri_image(uri: str, prefix: str):
    """The image a ``data:image/...;base64,`` URI holds (decoded locally: nothing is fetched)."""
    import base64
    import binascii

    head, sep, payload = uri.partition(",")
    # data:image/...;base64 and, as mmreward.core.data.read_records writes image bytes whose format it does
    # not know by their first bytes, data:application/octet-stream;base64 (PIL finds the format itself)
    if not sep or not head.lower().startswith(("data:image", "data:application/octet-stream")) \
            or not head.lower().endswith(";base64"):
        raise ImageLoadError(f"{prefix}image {uri[:40]!r}... is a data: URI that is not base64 image data "
                             "(expected data:image/<type>;base64,<data>)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageLoadError(f"{prefix}image data: URI {uri[:40]!r}... holds invalid base64: {e}") from e
    return _bytes_image(data, prefix, f"data: URI {uri[:40]!r}...")


def _bytes_image(data: bytes, prefix: str, what: str = "bytes"):
    """The image that encoded file bytes (PNG, JPEG, ...) hold, decoded now."""
    import io

    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageLoadError(f"{prefix}image {what} is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"{prefix}image {what} does not hold a readable image: {e}") from e


def image_ref(x: Any) -> Any:
    """An image as dataset rows give it -> what the image readers take (:func:`mmreward.core.data.inline_image`,
    the conversion ``read_records`` applies to image columns): encoded bytes and ``datasets`` Image values
    ``{"bytes", "path"}`` become ``data:`` URIs; anything else is returned as it is."""
    from mmreward.core.data import inline_image

    return inline_image(x)


def open_image(path: str, where: str = ""):
    """Open ``path`` as a PIL image in its own mode, decoded now (a corrupt file fails here, by name;
    ``where`` prefixes the error, e.g. ``input 3``). ``file://`` paths and base64 ``data:image`` URIs
    are read as qwen-vl-utils reads them; URLs are refused: nothing is downloaded."""
    from PIL import Image, UnidentifiedImageError

    prefix = f"{where}: " if where else ""
    path = data_path(local_path(path))  # "~/a.png": the home folder's, as data files and model folders read it
    if not os.path.isfile(path):
        kind = _remote_kind(path)
        if kind == "a data: URI":
            return _data_uri_image(path, prefix)
        if kind:
            raise ImageLoadError(f"{prefix}image {path[:80]!r} is {kind}; images are read from local files only "
                                 "(download it, or pass a PIL image / array)")
        if os.path.isdir(path):
            raise ImageLoadError(f"{prefix}image {path!r} is a folder, not an image file")
        raise ImageLoadError(f"{prefix}image file {path!r} does not exist")
    if os.path.getsize(path) == 0:  # a generation or copy that stopped before writing: say so, not "cannot identify"
        raise ImageLoadError(f"{prefix}image file {path!r} is empty (0 bytes)")
    try:
        with _open_file(path, prefix) as im:
            animated = getattr(im, "is_animated", False)  # asked before the first frame is decoded (it seeks)
            im.load()
            if animated:  # GIF / WebP / APNG: told, not silently cut to one frame
                from .scoring import note_animated

                note_animated(path, where)
            return im.copy()  # the first frame of an animated file; the file is closed after
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"{prefix}cannot read image {path!r}: {e}") from e


def _open_file(path: str, prefix: str):
    """``Image.open(path)``, and a warning naming the file and its size when it is past PIL's decompression-bomb
    limit (``Image.MAX_IMAGE_PIXELS``; it is then decoded in full): PIL's own warning names neither, so one huge
    image among thousands scored could not be found. (PIL's warning is not caught and replaced: a
    ``catch_warnings`` per image would reset Python's once-per-line registry, repeating other warnings.)"""
    import warnings

    from PIL import Image

    im = Image.open(path)
    limit = Image.MAX_IMAGE_PIXELS
    if limit and im.width * im.height > limit:
        from .scoring import _user_stacklevel

        try:
            warnings.warn(f"{prefix}image {path!r} is {im.width}x{im.height} pixels, past PIL's decompression-bomb "
                          f"limit of {limit} pixels: it is decoded in full (about {im.width * im.height * 12 / 1e9:.1f} "
                          "GB as float pixels); shrink it, or set PIL.Image.MAX_IMAGE_PIXELS if such images are "
                          "expected", Image.DecompressionBombWarning, stacklevel=_user_stacklevel())
        except BaseException:  # raised under an "error" filter: the file is closed
            im.close()
            raise
    return im


def load_image(path: str, where: str = "", background: Optional[tuple] = None):
    """Open ``path`` as an RGB PIL image (see :func:`open_image`; ``background``: see :func:`as_rgb`)."""
    return as_rgb(open_image(path, where), background, f"{where + ': ' if where else ''}image file {path!r}")


def as_rgb(im, background: Optional[tuple] = None, where: str = "image"):
    """An RGB copy of a PIL image. 16-bit greys (modes ``I;16*``, and ``I`` with values in 0-65535, as
    16-bit PNGs open in older Pillow) are scaled from 0-65535 first: PIL's own conversion clips them at
    255, a nearly white image. A 32-bit float grey (mode ``F``, e.g. a TIFF depth map) is read as a
    float image must be, in [0, 1]; an ``I`` image with values past 0-65535 (a 32-bit integer map) has
    no implied scale: both are refused naming the mode and the range, never clipped to black / white.
    ``background`` (an RGB triple): an RGBA image is pasted over it through its alpha, as
    qwen-vl-utils does with white; without it the alpha is dropped (PIL / transformers)."""
    from PIL import Image

    if im.mode.startswith("I") or im.mode == "F":
        return Image.fromarray(_grey_levels(im, where)).convert("RGB")
    if background is not None and im.mode == "RGBA":
        out = Image.new("RGB", im.size, tuple(background))
        out.paste(im, mask=im.split()[3])
        return out
    try:
        return im.convert("RGB")
    except ValueError as e:  # a mode PIL cannot make RGB (e.g. LAB)
        raise ValueError(f"{where}: cannot convert a PIL image in mode {im.mode!r} to RGB ({e}); convert it "
                         "to RGB first") from e


def _grey_levels(im, where: str) -> np.ndarray:
    """uint8 grey levels of a PIL image in mode ``I;16*`` / ``I`` (16-bit values) / ``F`` (floats in [0, 1])."""
    a = np.asarray(im)
    if a.size == 0:
        return np.zeros(a.shape, np.uint8)
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{where}: PIL image (mode {im.mode!r}) holds NaN or inf")
    lo, hi = float(a.min()), float(a.max())
    if im.mode == "F":
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{where}: PIL image in mode 'F' (32-bit float) has values in [{lo:.4g}, {hi:.4g}]; "
                             "float images must be in [0, 1] (scale it, e.g. to a depth range, or convert it to "
                             "8-bit 'L' / 'RGB' first)")
        return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    if lo < 0 or hi > 65535:
        raise ValueError(f"{where}: PIL image in mode {im.mode!r} (32-bit integer) has values in [{lo:.0f}, {hi:.0f}], "
                         "outside the 16-bit range 0-65535 it is read in; scale it to 0-65535 (I;16) or 0-255 "
                         "('L' / 'RGB') first")
    return np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)


def _array_to_tensor(a: np.ndarray, where: str) -> torch.Tensor:
    if a.ndim == 2:  # grey -> RGB
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"{where}: image array must be [H, W, 3] (or [H, W]), got shape {a.shape}{_layout_hint(a.shape, 'array')}")
    a = np.ascontiguousarray(a[..., :3])  # PIL's array view is read-only; torch wants writable memory
    if a.dtype == np.uint8:
        return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255.0
    if np.issubdtype(a.dtype, np.floating):
        return torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)
    hint = " (16-bit: pass a / 65535 as float)" if a.dtype == np.uint16 else \
        " (a mask: pass a.astype(np.uint8) * 255)" if a.dtype == bool else \
        " (0-255 values: pass a.astype(np.uint8))" if np.issubdtype(a.dtype, np.integer) else ""
    raise TypeError(f"{where}: image array must be uint8 or float, got {a.dtype}{hint}")


def _layout_hint(shape: tuple, kind: str) -> str:
    """What to do with an image of the other channel layout, one channel, or a batch of images (arrays are
    channels last, tensors channels first, as PIL / numpy and torch give them)."""
    if len(shape) == 4:  # a batch where one image goes
        return (f"; that is a batch of {shape[0]} image(s): give one input per image "
                f"({'x[0]' if shape[0] == 1 else 'x[i]'}, or list(x))")
    if len(shape) != 3:
        return ""
    if kind == "array" and shape[0] in (1, 3) and shape[-1] not in (1, 3, 4):
        return "; it looks channels-first: pass a.transpose(1, 2, 0)"
    if kind == "tensor" and shape[-1] in (1, 3) and shape[0] not in (1, 3):
        return "; it looks channels-last: pass x.permute(2, 0, 1)"
    if (shape[-1] if kind == "array" else shape[0]) == 1:
        return "; one channel: pass the grey image as [H, W] (a[..., 0])" if kind == "array" else \
            "; one channel: pass x.expand(3, -1, -1)"
    return ""


def _check_range(t: torch.Tensor, where: str) -> torch.Tensor:
    d = t.detach()
    if d.numel() == 0:  # an empty image: to_tensor names it
        return t
    if not torch.isfinite(d).all():
        raise ValueError(f"{where}: image holds NaN or inf")
    lo, hi = float(d.min()), float(d.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = "map [-1, 1] images (a diffusion VAE's output) with (x + 1) / 2" if lo >= -1 - 1e-3 and hi <= 1 + 1e-3 \
            else "divide 0-255 images by 255"
        raise ValueError(f"{where}: image has values in [{lo:.3g}, {hi:.3g}]; float images must be in [0, 1] ({hint})")
    return t


def to_tensor(x: Any, where: str = "image") -> torch.Tensor:
    """One image of any accepted kind -> float ``[3, H, W]`` in [0, 1] (float tensors pass through)."""
    t = _any_to_tensor(x, where)
    if t.shape[-2] == 0 or t.shape[-1] == 0:
        raise ValueError(f"{where}: image is empty ({t.shape[-2]}x{t.shape[-1]} pixels)")
    return t


def _any_to_tensor(x: Any, where: str) -> torch.Tensor:
    x = _decode_inline(x, where)
    if isinstance(x, (str, os.PathLike)):
        x = load_image(os.fspath(x), where)
    if isinstance(x, torch.Tensor):
        if x.dim() != 3 or x.shape[0] != 3:
            raise ValueError(f"{where}: image tensor must be [3, H, W], got {tuple(x.shape)}"
                             f"{_layout_hint(tuple(x.shape), 'tensor')}")
        if x.dtype == torch.uint8:
            return x.float() / 255.0
        if not x.is_floating_point():
            raise TypeError(f"{where}: image tensor must be float in [0, 1] or uint8, got {x.dtype}")
        return _check_range(x, where)
    if isinstance(x, np.ndarray):
        return _check_range(_array_to_tensor(x, where), where)
    if hasattr(x, "convert") and hasattr(x, "size"):  # PIL image
        return _array_to_tensor(np.asarray(as_rgb(_decoded(x, where), where=where)), where)
    hint = f" of {len(x)}: an image is one file or array (a list of frames is a video: the 'video' field, " \
        "VideoPrompt)" if isinstance(x, (list, tuple)) else ""
    raise TypeError(f"{where}: expected a path, image bytes, PIL image, array or tensor, got {type(x).__name__}{hint}")


def to_pil(x: Any, where: str = "image", background: Optional[tuple] = None):
    """One image of any accepted kind -> RGB PIL image (what transformers processors take);
    ``background``: see :func:`as_rgb`."""
    from PIL import Image

    x = _decode_inline(x, where)
    if isinstance(x, Image.Image):
        return as_rgb(_not_empty(x, where), background, where)
    if isinstance(x, (str, os.PathLike)):
        return load_image(os.fspath(x), where, background)
    t = to_tensor(x, where).detach()
    return Image.fromarray((t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


# modes PIL resizes as they are (torchvision's Resize on a PIL image keeps the mode; "1" / "P" resize
# nearest, "LA" / "RGBA" with premultiplied alpha); others are made RGB first (16-bit greys scaled)
RESIZABLE_MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr")


def to_pil_any_mode(x: Any, where: str = "image"):
    """One image -> PIL image in the mode it was decoded in (PIL inputs and files; for pipelines that
    resize before converting to RGB, as ImageReward's torchvision transform does), RGB otherwise."""
    from PIL import Image

    x = _decode_inline(x, where)
    if isinstance(x, (str, os.PathLike)):
        x = open_image(os.fspath(x), where)
    if isinstance(x, Image.Image) and x.mode in RESIZABLE_MODES:
        return _not_empty(x, where)
    return to_pil(x, where)


def _decode_inline(x: Any, where: str) -> Any:
    """Encoded image bytes / a ``datasets`` Image value ``{"bytes", "path"}`` -> a PIL image (or its path);
    other inputs unchanged."""
    if isinstance(x, dict) and x and set(x) <= {"bytes", "path"}:  # {"path": ...} alone too (a trimmed Image value)
        data, path = x.get("bytes"), x.get("path")
        if isinstance(data, (bytes, bytearray)) and data:
            x = data
        elif isinstance(path, str) and path:
            return path
        else:
            raise ValueError(f"{where}: image {{'bytes', 'path'}} holds neither bytes nor a path (a null image)")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return _bytes_image(bytes(x), f"{where}: ", "bytes")
    return x


def _decoded(im, where: str):
    """A PIL image with its pixels decoded: ``Image.open`` reads them only when first used, so a file that is
    truncated, or was closed (the image used after its ``with Image.open(...)`` block), fails here, naming
    the input (PIL says "image file is truncated" or raises a bare AssertionError)."""
    from PIL import Image

    name = getattr(im, "filename", "") or ""
    of = f" of {name!r}" if isinstance(name, str) and name else ""
    if getattr(im, "fp", None) is None and getattr(im, "tile", None):  # opened lazily, then its file closed
        raise ImageLoadError(f"{where}: PIL image{of} was used after its file was closed (outside its "
                             "`with Image.open(...)` block): call .load() or .convert('RGB') inside the block, or "
                             "pass the path")
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, AssertionError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"{where}: cannot read the PIL image{of}: {e or type(e).__name__}") from e
    return im


def _not_empty(im, where: str):
    im = _decoded(im, where)
    if im.width == 0 or im.height == 0:
        raise ValueError(f"{where}: image is empty ({im.height}x{im.width} pixels)")
    return im


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


# A resize whose full intermediate (the shortest side at ``size``, the other scaled alike) would hold more
# than this many pixels computes only the centre crop (an extreme aspect ratio: a 1 x 20000 strip would
# need a 224 x 4 480 000 intermediate, gigabytes); other images take the one-call resize (as torchvision).
FULL_RESIZE_MAX_PIXELS = 1 << 22


def _cubic_aa(x: np.ndarray) -> np.ndarray:
    """The bicubic kernel (a = -0.5) of torch's / PIL's antialiased resize."""
    a, x = -0.5, np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _aa_bicubic_rows(in_size: int, out_size: int, start: int, count: int) -> tuple[np.ndarray, int, int]:
    """Weights ``[count, hi - lo]`` of output pixels ``start .. start + count`` of an antialiased bicubic
    resize ``in_size -> out_size`` over input pixels ``lo .. hi`` (torch's ``antialias=True`` formula)."""
    scale = in_size / out_size
    support, inv = (2.0 * scale, 1.0 / scale) if scale >= 1.0 else (2.0, 1.0)
    center = scale * (np.arange(start, start + count, dtype=np.float64) + 0.5)
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64)
    lo, hi = int(xmin.min()), int(xmax.max())
    j = np.arange(lo, hi)
    w = _cubic_aa((j[None, :] - center[:, None] + 0.5) * inv) * ((j[None, :] >= xmin[:, None]) & (j[None, :] < xmax[:, None]))
    return w / w.sum(axis=1, keepdims=True), lo, hi


def _resize_center_crop_window(img: torch.Tensor, size: int, nh: int, nw: int, top: int, left: int) -> torch.Tensor:
    """The ``size`` x ``size`` window at (top, left) of the bicubic antialiased resize of ``img`` to
    (nh, nw), without the full resize: the long side is resampled for the window's pixels only (a weight
    matrix, differentiable), the other side by ``F.interpolate``. Equal to the full resize up to float
    rounding."""
    h, w = img.shape[-2:]
    if nh > size:
        wt, lo, hi = _aa_bicubic_rows(h, nh, top, size)
        rows = torch.from_numpy(wt).to(img.device, img.dtype)
        img = torch.einsum("oh,nchw->ncow", rows, img[..., lo:hi, :])
        h = size
    if nw > size:
        wt, lo, hi = _aa_bicubic_rows(w, nw, left, size)
        cols = torch.from_numpy(wt).to(img.device, img.dtype)
        img = torch.einsum("ow,nchw->ncho", cols, img[..., lo:hi])
        w = size
    if (h, w) != (size, size):
        img = F.interpolate(img, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return img


def resize_center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 3, size, size]: bicubic resize of the shortest side, then centre crop (CLIP).
    An extreme aspect ratio (see ``FULL_RESIZE_MAX_PIXELS``) computes the crop alone."""
    h, w = img.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        top, left = (nh - size) // 2, (nw - size) // 2
        if nh * nw > FULL_RESIZE_MAX_PIXELS:
            return _resize_center_crop_window(img, size, nh, nw, top, left)
        img = F.interpolate(img, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
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
    """Image files of a folder in natural order (frame2 before frame10). Hidden files are skipped
    (``._frame1.png``: the metadata macOS writes beside each file on other file systems), and so are
    folders."""
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
             and os.path.isfile(os.path.join(folder, n))]
    key = lambda n: [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", n)]  # noqa: E731
    return [os.path.join(folder, n) for n in sorted(names, key=key)]
