"""Low-rank adapters (LoRA) and gradient checkpointing for training large backbones.

LoRA (Hu et al., 2021) freezes a linear layer's weight ``W`` (out × in) and trains a low-rank update::

    y = x Wᵀ + b + (α / r) · dropout(x) Aᵀ Bᵀ        A: (r, in), B: (out, r)

``A`` starts as ``nn.Linear``'s own init (Kaiming-uniform), ``B`` at zero, so a fresh adapter leaves the
model's outputs unchanged. The factors live in float32 whatever the base weight's dtype (a bfloat16
backbone trains float32 adapters, as PEFT's ``autocast_adapter_dtype`` does). :func:`apply_lora` wraps a
module's matching ``nn.Linear`` layers in place and freezes every other parameter of that module;
:func:`merge_lora` folds each update into its weight (``W + (α/r)·B A``) and puts plain ``nn.Linear``
layers back, so a merged model has the key names, shapes and speed of one trained in full.
:func:`merged_state_dict` gives the merged weights without changing the model (what ``save_pretrained``
writes for a model with adapters: a saved folder never holds adapter keys).

:func:`enable_gradient_checkpointing` turns on a transformers backbone's activation checkpointing (the
non-reentrant kind: gradients reach frozen embeddings' outputs and adapters alike).

:class:`AdapterOptions` holds both as training-config fields (``--lora-rank``, …, ``--gradient-checkpointing``)
and :class:`BackboneSetup` applies them to a model's ``backbone`` for one run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ALL_LINEAR = "all-linear"


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str = ALL_LINEAR  # "all-linear" or comma-separated module names (the last part of a name)

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if isinstance(self.alpha, bool) or not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)
                                                and self.alpha > 0):
            raise ValueError(f"LoRA alpha must be a finite number > 0, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.targets, str) or not target_names(self.targets):
            raise ValueError(f"LoRA targets must be {ALL_LINEAR!r} or comma-separated module names "
                             f"(e.g. 'q_proj,v_proj'), got {self.targets!r}")


def target_names(targets: str) -> list[str]:
    return [t.strip() for t in targets.split(",") if t.strip()] if isinstance(targets, str) else []


class LoraLinear(nn.Module):
    """A frozen ``nn.Linear`` (``base``, frozen here) plus a trainable low-rank update (see the module docstring)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoraLinear wraps an nn.Linear, got {type(base).__name__}")
        self.base = base.requires_grad_(False)  # only the factors train
        self.rank, self.alpha, self.dropout = int(rank), float(alpha), float(dropout)
        self.scaling = self.alpha / self.rank
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init

    @property
    def weight(self) -> Tensor:  # code that reads layer.weight (dtype / device probes, tied heads) sees the base's
        return self.base.weight

    @property
    def bias(self) -> Optional[Tensor]:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: Tensor) -> Tensor:  # x: (..., in) -> (..., out)
        out = self.base(x)
        h = x.to(self.lora_A.dtype)
        if self.dropout and self.training:  # its own rate: disable_dropout (nn.Dropout p = 0) leaves it as set
            h = F.dropout(h, self.dropout, training=True)
        return out + (F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling).to(out.dtype)

    def delta(self) -> Tensor:
        """The update ``(α/r)·B A`` (out × in), float32."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the update folded into its weight (in the base's dtype)."""
        base = self.base
        layer = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                          device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_((base.weight.float() + self.delta()).to(base.weight.dtype))
            if base.bias is not None:
                layer.bias.copy_(base.bias)
        layer.weight.requires_grad_(base.weight.requires_grad)
        if base.bias is not None:
            layer.bias.requires_grad_(base.bias.requires_grad)
        return layer

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, dropout={self.dropout:g}"


def _set_child(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def lora_layers(module: nn.Module) -> dict[str, LoraLinear]:
    """``{name: LoraLinear}`` of ``module`` (empty: no adapters)."""
    return {n: m for n, m in module.named_modules() if isinstance(m, LoraLinear)}


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(m, LoraLinear) for m in module.modules())


class LoraApplied:
    """What :func:`apply_lora` changed, so that :meth:`undo` puts the module back exactly (a run refused
    after the adapters were added leaves the model as it was)."""

    def __init__(self, root: nn.Module, wrapped: list[str], requires_grad: dict[str, bool]):
        self.root, self.wrapped, self.requires_grad = root, wrapped, requires_grad

    def undo(self) -> None:
        """Remove the adapters (their updates are dropped) and restore every ``requires_grad`` flag."""
        for name in self.wrapped:
            layer = self.root.get_submodule(name)
            if isinstance(layer, LoraLinear):
                _set_child(self.root, name, layer.base)
        self._restore_flags()

    def merge(self) -> None:
        """Fold the adapters into the weights (:func:`merge_lora`) and restore every ``requires_grad`` flag:
        the module is a plain one again, trainable as it was before the adapters."""
        merge_lora(self.root)
        self._restore_flags()

    def _restore_flags(self) -> None:
        params = dict(self.root.named_parameters())
        for name, flag in self.requires_grad.items():
            if name in params:
                params[name].requires_grad_(flag)


