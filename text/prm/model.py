"""``ProcessRewardModel``: per-step scores from any Hugging Face backbone — the PRM of the one model
contract (:class:`mmreward.core.model.RewardScorer`, input :class:`~mmreward.core.inputs.StepSolution`).

    prm = mmreward.load("runs/prm/model")                   # ours, or a published PRM folder
    prm.score_parts([StepSolution(problem, steps)])         # [Tensor[K]]: one score per step
    prm.score([{"problem": p, "steps": [...]}, ...])        # Tensor[N]: steps aggregated (min by default)

Heads (``PRMConfig.head``), each read at the last token of every step's tag:

* ``lm`` (Math-Shepherd): a causal LM's P(good) from two label tokens (``+`` / ``-``). Only those two
  LM-head rows are kept, as their own parameters, and :func:`mmreward.ops.step_scores` reads them —
  no vocabulary-sized logits are ever built.
* ``value`` (TRL token classification / ReST-MCTS* value / rStar PPM / Skywork-PRM): a scalar
  ``h·w + b`` (:func:`mmreward.ops.step_values`), on a causal LM or an encoder.
* ``mlp`` (Qwen2.5-Math-PRM): ``Linear(H, H) → ReLU → Linear(H, 2)``, P(positive class); the second
  layer's two rows are kept as (positive, negative) label rows, so the ``lm`` machinery applies.

Input formats (``PRMConfig.input_format``) turn ``(problem, steps)`` into tokens and tag positions:

* ``mmreward``: ``problem ⏎ step₁ <tag> ⏎ step₂ <tag> ⏎ …``, every piece tokenized on its own (BPE
  merges never move a tag);
* ``math_shepherd`` / ``qwen_prm`` / ``skywork_prm`` / ``rlhflow_prm``: the published models' own
  formats, token for token as their official code builds them (see :mod:`.published` and docs/prm.md).

Nothing is truncated silently: an input longer than ``max_length`` tokens is an error naming it and
its length, unless ``truncate=True`` (the steps past the limit then score NaN and ``score`` aggregates
the scored ones).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import nn

from mmreward import ops
from mmreward.core.data import DataError
from mmreward.core.folders import CheckpointError
from mmreward.core.inputs import StepSolution
from mmreward.core.model import (RewardScorer, build_for_weights, eval_while_scoring, config_from_dict, load_state_strict,
                                 load_weights, save_weights)

__all__ = ["PRMConfig", "ProcessRewardModel", "AGGREGATIONS", "HEADS", "INPUT_FORMATS", "aggregate_steps",
           "label_token_ids", "load_tokenizer"]

MODEL_TYPE = "process_reward_model"
AGGREGATIONS = ("min", "prod", "last", "mean")
HEADS = ("lm", "value", "mlp")
INPUT_FORMATS = ("mmreward", "math_shepherd", "qwen_prm", "skywork_prm", "rlhflow_prm")
TOKENIZER_DIR = "tokenizer"
LOAD_OPTIONS = ("aggregation", "truncate")  # what mmreward.load(folder, ...) may set on a saved PRM


@dataclass
class PRMConfig:
    head: str = field(default="lm", metadata={
        "help": "lm: P(good) from two label tokens of a causal LM; value: scalar head; mlp: Qwen2.5-Math-PRM 2-class MLP"})
    backbone: dict = field(default_factory=dict, metadata={"help": "the backbone's Hugging Face config (to_dict())"})
    input_format: str = field(default="mmreward", metadata={
        "help": "how (problem, steps) become tokens: mmreward | math_shepherd | qwen_prm | skywork_prm | rlhflow_prm"})
    step_tag: str = field(default=" ки", metadata={"help": "text marking the end of every step; a step is scored at its last token"})
    step_separator: str = field(default="\n", metadata={"help": "text between the problem and the steps"})
    good_token: str = field(default="+", metadata={"help": "lm head: the good-step label token"})
    bad_token: str = field(default="-", metadata={"help": "lm head: the bad-step label token"})
    score: str = field(default="sigmoid", metadata={"help": "sigmoid: scores are P(good); identity: raw values (MSE value head)"})
    aggregation: str = field(default="min", metadata={"help": "score(): a solution's reward from its step scores: min | prod | last | mean"})
    max_length: int = field(default=1024, metadata={"help": "longest token sequence scored (problem + steps)"})
    truncate: bool = field(default=False, metadata={
        "help": "score only the steps that fit max_length (the others get NaN); off: a longer input is an error"})
    system_prompt: str = field(default="", metadata={"help": "qwen_prm input format: the system turn of the chat"})

    def __post_init__(self):
        for name, allowed in (("head", HEADS), ("input_format", INPUT_FORMATS), ("aggregation", AGGREGATIONS),
                              ("score", ("sigmoid", "identity"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"PRMConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.head in ("lm", "mlp") and self.score != "sigmoid":
            raise ValueError(f"the {self.head} head scores P(good): use score='sigmoid'")
        if self.input_format == "rlhflow_prm" and self.head != "lm":
            raise ValueError("the rlhflow_prm input format reads P(+) of the LM head: use head='lm'")
        if self.aggregation == "prod" and self.score != "sigmoid":
            raise ValueError("aggregation='prod' needs probabilities (score='sigmoid')")
        if not self.step_tag:
            raise ValueError("PRMConfig.step_tag must not be empty")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"PRMConfig.max_length must be an integer >= 2, got {self.max_length!r}")


class _StopForward(Exception):
    """Ends a backbone forward once the wanted block input has been grabbed."""


def _single_token(tokenizer, text: str, what: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{what} {text!r} must be one token of the tokenizer, got ids {ids}")
    return ids[0]


def label_token_ids(tokenizer, config: PRMConfig) -> tuple[int, int]:
    """Token ids of the good / bad labels (the lm head's two rows)."""
    good, bad = config.good_token, config.bad_token
    if config.input_format == "math_shepherd":  # the card: candidate_tokens = encode(f"{good} {bad}")[1:]
        ids = tokenizer.encode(f"{good} {bad}")[1:]
        if len(ids) != 2:
            raise ValueError(f"labels {good!r} / {bad!r} must be one token each (encode('{good} {bad}')[1:] gave {ids})")
    else:
        ids = [_single_token(tokenizer, good, "good_token"), _single_token(tokenizer, bad, "bad_token")]
    if ids[0] == ids[1]:
        raise ValueError("good_token and bad_token map to the same token id")
    return ids[0], ids[1]


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


def weights_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype holding most of a state dict's elements (a bf16 backbone with an fp32 head is bf16)."""
    count: dict[torch.dtype, int] = {}
    for t in state.values():
        if t.is_floating_point():
            count[t.dtype] = count.get(t.dtype, 0) + t.numel()
    return max(count, key=count.get) if count else torch.float32


@contextlib.contextmanager
def building_for_weights(dtype: torch.dtype):
    """Build a module whose weights are about to be loaded: parameters in ``dtype`` (no fp32 copy of a
    bf16 checkpoint) and no random initialisation (transformers' ``no_init_weights``)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights():
            yield
    finally:
        torch.set_default_dtype(before)


def load_tokenizer(path: str, folder: str):
    """``AutoTokenizer`` from ``path``; a missing or unreadable tokenizer is a CheckpointError naming ``folder``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as e:  # missing / corrupt tokenizer files raise many types
        raise CheckpointError(f"cannot load the tokenizer of {folder} from {path}: {type(e).__name__}: {e}") from e


def _step_part(p: Any, i: int) -> torch.Tensor:
    """One solution's step scores as a 1-D float tensor. A 2-D one was flattened into one solution's steps; a
    ``None`` (how ``prm score`` writes an unscored step) failed inside torch ("must be real number")."""
    if isinstance(p, (list, tuple)) and any(x is None for x in p):
        raise ValueError(f"aggregate_steps: solution {i} has a None step score; write an unscored step as "
                         "float('nan') (`prm score` rows print it as null: "
                         "[float('nan') if x is None else x for x in row])")
    try:
        t = torch.as_tensor(p, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"aggregate_steps: solution {i}: step scores must be numbers (a 1-D tensor or list), got "
                        f"{type(p).__name__} ({e})") from None
    if t.dim() > 1:
        raise ValueError(f"aggregate_steps: solution {i}: step scores must be 1-D (one per step), got shape "
                         f"{tuple(t.shape)}")
    return t.reshape(-1)


def aggregate_steps(parts: Sequence[torch.Tensor], reduce: str) -> torch.Tensor:
    """``Tensor[N]``: each solution's scored steps (NaN = not scored) reduced by ``reduce``."""
    if reduce not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {reduce!r}")
    if isinstance(parts, (str, bytes, dict)):
        raise TypeError(f"aggregate_steps: parts must be a list with one sequence of step scores per solution, got "
                        f"{type(parts).__name__}")
    parts = [_step_part(p, i) for i, p in enumerate(parts)]
    if not parts:
        return torch.zeros(0)
    kept = [p[~torch.isnan(p)] for p in parts]
    for i, k in enumerate(kept):  # an empty segment reduces to 1.0, the best score: "no step wrong"
        if k.numel() == 0:
            raise ValueError(f"solution {i} has no scored step ({parts[i].numel()} steps, all NaN): it has no "
                             "aggregate score")
    values, lengths = torch.cat(kept), torch.tensor([k.numel() for k in kept])
    return ops.segment_reduce(values, lengths, reduce=reduce)


class ProcessRewardModel(RewardScorer, nn.Module):
    """Build with :meth:`from_backbone` (a transformers model + tokenizer), :meth:`from_pretrained` or
    ``mmreward.load`` (which also reads the published layouts of :mod:`.published`)."""

    model_type = MODEL_TYPE
    input_types = (StepSolution,)
    config_class = PRMConfig

    def __init__(self, config: PRMConfig, tokenizer, backbone: Optional[nn.Module] = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.backbone = backbone if backbone is not None else _build_backbone(config.backbone)
        H = self.backbone.config.hidden_size
        dtype = next(self.backbone.parameters()).dtype
        if config.head == "mlp":
            self.head_hidden = nn.Linear(H, H, dtype=dtype)  # Qwen2.5-Math-PRM score.0
        if config.head in ("lm", "mlp"):
            self.label_rows = nn.Parameter(torch.zeros(2, H, dtype=dtype))  # (2, H): good, bad rows
            self.label_bias = nn.Parameter(torch.zeros(2, dtype=dtype))
        else:
            self.value_weight = nn.Parameter(torch.randn(H, dtype=dtype) * H**-0.5)  # (H,)
            self.value_bias = nn.Parameter(torch.zeros((), dtype=dtype))
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        from mmreward.core.weights import position_limit

        # a learned position table (GPT-2, BERT, OPT) has a hard end: past it the backbone fails deep inside
        # with an index error, so inputs are held to it as to max_length (rotary positions: None, no end)
        self._position_limit = position_limit(self.backbone)
        self._setup_format()

    def _setup_format(self) -> None:
        """Token ids the input format needs (checked here, so a bad tokenizer fails at load time)."""
        cfg, tok = self.config, self.tokenizer
        fmt = cfg.input_format
        if fmt == "mmreward":
            self._tag_ids = tok.encode(cfg.step_tag, add_special_tokens=False)
            if not self._tag_ids:
                raise ValueError(f"step_tag {cfg.step_tag!r} encodes to no tokens")
            self._sep_ids = tok.encode(cfg.step_separator, add_special_tokens=False)
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id
            self._start_ids = [start] if start is not None else []
        elif fmt == "rlhflow_prm":
            if not getattr(tok, "chat_template", None):
                raise ValueError("the rlhflow_prm input format needs a tokenizer with a chat template")
            good = label_token_ids(tok, cfg)[0]
            probe = self._render_rlhflow([{"role": "user", "content": "x"}, {"role": "assistant", "content": cfg.good_token}])
            if len(probe) < 3 or probe[-2] != good:
                raise ValueError(f"the rlhflow_prm format reads the token before each assistant {cfg.good_token!r}, 3 "
                                 f"from the end of each rendered turn (its official code's logits[:, -3]); this chat "
                                 f"template ends an assistant turn with {probe[-3:]} instead of [?, {good}, <end>]")
        else:
            if fmt == "qwen_prm" and not getattr(tok, "chat_template", None):
                raise ValueError("the qwen_prm input format needs a tokenizer with a chat template")
            ids = tok.encode(cfg.step_tag)
            if not ids:
                raise ValueError(f"step_tag {cfg.step_tag!r} encodes to no tokens")
            if fmt == "qwen_prm":
                # the official code: step_sep_id = encode("<extra_0>")[0], the one special token the head was
                # trained at. A tokenizer that splits the tag (one without <extra_0>: the base Qwen2.5 one) would
                # put the scores at the tag's first piece ("<"), where the model never learned anything
                alone = tok.encode(cfg.step_tag, add_special_tokens=False)
                if len(alone) != 1:
                    raise ValueError(f"the qwen_prm format scores each step at its {cfg.step_tag!r} token, but this "
                                     f"tokenizer splits {cfg.step_tag!r} into {len(alone)} tokens {alone[:8]}: it is "
                                     "not the PRM's tokenizer (Qwen2.5-Math-PRM's has '<extra_0>' as one special "
                                     "token, id 151651)")
                self._tag_id = alone[0]
            else:
                # the official code: Math-Shepherd encode("ки")[-1] (after BOS); Skywork encode(step_token)[-1]
                self._tag_id = ids[-1]
        if cfg.head == "lm":
            self.label_ids = label_token_ids(tok, cfg)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(cls, model: nn.Module, tokenizer, head: str = "lm", **config: Any) -> "ProcessRewardModel":
        """Wrap a transformers model. ``head="lm"`` needs a causal LM: its two label rows (and biases)
        initialise the head and the rest of the LM head is dropped."""
        base = _drop_pooler(model.base_model)
        from mmreward.core.weights import position_limit

        limit = position_limit(base)
        if limit is not None:
            if "max_length" not in config:  # the default 1024 would pass the backbone's position table
                config["max_length"] = min(PRMConfig.max_length, limit)
            elif isinstance(config["max_length"], int) and config["max_length"] > limit:
                raise ValueError(f"max_length={config['max_length']} is more than the {limit} positions "
                                 f"{type(base).__name__} reads (its learned position table): use max_length <= {limit}")
        cfg = PRMConfig(head=head, backbone=base.config.to_dict(), **config)
        prm = cls(cfg, tokenizer, backbone=base)
        if head == "lm":
            out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            if out is None or out is base or not hasattr(out, "weight"):
                raise ValueError("head='lm' needs a causal LM with an output embedding (LM head); use head='value' for encoders")
            with torch.no_grad():
                prm.label_rows.copy_(out.weight[list(prm.label_ids)])
                if getattr(out, "bias", None) is not None:
                    prm.label_bias.copy_(out.bias[list(prm.label_ids)])
        return prm

    def _save(self, folder: str, state_dict: Optional[dict[str, torch.Tensor]] = None) -> None:
        # own subfolder: AutoTokenizer would otherwise read our config.json as a transformers config
        self.tokenizer.save_pretrained(os.path.join(folder, TOKENIZER_DIR))
        save_weights(folder, state_dict if state_dict is not None else self.state_dict())

    @classmethod
    def required_files(cls, body: dict) -> list:
        """The weights and the tokenizer (``mmreward info`` checks them without loading)."""
        from mmreward.text.reward_model import TOKENIZER_FILES

        return [*super().required_files(body), tuple(f"{TOKENIZER_DIR}/{f}" for f in TOKENIZER_FILES)]

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device, **kwargs: Any) -> "ProcessRewardModel":
        # per-run scoring settings may be given (as `prm score --aggregation / --truncate`); anything else
        # (step_separator=, step_tag=, ...) would change the inputs the model was trained on. Every keyword used
        # to be dropped without a word: mmreward.load(folder, aggregation="mean") scored with min
        unknown = sorted(set(kwargs) - set(LOAD_OPTIONS))
        if unknown:
            raise ValueError(f"mmreward.load: {unknown[0]}= is not an option of {MODEL_TYPE} folders ({folder}); they "
                             f"take {', '.join(LOAD_OPTIONS)} (the input format is the saved model's own)")
        cfg = config_from_dict(PRMConfig, body.get("config", {}), MODEL_TYPE)
        if kwargs:  # replace() re-runs PRMConfig's checks (an unknown aggregation, prod on raw values)
            cfg = dataclasses.replace(cfg, **kwargs)
        tok_dir = os.path.join(folder, TOKENIZER_DIR)
        if not os.path.isdir(tok_dir):
            raise CheckpointError(f"{folder} has no {TOKENIZER_DIR}/ folder: a PRM needs its tokenizer to score")
        tok = load_tokenizer(tok_dir, folder)
        state = load_weights(folder, "cpu")
        with building_for_weights(weights_dtype(state)):
            # built on the meta device first: a config.json whose sizes its weights do not have is refused naming
            # the tensor, before building it could allocate far more memory than the weights take
            model = build_for_weights(lambda: cls(cfg, tok), folder, {k: tuple(v.shape) for k, v in state.items()})
        load_state_strict(model, state, folder)
        return model

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

    def head_parameters(self) -> list[nn.Parameter]:
        if self.config.head == "value":
            return [self.value_weight, self.value_bias]
        extra = list(self.head_hidden.parameters()) if self.config.head == "mlp" else []
        return [self.label_rows, self.label_bias] + extra

    def freeze_backbone(self, trainable_layers: int) -> int:
        """Train only the last ``trainable_layers`` blocks, the final norm and the head: embeddings
        and lower blocks get ``requires_grad=False`` (no backward through them, so a step costs a
        forward plus the top blocks' backward). ``-1`` unfreezes everything. Returns the number of
        trainable parameters."""
        if not isinstance(trainable_layers, int) or isinstance(trainable_layers, bool) or trainable_layers < -1:
            raise ValueError(f"trainable_layers must be an int >= -1 (-1 = all), got {trainable_layers!r}")
        layers = self.decoder_layers() if trainable_layers != -1 else []
        if trainable_layers > len(layers):  # checked before any flag changes: a refused call leaves the model as it was
            raise ValueError(f"trainable_layers={trainable_layers} but the backbone has {len(layers)} blocks")
        for p in self.parameters():
            p.requires_grad_(trainable_layers == -1)
        if trainable_layers != -1:
            keep = [layers[i] for i in range(len(layers) - trainable_layers, len(layers))]
            norm = getattr(self.backbone, "norm", None)  # causal LMs' final norm sits after the last block
            keep += [norm] if isinstance(norm, nn.Module) else []
            for mod in keep:
                for p in mod.parameters():
                    p.requires_grad_(True)
            for p in self.head_parameters():
                p.requires_grad_(True)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ encoding
    def _encode_mmreward(self, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        enc = lambda t: self.tokenizer.encode(t, add_special_tokens=False)  # noqa: E731
        ids = self._start_ids + enc(problem) + self._sep_ids
        tags = []
        for s in steps:
            ids += enc(s) + self._tag_ids
            tags.append(len(ids) - 1)
            ids += self._sep_ids
        return ids, tags

    def _encode_math_shepherd(self, problem: str, steps: Sequence[str]) -> list[int]:
        # the card: f"{question} {output}", output = steps as "<step> ки" lines; tokenized whole (BOS added)
        cfg = self.config
        return self.tokenizer.encode(f"{problem} " + cfg.step_separator.join(f"{s} {cfg.step_tag}" for s in steps))

    def _encode_qwen_prm(self, problem: str, steps: Sequence[str]) -> list[int]:
        # the card: system / user / assistant chat, the answer's steps each followed by <extra_0>
        tag = self.config.step_tag
        messages = [{"role": "system", "content": self.config.system_prompt}, {"role": "user", "content": problem},
                    {"role": "assistant", "content": tag.join(steps) + tag}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        return self.tokenizer.encode(text)

    def _encode_skywork_prm(self, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        # skywork-o1-prm-inference io_utils.prepare_input: BOS + problem + "\n", then each step + step token
        tok = self.tokenizer
        ids = tok.encode((tok.bos_token or "") + problem + "\n")
        tags = []
        for s in steps:
            ids += (tok.encode(s) if s != "" else []) + [self._tag_id]
            tags.append(len(ids) - 1)
        return ids, tags

    def _render_rlhflow(self, messages: list[dict]) -> list[int]:
        # apply_chat_template(conversation) as the official code calls it: the rendered text, no special tokens added
        text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _encode_rlhflow_prm(self, problem: str, steps: Sequence[str], where: str) -> tuple[list[int], list[int]]:
        # RLHF-Reward-Modeling math/prm_evaluate.py: user turns problem + " " + step₁, then step_k, each answered
        # by an assistant "+"; step k's score is P(+) at logits[:, -3] of the conversation up to step k. The
        # model is causal, so one forward over the whole conversation gives every step's logits
        cfg, messages, ids, tags = self.config, [], [], []
        for k, s in enumerate(steps):
            messages += [{"role": "user", "content": f"{problem}{cfg.step_separator}{s}" if k == 0 else s},
                         {"role": "assistant", "content": cfg.good_token}]
            ids_k = self._render_rlhflow(messages)
            if ids_k[: len(ids)] != ids or ids_k[-2] != self.label_ids[0]:
                raise DataError(f"{where}: step {k} changes how the conversation before it tokenizes (or its "
                                f"turn does not end in {cfg.good_token!r}); it cannot be scored in one pass")
            ids = ids_k
            tags.append(len(ids) - 3)
        return ids, tags

    def _tagged(self, problem: str, steps: Sequence[str], where: str) -> tuple[list[int], list[int]]:
        """Full token ids and tag positions of one input, in the configured input format."""
        fmt = self.config.input_format
        if fmt == "mmreward":
            return self._encode_mmreward(problem, steps)
        if fmt == "rlhflow_prm":
            return self._encode_rlhflow_prm(problem, steps, where)
        if fmt == "skywork_prm":
            return self._encode_skywork_prm(problem, steps)
        ids = self._encode_math_shepherd(problem, steps) if fmt == "math_shepherd" else self._encode_qwen_prm(problem, steps)
        tags = [i for i, t in enumerate(ids) if t == self._tag_id]
        if len(tags) != len(steps):
            raise DataError(f"{where}: its tokens hold {len(tags)} step tags ({self.config.step_tag!r}, id "
                            f"{self._tag_id}) for {len(steps)} steps; the problem or a step contains the tag text")
        return ids, tags

    def _length_limit(self) -> tuple[int, str]:
        """The most tokens an input may have, and how to name that limit."""
        limit, what = self.config.max_length, f"max_length={self.config.max_length}"
        if self._position_limit is not None and self._position_limit < limit:
            limit, what = self._position_limit, (f"the {self._position_limit} positions of the backbone's learned "
                                                 f"position table (max_length={self.config.max_length})")
        return limit, what

    def encode_one(self, problem: str, steps: Sequence[str], truncate: Optional[bool] = None,
                   where: str = "input") -> tuple[list[int], list[int]]:
        """Token ids and the positions of the step tags. An input longer than ``max_length`` is an
        error, unless ``truncate`` (default: ``config.truncate``): then the ids end after the last tag
        that fits and the later steps have no position."""
        if not isinstance(problem, str):
            raise TypeError(f"{where}: problem must be a str, got {type(problem).__name__}")
        if not steps:
            raise ValueError(f"{where}: no steps to score")
        for k, s in enumerate(steps):
            if not isinstance(s, str):
                raise TypeError(f"{where}: step {k} must be a str, got {type(s).__name__}")
        ids, tags = self._tagged(problem, steps, where)
        limit, what = self._length_limit()
        if len(ids) <= limit:
            return ids, tags
        fit = [t for t in tags if t < limit]
        if not (self.config.truncate if truncate is None else truncate):
            can_raise = self._position_limit is None or limit < self._position_limit
            ways = ["shorten it"] + (["raise max_length"] if can_raise else [])
            if fit:
                ways.append(f"set truncate=True to score only the {len(fit)} steps that fit (`prm score / eval "
                            "--truncate`)")
            advice = ", ".join(ways[:-1]) + f" or {ways[-1]}" if len(ways) > 1 else ways[0]
            if not fit:
                advice += " (not even the first step fits, so truncate=True cannot help)"
            raise DataError(f"{where}: problem + {len(steps)} steps are {len(ids)} tokens, more than {what}; "
                            f"{advice}")
        if not fit:
            raise DataError(f"{where}: not even the first step fits {what} ({len(ids)} tokens)")
        return ids[: fit[-1] + 1], fit

    def collate(self, rows: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Encoded rows → right-padded ``input_ids`` / ``attention_mask`` / ``step_mask`` (B, T), ``lengths`` (B,)."""
        if not rows:
            raise ValueError("nothing to encode (empty batch)")
        T = max(len(ids) for ids, _ in rows)
        B = len(rows)
        input_ids = torch.full((B, T), self._pad_id, dtype=torch.long)
        attn = torch.zeros(B, T, dtype=torch.long)
        step_mask = torch.zeros(B, T, dtype=torch.bool)
        for b, (ids, tags) in enumerate(rows):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            attn[b, : len(ids)] = 1
            step_mask[b, tags] = True
        return {"input_ids": input_ids, "attention_mask": attn, "step_mask": step_mask, "lengths": step_mask.sum(1)}

    def encode(self, problems: Sequence[str], steps: Sequence[Sequence[str]],
               truncate: Optional[bool] = None) -> dict[str, torch.Tensor]:
        """A right-padded batch (see :meth:`collate`) of (problem, steps) pairs."""
        if len(problems) != len(steps):
            raise ValueError(f"{len(problems)} problems but {len(steps)} step lists")
        return self.collate([self.encode_one(p, s, truncate, f"input {i}") for i, (p, s) in enumerate(zip(problems, steps))])

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

    def head_input(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, T, H)
        """What the label rows / value weight read: the backbone's hidden states, or for the ``mlp``
        head those after its first layer and ReLU."""
        return torch.relu(self.head_hidden(hidden)) if self.config.head == "mlp" else hidden

    def head_row(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single (H,) row and bias whose dot product with a step's :meth:`head_input` is its logit."""
        if self.config.head == "value":
            return self.value_weight, self.value_bias
        return self.label_rows[0] - self.label_rows[1], self.label_bias[0] - self.label_bias[1]

    def step_logits(self, hidden: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:  # (S,)
        """Logits at the step positions from :meth:`head_input` states."""
        step_mask = step_mask.to(hidden.device)
        if self.config.head == "value":
            return ops.step_values(hidden, self.value_weight, self.value_bias, step_mask=step_mask)
        return ops.step_logits(hidden, self.label_rows[0], self.label_rows[1], b_good=self.label_bias[0],
                               b_bad=self.label_bias[1], step_mask=step_mask)

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
        hidden = self.head_input(hidden)
        step_mask = step_mask.to(hidden.device)
        two_rows = self.config.head != "value"
        if objective is None:
            if two_rows:
                return ops.step_scores(hidden, self.label_rows[0], self.label_rows[1], b_good=self.label_bias[0],
                                       b_bad=self.label_bias[1], step_mask=step_mask)
            v = self.step_logits(hidden, step_mask)
            return torch.sigmoid(v) if self.config.score == "sigmoid" else v
        if objective in ("bce", "mse") and labels is None:
            raise ValueError(f"objective {objective!r} needs per-step `labels`")
        if objective == "bce":
            if two_rows:
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
    def _score_parts(self, items: list, batch_size: int) -> list[torch.Tensor]:
        """One ``Tensor[K_i]`` (float32, CPU) per solution; steps past ``max_length`` (``truncate``) are NaN.
        Every input is encoded (and checked) before the first forward; batches hold inputs of similar
        length, so little compute goes to padding."""
        rows = [self.encode_one(it.problem, it.steps, where=f"input {i}") for i, it in enumerate(items)]
        self._warn_truncated(rows, items)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        out: list[Optional[torch.Tensor]] = [None] * len(rows)
        with eval_while_scoring(self):  # threads share one eval period
            for start in range(0, len(order), batch_size):
                chunk = order[start: start + batch_size]
                scores = self(**self.collate([rows[i] for i in chunk])).float().cpu()
                for i, s in zip(chunk, torch.split(scores, [len(rows[i][1]) for i in chunk])):
                    full = torch.full((len(items[i].steps),), float("nan"))
                    full[: s.numel()] = s
                    out[i] = full
        return out

    def _warn_truncated(self, rows: list, items: list) -> None:
        """One warning when ``truncate`` left steps unscored: ``score`` aggregates the scored ones only, so without
        it a solution cut after step 3 of 40 got a reward (with ``last``: step 3's score) that read as the whole
        solution's, and nothing told the user."""
        cut = [(i, len(tags), len(items[i].steps)) for i, (_, tags) in enumerate(rows)
               if len(tags) < len(items[i].steps)]
        if not cut:
            return
        from mmreward.text.data import _warn_once_per_site

        i, k, n = cut[0]
        _warn_once_per_site(
            f"truncated {len(cut)} of {len(rows)} inputs to {self._length_limit()[1]} tokens (truncate=True): "
            f"{sum(n - k for _, k, n in cut)} of their steps are unscored (NaN; first: input {i}, steps {k}..{n - 1} "
            f"of {n}) and score() aggregates ({self.config.aggregation}) only the scored steps; reported once per "
            "calling line unless warnings are set to 'always'", ("prm truncated", self.config.max_length), 4)

    def aggregate_parts(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """``Tensor[N]``: what :meth:`score` returns, from :meth:`score_parts`' output (``config.aggregation``
        of the scored steps), so a caller that needs both runs the model once."""
        return aggregate_steps(parts, self.config.aggregation)

    def _score(self, items: list, batch_size: int) -> torch.Tensor:
        return self.aggregate_parts(self._score_parts(items, batch_size))
