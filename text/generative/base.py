"""The model contract for generative judges: a judge is a :class:`mmreward.core.model.RewardScorer`
over a causal LM and its tokenizer.

    judge = GenRM(model, tokenizer, GenRMConfig())          # any transformers causal LM with a chat template
    judge.score([TextPair("2 + 2 =", "4")])                  # Tensor[N]
    judge.save_pretrained("runs/genrm")                      # atomic: the whole folder or nothing
    mmreward.load("runs/genrm")                              # GenRM again, from config.json alone

A saved judge folder holds::

    config.json      {"model_type": "genrm", "config": {the judge's dataclass config}, ...}
    lm/              the causal LM in transformers format (config.json, generation_config.json,
                     model.safetensors) and its tokenizer with the chat template
    *.safetensors    heads, where the method has one (Critic-RM's reward head, the GRM meta-RM)
    manifest.json    size and SHA-256 of every file

Weights are read back from safetensors only (``use_safetensors=True``): nothing is unpickled.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Optional, Sequence

import torch

from mmreward.core.data import describe
from mmreward.core.folders import CheckpointError
from mmreward.core.inputs import TextPair
from mmreward.core.model import RewardScorer, config_from_dict

LM_FOLDER = "lm"

__all__ = ["GenerativeJudge", "LM_FOLDER", "save_causal_lm", "load_causal_lm", "chat_turns", "text_field",
           "text_pairs", "text_lists", "text_list_lists", "check_sampling", "judge_trainer"]


@contextlib.contextmanager
def _plain_weights(model: Any) -> Iterator[None]:
    """Let transformers save a GGUF checkpoint that was de-quantized when loaded: its weights are plain
    tensors in plain layers, but its GGUF quantizer declares every such model unserializable. For the
    save it is the plain model it is (no quantizer, no ``quantization_config`` in config.json); weights
    still packed in GGUF blocks stay refused."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if str(getattr(method, "value", method)) != "gguf" or getattr(quantizer, "packed_modules", None):
        yield
        return
    qc = getattr(model.config, "quantization_config", None)
    model.hf_quantizer = None
    if qc is not None:
        del model.config.quantization_config
    try:
        yield
    finally:
        model.hf_quantizer = quantizer
        if qc is not None:
            model.config.quantization_config = qc


def save_causal_lm(model: Any, tokenizer: Any, folder: str, state_dict: Optional[dict] = None) -> None:
    """``model`` (transformers format, safetensors) and ``tokenizer`` (chat template included) in ``folder``."""
    with _plain_weights(model):
        model.save_pretrained(folder, state_dict=state_dict)
    tokenizer.save_pretrained(folder)
    pickled = sorted(f for f in os.listdir(folder) if f.endswith((".bin", ".pt", ".pth", ".pkl")))
    if pickled:  # transformers writes safetensors; a pickle here would be loaded by nobody
        raise CheckpointError(f"{folder}: saving wrote pickled weights {pickled}; only safetensors are supported")


def load_causal_lm(folder: str) -> tuple[Any, Any]:
    """``(causal LM, tokenizer)`` from a folder :func:`save_causal_lm` wrote (safetensors only)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise CheckpointError(f"{folder} has no config.json: not a causal LM folder")
    from mmreward.core.weights import check_published_config, read_json

    # a judge folder a stranger uploaded: its numbers and sizes checked before transformers builds from them
    check_published_config(read_json(os.path.join(folder, "config.json")), folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, local_files_only=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot load the causal LM in {folder}: {e}") from e
    if getattr(tokenizer, "chat_template", None) is None:
        raise CheckpointError(f"the tokenizer in {folder} has no chat template (chat_template.jinja or "
                              "tokenizer_config.json's chat_template): a judge renders its prompts with it")
    return model, tokenizer


def text_field(value: Any, where: str) -> str:
    """``value`` when it is a string; judges that write the prompt into their own template need text."""
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a string for this judge (it writes it into its prompt template), "
                        f"got {describe(value)}")
    return value


def _is_list(value: Any) -> bool:
    """A sized sequence of rows (list, tuple, array) and not a string or a mapping, which also iterate."""
    return (hasattr(value, "__len__") and hasattr(value, "__iter__")
            and not isinstance(value, (str, bytes, dict)))


def text_lists(who: str, **lists: Any) -> list[list[str]]:
    """The parallel text lists a ``judge`` method takes (``prompts=…, first=…, second=…``), checked: lists
    (a string would be judged one character per row), equally long, non-empty, every item a string
    (a NaN or None would be written into the prompt as "nan" / "None" and judged)."""
    out = []
    for name, seq in lists.items():
        if not _is_list(seq):
            raise TypeError(f"{who}: {name} must be a list of strings, got {describe(seq)}")
        out.append([text_field(x, f"{who}: {name}[{i}]") for i, x in enumerate(seq)])
    lengths = {name: len(x) for name, x in zip(lists, out)}
    if len(set(lengths.values())) != 1 or not out[0]:
        raise ValueError(f"{who}: {' / '.join(lengths)} must be non-empty and equally long, got "
                         f"{', '.join(str(n) for n in lengths.values())}")
    return out


def text_list_lists(who: str, prompts: Any, responses: Any) -> tuple[list[str], list[list[str]]]:
    """``prompts`` (N strings) and ``responses`` (N non-empty lists of strings) of a listwise judge, checked."""
    (prompts,) = text_lists(who, prompts=prompts)
    if not _is_list(responses):
        raise TypeError(f"{who}: responses must be a list of response lists (one per prompt), got "
                        f"{describe(responses)}")
    if len(responses) != len(prompts):
        raise ValueError(f"{who}: prompts / responses must be equally long, got {len(prompts)}, {len(responses)}")
    out = []
    for i, rs in enumerate(responses):
        if not _is_list(rs) or not len(rs):
            raise TypeError(f"{who}: responses[{i}] must be a non-empty list of strings, got {describe(rs)}")
        out.append([text_field(r, f"{who}: responses[{i}][{j}]") for j, r in enumerate(rs)])
    return prompts, out


def check_sampling(config: Any, count: str) -> None:
    """``config.temperature`` must be > 0: the judge hands it to its runner's ``JudgeConfig``, which samples the
    ``config.<count>`` > 1 judgements at it and refuses 0 even for one greedy sample — refused here, when the
    config is made, naming the judge's own field rather than the internal ``JudgeConfig`` later."""
    if not config.temperature > 0:
        raise ValueError(f"{type(config).__name__}.temperature must be > 0 (the {count} judgements are sampled at "
                         f"it; with {count}=1 decoding is greedy and does not use it), got {config.temperature!r}")


