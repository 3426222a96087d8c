"""VLM scalar reward model (Skywork-VL Reward / InternLM-XComposer2.5-Reward style).

A transformers vision-language model without its LM head (``AutoModel``: Qwen2-VL, LLaVA, …) and a
scalar head ``r = w·h_last + b`` read at the last attended token. It scores
:class:`~mmreward.core.inputs.Conversation` inputs (chat turns + their images; the images go at the
start of the first user turn). Trained pairwise on rows

    {"images": [img, …] | "image": img, "conversations_chosen": [turns], "conversations_rejected": [turns]}

(turns ``{"role": "user"|"assistant"|"system", "content": str}`` or ShareGPT ``{"from", "value"}``)
with the fused Bradley–Terry op (:func:`mmreward.ops.pairwise_loss_and_accuracy`), chosen and
rejected in one forward.

    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    proc = tiny_processor(COLOUR_WORDS); rm = VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc)
    train_vlm_reward(rm, rows, TrainConfig(output_dir="runs/vlm_rm", max_steps=200), eval_rows=held_out)
    rm = mmreward.load("runs/vlm_rm")                  # the run's final model (runs/vlm_rm/model)
    rm.score([Conversation([{"role": "user", …}, {"role": "assistant", …}], [img])])   # Tensor[1]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from mmreward.core.data import DataError
from mmreward.core.inputs import Conversation
from mmreward.core.model import check_batch_size

from . import vlm_data as D
from .scoring import eval_mode, summed_notes
from .vlm_base import VLMScorer


@dataclass
class VLMRewardConfig:
    freeze_vision_tower: bool = field(default=False, metadata={"help": "freeze the vision encoder (not the projector)"})
    freeze_projector: bool = field(default=False, metadata={"help": "freeze the vision→language projector (Qwen2-VL merger)"})
    head_init_std: float = field(default=0.02, metadata={"help": "std of the scalar head's initial weights"})

    def __post_init__(self) -> None:
        if not (math.isfinite(self.head_init_std) and self.head_init_std >= 0):
            raise ValueError(f"head_init_std must be a finite number >= 0, got {self.head_init_std}")


class VLMRewardModel(VLMScorer):
    """``score([Conversation]) -> Tensor[N]``: the reward of each conversation's last turn."""

    model_type = "vlm_reward"
    config_class = VLMRewardConfig
    input_types = (Conversation,)

    def __init__(self, config: VLMRewardConfig, backbone: Any, processor: Any = None):
        """``backbone``: transformers config, local model folder or nn.Module (see vlm_data.build_backbone);
        ``processor``: the model's processor (needed to score, train and save; not for forward)."""
        super().__init__(config, backbone, processor)
        self.head = nn.Linear(D.hidden_size(self.backbone), 1)
        nn.init.normal_(self.head.weight, std=config.head_init_std)
        nn.init.zeros_(self.head.bias)

    # -------------------------------------------------------------- forward / score
    def forward(self, input_ids: Tensor, attention_mask: Tensor, **vision_inputs) -> Tensor:  # (N,)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **vision_inputs)
        h = out.last_hidden_state  # (N, T, H)
        last = D.last_token_index(attention_mask)  # (N,)
        h_last = h[torch.arange(h.shape[0], device=h.device), last]  # (N, H)
        return self._reward(h_last)

    def _reward(self, h_last: Tensor) -> Tensor:  # (N, H) -> (N,) float32
        return self.head(h_last.to(self.head.weight.dtype)).squeeze(-1).float()

    def encode(self, conversations: Sequence[Conversation], names: Optional[Sequence[str]] = None) -> dict[str, Tensor]:
        """Conversations → padded model inputs (N rows); errors name ``names[i]`` (default ``input i``)."""
        proc = self.need_processor()
        names = names or [f"input {i}" for i in range(len(conversations))]
        imgs = [D.pil_images(c.images, name) for c, name in zip(conversations, names)]
        texts = [proc.apply_chat_template(D.to_messages(c.messages, len(ims), name, scored=True), tokenize=False)
                 for c, ims, name in zip(conversations, imgs, names)]
        return D.encode(proc, texts, imgs, names)

    def _score(self, items: list, batch_size: int) -> Tensor:
        out = []
        with summed_notes(()), eval_mode(self), torch.no_grad():  # an animated image: told once per call
            for s in range(0, len(items), batch_size):
                chunk = items[s:s + batch_size]
                names = [f"input {s + k}" for k in range(len(chunk))]
                enc = self.encode(chunk, names)
                self.check_context(enc, names)
                out.append(self(**{k: v.to(self.device) for k, v in enc.items()}).cpu())
        return torch.cat(out)


