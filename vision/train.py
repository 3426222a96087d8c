"""Train an image scorer on ranked image sets (ImageReward's listwise loss) on the core Trainer.

Data: the synthetic shapes generator (:mod:`mmreward.vision.synthetic`) or a JSON / JSONL file whose
rows are ``{"prompt": str, "images": [path, ...], "ranks": [int, ...]}`` (paths relative to the file;
rank 0 = best; equal ranks form no pair; sets may have different sizes, padded with rank −1).

Loss: ``listwise`` — :func:`mmreward.ops.listwise_loss` over every pair of a set (ImageReward);
``pairwise`` — the same pairs through :func:`mmreward.ops.pairwise_loss` (adds label smoothing).
Logs, snapshots, resume and curves come from :class:`mmreward.core.trainer.Trainer`; the trained
scorer is written to ``<output_dir>/model`` in ``from_pretrained`` form.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from mmreward.core.data import DataError, describe, read_records
from mmreward.core.device import resolve_device
from mmreward.core.inputs import ImagePrompt
from mmreward.core.model import check_batch_size, check_ranges, config_to_dict, read_config
from mmreward.core.train import seed_everything
from mmreward.core.trainer import TrainConfig, Trainer
from mmreward.ops import listwise_loss, pairwise_loss_and_accuracy

from . import synthetic
from .image_reward import ConvTextConfig, ImageRewardModel
from .images import ImageLoadError, as_image_list, image_ref, local_path, preprocess, split_images
from .scoring import eval_mode, model_folder, summed_notes, user_path
from .testing import tiny_clip_config, word_tokenizer

LOSSES = ("listwise", "pairwise")


@dataclass
class ImageRewardTrainConfig:
    data: str = field(default="synthetic", metadata={"help": "'synthetic' or a JSON / JSONL file of {prompt, images, ranks} rows"})
    eval_data: str = field(default="", metadata={
        "help": "held-out JSON / JSONL of {prompt, images, ranks} rows (default: none; with synthetic data, "
                "n_eval sets drawn with data_seed+1)"})
    split: str = field(default="", metadata={
        "help": "split of --data when it holds several (a saved DatasetDict, a .json object of lists)"})
    eval_split: str = field(default="", metadata={"help": "split of --eval-data when it holds several"})
    n_train: int = field(default=2000, metadata={"help": "synthetic: number of training sets"})
    n_eval: int = field(default=200, metadata={"help": "synthetic: number of held-out sets"})
    set_size: int = field(default=4, metadata={"help": "synthetic: images per ranked set (2..5)"})
    image_size: int = field(default=32, metadata={"help": "the scorer's input side in pixels (synthetic: also the rendered "
                                                          "image side, >= 24)"})
    data_seed: int = field(default=0, metadata={"help": "synthetic: generator seed"})
    backbone: str = field(default="conv", metadata={
        "help": "conv | clip-tiny (random tiny CLIP + word tokenizer) | a transformers model folder | an ImageReward folder"})
    embed_dim: int = field(default=64, metadata={"help": "conv / clip-tiny: embedding width"})
    fusion: str = field(default="product", metadata={"help": "product | product_concat"})
    head_dropout: bool = field(default=True, metadata={
        "help": "new heads: ImageReward's dropout (0.2, 0.2, 0.1); --no-head-dropout for small from-scratch models"})
    loss: str = field(default="listwise", metadata={"help": "listwise (fused listwise op) | pairwise (fused pairwise op)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "pairwise loss only: label smoothing"})
    normalize_on: int = field(default=256, metadata={"help": "fit the score mean/std on this many training images (0: skip)"})
    device: str = field(default="cpu", metadata={"help": "train on this device: cpu | cuda | cuda:N | auto"})

    def __post_init__(self) -> None:
        # "~/sets.jsonl" (quoted on a command line, or from Python): the home folder's, as read_records reads it;
        # the image paths of its rows are then read relative to that file, not to a "./~" folder
        self.data, self.eval_data = user_path(self.data), user_path(self.eval_data)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        check_ranges(self, counts=("n_train", "n_eval", "embed_dim", "image_size"), naturals=("data_seed", "normalize_on"))
        if self.data == "synthetic" and self.image_size < 24:  # refused by the renderer as "size", unnamed
            raise ValueError(f"image_size must be >= 24 with data 'synthetic' (three shapes drawn in one half of "
                             f"the image), got {self.image_size}")
        if self.normalize_on == 1:  # fit_normalization needs two images: found out only after the training
            raise ValueError("normalize_on must be 0 (skip) or >= 2 (a mean and a std need two scores), got 1")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing and self.loss != "pairwise":
            raise ValueError(f"label_smoothing applies to the pairwise loss only (loss is {self.loss!r})")
        # a split of data there is none of would be silently ignored
        if self.split and self.data == "synthetic":
            raise ValueError(f"split {self.split!r} chooses a split of a data file; data 'synthetic' has none")
        if self.eval_split and not self.eval_data:
            raise ValueError(f"eval_split {self.eval_split!r} chooses a split of eval_data, which is not given")


@dataclass
class RankedExample:
    prompt: str
    images: Any  # uint8 [K, H, W, 3] array, list of paths, or float [K, 3, H, W]
    ranks: np.ndarray  # (K,)
    where: str = field(default="", compare=False)  # "data.jsonl: row 3" (a set read from a file): a bad image names it


RANKED_LAYOUTS = (
    "{prompt, images, ranks} (mmreward; rank 0 = best)",
    "{prompt, image | image_path | file_path: [...], rank: [...]} (HPDv2 test; lower rank = better)",
    "{prompt, image | image_path | file_path: [...], human_preference: [...]} (HPDv2 train; 1 = preferred)",
    "{prompt, generations: [...], ranking: [...]} (ImageReward's training json; 1 = best)",
    "{caption, jpg_0, jpg_1, label_0, label_1[, has_label]} (Pick-a-Pic; label 1 = preferred, 0.5 = tie)",
    "one row per image {prompt_id, prompt, image | image_path, rank} (ImageRewardDB; grouped by prompt_id)",
)


def _integral(values: Any) -> Optional[list[int]]:
    """``values`` as a list of integers >= 0 (floats that are whole numbers included), else None."""
    if not isinstance(values, (list, tuple)):
        return None
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) \
                or v != int(v) or not 0 <= v < 2 ** 63:
            return None
        out.append(int(v))
    return out


def _first_list(row: dict, keys: Sequence[str]) -> tuple[Optional[str], Any]:
    for k in keys:
        v = row.get(k)
        if isinstance(v, list) and v and not all(x is None for x in v):
            return k, v
    return None, None


def _published_ranked_row(row: dict, where: str) -> Optional[dict]:
    """One row of a published layout (see :data:`RANKED_LAYOUTS`) as ``{"prompt", "images", "ranks"}``;
    None for a Pick-a-Pic row without a label (``has_label`` false: nothing to learn from)."""
    if "images" in row or "ranks" in row:
        return row
    if "jpg_0" in row or "label_0" in row:  # Pick-a-Pic (yuvalkirstain/pickapic_v1 / v2)
        missing = [k for k in ("caption", "jpg_0", "jpg_1", "label_0", "label_1") if row.get(k) is None]
        if missing:
            raise DataError(f"{where}: Pick-a-Pic row without field {missing[0]!r} (a Pick-a-Pic row has caption, "
                            "jpg_0, jpg_1, label_0, label_1)")
        if "has_label" in row and not row["has_label"]:
            return None
        labels = (row["label_0"], row["label_1"])
        ranks = {(1, 0): [0, 1], (0, 1): [1, 0], (0.5, 0.5): [0, 0]}.get(
            tuple(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in labels))
        if ranks is None:
            raise DataError(f"{where}: Pick-a-Pic labels (label_0, label_1) must be (1, 0), (0, 1) or (0.5, 0.5) "
                            f"(a tie), got {labels}")
        return {"prompt": row["caption"], "images": [row["jpg_0"], row["jpg_1"]], "ranks": ranks}
    if "generations" in row or "ranking" in row:  # ImageReward's train.json / test.json
        return {"prompt": row.get("prompt"), "images": row.get("generations"), "ranks": row.get("ranking")}
    key, images = _first_list(row, ("image", "image_path", "file_path"))
    if key is not None and ("rank" in row or "human_preference" in row):  # HPDv2
        rank = _integral(row.get("rank"))
        if rank is not None and len(rank):
            return {"prompt": row.get("prompt"), "images": images, "ranks": rank}
        pref = _integral(row.get("human_preference"))
        if pref is None or not pref:
            raise DataError(f"{where}: HPDv2 row: field 'rank' (lower = better) or 'human_preference' (1 = "
                            f"preferred) must be a list of integers >= 0, got rank {describe(row.get('rank'))}, "
                            f"human_preference {describe(row.get('human_preference'))}")
        return {"prompt": row.get("prompt"), "images": images, "ranks": [max(pref) - p for p in pref]}
    raise DataError(f"{where}: not a ranked image set: missing field 'images' / 'ranks' (fields present: "
                    f"{sorted(map(str, row))[:12]}); rename the fields to one of the layouts read: "
                    + "; ".join(RANKED_LAYOUTS))


def _group_per_image_rows(rows: list, path: str) -> Optional[list]:
    """ImageRewardDB's per-image rows (``prompt_id``, ``prompt``, ``image`` / ``image_path``, ``rank``) -> one
    ``{"prompt", "images", "ranks"}`` set per ``prompt_id`` (in order of first appearance); None when the
    rows are not of that layout."""
    def per_image(r: Any) -> bool:
        return isinstance(r, dict) and "prompt_id" in r and "rank" in r and not isinstance(r["rank"], list) \
            and "images" not in r
    if not rows or not all(per_image(r) for r in rows):
        if any(per_image(r) for r in rows):
            i = next(i for i, r in enumerate(rows) if not per_image(r))
            raise DataError(f"{path}: row {i}: rows of one image each (ImageRewardDB: prompt_id, prompt, image, "
                            "rank) must all have fields 'prompt_id' and a single 'rank' (this one does not)")
        return None
    groups: dict = {}
    for i, r in enumerate(rows):
        where = f"{path}: row {i} (prompt_id {r['prompt_id']!r})"
        image = next((r[k] for k in ("image", "image_path", "file_path") if r.get(k) is not None), None)
        if image is None:
            raise DataError(f"{where}: field 'image' (or 'image_path') is missing")
        rank = _integral([r["rank"]])
        if rank is None:
            raise DataError(f"{where}: field 'rank' must be an integer >= 0 (lower = better), got {describe(r['rank'])}")
        g = groups.setdefault(str(r["prompt_id"]), {"prompt": r.get("prompt"), "images": [], "ranks": [], "row": i})
        if r.get("prompt") != g["prompt"]:
            raise DataError(f"{where}: field 'prompt' {describe(r.get('prompt'))} differs from row {g['row']}'s "
                            f"{describe(g['prompt'])} of the same prompt_id")
        g["images"].append(image)
        g["ranks"].append(rank[0])
    return [{"prompt": g["prompt"], "images": g["images"], "ranks": g["ranks"], "_prompt_id": pid}
            for pid, g in groups.items()]


def read_ranked_sets(path: str, split: Optional[str] = None) -> list[RankedExample]:
    """Ranked image sets of a data file (JSON / JSONL / parquet), a saved dataset folder or a downloaded
    dataset repository (``split``: one split of it); a bad row raises DataError naming the file, row and field.

    Rows: ``{"prompt", "images": [...], "ranks": [...]}`` (rank 0 = best, equal ranks form no pair) or one of
    the published layouts below, read as their authors mean them (:data:`RANKED_LAYOUTS`):

    * HPDv2 (``ymhao/HPDv2``, HPSv2's ``train.json`` / ``test.json``): ``prompt``, images in ``image`` (the
      dataset's Image list) or ``image_path`` / ``file_path`` (paths), and ``rank`` (test: lower = better) or
      ``human_preference`` (train: 1 = the preferred image, so ``[1, 0]`` reads as ranks ``[0, 1]``);
    * ImageReward's ``train.json``: ``prompt``, ``generations`` (paths), ``ranking`` (1 = best);
    * ImageRewardDB (``THUDM/ImageRewardDB``): one row per image, ``prompt_id``, ``prompt``, ``image`` (or
      ``image_path``) and ``rank`` (1 = best), grouped into one set per ``prompt_id``;
    * Pick-a-Pic (``yuvalkirstain/pickapic_v2``): ``caption``, ``jpg_0`` / ``jpg_1`` (image bytes),
      ``label_0`` / ``label_1``: (1, 0) reads as ranks [0, 1], (0, 1) as [1, 0], (0.5, 0.5) (a tie) as
      [0, 0], which forms no pair (PickScore instead fits ties to equal probabilities); rows with
      ``has_label`` false are left out, with one warning counting them.

    Images may be paths (relative to the data file), ``file://`` paths, base64 ``data:`` URIs, encoded
    bytes or ``datasets`` Image values (``{"bytes", "path"}``)."""
    path = user_path(path)
    rows = read_records(path, split=split or None)
    base = os.path.abspath(path) if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    grouped = _group_per_image_rows(rows, path)
    out, unlabelled = [], 0
    for i, row in enumerate(grouped if grouped is not None else rows):
        where = f"{path}: " + (f"prompt_id {row['_prompt_id']!r} (set {i})" if grouped is not None else f"row {i}")
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        row = _published_ranked_row(row, where)
        if row is None:
            unlabelled += 1
            continue
        prompt, images, ranks = row.get("prompt"), row.get("images"), row.get("ranks")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where}: field 'prompt' must be a non-empty string, got {describe(prompt)}")
        images = [image_ref(p) for p in images] if isinstance(images, list) else images
        if isinstance(images, str) and images.lstrip().startswith("[") and \
                path.lower().removesuffix(".gz").endswith((".csv", ".tsv")):
            # a CSV cell is text: a list written into it is a string, never a list of paths
            raise DataError(f"{where}: field 'images' is the text {describe(images)}: a CSV cell holds no list; "
                            "write the ranked sets as JSON / JSONL / parquet, or as one row per image "
                            "(prompt_id, prompt, image, rank: the ImageRewardDB layout), which a CSV file holds")
        if not isinstance(images, list) or len(images) < 2 or not all(isinstance(p, str) and p for p in images):
            raise DataError(f"{where}: field 'images' must be a list of >= 2 paths (or data: URIs / image "
                            f"bytes), got {describe(images)}")
        if not isinstance(ranks, list) or len(ranks) != len(images) or \
                not all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < 2 ** 63 for r in ranks):
            raise DataError(f"{where}: field 'ranks' must be {len(images)} integers >= 0 (one per image), "
                            f"got {describe(ranks)}")
        paths = [_resolve_image(p, base) for p in images]
        missing = [j for j, p in enumerate(paths) if not p.startswith("data:") and not os.path.isfile(p)]
        if missing:
            p = paths[missing[0]]
            what = "is a folder, not an image file" if os.path.isdir(p) else "does not exist"
            given = local_path(images[missing[0]])
            if not os.path.isdir(p) and not os.path.isabs(given) and os.path.isfile(given):
                # a path written relative to the working folder (where the command ran), not to the data file
                what += (f" (image paths are read relative to the data file's folder {base}; {given!r} exists in the "
                         "working folder: write the paths relative to the data file, or absolute)")
            raise DataError(f"{where}: field 'images': image {missing[0]}: image file {p!r} {what}")
        out.append(RankedExample(prompt, paths, np.asarray(ranks, np.int64), where))
    if unlabelled:
        warnings.warn(f"{path}: {unlabelled} Pick-a-Pic row(s) with has_label false (no preference) left out",
                      stacklevel=2)
    if not out:
        raise DataError(f"{path} holds no rows" + (f" in split {split!r}" if split else "")
                        + (f" with a label ({unlabelled} have has_label false)" if unlabelled else ""))
    return out


def _resolve_image(p: str, base: str) -> str:
    """An image string of a row: a ``data:`` URI as it is, a ``file://`` path without its prefix, a relative
    path joined to the data file's folder."""
    from mmreward.core.data import media_path

    return p if p[:5].lower() == "data:" else media_path(local_path(p), base)


def as_ranked_sets(examples: Any, what: str = "examples") -> list[RankedExample]:
    """``examples`` (RankedExample items or rows ``{"prompt", "images", "ranks"}``, image paths as given)
    checked as :func:`read_ranked_sets` checks a file's rows: a bad item raises DataError naming it and its
    field, not an AttributeError / tensor-shape error from inside the batch."""
    if isinstance(examples, (str, bytes, dict)) or not isinstance(examples, Sequence):
        raise TypeError(f"{what} must be a list of RankedExample items or rows {{'prompt', 'images', 'ranks'}}, "
                        f"got {type(examples).__name__} (read a file with read_ranked_sets(path))")
    out = []
    for i, e in enumerate(examples):
        where = f"{what}[{i}]"
        if isinstance(e, dict):
            if "images" not in e and "ranks" not in e:  # a published layout (read_ranked_sets lists them)
                mapped = _published_ranked_row(e, where)
                if mapped is None:
                    raise DataError(f"{where}: a Pick-a-Pic row with has_label false holds no preference")
                e = {**mapped, "images": [image_ref(x) for x in mapped["images"]]
                     if isinstance(mapped.get("images"), list) else mapped.get("images")}
            missing = [k for k in ("prompt", "images", "ranks") if k not in e]
            if missing:
                raise DataError(f"{where}: missing field {missing[0]!r}")
            prompt, images, ranks = e["prompt"], e["images"], e["ranks"]
        elif isinstance(e, RankedExample):
            prompt, images, ranks = e.prompt, e.images, e.ranks
        else:
            raise TypeError(f"{where} must be a RankedExample or a row dict, got {type(e).__name__}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where}: field 'prompt' must be a non-empty string, got {describe(prompt)}")
        try:
            k = len(split_images(images))
        except (TypeError, ValueError) as err:
            raise DataError(f"{where}: field 'images': {err}") from None
        if k < 1:
            raise DataError(f"{where}: field 'images' holds no image")
        r = np.asarray(ranks) if not isinstance(ranks, (str, bytes, dict)) else None
        if r is None or r.ndim != 1 or len(r) != k or not np.issubdtype(r.dtype, np.integer) or (r < 0).any():
            raise DataError(f"{where}: field 'ranks' must be {k} integers >= 0 (one per image), got {describe(ranks)}")
        out.append(e if isinstance(e, RankedExample) else RankedExample(prompt, images, r.astype(np.int64)))
    return out


def require_ranked_pair(examples: Sequence[RankedExample], what: str, purpose: str = "to evaluate") -> None:
    """DataError unless some set ranks two images differently: with every rank equal there is no pair
    to learn from or to count, and the pairwise accuracy would read 0.0 instead of "undefined"."""
    if not any(len(np.unique(np.asarray(e.ranks)[np.asarray(e.ranks) >= 0])) > 1 for e in examples):
        raise DataError(f"{what}: no set ranks two images differently (every set's ranks are equal), so there is "
                        f"no ranked pair {purpose}")


def warn_self_pairs(examples: Sequence[RankedExample], what: str, stacklevel: int = 3) -> None:
    """One warning when every ranked pair of the training sets compares an image file with itself (the
    same path at two ranks): both sides score alike, so the run gets no gradient from its data."""
    pairs = same = 0
    for e in examples:
        if not (isinstance(e.images, (list, tuple)) and all(isinstance(p, str) for p in e.images)):
            return  # images in memory: not compared
        ranks = [int(r) for r in np.asarray(e.ranks)]
        for i in range(len(ranks)):
            for j in range(i + 1, len(ranks)):
                if ranks[i] >= 0 and ranks[j] >= 0 and ranks[i] != ranks[j]:
                    pairs += 1
                    same += os.path.abspath(e.images[i]) == os.path.abspath(e.images[j])
    if pairs and same == pairs:
        warnings.warn(f"{what}: all {pairs} ranked pairs of the training sets compare an image file with itself "
                      "(one path at two ranks): both images score alike, so the run learns nothing from its data",
                      stacklevel=stacklevel)


def _set_key(e: RankedExample) -> Optional[tuple]:
    if not (isinstance(e.images, (list, tuple)) and all(isinstance(p, str) for p in e.images)):
        return None  # images in memory (the synthetic sets): not compared
    import hashlib

    # a data: URI (an image of a parquet file) by its digest: too large to keep twice
    return e.prompt, tuple(sorted(hashlib.sha1(p.encode()).hexdigest() if p.startswith("data:") else os.path.abspath(p)
                                  for p in e.images))


def warn_shared_sets(train: Sequence[RankedExample], held: Sequence[RankedExample], what: str) -> None:
    """One warning when held-out sets are also training sets (the same prompt and image files, e.g. the
    training file given again as --eval-data): the held-out accuracy would then measure memorisation."""
    seen = {k for k in map(_set_key, train) if k is not None}
    shared = [e for e in held if _set_key(e) in seen]
    if shared:
        first = shared[0].where or f"prompt {shared[0].prompt!r}"
        warnings.warn(f"held-out data {what}: {len(shared)} of its {len(held)} ranked sets are also training sets "
                      f"(the same prompt and images; first: {first}): the held-out accuracy counts them "
                      "as unseen, so it overstates how the scorer generalises", stacklevel=3)


def synthetic_examples(n: int, set_size: int, image_size: int, seed: int) -> list[RankedExample]:
    return [RankedExample(s.prompt, s.images, s.ranks) for s in synthetic.ranked_sets(n, set_size, image_size, seed)]


def make_collate(model: ImageRewardModel):
    """examples -> {"prompts": [B*K], "pixel_values": (B*K, 3, S, S), "ranks": (B, K)}; short sets are
    padded with zero images of rank −1 (ignored by the losses)."""
    c = model.config

    def collate(examples: Sequence[RankedExample], start: Optional[int] = None) -> dict:
        # start: the index of examples[0] in the caller's list, so that an image error names its set
        k = max(len(e.ranks) for e in examples)
        ranks = torch.full((len(examples), k), -1, dtype=torch.long)
        pixels, prompts = [], []
        for b, e in enumerate(examples):
            try:
                pv = preprocess(as_image_list(e.images), c.image_size, c.image_mean, c.image_std)  # (k_b, 3, S, S)
            except ImageLoadError as err:
                # a set read from a file is named by its file and row (the Trainer's batches carry no index)
                where = f"{e.where}: field 'images'" if e.where else \
                    f"ranked set {start + b}" if start is not None else f"ranked set with prompt {e.prompt!r}"
                raise ImageLoadError(f"{where}: {err}") from err
            pixels.append(torch.cat([pv, pv.new_zeros(k - len(pv), *pv.shape[1:])]))
            ranks[b, : len(e.ranks)] = torch.as_tensor(e.ranks)
            prompts += [e.prompt] * k
        return {"prompts": prompts, "pixel_values": torch.cat(pixels), "ranks": ranks}

    return collate


def _pairs(ranks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, better, worse) index triples of every pair 0 <= rank_i < rank_j in each row."""
    valid = ranks >= 0
    better = (ranks.unsqueeze(2) < ranks.unsqueeze(1)) & valid.unsqueeze(2) & valid.unsqueeze(1)  # (B, K, K)
    return better.nonzero(as_tuple=True)


def ranked_loss(loss: str = "listwise", label_smoothing: float = 0.0):
    """``loss_fn(model, batch) -> (loss, {"accuracy": pairwise accuracy of the batch})`` for the Trainer."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")

    def loss_fn(model, batch):
        ranks = batch["ranks"]
        r = model(batch["prompts"], batch["pixel_values"]).view(ranks.shape)  # (B, K)
        b, i, j = _pairs(ranks)
        if not len(b):
            # every set of this batch is a tie (valid data: equal ranks form no pair): nothing to learn from
            # here, a zero loss that keeps the graph (DDP, accumulation) and an undefined accuracy, not 0.0
            return r.sum() * 0.0, {"accuracy": float("nan")}
        if loss == "listwise":
            value = listwise_loss(r, ranks)
            acc = (r[b, i] > r[b, j]).float().mean()
        else:
            value, acc = pairwise_loss_and_accuracy(r[b, i], r[b, j], label_smoothing=label_smoothing)
        return value, {"accuracy": float(acc)}

    return loss_fn