def apply_lora(module: nn.Module, settings: LoraSettings, *, trainable_only: bool = False) -> LoraApplied:
    """Wrap ``module``'s target ``nn.Linear`` layers in :class:`LoraLinear` (in place) and freeze every
    parameter of ``module`` but the adapters. Targets: every ``nn.Linear`` (``"all-linear"``; a language
    model's output layer, ``get_output_embeddings()``, left out), or those
    whose name's last part is one of the comma-separated names. A target name that matches no linear
    layer is an error naming the layer names there are. ``trainable_only``: layers whose weight is frozen
    (``requires_grad=False``: a vision tower frozen by ``freeze_vision_tower``) get no adapter either."""
    if not isinstance(settings, LoraSettings):
        raise TypeError(f"settings must be LoraSettings, got {type(settings).__name__}")
    if has_lora(module):
        raise ValueError("the model already has LoRA adapters (merge_lora(model) folds them into its weights)")
    # exactly nn.Linear: a subclass may read its .weight itself (nn.MultiheadAttention's out_proj), past the adapter
    linear = {n: m for n, m in module.named_modules() if type(m) is nn.Linear and n
              and (m.weight.requires_grad or not trainable_only)}
    if not linear:
        if trainable_only and any(type(m) is nn.Linear for m in module.modules()):
            raise ValueError(f"every nn.Linear layer of {type(module).__name__} is frozen (requires_grad=False), so "
                             "none takes an adapter: unfreeze the layers to adapt (e.g. module.requires_grad_(True) "
                             "after merge_lora, which leaves them frozen)")
        raise ValueError(f"{type(module).__name__} has no nn.Linear layers to put LoRA adapters on (GPT-2-style "
                         "Conv1D projections are not adapted): train it without lora_rank")
    if settings.targets.strip() == ALL_LINEAR:
        # as PEFT's all-linear: not a language model's output layer (vocab × hidden, read through the logits)
        output = module.get_output_embeddings() if callable(getattr(module, "get_output_embeddings", None)) else None
        chosen = [n for n, m in linear.items() if m is not output]
    else:
        wanted = target_names(settings.targets)
        chosen = [n for n in linear if n.rsplit(".", 1)[-1] in wanted]
        found = {n.rsplit(".", 1)[-1] for n in chosen}
        missing = [t for t in wanted if t not in found]
        if missing:
            names = sorted({n.rsplit(".", 1)[-1] for n in linear})
            # a layer of that name that is no plain nn.Linear (Conv1D, a quantised or fused linear): say why it is
            # not adapted, rather than list names it is not among
            other = sorted({f"{n.rsplit('.', 1)[-1]}: {type(m).__name__}" for n, m in module.named_modules()
                            if n and n.rsplit(".", 1)[-1] in missing and type(m) is not nn.Linear})
            why = (f" ({', '.join(other[:5])}: only plain nn.Linear layers get adapters)" if other else "")
            if trainable_only and not why and any(n.rsplit(".", 1)[-1] in missing for n, m in module.named_modules()
                                                  if type(m) is nn.Linear):
                why = " that trains (those of that name are frozen, e.g. by freeze_vision_tower)"
            raise ValueError(f"LoRA targets {missing} match no linear layer of {type(module).__name__}{why}; its "
                             f"linear layers are named {names[:20]}{' …' if len(names) > 20 else ''} (or give "
                             f"{ALL_LINEAR!r})")
    # a weight tied to another parameter (an output layer sharing the input embeddings): folding the update into
    # it would untie the two, and a model rebuilt with the tie would load one of them over the other
    names_of: dict[int, list[str]] = {}
    for n, p in module.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(n)
    tied = {n: names_of[id(linear[n].weight)] for n in chosen if len(names_of.get(id(linear[n].weight), ())) > 1}
    if tied:
        shared = next(iter(tied.values()))
        raise ValueError(f"LoRA targets include {sorted(tied)}, whose weight is tied to another "
                         f"({' = '.join(shared)}): its folded update would untie them; leave it out of lora_targets")
    requires_grad = {n: p.requires_grad for n, p in module.named_parameters()}
    for p in module.parameters():
        p.requires_grad_(False)
    for name in chosen:
        _set_child(module, name, LoraLinear(linear[name], settings.rank, settings.alpha, settings.dropout))
    return LoraApplied(module, chosen, requires_grad)


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter of ``module`` into its weight and put the plain ``nn.Linear`` back (in place);
    returns how many layers were merged. The merged layers' weights stay frozen as their base was."""
    layers = lora_layers(module)
    for name, layer in layers.items():
        if name:
            _set_child(module, name, layer.merged())
    return len(layers)