# ------------------------------------------------------------------ pairwise training
@dataclass
class ConversationPair:
    """A preference row: two conversations over the same images, ``chosen`` ≻ ``rejected``."""

    chosen: Conversation
    rejected: Conversation
    name: str = field(default="pair", compare=False)  # where it came from, for error messages

    @classmethod
    def from_record(cls, row: Any, where: str = "row") -> "ConversationPair":
        if isinstance(row, cls):
            return row
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        row = D.published_pair_row(row, where)  # RLAIF-V / MM-RLHF rows; VLFeedback refused naming the fields
        missing = [k for k in ("conversations_chosen", "conversations_rejected") if k not in row]
        if missing and ("steps" in row or "steps_with_score" in row):  # said only "missing 'conversations_chosen'"
            raise DataError(f"{where}: missing field {missing[0]!r}: a step row (question, steps): a VLM reward model "
                            "is trained and evaluated on preference rows (conversations_chosen / conversations_rejected, "
                            "or question, chosen, rejected); step rows are for a VisualPRM (train_visual_prm, mmreward "
                            "vision train-visual-prm)")
        if missing:
            raise DataError(f"{where}: missing field {missing[0]!r} (fields present: {sorted(map(str, row))[:12]})")
        images = row.get("images", row.get("image"))
        D.check_image_files(images, where)
        chosen, rejected = (Conversation.from_record({"messages": row[k], "images": images}, f"{where}: field {k!r}")
                            for k in ("conversations_chosen", "conversations_rejected"))
        for k, c in (("conversations_chosen", chosen), ("conversations_rejected", rejected)):
            D.to_messages(c.messages, len(c.images), f"{where}: field {k!r}", scored=True)  # checked now, not mid-training
        return cls(chosen, rejected, where)


def as_pairs(rows: Sequence[Any], what: str = "rows") -> list[ConversationPair]:
    """Preference rows (dicts or :class:`ConversationPair`) → pairs; a bad row raises DataError naming it."""
    if isinstance(rows, (str, bytes, dict)) or not hasattr(rows, "__iter__"):  # a path / one row: not a row list
        raise TypeError(f"{what} must be a list of preference rows (dicts or ConversationPair), got {type(rows).__name__}"
                        + (" (read a file's rows with mmreward.vision.cli.read_rows(path))" if isinstance(rows, str) else ""))
    rows = list(rows)  # an iterator / array of rows: its length is known (an empty one is named, not 0 / 0)
    if not rows:
        raise ValueError(f"{what}: no preference rows")
    return [ConversationPair.from_record(r, f"{what}: row {i}") for i, r in enumerate(rows)]


class PreferenceCollator:
    """Pairs → one batch of 2B conversations: chosen first, then rejected (same images)."""

    def __init__(self, model: VLMRewardModel):
        self.model = model

    def __call__(self, pairs: Sequence[ConversationPair]) -> dict[str, Tensor]:
        if not pairs:
            raise ValueError("empty batch of preference pairs")
        names = [f"{p.name} (chosen)" for p in pairs] + [f"{p.name} (rejected)" for p in pairs]
        enc = self.model.encode([p.chosen for p in pairs] + [p.rejected for p in pairs], names)
        self.model.check_context(enc, names)
        return enc


