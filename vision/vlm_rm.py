"""VLM scalar reward model (Skywork-VL Reward / InternLM-XComposer2.5-Reward style).

A transformers vision-language model without its LM head (``AutoModel``: Qwen2-VL, LLaVA, …) and a
scalar head ``r = w·h_last + b`` read at the last attended token. Trained pairwise on rows

    {"images": [img, …] | "image": img, "conversations_chosen": [turns], "conversations_rejected": [turns]}

(turns ``{"role": "user"|"assistant"|"system", "content": str}`` or ShareGPT ``{"from", "value"}``;
the images go at the start of the first user turn) with the fused Bradley–Terry op
(:func:`mmreward.ops.pairwise_loss_and_accuracy`), chosen and rejected in one forward.

    proc = tiny_processor(COLOUR_WORDS); rm = VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc)
    train_vlm_reward(rm, rows, TrainConfig(output_dir="runs/vlm_rm", max_steps=200), eval_rows=held_out)
    rm.save_pretrained("runs/vlm_rm/final"); rm = VLMRewardModel.from_pretrained("runs/vlm_rm/final")
    rm.score(images=[[img]], conversations=[[{"role": "user", …}, {"role": "assistant", …}]])  # Tensor[1]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from . import vlm_data as D


@dataclass
class VLMRewardConfig:
    freeze_vision_tower: bool = field(default=False, metadata={"help": "freeze the vision encoder (not the projector)"})
    freeze_projector: bool = field(default=False, metadata={"help": "freeze the vision→language projector (Qwen2-VL merger)"})
    head_init_std: float = field(default=0.02, metadata={"help": "std of the scalar head's initial weights"})
    score_batch_size: int = field(default=16, metadata={"help": "conversations per forward in score()"})


class VLMRewardModel(D.VLMPretrainedMixin, nn.Module):
    model_type = "vlm_reward"

    def __init__(self, config: VLMRewardConfig, backbone: Any, processor: Any = None):
        """``backbone``: transformers config, local model folder or nn.Module (see vlm_data.build_backbone);
        ``processor``: the model's processor (needed for score() / collate, not for forward)."""
        super().__init__()
        self.config, self.processor = config, processor
        self.backbone = D.build_backbone(backbone)
        self.head = nn.Linear(D.hidden_size(self.backbone), 1)
        nn.init.normal_(self.head.weight, std=config.head_init_std)
        nn.init.zeros_(self.head.bias)
        D.freeze_vision(self.backbone, vision_tower=config.freeze_vision_tower, projector=config.freeze_projector)

    # -------------------------------------------------------------- forward / score
    def forward(self, input_ids: Tensor, attention_mask: Tensor, **vision_inputs) -> Tensor:  # (N,)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **vision_inputs)
        h = out.last_hidden_state  # (N, T, H)
        last = D.last_token_index(attention_mask)  # (N,)
        h_last = h[torch.arange(h.shape[0], device=h.device), last]  # (N, H)
        return self.head(h_last.to(self.head.weight.dtype)).squeeze(-1).float()

    def _need_processor(self):
        if self.processor is None:
            raise ValueError("this VLMRewardModel has no processor: pass processor= to the constructor")
        return self.processor

    def encode(self, images: Sequence[Sequence], conversations: Sequence[Sequence[dict]]) -> dict[str, Tensor]:
        """Per-conversation image lists + conversations → padded model inputs (N rows)."""
        proc = self._need_processor()
        if len(images) != len(conversations):
            raise ValueError(f"{len(images)} image lists but {len(conversations)} conversations")
        # images[i]: a list of images, one image, or None (text only)
        imgs = [[D.load_image(im, f"conversation {i} image {j}")
                 for j, im in enumerate([] if ims is None else ims if isinstance(ims, (list, tuple)) else [ims])]
                for i, ims in enumerate(images)]
        texts = [proc.apply_chat_template(D.to_messages(c, len(ims), f"conversation {i}"), tokenize=False)
                 for i, (c, ims) in enumerate(zip(conversations, imgs))]
        return D.encode(proc, texts, imgs)

    @torch.no_grad()
    def score(self, images: Sequence[Sequence], conversations: Sequence[Sequence[dict]]) -> Tensor:  # (N,)
        """Reward of each (images, conversation); ``images[i]`` holds the images of conversation i (a
        list, one image, or None)."""
        if len(conversations) == 0:
            raise ValueError("score: no conversations given")
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        bs = self.config.score_batch_size
        out = []
        for s in range(0, len(conversations), bs):
            enc = self.encode(images[s:s + bs], conversations[s:s + bs])
            out.append(self(**{k: v.to(dev) for k, v in enc.items()}).cpu())
        self.train(was)
        return torch.cat(out)