def _plain_keys(module: nn.Module) -> dict[str, tuple[str, Optional[LoraLinear]]]:
    """``{key without adapters: (key in module.state_dict(), its LoraLinear when it is an adapted weight)}``."""
    prefixes = {f"{name}.": layer for name, layer in lora_layers(module).items()}
    out: dict[str, tuple[str, Optional[LoraLinear]]] = {}
    for key in module.state_dict(keep_vars=True):
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            out[key] = (key, None)
            continue
        rest = key[len(prefix):]
        if rest in ("lora_A", "lora_B"):
            continue
        if not rest.startswith("base."):  # pragma: no cover - LoraLinear holds only base + the factors
            raise RuntimeError(f"unexpected key {key!r} in a LoRA layer")
        rest = rest[len("base."):]
        out[prefix + rest] = (key, prefixes[prefix] if rest == "weight" else None)
    return out


def plain_state_view(module: nn.Module) -> dict[str, Tensor]:
    """The model's own tensors under the key names :func:`merged_state_dict` gives (adapted weights unfolded:
    their names and shapes, computing nothing)."""
    state = module.state_dict()
    return {key: state[own] for key, (own, _) in _plain_keys(module).items()}


def merged_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """``module.state_dict()`` with each adapter folded into its weight, in the key names of the model
    without adapters (``….base.weight`` → ``….weight``; no ``lora_A`` / ``lora_B``). The model is not changed.
    The folded weights are new tensors on the CPU, made one at a time (no second copy of the weights on the
    accelerator: the end of a LoRA run on a small GPU has no room for one); the others are the model's own."""
    if not has_lora(module):
        return module.state_dict()
    state = module.state_dict()
    out: dict[str, Tensor] = {}
    for key, (own, layer) in _plain_keys(module).items():
        value = state[own]
        if layer is not None:
            with torch.no_grad():
                value = (value.detach().to("cpu", torch.float32) + layer.delta().detach().cpu()).to(value.dtype)
        out[key] = value
    return out


def enable_gradient_checkpointing(backbone: nn.Module) -> None:
    """Recompute the backbone's activations in the backward pass instead of keeping them (less memory,
    about a third more compute): transformers' activation (gradient) checkpointing, non-reentrant. A
    backbone without it is an error naming its class."""
    if not getattr(backbone, "supports_gradient_checkpointing", False):
        raise ValueError(f"gradient checkpointing: {type(backbone).__name__} does not support it (a transformers "
                         "model with supports_gradient_checkpointing is needed); train without it")
    kwargs = {"use_reentrant": False}
    if callable(getattr(backbone, "activation_checkpointing_enable", None)):  # transformers >= 5.x's name
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # config.use_cache is left as it is (transformers turns the cache off for checkpointed training steps itself):
    # the saved folder's backbone config stays the model's own


def gradient_checkpointing_on(backbone: nn.Module) -> bool:
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        flag = getattr(backbone, name, None)
        if flag is not None:
            return bool(flag() if callable(flag) else flag)
    return False


def disable_gradient_checkpointing(backbone: nn.Module) -> None:
    for name in ("activation_checkpointing_disable", "gradient_checkpointing_disable"):
        disable = getattr(backbone, name, None)
        if callable(disable):
            disable()
            return


