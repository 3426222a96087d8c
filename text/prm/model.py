"""``ProcessRewardModel``: per-step scores from any Hugging Face backbone, two heads.

* ``head="lm"`` (Math-Shepherd / Qwen-PRM): a causal LM reads P(good) at each step tag from the
  logits of two label tokens (``+`` / ``-``). Only those two LM-head rows are kept, as their own
  parameters, and :func:`mmreward.ops.step_scores` reads them at the tag positions — no
  vocabulary-sized logits are ever built.
* ``head="value"`` (TRL PRM token classification / ReST-MCTS* value / rStar PPM): a scalar
  ``h·w + b`` at each step tag (:func:`mmreward.ops.step_values`) on a causal LM or an encoder.

Input layout: ``problem ⏎ step₁ <tag> ⏎ step₂ <tag> ⏎ …``; every piece is tokenized on its own, so
BPE merges never move a tag, and a step's score is read at the last token of its tag.
``score_steps(problem, steps) -> Tensor[K]``; aggregation min / prod / last / mean via
:func:`mmreward.ops.segment_reduce`; :meth:`best_of_n` picks a candidate by its aggregate.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import nn

from mmreward import ops
from mmreward.core.checkpoint import CheckpointError, load_model, save_model

__all__ = ["PRMConfig", "ProcessRewardModel", "AGGREGATIONS"]

MODEL_TYPE = "process_reward_model"
AGGREGATIONS = ("min", "prod", "last", "mean")
TOKENIZER_DIR = "tokenizer"


@dataclass
class PRMConfig:
    head: str = field(default="lm", metadata={"help": "lm: P(good) from two label tokens of a causal LM; value: scalar head"})
    backbone: dict = field(default_factory=dict, metadata={"help": "the backbone's Hugging Face config (to_dict())"})
    step_tag: str = field(default=" ки", metadata={"help": "text appended to every step; its last token is scored"})
    step_separator: str = field(default="\n", metadata={"help": "text between the problem and steps"})
    good_token: str = field(default="+", metadata={"help": "lm head: the good-step label token"})
    bad_token: str = field(default="-", metadata={"help": "lm head: the bad-step label token"})
    score: str = field(default="sigmoid", metadata={"help": "sigmoid: scores are P(good); identity: raw values (MSE value head)"})
    max_length: int = field(default=1024, metadata={"help": "longest token sequence scored (problem + steps)"})

    def __post_init__(self):
        if self.head not in ("lm", "value"):
            raise ValueError(f"PRMConfig.head must be 'lm' or 'value', got {self.head!r}")
        if self.score not in ("sigmoid", "identity"):
            raise ValueError(f"PRMConfig.score must be 'sigmoid' or 'identity', got {self.score!r}")
        if self.head == "lm" and self.score != "sigmoid":
            raise ValueError("the lm head scores P(good): use score='sigmoid'")
        if not self.step_tag:
            raise ValueError("PRMConfig.step_tag must not be empty")


class _StopForward(Exception):
    """Ends a backbone forward once the wanted block input has been grabbed."""


def _single_token(tokenizer, text: str, what: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{what} {text!r} must be one token of the tokenizer, got ids {ids}")
    return ids[0]


def _build_backbone(cfg: dict) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    cfg = dict(cfg)
    if "model_type" not in cfg:
        raise CheckpointError("PRM config has no backbone model_type")
    hf_cfg = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return _drop_pooler(AutoModel.from_config(hf_cfg))


def _drop_pooler(base: nn.Module) -> nn.Module:
    """Encoders' poolers (BERT) are unused here; DDP would flag their parameters as never used."""
    if isinstance(getattr(base, "pooler", None), nn.Module):
        base.pooler = None
    return base