def pairwise_loss_fn(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Bradley–Terry loss of one forward over chosen ‖ rejected (the Trainer's ``loss_fn``)."""
    from mmreward.ops import pairwise_loss_and_accuracy

    r = model(**batch)  # (2B,)
    B = r.shape[0] // 2
    loss, acc = pairwise_loss_and_accuracy(r[:B], r[B:])
    return loss, {"accuracy": float(acc), "margin": float((r[:B] - r[B:]).mean().detach())}


EVAL_BATCH_SIZE = 16  # evaluate_vlm_reward's default, as train_vlm_reward's eval_fn calls it


@torch.no_grad()
def evaluate_vlm_reward(model: VLMRewardModel, rows: Sequence[Any], batch_size: int = EVAL_BATCH_SIZE) -> dict[str, float]:
    """Held-out mean pairwise (Bradley–Terry) loss and accuracy on preference rows: a pair is correct
    when the chosen conversation scores strictly higher (a tie is wrong); both are means over all pairs.
    A NaN / inf score is an error naming its row (NaN compares false: it would count as wrong silently)."""
    from mmreward.ops import pairwise_loss_and_accuracy

    check_batch_size(batch_size)
    pairs = as_pairs(rows, "eval rows")
    collate = PreferenceCollator(model)
    tot_loss, n_correct = 0.0, 0
    with eval_mode(model):
        for s in range(0, len(pairs), batch_size):
            chunk = pairs[s:s + batch_size]
            batch = {k: v.to(model.device) for k, v in collate(chunk).items()}
            r = model(**batch).float()  # (2B,): chosen ‖ rejected
            B = len(chunk)
            _check_pair_scores(r, chunk)
            loss, _ = pairwise_loss_and_accuracy(r[:B], r[B:])
            tot_loss += float(loss) * B
            n_correct += int((r[:B] > r[B:]).sum())
    return {"loss": tot_loss / len(pairs), "accuracy": n_correct / len(pairs)}


def _check_pair_scores(r: Tensor, chunk: Sequence[ConversationPair]) -> None:
    B = len(chunk)
    if r.shape != (2 * B,):
        raise RuntimeError(f"the model returned scores of shape {tuple(r.shape)} for {B} pairs (expected ({2 * B},))")
    bad = (~torch.isfinite(r)).nonzero().flatten().tolist()
    if bad:
        k = bad[0]
        side = "chosen" if k < B else "rejected"
        raise ValueError(f"{chunk[k % B].name}: the model scored the {side} conversation {float(r[k])}; a NaN / inf "
                         "score has no place in a pairwise accuracy")


# ------------------------------------------------------------------ run fingerprint (resume checks)
def _image_digest(image: Any, h: Any, seen: dict) -> None:
    """Feed one image's identity into ``h``: a local file's bytes (so moved data still resumes, and data
    regenerated under the same names does not), a data: URI's text, an in-memory image's pixels. Each file
    / object is hashed once per call (``seen``)."""
    import hashlib
    import os

    import numpy as np

    from mmreward.core.checkpoint import update_digest
    from mmreward.core.data import data_path

    from .images import local_path

    if isinstance(image, (str, os.PathLike)):
        path = data_path(local_path(os.fspath(image)))  # "~/a.png" too: its bytes, not its name
        if os.path.isfile(path):
            st = os.stat(path)
            key = ("file", os.path.realpath(path), st.st_size, st.st_mtime_ns)
            if key not in seen:
                f_h = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        f_h.update(chunk)
                seen[key] = f_h.hexdigest()
            h.update(b"F" + seen[key].encode())
        else:  # a data: URI (or a name read when scored): its text is the image
            h.update(b"S" + path.encode("utf-8", "surrogatepass"))
        return
    key = ("obj", id(image))
    if key not in seen:  # the same object in many rows (chosen and rejected share their images): hashed once
        o_h = hashlib.sha256()
        try:
            from PIL import Image

            if isinstance(image, Image.Image):
                o_h.update(f"PIL:{image.mode}:{image.size}:{image.getpalette()}".encode())  # "P": indices + palette
                o_h.update(image.tobytes())
            elif isinstance(image, (torch.Tensor, np.ndarray)):
                update_digest(o_h, image)  # dtype, shape and bytes
            else:  # nested lists and other accepted kinds: their value
                o_h.update(repr(image).encode("utf-8", "surrogatepass"))
        except (TypeError, ValueError):  # an object-dtype array and the like: its value as text
            o_h.update(repr(image).encode("utf-8", "surrogatepass"))
        seen[key] = (o_h.hexdigest(), image)  # the object is kept alive: its id is not reused in this call
    h.update(b"O" + seen[key][0].encode())


def _images_digest(images: Any, h: Any, seen: dict) -> None:
    images = [] if images is None else images if isinstance(images, (list, tuple)) else [images]
    h.update(f"[{len(images)}]".encode())
    for im in images:
        _image_digest(im, h, seen)


def rows_digest(rows: Sequence[Any], parts: Any) -> dict[str, Any]:
    """``{"rows": n, "sha256": ...}`` of training rows (``parts(row) -> (json-able text/labels, [images])``):
    part of a run's fingerprint, so a run is continued only on the data it started on."""
    import hashlib

    from mmreward.core.checkpoint import update_digest

    h, seen = hashlib.sha256(), {}
    for row in rows:
        text, image_lists = parts(row)
        update_digest(h, text)
        for images in image_lists:
            _images_digest(images, h, seen)
        h.update(b"\n")
    return {"rows": len(rows), "sha256": h.hexdigest()[:16]}


def data_digest(pairs: Sequence[ConversationPair]) -> dict[str, Any]:
    """Digest of preference pairs: both conversations' turns and their images (file bytes / pixels)."""
    return rows_digest(pairs, lambda p: ([p.chosen.messages, p.rejected.messages],
                                         [p.chosen.images, p.rejected.images]))


def train_vlm_reward(model: VLMRewardModel, rows: Sequence[Any], config, eval_rows: Optional[Sequence[Any]] = None):
    """Pairwise training with the shared core Trainer (``config``: :class:`mmreward.core.trainer.TrainConfig`);
    returns its per-step history (``eval_loss`` / ``eval_accuracy`` on ``eval_rows`` when given). The
    final model is saved to ``<output_dir>/model``. A resume (``config.resume``) must train the same
    parts of the model (freeze settings) on the same rows (turns and images) with the same processor
    (chat template, tokenizer, image processor settings), else it is refused naming what differs."""
    from mmreward.core.model import config_to_dict
    from mmreward.core.trainer import Trainer

    pairs = as_pairs(rows, "rows")
    held = as_pairs(eval_rows, "eval rows") if eval_rows else None
    eval_fn = (lambda m: evaluate_vlm_reward(m, held)) if held else None
    cfg = config_to_dict(model.config)
    # resumed with other rows or other frozen parts it would go on silently from weights trained for
    # something else (head_init_std only draws the first head: a resume loads the trained one)
    resume = {"objective": {"loss": "bradley_terry", **{k: cfg[k] for k in ("freeze_vision_tower", "freeze_projector")}},
              "data": data_digest(pairs),
              "processor": D.processor_fingerprint(model.need_processor())}
    collate = PreferenceCollator(model)
    def build(adapters: dict) -> Trainer:
        return Trainer(model, config, pairs, collate, pairwise_loss_fn, eval_fn=eval_fn,
                       settings={"vlm_reward": cfg}, resume_settings={**resume, **adapters}, check_saves=True)

    return model.fit_with_adapters(config, build, pairs, held, collate, EVAL_BATCH_SIZE)


def check_pairs_fit(model: VLMRewardModel, pairs: Sequence[ConversationPair],
                    eval_pairs: Optional[Sequence[ConversationPair]] = None, batch_size: int = 16) -> None:
    """Encode every training and held-out pair (chosen and rejected) once, as their batches will be, before
    training starts: a row past the backbone's context is refused naming it, its side and the lengths
    before step 1 (see :meth:`VLMScorer.check_rows_fit`)."""
    model.check_rows_fit(pairs, PreferenceCollator(model), batch_size, eval_pairs, EVAL_BATCH_SIZE)