# ------------------------------------------------------------------ training options
@dataclass
class AdapterOptions:
    """Training-config fields for LoRA and gradient checkpointing (a mixin: ``class C(AdapterOptions,
    TrainConfig)``; the config's ``__post_init__`` calls :meth:`check_adapter_options`)."""

    lora_rank: int = field(default=0, metadata={"help": "LoRA rank r: train low-rank adapters on the backbone's linear layers (the head in full) and freeze the rest; 0: train every weight"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling alpha (the update is alpha / r * B A)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the adapters' input, in [0, 1)"})
    lora_targets: str = field(default=ALL_LINEAR, metadata={"help": "backbone linear layers given adapters: all-linear, or comma-separated names (e.g. q_proj,v_proj)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute each backbone block's activations in the backward pass instead of keeping them: less memory, one more forward per step"})

    def check_adapter_options(self, name: str) -> None:
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ValueError(f"{name}.lora_rank must be an integer >= 0 (0: no LoRA), got {self.lora_rank!r}")
        if self.lora_rank:
            try:
                self.lora_settings()
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        else:  # an adapter option given without a rank would be ignored without a word
            fields = AdapterOptions.__dataclass_fields__
            changed = [k for k in ("lora_alpha", "lora_dropout", "lora_targets") if getattr(self, k) != fields[k].default]
            if changed:
                raise ValueError(f"{name}: {', '.join(changed)} set but lora_rank is 0 (no adapters): give lora_rank "
                                 "(--lora-rank R) to train with LoRA")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(f"{name}.gradient_checkpointing must be True or False, got {self.gradient_checkpointing!r}")

    def lora_settings(self) -> Optional[LoraSettings]:
        """The LoRA settings, or None when ``lora_rank`` is 0."""
        if not self.lora_rank:
            return None
        return LoraSettings(self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets)

    def adapter_record(self) -> dict:
        """The adapter settings a resumed run must share (its snapshot holds the adapters' tensors); {} without
        LoRA, so a run without adapters keeps the fingerprint it always had."""
        s = self.lora_settings()
        if s is None:
            return {}
        # "q_proj,v_proj" and "v_proj, q_proj" choose the same layers: the same run
        targets = ALL_LINEAR if s.targets.strip() == ALL_LINEAR else sorted(set(target_names(s.targets)))
        return {"lora": {"rank": s.rank, "alpha": float(s.alpha), "dropout": float(s.dropout), "targets": targets}}


class BackboneSetup:
    """LoRA adapters and / or gradient checkpointing put on ``model.backbone`` for one run, as the
    :class:`AdapterOptions` ``config`` asks: :meth:`undo` puts the backbone back as it was (a refused
    run), :meth:`finish` after a finished run folds the adapters into the weights (the model is a plain
    one, as its saved folder is) and turns checkpointing off again. Under LoRA the head (and any other
    module outside the backbone) trains in full; every other backbone weight is frozen."""

    def __init__(self, model: nn.Module, config: AdapterOptions):
        self.backbone = model.backbone
        settings = config.lora_settings()
        if has_lora(model):
            # lora_rank=0 included: the adapters' apply_lora froze every other backbone weight, so the run would
            # train the adapters and the head alone, not the full fine-tuning asked for, without a word
            raise ValueError("the model already has LoRA adapters, and every other backbone weight frozen (from "
                             "apply_lora, or a reward_trainer(...).fit() that stopped before its end): fold them in "
                             "first with trainer.backbone_setup.finish() (the weights trainable as they were) or "
                             "mmreward.core.lora.merge_lora(model) (the weights stay frozen)")
        # frozen layers (a VLM's vision tower under freeze_vision_tower) stay as the freeze settings say
        self.adapters = apply_lora(self.backbone, settings, trainable_only=True) if settings is not None else None
        self.checkpointing = bool(config.gradient_checkpointing) and not gradient_checkpointing_on(self.backbone)
        if self.checkpointing:
            try:
                enable_gradient_checkpointing(self.backbone)
            except BaseException:
                self.checkpointing = False
                self.undo()
                raise

    def undo(self) -> None:
        if self.adapters is not None:
            self.adapters.undo()
            self.adapters = None
        self._checkpointing_off()

    def finish(self) -> None:
        """After a run (finished, or stopped by an error or an interrupt: its snapshot holds the adapters): fold
        the adapters into the weights, restore every ``requires_grad`` flag, turn checkpointing off."""
        if self.adapters is not None:
            self.adapters.merge()
            self.adapters = None
        self._checkpointing_off()

    def fit(self, trainer) -> list[dict]:
        """``trainer.fit()``, then :meth:`finish` whether it ends or stops (Ctrl-C, a diverged step): a model
        left with adapters and a frozen backbone would train only those in a next run that asked for more."""
        try:
            history = trainer.fit()
        except BaseException:
            try:
                self.finish()
            except Exception as folding:  # noqa: BLE001 - the run's own error (an OOM, Ctrl-C) is the one to see
                import warnings

                warnings.warn(f"the adapters could not be folded in after the run stopped ({folding}); the model "
                              "still holds them: the newest snapshot has the run's state", stacklevel=2)
            raise
        self.finish()
        return history

    def _checkpointing_off(self) -> None:
        if self.checkpointing:
            disable_gradient_checkpointing(self.backbone)
            self.checkpointing = False