VLMRewardModel.config_class = VLMRewardConfig


# ------------------------------------------------------------------ pairwise training
def _check_row(row: Any, i: int) -> None:
    if not isinstance(row, dict):
        raise TypeError(f"row {i}: expected a dict, got {type(row).__name__}")
    for k in ("conversations_chosen", "conversations_rejected"):
        if k not in row:
            raise ValueError(f"row {i}: missing {k!r} (keys: {sorted(row)})")


class PreferenceCollator:
    """Rows → one batch of 2B conversations: chosen rows first, then rejected (same images)."""

    def __init__(self, model: VLMRewardModel):
        self.model = model

    def __call__(self, rows: Sequence[dict]) -> dict[str, Tensor]:
        if not rows:
            raise ValueError("empty batch of preference rows")
        imgs, convs_c, convs_r = [], [], []
        for i, row in enumerate(rows):
            _check_row(row, i)
            imgs.append(D.row_images(row, i))
            convs_c.append(row["conversations_chosen"])
            convs_r.append(row["conversations_rejected"])
        return self.model.encode(imgs + imgs, convs_c + convs_r)


def pairwise_loss_fn(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Bradley–Terry loss of one forward over chosen ‖ rejected (the Trainer's ``loss_fn``)."""
    from mmreward.ops import pairwise_loss_and_accuracy

    r = model(**batch)  # (2B,)
    B = r.shape[0] // 2
    loss, acc = pairwise_loss_and_accuracy(r[:B], r[B:])
    return loss, {"accuracy": float(acc), "margin": float((r[:B] - r[B:]).mean().detach())}


@torch.no_grad()
def evaluate_pairwise(model: VLMRewardModel, rows: Sequence[dict], batch_size: int = 16) -> dict[str, float]:
    """Held-out mean pairwise loss and accuracy."""
    if not rows:
        raise ValueError("evaluate_pairwise: no rows")
    was = model.training
    model.eval()
    collate, dev = PreferenceCollator(model), next(model.parameters()).device
    tot_loss = tot_acc = 0.0
    for s in range(0, len(rows), batch_size):
        chunk = rows[s:s + batch_size]
        batch = {k: v.to(dev) for k, v in collate(chunk).items()}
        loss, m = pairwise_loss_fn(model, batch)
        tot_loss += float(loss) * len(chunk)
        tot_acc += m["accuracy"] * len(chunk)
    model.train(was)
    return {"loss": tot_loss / len(rows), "accuracy": tot_acc / len(rows)}


def train_vlm_reward(model: VLMRewardModel, rows: Sequence[dict], config, eval_rows: Optional[Sequence[dict]] = None):
    """Pairwise training with the shared core Trainer (``config``: :class:`mmreward.core.trainer.TrainConfig`);
    returns its per-step history (``eval_loss`` / ``eval_accuracy`` on ``eval_rows`` when given)."""
    from mmreward.core.trainer import Trainer

    if not rows:
        raise ValueError("train_vlm_reward: no training rows")
    for i, row in enumerate(rows):
        _check_row(row, i)
    eval_fn = (lambda m: evaluate_pairwise(m, eval_rows)) if eval_rows else None
    return Trainer(model, config, rows, PreferenceCollator(model), pairwise_loss_fn, eval_fn=eval_fn).fit()
