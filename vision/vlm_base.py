"""``VLMScorer``: the base of the reward models built on a transformers vision-language model
(:class:`~mmreward.vision.vlm_rm.VLMRewardModel`, :class:`~mmreward.vision.visual_prm.VisualPRM`).

A subclass is built as ``cls(config, backbone, processor)`` — ``backbone`` a transformers config, a
local model folder or an ``nn.Module`` (:func:`~mmreward.vision.vlm_data.build_backbone`),
``processor`` anything with the transformers processor interface — and adds its head. Its saved
folder (the :class:`~mmreward.core.model.RewardScorer` contract) holds:

* ``config.json``: ``model_type``, our dataclass ``config`` and ``backbone_config`` (the backbone's
  transformers ``config.to_dict()``);
* ``model.safetensors``: every weight, backbone and head;
* ``processor/``: the tokenizer / image-processor / chat-template files the processor needs to score.

Loading rebuilds the backbone from ``backbone_config`` and the processor from ``processor/``; a
folder without either is refused with a message naming what is missing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
from torch import nn

from mmreward.core.data import DataError
from mmreward.core.folders import CheckpointError
from mmreward.core.lora import AdapterOptions, BackboneSetup
from mmreward.core.model import RewardScorer, build_for_weights, config_from_dict, load_state_strict, load_weights
from mmreward.core.trainer import TrainConfig

from . import vlm_data as D
from .scoring import require_assets

PROCESSOR_DIR = "processor"


@dataclass
class VLMTrainConfig(AdapterOptions, TrainConfig):
    """:class:`~mmreward.core.trainer.TrainConfig` plus LoRA adapters / gradient checkpointing on the VLM backbone
    (layers the freeze settings freeze get none: with ``freeze_vision_tower`` the vision tower stays as it is;
    without it, ``all-linear`` adapts the vision tower's linear layers too)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_adapter_options("VLMTrainConfig")


class VLMScorer(RewardScorer, nn.Module):
    """Base class of the VLM reward models; see the module docstring."""

    # config fields written by mmreward 0.1 that the config no longer has (``score(batch_size=...)`` now)
    retired_config_fields: ClassVar[tuple[str, ...]] = ("score_batch_size",)

    def __init__(self, config: Any, backbone: Any, processor: Any = None):
        super().__init__()
        self.config, self.processor = config, processor
        self.backbone = D.build_backbone(backbone)
        D.freeze_vision(self.backbone, vision_tower=config.freeze_vision_tower, projector=config.freeze_projector)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def need_processor(self) -> Any:
        if self.processor is None:
            raise ValueError(f"this {type(self).__name__} has no processor: pass processor= to the constructor")
        return self.processor

    def context_length(self) -> Optional[int]:
        """The most tokens the backbone's language model takes: its ``max_position_embeddings``, times the
        factor of a RoPE scaling (YaRN, linear, dynamic) when one is configured; None when unknown."""
        cfg = getattr(self.backbone, "config", None)
        for c in (getattr(cfg, "text_config", None), cfg):
            n = getattr(c, "max_position_embeddings", None)
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                scaling = getattr(c, "rope_parameters", None)  # transformers 5 (rope_scaling warns there)
                if scaling is None and "rope_parameters" not in getattr(c, "__dict__", {}):
                    scaling = getattr(c, "rope_scaling", None)  # older transformers
                factor = scaling.get("factor") if isinstance(scaling, dict) else None
                if isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 1:
                    n = int(n * factor)  # permissive: some configs already give the extended length
                return n
        return None

    def check_context(self, enc: dict, names: Sequence[str],
                      detail: Optional[Callable[[int, int], str]] = None) -> None:
        """DataError naming the first input whose tokens (text + image / video tokens) exceed the
        backbone's context: past its trained positions the scores would be garbage, and nothing is cut
        (long conversations are not truncated), so such an input is refused — unless the row's rotary
        positions (:meth:`_positions_used`: M-RoPE backbones) stay within the context. ``detail(i,
        limit)``: more about input ``i`` for the message (a VisualPRM row: which steps lie past it)."""
        limit, mask = self.context_length(), enc.get("attention_mask")
        if limit is None or not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[1] <= limit:
            return
        lengths = mask.sum(dim=1).tolist()
        positions = None  # computed only when a row has more tokens than the context
        for i, (name, n) in enumerate(zip(names, lengths)):
            if n > limit:
                if positions is None:
                    positions = self._positions_used(enc) or [None] * len(lengths)
                if positions[i] is not None and positions[i] <= limit:
                    continue  # its image / video tokens share rotary positions (M-RoPE): it fits
                ids = enc.get("input_ids")
                n_image = sum(int((ids[i] == t).sum()) for t in self._vision_token_ids()) \
                    if isinstance(ids, torch.Tensor) else 0
                more = detail(i, limit) if detail is not None else ""
                used = f"; they span {positions[i]} rotary positions" if positions[i] is not None else ""
                raise DataError(f"{name}: {int(n)} tokens ({n_image} of them image / video tokens) exceed the "
                                f"model's context of {limit} tokens (max_position_embeddings{used}){more}; shorten the "
                                "conversation or give smaller images (the processor's max_pixels)")

    def _positions_used(self, enc: dict) -> Optional[list[int]]:
        """Per row, how many rotary positions the backbone's forward gives it (its largest position + 1),
        from the backbone's own ``get_rope_index`` (Qwen2-VL / Qwen2.5-VL M-RoPE: an image's or a video's
        tokens share positions, so a row spans fewer positions than it has tokens); None when the
        backbone has none, or the row holds no image / video."""
        pos = self._rope_positions(enc)
        if pos is None:
            return None
        mask = enc["attention_mask"].bool()
        return [int(pos[i][mask[i]].max()) + 1 for i in range(mask.shape[0])]

    def _rope_positions(self, enc: dict) -> Optional[torch.Tensor]:
        """(B, T) rotary position of each token (the largest of M-RoPE's three axes) from the backbone's
        ``get_rope_index``; None when it has none or the batch holds no image / video (positions = places)."""
        import inspect

        fn = getattr(self.backbone, "get_rope_index", None)
        if fn is None or not any(k in enc for k in ("image_grid_thw", "video_grid_thw")):
            return None
        try:
            params = inspect.signature(fn).parameters
            with torch.no_grad():
                pos = fn(**{k: v for k, v in enc.items() if k in params})[0]  # (3, B, T)
            if pos.dim() != 3 or tuple(pos.shape[1:]) != tuple(enc["attention_mask"].shape):
                return None
            return pos.amax(dim=0)
        except Exception:  # another transformers' signature or layout: fall back to counting tokens
            return None

    def check_rows_fit(self, examples: Sequence[Any], collate: Callable[[Sequence[Any]], Any],
                       batch_size: int, eval_examples: Optional[Sequence[Any]] = None,
                       eval_batch_size: int = 16) -> None:
        """Build every batch of training / eval ``examples`` once with ``collate`` (the batch builder
        the Trainer and the evaluation use), before training starts: a row past the context (and any
        row the processor refuses) is then refused naming it, before step 1, not hours into a run when
        its batch comes up. Examples already checked for this model, processor and config (the
        command line checks its rows before its held-out figures, then trains) are not built again.
        ``eval_examples``: held-out rows, built in batches of ``eval_batch_size`` as the evaluation does."""
        key = (id(self), id(self.processor), self.context_length(), repr(self.config))
        todo = [e for e in examples if getattr(e, "_fits_context", None) != key]
        for s in range(0, len(todo), batch_size):
            collate(todo[s:s + batch_size])  # raises DataError naming the row (and side / steps)
        for e in todo:
            try:
                e._fits_context = key
            except AttributeError:  # an object without a __dict__: checked again next time
                pass
        if eval_examples:
            self.check_rows_fit(eval_examples, collate, eval_batch_size)

    def fit_checked(self, trainer: Any, examples: Sequence[Any], eval_examples: Optional[Sequence[Any]],
                    collate: Callable[[Sequence[Any]], Any], eval_batch_size: int) -> list[dict]:
        """``trainer.fit()`` after :meth:`check_rows_fit` of the training / held-out rows: a resume of
        another run is refused first (``trainer.start()``), before the rows are encoded."""
        trainer.start()
        self.check_rows_fit(examples, collate, trainer.config.batch_size, eval_examples, eval_batch_size)
        return trainer.fit()

    def fit_with_adapters(self, config: Any, build_trainer: Callable[[dict], Any], examples: Sequence[Any],
                          eval_examples: Optional[Sequence[Any]], collate: Callable[[Sequence[Any]], Any],
                          eval_batch_size: int) -> list[dict]:
        """:meth:`fit_checked` of the Trainer ``build_trainer(more_resume_settings)`` builds, with the LoRA
        adapters / gradient checkpointing a :class:`VLMTrainConfig` asks for on the backbone: put on before the
        Trainer collects the trainable parameters, taken off again if the run is refused (before its first
        step), folded into the weights when it ends (the model and its saved folder are plain ones)."""
        setup = BackboneSetup(self, config) if isinstance(config, AdapterOptions) else None
        try:
            trainer = build_trainer(config.adapter_record() if setup is not None else {})
            trainer.start()
            self.check_rows_fit(examples, collate, trainer.config.batch_size, eval_examples, eval_batch_size)
        except BaseException:
            if setup is not None:
                setup.undo()
            raise
        # folded in also when stopped mid-run (the snapshot holds the adapters): the model is a plain one again
        return setup.fit(trainer) if setup is not None else trainer.fit()

    def _vision_token_ids(self) -> list[int]:
        cfg = getattr(self.backbone, "config", None)
        ids = [getattr(cfg, k, None) for k in ("image_token_id", "video_token_id", "image_token_index")]
        return [i for i in ids if isinstance(i, int)]

    # -------------------------------------------------------------- save / load
    def _save(self, folder: str, state_dict: Optional[dict] = None) -> dict:
        processor = self.need_processor()
        if not hasattr(processor, "save_pretrained"):
            raise TypeError(f"cannot save {type(processor).__name__}: the processor has no save_pretrained")
        super()._save(folder, state_dict)
        processor.save_pretrained(os.path.join(folder, PROCESSOR_DIR))
        return {"backbone_config": self.backbone.config.to_dict()}

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device) -> "VLMScorer":
        require_assets(folder, {PROCESSOR_DIR: "the tokenizer / image processor"})
        if not isinstance(body.get("backbone_config"), dict):
            raise CheckpointError(f"{folder}/config.json has no backbone_config (the backbone's transformers config)")
        data = body.get("config", {})
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in cls.retired_config_fields}
        config = config_from_dict(cls.config_class, data, cls.model_type)
        try:
            processor = D.load_processor(os.path.join(folder, PROCESSOR_DIR))
        except (ValueError, OSError, KeyError) as e:
            raise CheckpointError(f"{folder}: cannot rebuild the backbone / processor: {e}") from e

        def build() -> "VLMScorer":
            try:
                backbone = D.backbone_from_dict(body["backbone_config"])
            except (ValueError, OSError, KeyError) as e:
                raise CheckpointError(f"{folder}: cannot rebuild the backbone / processor: {e}") from e
            return cls(config, backbone, processor)

        # built on the meta device first and its shapes compared with the weights' header: a hostile text_config
        # size is refused before it is allocated
        model = build_for_weights(build, folder)
        load_state_strict(model, load_weights(folder), folder)
        return model
