"""`save_pretrained` / `from_pretrained` for any nn.Module built from one dataclass config:
``config.json`` (model type + config fields) and ``model.safetensors``, via core.checkpoint."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import torch

from .checkpoint import CheckpointError, load_model, save_model


def config_to_dict(cfg: Any) -> dict:
    out = dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


def config_from_dict(cls: type, data: dict, what: str) -> Any:
    """Rebuild a dataclass config; unknown fields are an error (a checkpoint from another version)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise CheckpointError(f"{what} config has unknown fields {unknown} (from another version?)")
    kw = {}
    for k, v in data.items():
        default = names[k].default
        kw[k] = tuple(v) if isinstance(v, list) and isinstance(default, tuple) else v
    return cls(**kw)


class PretrainedMixin:
    """Mix into an ``nn.Module`` whose ``__init__(config)`` takes one dataclass held as ``self.config``.

    Subclasses set ``model_type`` (checked on load, so a VQGAN folder is never loaded as another
    model) and ``config_class``."""

    model_type: ClassVar[str]
    config_class: ClassVar[type]
    eval_after_load: ClassVar[bool] = True

    def save_pretrained(self, folder: str, state_dict: Optional[dict[str, torch.Tensor]] = None) -> None:
        """``state_dict`` overrides the live weights (e.g. EMA weights)."""
        weights = state_dict if state_dict is not None else self.state_dict()
        save_model(folder, weights, {"model_type": self.model_type, "config": config_to_dict(self.config)})

    @classmethod
    def from_pretrained(cls, folder: str, device: str = "cpu"):
        state_dict, cfg = load_model(folder, device)
        if cfg.get("model_type") != cls.model_type:
            raise CheckpointError(f"{folder} holds a {cfg.get('model_type')!r} model, not {cls.model_type!r}")
        model = cls(config_from_dict(cls.config_class, cfg.get("config", {}), cls.model_type))
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as e:
            raise CheckpointError(f"weights in {folder} do not match its config: {e}") from e
        model = model.to(device)
        return model.eval() if cls.eval_after_load else model