@torch.no_grad()
def evaluate_image_reward(model: ImageRewardModel, examples: Sequence[RankedExample],
                          batch_size: int = 32) -> dict[str, float]:
    """Held-out pairwise accuracy and top-1 accuracy, counted as ImageReward's test script counts them.

    * ``pairwise_accuracy``: over every pair of images of a set that people ranked differently (pairs of
      equal rank are left out, as ImageReward's ``acc`` leaves them out), the fraction where the better-ranked
      image scores strictly higher (a score tie is wrong);
    * ``top1_accuracy``: over the sets that rank two images differently (a set whose images all share one
      rank has no best image to find), the fraction where a best-ranked image scores strictly higher than
      every other image (a tie between a best-ranked and a worse image is wrong, whatever the order).

    A NaN / inf score is an error naming its set (it would compare false and count as wrong silently)."""
    check_batch_size(batch_size)
    examples = as_ranked_sets(examples, "evaluate_image_reward: examples")
    if not examples:
        raise ValueError("evaluate_image_reward: no ranked sets")
    require_ranked_pair(examples, "evaluate_image_reward")
    collate, correct, pairs, top1, ranked_sets = make_collate(model), 0, 0, 0, 0
    dtype = next(model.parameters()).dtype  # a model loaded with dtype="bf16" computes in it
    # prompts cut at the text limit: one warning for the evaluation, counted over its sets (not one per batch)
    with summed_notes([ex.prompt for ex in examples]), eval_mode(model), torch.no_grad():
        for s in range(0, len(examples), batch_size):
            batch = collate(examples[s:s + batch_size], start=s)
            ranks = batch["ranks"].to(model.device)
            pixels = batch["pixel_values"].to(model.device, dtype)
            r = model(batch["prompts"], pixels).float().view(ranks.shape)  # (B, K)
            _check_finite_scores(r, ranks, s, examples)
            b, i, j = _pairs(ranks)
            correct += int((r[b, i] > r[b, j]).sum())
            pairs += len(b)
            top1_hits, has_pair = _top1(r, ranks)
            top1 += int(top1_hits.sum())
            ranked_sets += int(has_pair.sum())
    return {"pairwise_accuracy": correct / pairs, "top1_accuracy": top1 / ranked_sets}