def judge_trainer(model: Any, config: Any, rows: Sequence[Any], collate: Any, loss_fn: Any, eval_fn: Any,
                  settings: dict) -> Any:
    """The core Trainer whose run fingerprint also holds the judge's training ``settings`` (its prompt,
    verdict tokens, loss weights, stage): a run resumed with other ones would go on training another
    objective on the same snapshot, so it is refused, naming the setting."""
    from mmreward.core.trainer import Trainer

    return Trainer(model, config, rows, collate, loss_fn, eval_fn=eval_fn, settings=settings,
                   resume_settings={"judge": settings})


def _turns(value: Any, where: str) -> list[dict]:
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value):
        raise TypeError(f"{where} must be a string or a non-empty list of {{'role': str, 'content': str}} messages, "
                        f"got {describe(value)}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def chat_turns(prompt: Any, response: Any, where: str = "input") -> list[dict]:
    """``(x, y)`` as chat turns: the prompt (a string = one user turn, or earlier turns) and then the
    response (a string = the assistant's turn, or turns of its own)."""
    if prompt is not None and isinstance(response, list):
        from ..data import split_conversation

        # as reward models read such rows: a response conversation that repeats the prompt's turns loses them,
        # and one that opens with a system turn the prompt lacks puts it first ([system, user Q, assistant A]
        # with prompt Q showed Q, then the system turn, then Q again)
        prompt, response = split_conversation(prompt, response)
    turns = [] if prompt is None else (
        [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _turns(prompt, f"{where}: field 'prompt'"))
    if isinstance(response, str):
        return turns + [{"role": "assistant", "content": response}]
    return turns + _turns(response, f"{where}: field 'response'")


def text_pairs(prompts: Sequence[Any], responses: Sequence[Any]) -> list[TextPair]:
    """``TextPair`` inputs from parallel prompt / response lists (lengths checked)."""
    if isinstance(prompts, (str, bytes)) or isinstance(responses, (str, bytes)):
        raise TypeError("prompts and responses must be lists, not strings")
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    return [TextPair(p, r) for p, r in zip(prompts, responses)]


class GenerativeJudge(RewardScorer, torch.nn.Module):
    """Base of the judges: holds ``model`` (a transformers causal LM, or a module wrapping one),
    ``tokenizer`` and the dataclass ``config``; saves ``lm/`` + ``config.json`` and loads them back.
    ``score`` batches by ``config.batch_size`` unless told otherwise."""

    def __init__(self, model: Any, tokenizer: Any, config: Any):
        if getattr(tokenizer, "chat_template", None) is None:
            # every judge writes its prompts as chat messages: refused now, not at the first batch with the
            # runner's advice to "pass rendered strings", which a judge's caller cannot do
            raise ValueError(f"{type(self).__name__}: the tokenizer has no chat template (tokenizer.chat_template is "
                             "None) and the judge renders its prompts with it: use the model's chat / instruct "
                             "tokenizer or set tokenizer.chat_template")
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config

    @property
    def default_batch_size(self) -> int:  # type: ignore[override]
        return self.config.batch_size

    def scoring_progress(self, bar: Any, n: int) -> Any:
        """A context in which ``score`` / ``judge`` calls on ``n`` inputs move the progress ``bar`` by ``n`` as their
        prompts are read (``mmreward score``, ``text score`` and ``text eval`` use it: a judge's call is not cut
        in pieces for the bar, which would change what it samples)."""
        from .runner import bar_progress

        return bar_progress(bar, n)

    @property
    def causal_lm(self) -> Any:
        """The transformers causal LM saved as ``lm/``."""
        return self.model

    def _save(self, folder: str, state_dict: Optional[dict[str, torch.Tensor]] = None) -> dict:
        lm_state = None
        if state_dict is not None:  # keys as in self.state_dict(): the LM's own under its attribute path
            prefix = next(name for name, module in self.named_modules() if module is self.causal_lm) + "."
            lm_state = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        save_causal_lm(self.causal_lm, self.tokenizer, os.path.join(folder, LM_FOLDER), lm_state)
        return {"lm": LM_FOLDER}

    @classmethod
    def _load(cls, folder: str, body: dict, device: torch.device, **kwargs: Any):
        from mmreward.core.weights import quiet_transformers

        config = config_from_dict(cls.config_class, body.get("config", {}), cls.model_type)
        with quiet_transformers():  # no weight-loading progress bars on stderr (mmreward checks the weights)
            model, tokenizer = load_causal_lm(os.path.join(folder, LM_FOLDER))
        return cls(model, tokenizer, config, **kwargs)

    def _score_texts(self, prompts: Sequence[Any], responses: Sequence[Any]) -> torch.Tensor:
        """``score`` on parallel prompt / response lists (for the pairwise view and the evaluators)."""
        return self.score(text_pairs(prompts, responses))