class ProcessRewardModel(nn.Module):
    """Build with :meth:`from_backbone` (a transformers model + tokenizer) or :meth:`from_pretrained`."""

    def __init__(self, config: PRMConfig, tokenizer, backbone: Optional[nn.Module] = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.backbone = backbone if backbone is not None else _build_backbone(config.backbone)
        H = self.backbone.config.hidden_size
        dtype = next(self.backbone.parameters()).dtype
        if config.head == "lm":
            self.good_id = _single_token(tokenizer, config.good_token, "good_token")
            self.bad_id = _single_token(tokenizer, config.bad_token, "bad_token")
            if self.good_id == self.bad_id:
                raise ValueError("good_token and bad_token map to the same token id")
            self.label_rows = nn.Parameter(torch.zeros(2, H, dtype=dtype))  # (2, H): good, bad LM-head rows
            self.label_bias = nn.Parameter(torch.zeros(2, dtype=dtype))
        else:
            self.value_weight = nn.Parameter(torch.randn(H, dtype=dtype) * H**-0.5)  # (H,)
            self.value_bias = nn.Parameter(torch.zeros((), dtype=dtype))
        self._tag_ids = tokenizer.encode(config.step_tag, add_special_tokens=False)
        if not self._tag_ids:
            raise ValueError(f"step_tag {config.step_tag!r} encodes to no tokens")
        self._sep_ids = tokenizer.encode(config.step_separator, add_special_tokens=False)
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        self._start_ids = [start] if start is not None else []
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(cls, model: nn.Module, tokenizer, head: str = "lm", **config: Any) -> "ProcessRewardModel":
        """Wrap a transformers model. ``head="lm"`` needs a causal LM: its two label rows (and biases)
        initialise the head and the rest of the LM head is dropped."""
        base = _drop_pooler(model.base_model)
        cfg = PRMConfig(head=head, backbone=base.config.to_dict(), **config)
        prm = cls(cfg, tokenizer, backbone=base)
        if head == "lm":
            out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            if out is None or out is base or not hasattr(out, "weight"):
                raise ValueError("head='lm' needs a causal LM with an output embedding (LM head); use head='value' for encoders")
            with torch.no_grad():
                prm.label_rows.copy_(out.weight[[prm.good_id, prm.bad_id]])
                if getattr(out, "bias", None) is not None:
                    prm.label_bias.copy_(out.bias[[prm.good_id, prm.bad_id]])
        return prm

    def _decoder_slot(self) -> tuple[nn.Module, str, nn.ModuleList]:
        """(module holding the blocks, its attribute name, the blocks)."""
        for path in ("layers", "encoder.layer", "h", "decoder.layers"):
            *parents, last = path.split(".")
            owner = self.backbone
            for name in parents:
                owner = getattr(owner, name, None)
            mod = getattr(owner, last, None)
            if isinstance(mod, nn.ModuleList):
                return owner, last, mod
        raise ValueError(f"cannot find the transformer blocks of {type(self.backbone).__name__}")

    def decoder_layers(self) -> nn.ModuleList:
        """The backbone's stack of transformer blocks (Llama/Qwen ``layers``, BERT ``encoder.layer``, GPT-2 ``h``)."""
        return self._decoder_slot()[2]

    def freeze_backbone(self, trainable_layers: int) -> int:
        """Train only the last ``trainable_layers`` blocks, the final norm and the head: embeddings
        and lower blocks get ``requires_grad=False`` (no backward through them, so a step costs a
        forward plus the top blocks' backward). ``-1`` unfreezes everything. Returns the number of
        trainable parameters."""
        if not isinstance(trainable_layers, int) or isinstance(trainable_layers, bool) or trainable_layers < -1:
            raise ValueError(f"trainable_layers must be an int >= -1 (-1 = all), got {trainable_layers!r}")
        for p in self.parameters():
            p.requires_grad_(trainable_layers == -1)
        if trainable_layers != -1:
            layers = self.decoder_layers()
            if trainable_layers > len(layers):
                raise ValueError(f"trainable_layers={trainable_layers} but the backbone has {len(layers)} blocks")
            keep = [layers[i] for i in range(len(layers) - trainable_layers, len(layers))]
            norm = getattr(self.backbone, "norm", None)  # causal LMs' final norm sits after the last block
            keep += [norm] if isinstance(norm, nn.Module) else []
            for mod in keep:
                for p in mod.parameters():
                    p.requires_grad_(True)
            head = (self.label_rows, self.label_bias) if self.config.head == "lm" else (self.value_weight, self.value_bias)
            for p in head:
                p.requires_grad_(True)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def save_pretrained(self, folder: str) -> None:
        """``config.json`` + ``model.safetensors`` (atomic, via core.checkpoint) + ``tokenizer/``."""
        os.makedirs(folder, exist_ok=True)
        # own subfolder: AutoTokenizer would otherwise read our config.json as a transformers config
        self.tokenizer.save_pretrained(os.path.join(folder, TOKENIZER_DIR))
        save_model(folder, self.state_dict(), {"model_type": MODEL_TYPE, "config": dataclasses.asdict(self.config)})

    @classmethod
    def from_pretrained(cls, folder: str, device: str = "cpu") -> "ProcessRewardModel":
        state, body = load_model(folder, device)
        if body.get("model_type") != MODEL_TYPE:
            raise CheckpointError(f"{folder} holds a {body.get('model_type')!r} model, not {MODEL_TYPE!r}")
        try:
            cfg = PRMConfig(**body.get("config", {}))
        except TypeError as e:
            raise CheckpointError(f"{folder}: bad PRM config: {e}") from e
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(os.path.join(folder, TOKENIZER_DIR))
        except Exception as e:  # missing / corrupt tokenizer files
            raise CheckpointError(f"cannot load the tokenizer saved in {folder}: {e}") from e
        model = cls(cfg, tok)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"weights in {folder} do not match its config: {e}") from e
        return model.to(device).eval()

    # ------------------------------------------------------------------ encoding
    def encode_one(self, problem: str, steps: Sequence[str], truncate: bool = False) -> tuple[list[int], list[int]]:
        """Token ids and the positions of the step tags. ``truncate``: drop trailing steps that do not
        fit ``max_length`` (else raise)."""
        if not isinstance(problem, str):
            raise TypeError(f"problem must be a str, got {type(problem).__name__}")
        enc = lambda t: self.tokenizer.encode(t, add_special_tokens=False)  # noqa: E731
        ids = self._start_ids + enc(problem) + self._sep_ids
        tags = []
        for k, s in enumerate(steps):
            if not isinstance(s, str):
                raise TypeError(f"step {k} must be a str, got {type(s).__name__}")
            piece = enc(s) + self._tag_ids
            if len(ids) + len(piece) > self.config.max_length:
                if truncate and tags:
                    break
                raise ValueError(f"problem + {k + 1} steps need more than max_length={self.config.max_length} tokens")
            ids += piece
            tags.append(len(ids) - 1)
            ids += self._sep_ids
        return ids[: self.config.max_length], tags

    def encode(self, problems: Sequence[str], steps: Sequence[Sequence[str]], truncate: bool = False) -> dict[str, torch.Tensor]:
        """Right-padded batch: ``input_ids``/``attention_mask``/``step_mask`` (B, T), ``lengths`` (B,)."""
        if len(problems) != len(steps):
            raise ValueError(f"{len(problems)} problems but {len(steps)} step lists")
        if not problems:
            raise ValueError("nothing to encode (empty batch)")
        rows = [self.encode_one(p, s, truncate) for p, s in zip(problems, steps)]
        T = max(len(ids) for ids, _ in rows)
        B = len(rows)
        input_ids = torch.full((B, T), self._pad_id, dtype=torch.long)
        attn = torch.zeros(B, T, dtype=torch.long)
        step_mask = torch.zeros(B, T, dtype=torch.bool)
        for b, (ids, tags) in enumerate(rows):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            attn[b, : len(ids)] = 1
            step_mask[b, tags] = True
        return {"input_ids": input_ids, "attention_mask": attn, "step_mask": step_mask,
                "lengths": step_mask.sum(1)}

    # ------------------------------------------------------------------ scoring
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # (B, T, H)
        out = self.backbone(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device))
        return out.last_hidden_state

    @torch.no_grad()
    def prefix_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, first_block: int) -> torch.Tensor:
        """``(B, T, H)``: the residual stream entering block ``first_block``; the blocks from there on do not run.
        With the blocks below frozen this is a constant per input, so it can be computed once and cached
        (``PRMTrainConfig.cache_frozen``); :meth:`forward` takes it back as ``prefix_states``."""
        layers = self.decoder_layers()
        if not 0 < first_block < len(layers):
            raise ValueError(f"first_block must be in [1, {len(layers) - 1}], got {first_block}")
        grabbed: dict = {}

        def grab(_mod, args, kwargs):
            grabbed["h"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            raise _StopForward

        hook = layers[first_block].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.hidden_states(input_ids, attention_mask)
        except _StopForward:
            pass
        finally:
            hook.remove()
        if "h" not in grabbed:
            raise ValueError(f"{type(self.backbone).__name__} never ran block {first_block}")
        return grabbed["h"]

    def top_hidden_states(self, prefix: torch.Tensor, attention_mask: torch.Tensor, first_block: int) -> torch.Tensor:
        """``(B, T, H)`` final hidden states computed from :meth:`prefix_states` by blocks ``first_block`` …
        only: the backbone runs with ``inputs_embeds=prefix`` and its block list cut to those blocks for the
        call. That is exact for decoders that feed ``inputs_embeds`` straight to the first block (Llama, Qwen,
        Mistral, SmolLM2); ``train_prm`` checks it on the first batch before training on a cache."""
        owner, name, layers = self._decoder_slot()
        setattr(owner, name, nn.ModuleList(list(layers)[first_block:]))
        try:
            out = self.backbone(inputs_embeds=prefix.to(self.device), attention_mask=attention_mask.to(self.device))
        finally:
            setattr(owner, name, layers)
        return out.last_hidden_state

    def head_row(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single (H,) row and bias whose dot product with a step's hidden state is its logit."""
        if self.config.head == "lm":
            return self.label_rows[0] - self.label_rows[1], self.label_bias[0] - self.label_bias[1]
        return self.value_weight, self.value_bias

    def step_logits(self, hidden: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:  # (S,)
        step_mask = step_mask.to(hidden.device)
        if self.config.head == "lm":
            return ops.step_logits(hidden, self.label_rows[0], self.label_rows[1], b_good=self.label_bias[0],
                                   b_bad=self.label_bias[1], step_mask=step_mask)
        return ops.step_values(hidden, self.value_weight, self.value_bias, step_mask=step_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, step_mask: torch.Tensor,
                objective: Optional[str] = None, labels: Optional[torch.Tensor] = None,
                pos_index: Optional[torch.Tensor] = None, neg_index: Optional[torch.Tensor] = None,
                pair_group: Optional[torch.Tensor] = None, prefix_states: Optional[torch.Tensor] = None,
                prefix_from: int = 0, **_) -> torch.Tensor:
        """``objective=None``: per-step scores ``(S,)`` in row-major step order (P(good) unless
        ``score='identity'``). Otherwise the mean training loss through the fused step ops:
        ``"bce"`` (``labels`` (S,) hard / soft / −100), ``"mse"`` (value targets in ``labels``),
        ``"ppm"`` (pairwise −log σ(r_pos − r_neg) over ``pos_index``/``neg_index``, weighted
        1/(n_pos·n_neg) per ``pair_group``). The loss lives here so DDP sees it in ``forward``.
        ``prefix_states`` (B, T, H): cached input of block ``prefix_from`` (see :meth:`prefix_states`);
        only the blocks from there on run."""
        if prefix_states is not None:
            hidden = self.top_hidden_states(prefix_states, attention_mask, prefix_from)  # (B, T, H)
        else:
            hidden = self.hidden_states(input_ids, attention_mask)  # (B, T, H)
        step_mask = step_mask.to(hidden.device)
        lm = self.config.head == "lm"
        if objective is None:
            if lm:
                return ops.step_scores(hidden, self.label_rows[0], self.label_rows[1], b_good=self.label_bias[0],
                                       b_bad=self.label_bias[1], step_mask=step_mask)
            v = self.step_logits(hidden, step_mask)
            return torch.sigmoid(v) if self.config.score == "sigmoid" else v
        if objective in ("bce", "mse") and labels is None:
            raise ValueError(f"objective {objective!r} needs per-step `labels`")
        if objective == "bce":
            if lm:
                return ops.step_bce_loss(hidden, self.label_rows[0], self.label_rows[1], labels.to(hidden.device),
                                         b_good=self.label_bias[0], b_bad=self.label_bias[1], step_mask=step_mask)
            zero = torch.zeros_like(self.value_weight)  # one-row head: logit = h·w + b
            return ops.step_bce_loss(hidden, self.value_weight, zero, labels.to(hidden.device),
                                     b_good=self.value_bias, step_mask=step_mask)
        w, b = self.head_row()
        if objective == "mse":
            return ops.step_value_loss(hidden, w, labels.to(hidden.device), b, step_mask=step_mask)
        if objective == "ppm":
            if pos_index is None or neg_index is None:
                raise ValueError("objective 'ppm' needs `pos_index` and `neg_index`")
            return ops.step_pair_loss(hidden, w, b, step_mask=step_mask, pos_index=pos_index.to(hidden.device),
                                      neg_index=neg_index.to(hidden.device),
                                      pair_group=None if pair_group is None else pair_group.to(hidden.device))
        raise ValueError(f"objective must be None, 'bce', 'mse' or 'ppm', got {objective!r}")

    @torch.no_grad()
    def score_batch(self, problems: Sequence[str], steps: Sequence[Sequence[str]], batch_size: int = 16) -> list[torch.Tensor]:
        """One ``Tensor[K_i]`` of step scores per (problem, steps) pair."""
        was_training = self.training
        self.eval()
        out: list[torch.Tensor] = []
        try:
            for i in range(0, len(problems), batch_size):
                batch = self.encode(problems[i: i + batch_size], steps[i: i + batch_size])
                scores = self(**batch).float().cpu()
                out += list(torch.split(scores, batch["lengths"].tolist()))
        finally:
            self.train(was_training)
        return out

    def score_steps(self, problem: str, steps: Sequence[str]) -> torch.Tensor:
        """``Tensor[K]``: one score per step of one solution."""
        if not steps:
            raise ValueError("score_steps: `steps` is empty")
        return self.score_batch([problem], [list(steps)])[0]

    def aggregate(self, problem: str, candidates: Sequence[Sequence[str]], reduce: str = "min") -> torch.Tensor:
        """``Tensor[N]``: each candidate solution's step scores reduced by ``reduce``."""
        if reduce not in AGGREGATIONS:
            raise ValueError(f"reduce must be one of {AGGREGATIONS}, got {reduce!r}")
        if not candidates:
            raise ValueError("aggregate: no candidates")
        scores = self.score_batch([problem] * len(candidates), [list(c) for c in candidates])
        if reduce == "prod" and self.config.score != "sigmoid":
            raise ValueError("reduce='prod' needs probabilities (score='sigmoid')")
        values, lengths = torch.cat(scores), torch.tensor([s.numel() for s in scores])
        return ops.segment_reduce(values, lengths, reduce=reduce)

    def best_of_n(self, problem: str, candidates: Sequence[Sequence[str]], reduce: str = "min") -> tuple[int, torch.Tensor]:
        """Index of the best candidate by aggregated PRM score, and all aggregates ``Tensor[N]``."""
        agg = self.aggregate(problem, candidates, reduce)
        return int(agg.argmax()), agg