def _check_finite_scores(r: torch.Tensor, ranks: torch.Tensor, start: int, examples: Sequence[RankedExample]) -> None:
    bad = (~torch.isfinite(r) & (ranks >= 0)).nonzero()
    if len(bad):
        b, k = int(bad[0, 0]), int(bad[0, 1])
        raise ValueError(f"evaluate_image_reward: the model scored image {k} of ranked set {start + b} "
                         f"(prompt {examples[start + b].prompt!r}) {float(r[b, k])}: a NaN / inf score cannot be "
                         "ranked")


def _top1(r: torch.Tensor, ranks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per set (row): whether a best-ranked image scores strictly above every worse-ranked one, and whether
    the set ranks two images differently (only those count). ``ranks`` −1 marks padding."""
    valid = ranks >= 0
    best_rank = ranks.masked_fill(~valid, 1 << 30).min(1, keepdim=True).values
    is_best = valid & (ranks == best_rank)
    others = valid & ~is_best
    neg = torch.tensor(float("-inf"), device=r.device)
    best_score = torch.where(is_best, r, neg).max(1).values
    other_score = torch.where(others, r, neg).max(1).values
    has_pair = others.any(1)
    return (best_score > other_score) & has_pair, has_pair


def _data_digest(cfg: ImageRewardTrainConfig, train: Sequence[RankedExample] = ()) -> dict:
    """What identifies the training sets: the synthetic generator's settings, or the data file's bytes and
    the bytes of the image files its rows name (``train``): images regenerated under the same names are
    other training data, which a resume must not mix into the run."""
    if cfg.data == "synthetic":
        return {"synthetic": {k: getattr(cfg, k) for k in ("n_train", "set_size", "image_size", "data_seed")}}
    import hashlib

    h = hashlib.sha256()
    if not os.path.exists(cfg.data):  # a hub dataset id (read_records read it): named by its id
        return {"hub_dataset": cfg.data, **({"split": cfg.split} if cfg.split else {})}
    if os.path.isdir(cfg.data):  # a saved dataset: its files, in name order (opening the folder failed)
        files = sorted(os.path.relpath(os.path.join(root, n), cfg.data) for root, _, names in os.walk(cfg.data)
                       for n in names)
    else:
        files = [""]
    for rel in files:
        if rel:
            h.update(rel.encode("utf-8") + b"\0")
        with open(os.path.join(cfg.data, rel) if rel else cfg.data, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    digest = {"file_sha256": h.hexdigest()[:16]}
    if train:
        from .vlm_rm import rows_digest  # local files by their bytes (a moved copy still resumes), pixels as pixels

        digest["images_sha256"] = rows_digest(train, lambda e: ([], [e.images]))["sha256"]
    return {**digest, "split": cfg.split} if cfg.split else digest  # runs without a split: as before


def build_model(cfg: ImageRewardTrainConfig, prompts: Sequence[str]) -> ImageRewardModel:
    """A fresh scorer for ``cfg.backbone`` (``prompts`` give the word vocabulary of conv / clip-tiny),
    or the ImageReward folder ``cfg.backbone`` to continue training."""
    import re

    pattern = re.compile(ConvTextConfig.word_pattern)  # the words the conv encoder reads (clip-tiny's too)
    words = sorted({w for p in prompts for w in pattern.findall(p.lower())} | set(synthetic.vocabulary()))
    head = {"fusion": cfg.fusion} if cfg.head_dropout else {"fusion": cfg.fusion, "head_dropout": ()}
    if cfg.backbone == "conv":
        return ImageRewardModel.from_backbone(ConvTextConfig(vocab=words, embed_dim=cfg.embed_dim),
                                              image_size=cfg.image_size, **head)
    if cfg.backbone == "clip-tiny":
        return ImageRewardModel.from_backbone(tiny_clip_config(len(words) + 3, cfg.embed_dim, cfg.image_size),
                                              tokenizer=word_tokenizer(words), max_text_length=32, **head)
    folder = model_folder(cfg.backbone)  # "~/…" and a training run's folder (its model/), as mmreward.load reads them
    if os.path.isfile(os.path.join(folder, "config.json")):
        if read_config(folder).get("model_type") == ImageRewardModel.model_type:  # fine-tune an existing scorer
            return ImageRewardModel.from_pretrained(folder).train()
        return ImageRewardModel.from_backbone(folder, **head)
    raise ValueError(f"backbone must be conv, clip-tiny or a model folder, got {cfg.backbone!r}")


def train_image_reward(cfg: ImageRewardTrainConfig, train_cfg: TrainConfig,
                       model: Optional[ImageRewardModel] = None) -> tuple[ImageRewardModel, list[dict]]:
    """Train (or continue training) a scorer; returns ``(model, history)``. The final eval metrics are in
    ``history[-1]`` (``eval_pairwise_accuracy``, ``eval_top1_accuracy``); the final scorer, its score
    normalisation fitted on ``normalize_on`` training images, is saved to ``<output_dir>/model``. Without
    ``model`` the scorer is built right after ``seed_everything(train_cfg.seed)``, from the training prompts'
    words; a ``model`` you pass is trained as it is (build it after ``seed_everything`` for a reproducible run)."""
    if not isinstance(cfg, ImageRewardTrainConfig):  # the two configs given the other way round read as a bare
        raise TypeError(f"cfg must be an ImageRewardTrainConfig, got {type(cfg).__name__}")  # AttributeError
    if not isinstance(train_cfg, TrainConfig):
        raise TypeError(f"train_cfg must be a TrainConfig, got {type(train_cfg).__name__}")
    device = resolve_device(cfg.device)
    if cfg.data == "synthetic":
        train = synthetic_examples(cfg.n_train, cfg.set_size, cfg.image_size, cfg.data_seed)
    else:
        train = read_ranked_sets(cfg.data, cfg.split)
        # refused now, before the Trainer makes the run folder and trains up to the first evaluation
        # (training sets that are all ties would "train" on a zero loss and save an untrained scorer)
        require_ranked_pair(train, f"training data {cfg.data}", "to train on")
        warn_self_pairs(train, cfg.data)
    if cfg.eval_data:  # the given held-out sets, with synthetic training data too (not silently the synthetic ones)
        held = read_ranked_sets(cfg.eval_data, cfg.eval_split)
        require_ranked_pair(held, f"held-out data {cfg.eval_data}")
        warn_shared_sets(train, held, cfg.eval_data)
    else:
        held = synthetic_examples(cfg.n_eval, cfg.set_size, cfg.image_size, cfg.data_seed + 1) \
            if cfg.data == "synthetic" else []
    if model is None:  # initialised from the run's seed: the same command gives the same model
        seed_everything(train_cfg.seed)
        # the vocabulary of the training prompts only: with the held-out ones' words too, another --eval-data
        # gave another embedding table and so other initial weights and another trained scorer (a word seen
        # only in evaluation gets no training either way: it reads as the unknown word)
        model = build_model(cfg, [e.prompt for e in train])
    model.to(device).train()

    def normalize() -> None:
        if cfg.normalize_on > 0:
            items = [ImagePrompt(e.prompt, img) for e in train for img in split_images(e.images)][: cfg.normalize_on]
            if len(items) < 2:
                warnings.warn(f"score normalisation skipped: the training data holds {len(items)} image(s), "
                              "a mean and a std need 2", stacklevel=2)
                return
            mean, std = float(model.reward_mean), float(model.reward_std)
            try:
                model.fit_normalization(items)
            except ValueError as e:  # every score equal (identical images and prompts): keep the trained scorer
                model.reward_mean.fill_(mean)
                model.reward_std.fill_(std)
                warnings.warn(f"score normalisation skipped ({e} on {len(items)} training images); the model is "
                              f"saved with its previous mean {mean:g} / std {std:g}", stacklevel=2)

    def save(folder: str) -> None:  # the Trainer calls this (rank 0) once the last step is done
        normalize()
        model.save_pretrained(folder)

    # a resumed run must continue the same scorer on the same sets with the same objective: with another
    # --loss, --data or --embed-dim it would go on silently from weights trained for something else (or fail
    # with a state-dict size mismatch)
    resume = {"image_reward": config_to_dict(model.config), "objective": {"loss": cfg.loss,
                                                                         "label_smoothing": cfg.label_smoothing},
              "data": _data_digest(cfg, train)}
    trainer = Trainer(model, train_cfg, train, make_collate(model), ranked_loss(cfg.loss, cfg.label_smoothing),
                      eval_fn=(lambda m: evaluate_image_reward(m, held)) if held else None, save_model=save,
                      settings={"image_reward_train": config_to_dict(cfg)}, resume_settings=resume,
                      check_saves=True)
    history = trainer.fit()
    if not trainer.is_main:  # every process returns the same model
        normalize()
    return model.eval(), history
