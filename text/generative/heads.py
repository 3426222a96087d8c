"""A causal LM with a scalar head on the last real token — the meta-RM (DeepSeek-GRM) and the
Critic-RM reward head share it. Saved on its own (a trained meta-RM) as one atomic folder:
``backbone/`` (transformers format, safetensors) + ``head/`` (safetensors + JSON via
:mod:`mmreward.core.checkpoint`); inside a judge folder the judge saves it with its own layout."""
from __future__ import annotations

import os
from typing import Any, Optional

import torch
from torch import nn

from mmreward.core.checkpoint import load_model, save_model
from mmreward.core.folders import atomic_folder, verify_folder
from mmreward.core.model import load_state_strict

__all__ = ["ScalarHeadLM", "last_token_hidden", "last_token_logits"]


def _lengths(mask: torch.Tensor) -> torch.Tensor:
    if mask.dim() != 2:
        raise ValueError(f"attention_mask must be (B, T), got {tuple(mask.shape)}")
    lens = mask.long().sum(1)
    if (lens == 0).any():
        raise ValueError(f"row {int((lens == 0).nonzero()[0])} of the batch is empty (all padding)")
    return lens


def last_token_hidden(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, H) hidden state of each row's last real token in a right-padded (B, T, H) batch."""
    lens = _lengths(mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), lens.to(hidden.device) - 1]


def last_token_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      token_ids: torch.Tensor) -> torch.Tensor:
    """(B, C) logits of ``token_ids`` as the next token after each row of a *left*-padded batch
    (position ids skip the pads; only the final position's logits are computed)."""
    _lengths(attention_mask)
    pos = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, logits_to_keep=1)
    return out.logits[:, -1, token_ids].float()


class ScalarHeadLM(nn.Module):
    """``backbone`` (a transformers causal LM) + ``head`` = Linear(H, 1) on the last real token."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        h = backbone.config.hidden_size
        self.head = nn.Linear(h, 1)
        nn.init.normal_(self.head.weight, std=1.0 / h ** 0.5)
        nn.init.zeros_(self.head.bias)

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: Optional[torch.Tensor] = None):
        """``(last-token hidden (B, H), LM logits or None)``; one forward serves the reward and the LM loss."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return last_token_hidden(out.hidden_states[-1], attention_mask), out.logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, return_hidden: bool = False):
        """(B,) scalar logits; ``return_hidden``: :meth:`hidden`'s ``(h (B, H), LM logits)`` instead, so that a
        joint loss still runs its forward through this module (and a DDP wrapper around it)."""
        h, logits = self.hidden(input_ids, attention_mask)
        # the head in its own dtype: an LM cast to bf16 under an fp32 head (or a head loaded as saved)
        return (h, logits) if return_hidden else self.head(h.to(self.head.weight.dtype)).squeeze(-1)

    @classmethod
    def with_head(cls, backbone: nn.Module, head_state: dict[str, torch.Tensor], where: str) -> "ScalarHeadLM":
        """``backbone`` + a saved head (checked strictly; ``where`` names the source in errors). The
        throw-away initial head is drawn under a forked RNG, so loading leaves the caller's RNG as it was."""
        with torch.random.fork_rng(devices=[]):
            m = cls(backbone)
        load_state_strict(m.head, head_state, where)
        return m

    def save_pretrained(self, folder: str, tokenizer: Optional[Any] = None) -> None:
        """The whole folder atomically; ``tokenizer`` (the one the head was trained with) goes into
        ``backbone/`` beside the LM."""
        with atomic_folder(folder) as tmp:
            self.backbone.save_pretrained(os.path.join(tmp, "backbone"))
            if tokenizer is not None:
                tokenizer.save_pretrained(os.path.join(tmp, "backbone"))
            save_model(os.path.join(tmp, "head"), {k: v.detach().cpu() for k, v in self.head.state_dict().items()},
                       {"kind": "ScalarHeadLM", "hidden_size": self.head.in_features})

    @classmethod
    def from_pretrained(cls, folder: str, device: str = "cpu") -> "ScalarHeadLM":
        from transformers import AutoModelForCausalLM

        verify_folder(folder)
        state, cfg = load_model(os.path.join(folder, "head"), device="cpu")
        if cfg.get("kind") != "ScalarHeadLM":
            raise ValueError(f"{folder}/head is not a ScalarHeadLM checkpoint (kind={cfg.get('kind')!r})")
        backbone = AutoModelForCausalLM.from_pretrained(os.path.join(folder, "backbone"), use_safetensors=True,
                                                        local_files_only=True, trust_remote_code=False)
        return cls.with_head(backbone, state, folder).to(device)
