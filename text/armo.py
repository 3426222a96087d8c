"""ArmoRM (``RLHFlow/ArmoRM-Llama3-8B-v0.1``): a multi-objective reward model with a gating network,
read without its remote code.

The release is a ``LlamaForRewardModelWithGating`` whose modelling file ships in the checkpoint
(``auto_map``). Its computation, as that file writes it, on a Llama backbone:

* ``rewards = regression_layer(h_last)``: K objective rewards (K = ``num_objectives``, 19) from the
  hidden state of the last token;
* ``gate = softmax(MLP(h_gate) / temperature) · logit_scale``: the MLP is ``gating_n_hidden`` Linear
  + ReLU layers of width ``gating_hidden_dim`` and a Linear to K; ``h_gate`` is the hidden state at
  the start of the last ``<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n`` (the
  prompt's end);
* ``score = Σ_k gate_k · (rewards @ reward_transform_matrix)_k``.

The conversation is ``[user: prompt, assistant: response]`` through the tokenizer's chat template,
as its model card scores it. :class:`ArmoRewardModel` is a :class:`~.reward_model.RewardModel` whose
head is the regression layer; ``objectives`` gives the K rewards. Its score is not one linear head,
so it trains only without the fused head loss (``fused_head=False``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmreward.core.data import DataError
from mmreward.core.device import resolve_device, resolve_dtype
from mmreward.core.folders import CheckpointError
from mmreward.core.model import (eval_while_scoring, check_batch_size, check_ranges, finish_loading,
                                 load_state_strict, read_config, refuse_meta)
from mmreward.core.weights import backbone_state, check_shapes, hf_config, quiet_transformers, read_weights

from .data import model_max_length, pad_batch, truncation_warning
from .reward_model import RewardModel, RewardModelConfig, _tokenizer_argument, last_positions, load_tokenizer

ARCHITECTURE = "LlamaForRewardModelWithGating"
# the turn boundary whose first token feeds the gating network (the official token_pattern, Llama-3 ids
# [128009, 128006, 78191, 128007, 271])
GATING_TEXT = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


@dataclass
class ArmoRMConfig(RewardModelConfig):
    num_objectives: int = field(default=19, metadata={"help": "K, the objectives the regression layer predicts"})
    gating_hidden_dim: int = field(default=1024, metadata={"help": "width of the gating MLP's hidden layers"})
    gating_n_hidden: int = field(default=3, metadata={"help": "hidden (Linear + ReLU) layers of the gating MLP"})
    gating_temperature: float = field(default=10.0, metadata={"help": "softmax temperature of the gating output"})
    gating_pattern: list = field(default_factory=list, metadata={
        "help": "token ids whose last occurrence's first token is read by the gating network"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, counts=("num_objectives", "gating_hidden_dim"), naturals=("gating_n_hidden",))
        if not self.gating_temperature > 0:
            raise ValueError(f"ArmoRMConfig.gating_temperature must be > 0, got {self.gating_temperature!r}")
        if not self.gating_pattern or not all(isinstance(t, int) for t in self.gating_pattern):
            raise ValueError("ArmoRMConfig.gating_pattern must be a non-empty list of token ids")


class ArmoRewardModel(RewardModel):
    """ArmoRM on the one model contract (see the module docstring)."""

    model_type = "armo_rm"
    config_class = ArmoRMConfig

    def __init__(self, config: ArmoRMConfig, tokenizer: Any = None, backbone: Optional[nn.Module] = None):
        super().__init__(config, tokenizer, backbone)
        H, K = self.head.in_features, config.num_objectives
        self.head = nn.Linear(H, K, bias=False)  # the regression layer
        self.register_buffer("reward_transform_matrix", torch.eye(K))
        widths = [H] + [config.gating_hidden_dim] * config.gating_n_hidden
        self.gating = nn.ModuleList([nn.Linear(a, b) for a, b in zip(widths, widths[1:])] + [nn.Linear(widths[-1], K)])
        self.logit_scale = nn.Parameter(torch.ones(1))

    def _gate_at(self, ids: list[int], where: str) -> int:
        """Start of the last gating pattern in ``ids`` (the official ``find_token_for_gating``)."""
        pattern = list(self.config.gating_pattern)
        at = next((j for j in range(len(ids) - len(pattern), -1, -1) if ids[j:j + len(pattern)] == pattern), None)
        if at is None:
            raise DataError(f"{where} has no prompt turn before its reply: ArmoRM's gate reads the end of the "
                            "prompt, so it scores conversations of a prompt (user turn) and a reply")
        return at

    def gating_positions(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        """(N,) start of the last gating pattern in each row's tokens."""
        out = []
        for n, (ids, m) in enumerate(zip(input_ids.tolist(), mask.tolist())):
            offset = m.index(1)  # left padding shifts the row
            out.append(offset + self._gate_at([t for t, keep in zip(ids, m) if keep], f"batch row {n}"))
        return torch.tensor(out, device=input_ids.device)

    def check_encoded(self, rows: Sequence[Any]) -> None:
        for i, row in enumerate(rows):  # name the input, not its place in a sorted batch
            self._gate_at(row.ids, f"input {i}")

    def objectives_and_gate(self, input_ids: Tensor, attention_mask: Tensor,
                            transformed: bool = True, *, inputs_embeds: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``(rewards @ reward_transform_matrix (N, K), gate (N, K))``; ``transformed=False``: the
        regression layer's rewards as they are (the release's ``output.rewards``). With ``inputs_embeds``
        the backbone reads them and ``input_ids`` (the same tokens) only locate the gate."""
        if inputs_embeds is not None and not (isinstance(input_ids, Tensor)
                                              and tuple(input_ids.shape) == tuple(inputs_embeds.shape[:2])):
            raise ValueError("ArmoRM with inputs_embeds needs input_ids too, of shape (N, T): its gate reads the "
                             "position of the prompt's end, which only the token ids show")
        hidden, mask = self.token_states(None if inputs_embeds is not None else input_ids, attention_mask,
                                         inputs_embeds=inputs_embeds)  # (N, T, H), (N, T)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        dtype = self.head.weight.dtype
        rewards = self.head(hidden[rows, last_positions(mask)].to(dtype))
        if transformed:
            rewards = rewards @ self.reward_transform_matrix.to(dtype)
        g = hidden[rows, self.gating_positions(input_ids, mask)].to(dtype)  # (N, H)
        for i, layer in enumerate(self.gating):
            g = F.relu(layer(g)) if i < len(self.gating) - 1 else layer(g)
        gate = F.softmax(g / self.config.gating_temperature, dim=1) * self.logit_scale[0]
        return rewards, gate

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Optional[Tensor] = None,
                return_hidden: bool = False, *, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        if return_hidden:
            raise ValueError("ArmoRM's score is a gated mix of its objectives, not one linear head: train it with "
                             "the fused head loss off (fused_head=False, the default; no --fused-head)")
        rewards, gate = self.objectives_and_gate(input_ids, attention_mask, inputs_embeds=inputs_embeds)
        return (gate * rewards).sum(1)  # (N,)

    def objectives(self, inputs: Sequence[Any], *, batch_size: Optional[int] = None, transformed: bool = True) -> Tensor:
        """``Tensor[N, K]`` (float32, CPU): each input's K objective rewards after the transform
        matrix, the terms the gate weighs. ``transformed=False`` gives the regression layer's rewards
        before it: what the release's ``output.rewards`` holds (the model card's ``multi_obj_rewards``,
        one per attribute name), which differ wherever the matrix decorrelates an objective from
        verbosity."""
        if not isinstance(transformed, bool):
            raise TypeError(f"ArmoRewardModel.objectives: transformed must be True or False, got {transformed!r}")
        rows = self.encode(inputs)
        self.check_encoded(rows)
        truncation_warning(rows, self.encoder, stacklevel=3)  # as score(): one warning naming what was cut
        self.check_fits(rows)
        refuse_meta(self, "objectives")
        batch_size = check_batch_size(self.default_batch_size if batch_size is None else batch_size)
        out = torch.empty(len(rows), self.config.num_objectives)
        with eval_while_scoring(self):  # threads share one eval period
            with torch.inference_mode():
                for start in range(0, len(rows), batch_size):
                    ids, mask, _ = pad_batch(rows[start:start + batch_size], self.pad_id)
                    device = self.head.weight.device
                    out[start:start + len(ids)] = self.objectives_and_gate(ids.to(device), mask.to(device),
                                                                  transformed)[0].float().cpu()
        return out


# ------------------------------------------------------------------ the published layout
def is_armo(folder: str, config: Optional[dict]) -> bool:
    archs = (config or {}).get("architectures") or []
    return isinstance(archs, list) and ARCHITECTURE in archs


def load_armo(folder: str, *, device: Any = "cpu", dtype: Any = None, tokenizer: Any = None) -> ArmoRewardModel:
    """ArmoRM's release folder (Llama ``config.json`` with its gating settings, ``model.*`` backbone,
    ``regression_layer``, ``gating.*``, ``reward_transform_matrix``, tokenizer with the Llama-3 chat
    template) as an :class:`ArmoRewardModel`."""
    from transformers import AutoModel

    from .prm.model import building_for_weights, weights_dtype

    dev, dt = resolve_device(device), resolve_dtype(dtype)
    raw = read_config(folder)
    hf = hf_config(raw, folder, "llama")
    tok = _tokenizer_argument(tokenizer) if tokenizer is not None else load_tokenizer(folder)
    if not getattr(tok, "chat_template", None):
        raise CheckpointError(f"{folder}: ArmoRM scores chat conversations, and this tokenizer has no chat template")
    pattern = tok.encode(GATING_TEXT, add_special_tokens=False)
    weights = read_weights(folder)
    saved_dtype = weights_dtype(weights)
    K = int(raw.get("num_objectives", 19))
    n_hidden = int(raw.get("gating_n_hidden", 3))
    names = ["regression_layer.weight", "reward_transform_matrix", "gating.logit_scale"]
    names += [f"gating.layers.{i}.{p}" for i in range(n_hidden + 1) for p in ("weight", "bias")]
    missing = [n for n in names if n not in weights]
    if missing:
        raise CheckpointError(f"{folder}: missing ArmoRM head tensor(s) {missing[:4]} (regression layer, gating "
                              "network, reward_transform_matrix)")
    sources = {"head.weight": "regression_layer.weight", "reward_transform_matrix": "reward_transform_matrix",
               "logit_scale": "gating.logit_scale"}  # our name -> the release's
    sources.update({f"gating.{i}.{p}": f"gating.layers.{i}.{p}" for i in range(n_hidden + 1) for p in ("weight", "bias")})
    state = {ours: weights.pop(theirs) for ours, theirs in sources.items()}
    backbone = backbone_state(weights, folder, "ArmoRM")
    config = ArmoRMConfig(backbone={**hf.to_dict(), "model_type": hf.model_type}, input_format="chat", pooling="last",
                          max_length=model_max_length(tok, hf), num_objectives=K,
                          gating_hidden_dim=int(raw.get("gating_hidden_dim", 1024)), gating_n_hidden=n_hidden,
                          gating_temperature=float(raw.get("gating_temperature", 10)), gating_pattern=pattern)
    with quiet_transformers(), building_for_weights(saved_dtype):  # as saved (bf16): no fp32 copy, no random init
        model = ArmoRewardModel(config, tok, backbone=AutoModel.from_config(hf))
    check_shapes(model, {**backbone, **state}, folder, "ArmoRM", sources)
    load_state_strict(model, {**backbone, **state}, folder)
    return finish_loading(model, dev, dt)


__all__ = ["ArmoRMConfig", "ArmoRewardModel", "is_armo", "load_armo"]
