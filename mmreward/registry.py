"""``mmreward.load(folder)``: the right reward model for whatever a folder holds.

Two tables, both filled with ``"module:attribute"`` strings so that nothing heavy is imported until
a model of that kind is loaded:

* **model types** — ``config.json``'s ``model_type`` (written by every ``save_pretrained``) → class;
* **layouts** — published checkpoints in their own formats (a transformers sequence classifier,
  ImageReward's ``ImageReward.pt`` + ``med_config.json``, …): a ``detect(folder, config)``
  predicate and a ``load(folder, device=..., dtype=...)`` function, tried in order when
  ``model_type`` is not one of ours.

    import mmreward
    rm = mmreward.load("runs/rm")                  # a folder, a run folder (its model/), a shipped name
    rm.score([{"prompt": "2+2?", "response": "4"}])

Register your own with :func:`register_model` / :func:`register_layout`.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

MODEL_TYPES: dict[str, str] = {
    # text
    "text_reward_model": "mmreward.text.reward_model:RewardModel",
    "armo_rm": "mmreward.text.armo:ArmoRewardModel",
    "process_reward_model": "mmreward.text.prm.model:ProcessRewardModel",
    # text: generative judges
    "genrm": "mmreward.text.generative.genrm:GenRM",
    "gram": "mmreward.text.generative.gram:GRAM",
    "rm_r1": "mmreward.text.generative.rm_r1:RMR1Judge",
    "grm": "mmreward.text.generative.grm:GRMJudge",
    "reward_anything": "mmreward.text.generative.reward_anything:RewardAnythingJudge",
    "critic_rm": "mmreward.text.generative.critic_rm:CriticRM",
    # vision
    "image_reward": "mmreward.vision.image_reward:ImageRewardModel",
    "vlm_reward": "mmreward.vision.vlm_rm:VLMRewardModel",
    "visual_prm": "mmreward.vision.visual_prm:VisualPRM",
    "qwen_vl_reward": "mmreward.vision.published.skywork_vl:QwenVLRewardModel",
    "hpsv3_reward": "mmreward.vision.published.hpsv3:HPSv3RewardModel",
    "clip_scorer": "mmreward.vision.published.clip_scorers:CLIPScorer",
    "imagereward_blip": "mmreward.vision.published.imagereward:BLIPImageReward",
    # robotics
    "diffusion_reward": "mmreward.robotics.reward.diffusion_reward:DiffusionReward",
    "progress_ranker": "mmreward.robotics.reward.progress:ProgressModel",
    "rnd": "mmreward.robotics.reward.rnd:RND",
}


@dataclass
class Layout:
    name: str
    detect: str  # "module:function"(folder, config dict or None) -> bool
    load: str  # "module:function"(folder, *, device, dtype) -> model
    description: str = ""
    # the weights are a transformers-style folder's (model.safetensors, its shards or pytorch_model.bin):
    # ``mmreward info`` without --load checks that some are there
    transformers_weights: bool = False


LAYOUTS: list[Layout] = [
    Layout("peft-lora-adapter", "mmreward.text.peft_adapters:is_peft_adapter",
           "mmreward.text.peft_adapters:load_peft_adapter",
           "a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) of a sequence-classification "
           "reward model or a token-classification PRM, as TRL's RewardTrainer / PRMTrainer with peft_config save "
           "them, over the base model it names, folded in"),
    Layout("qwen2.5-math-prm", "mmreward.text.prm.published:is_qwen_prm", "mmreward.text.prm.published:load_qwen_prm",
           "Qwen2.5-Math-PRM (Qwen2ForProcessRewardModel: <extra_0> step tags, 2-class head)"),
    Layout("skywork-o1-open-prm", "mmreward.text.prm.published:is_skywork_prm",
           "mmreward.text.prm.published:load_skywork_prm", "Skywork-o1-Open-PRM (Qwen2ForPrmModel: value head v_head)"),
    Layout("math-shepherd", "mmreward.text.prm.published:is_math_shepherd",
           "mmreward.text.prm.published:load_math_shepherd",
           "Math-Shepherd PRM (a causal LM named math-shepherd: P(+) vs P(-) at each 'ки' tag)"),
    Layout("rlhflow-prm", "mmreward.text.prm.published:is_rlhflow_prm", "mmreward.text.prm.published:load_rlhflow_prm",
           "RLHFlow's Llama-3.1 PRMs (a causal LM named …-PRM-Mistral-Data / -Deepseek-Data: P(+) after each step's turn)"),
    Layout("token-classification-prm", "mmreward.text.prm.published:is_token_classification_prm",
           "mmreward.text.prm.published:load_token_classification_prm",
           "a *ForTokenClassification PRM with 2 labels (TRL PRMTrainer): softmax(·)[1] at each step separator "
           "(newline unless step_separator= is given)"),
    Layout("mmreward-text-rm-v1", "mmreward.text.layouts:is_legacy_folder",
           "mmreward.text.layouts:load_legacy_folder", "text RM saved by mmreward 0.1 (mmreward_reward_model.json)"),
    Layout("qwen2.5-math-rm", "mmreward.text.layouts:is_qwen_math_rm", "mmreward.text.layouts:load_qwen_math_rm",
           "Qwen2.5-Math-RM (Qwen2ForRewardModel: Linear → ReLU → Linear(1) at the last token), without its remote code"),
    Layout("qrm-refused", "mmreward.text.layouts:is_quantile_gating_rm",
           "mmreward.text.layouts:refuse_quantile_gating_rm",
           "QRM quantile reward models (LlamaForRewardModelWithGating with num_quantiles): refused with the reason "
           "(remote code; not ArmoRM's heads)"),
    Layout("armorm", "mmreward.text.armo:is_armo", "mmreward.text.armo:load_armo",
           "ArmoRM (LlamaForRewardModelWithGating: 19 objective rewards mixed by a gating network), without its remote code"),
    Layout("headed-decoder-rm", "mmreward.text.layouts:is_headed_decoder", "mmreward.text.layouts:load_headed_decoder",
           "decoder reward models whose head is written in their card, read without their code: INF-ORM "
           "(INFORMForSequenceClassification), UltraRM / Eurus-RM (regression_head), Starling-RM-34B (transformer + "
           "v_head), OpenAssistant GPTNeoXRewardModel (gpt_neox + out_proj), OpenRLHF RewardModel (value_head_prefix; "
           "OpenRLHF critics and Nemotron causal-LM reward models refused with the reason)"),
    Layout("transformers-sequence-classifier", "mmreward.text.layouts:is_sequence_classifier",
           "mmreward.text.layouts:load_sequence_classifier",
           "a transformers *ForSequenceClassification reward model with one label (Skywork-Reward, OpenAssistant DeBERTa, TRL)"),
    Layout("hpsv3", "mmreward.vision.published.hpsv3:is_hpsv3", "mmreward.vision.published.hpsv3:load_hpsv3",
           "HPSv3: HPSv3.safetensors (Qwen2-VL + <|Reward|> token + rm_head (mu, sigma), scored as mu) beside "
           "Qwen2-VL-7B-Instruct's config / tokenizer / processor files"),
    Layout("skywork-vl-reward", "mmreward.vision.published.skywork_vl:is_skywork_vl",
           "mmreward.vision.published.skywork_vl:load_skywork_vl",
           "Skywork-VL-Reward: a Qwen2-VL / Qwen2.5-VL folder + value_head.safetensors (TRL value head)"),
    Layout("imagereward", "mmreward.vision.published.imagereward:is_imagereward",
           "mmreward.vision.published.imagereward:load_imagereward",
           "ImageReward v1.0: ImageReward.pt (BLIP ViT + BERT cross-attention + MLP) + med_config.json"),
    Layout("hpsv2", "mmreward.vision.published.clip_scorers:is_hpsv2", "mmreward.vision.published.clip_scorers:load_hpsv2",
           "HPSv2 / HPSv2.1: HPS_v2*.pt (open_clip ViT-H-14 state dict)"),
    Layout("open-clip", "mmreward.vision.published.clip_scorers:is_open_clip",
           "mmreward.vision.published.clip_scorers:load_open_clip",
           "an open_clip folder (open_clip_config.json + weights) scored as CLIP score"),
    Layout("transformers-clip", "mmreward.vision.published.clip_scorers:is_hf_clip",
           "mmreward.vision.published.clip_scorers:load_hf_clip",
           "a transformers CLIPModel folder: PickScore (by name), CLIP score, or the LAION aesthetic score (with its MLP file)"),
    Layout("remote-code", "mmreward.core.remote_code:is_remote_code", "mmreward.core.remote_code:refuse_remote_code",
           "any other folder whose model code ships inside it (auto_map): InternLM2 reward models, VisualPRM, "
           "IXC-2.5-Reward …, refused with the reason"),
    Layout("prm-named-causal-lm-refused", "mmreward.text.prm.published:is_unread_prm",
           "mmreward.text.prm.published:refuse_unread_prm",
           "a plain causal LM named like a PRM that no layout above reads (EurusPRM implicit PRMs, GenPRM / "
           "ThinkPRM generative PRMs, a renamed Math-Shepherd / RLHFlow PRM): refused with the loader to call"),
]


for _layout in LAYOUTS:
    _layout.transformers_weights = _layout.name in {
        "qwen2.5-math-prm", "skywork-o1-open-prm", "math-shepherd", "rlhflow-prm", "token-classification-prm",
        "qwen2.5-math-rm", "armorm",
        "headed-decoder-rm", "transformers-sequence-classifier", "skywork-vl-reward", "transformers-clip"}


class LoadError(ValueError):
    """``mmreward.load`` does not know what the folder holds (the message lists what it knows)."""


def _target_path(target: Any, what: str) -> str:
    """``"module:attribute"`` for a registration: such a string (checked for its shape; imported only
    when used) or the class / function itself."""
    if isinstance(target, str):
        module, sep, attr = target.partition(":")
        if not sep or not module.strip() or not attr.strip() or " " in target:
            raise ValueError(f"{what} must be a 'module:attribute' path (e.g. 'mypkg.models:LengthRM') or the "
                             f"object itself, got {target!r}")
        return target
    if callable(target) and hasattr(target, "__module__") and hasattr(target, "__qualname__"):
        if "<locals>" in target.__qualname__:
            raise ValueError(f"{what} {target.__qualname__} is defined inside a function, so it cannot be "
                             "imported by name: define it at module level")
        return f"{target.__module__}:{target.__qualname__}"
    raise TypeError(f"{what} must be a 'module:attribute' path or a class / function, got {type(target).__name__}")


def register_model(model_type: str, target: Union[str, type]) -> None:
    """Make ``mmreward.load`` open folders whose config.json says ``model_type`` with ``target``
    (a class with ``from_pretrained``, or its ``"module:Class"`` path)."""
    if not isinstance(model_type, str) or not model_type:
        raise ValueError("model_type must be a non-empty string")
    if not isinstance(target, str) and not (isinstance(target, type) and hasattr(target, "from_pretrained")):
        raise TypeError(f"register_model({model_type!r}, ...): the target must be a class with from_pretrained "
                        f"(a RewardScorer) or its 'module:Class' path, got {type(target).__name__}")
    MODEL_TYPES[model_type] = _target_path(target, f"register_model({model_type!r}, ...): the target")


def register_layout(name: str, detect: Union[str, Callable[..., Any]], load: Union[str, Callable[..., Any]],
                    description: str = "", first: bool = False, transformers_weights: bool = False) -> None:
    """Add a published-checkpoint layout (``detect`` / ``load`` as ``"module:function"`` paths, or
    the module-level functions themselves); ``transformers_weights``: its weights are a transformers-style
    folder's, which ``mmreward info`` checks for without loading."""
    if not isinstance(name, str) or not name:
        raise ValueError("a layout name must be a non-empty string")
    layout = Layout(name, _target_path(detect, f"register_layout({name!r}): detect"),
                    _target_path(load, f"register_layout({name!r}): load"), description,
                    transformers_weights=bool(transformers_weights))
    LAYOUTS[:] = [x for x in LAYOUTS if x.name != name]
    LAYOUTS.insert(0, layout) if first else LAYOUTS.append(layout)


def _resolve(target: str, what: str = "") -> Any:
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        if not what:
            raise
        # an optional dependency of a built-in entry is a plain ImportError (its message says what to install)
        if isinstance(e, ImportError) and module.startswith("mmreward."):
            raise
        raise LoadError(f"{what} is registered as {target!r}, which cannot be imported: {type(e).__name__}: {e}") from e
    return obj


def model_class(model_type: str) -> type:
    """The class registered for ``model_type``."""
    if model_type not in MODEL_TYPES:
        raise LoadError(f"unknown model_type {model_type!r}; known: {', '.join(sorted(MODEL_TYPES))}")
    cls = _resolve(MODEL_TYPES[model_type], f"model_type {model_type!r}")
    if not (isinstance(cls, type) and callable(getattr(cls, "from_pretrained", None))):
        raise LoadError(f"model_type {model_type!r} is registered as {MODEL_TYPES[model_type]!r}, which is a "
                        f"{type(cls).__name__}, not a class with from_pretrained (a RewardScorer)")
    return cls


def extra_of(what: str) -> Optional[str]:
    """The extra of ``pip install 'mmreward[...]'`` whose packages the model type or layout ``what`` (as
    :func:`detect` names it) needs, from the package its class / loader lives in; None for one registered
    from outside mmreward (its own package says what it needs)."""
    from mmreward.core.extras import extra_of_module

    target = MODEL_TYPES.get(what) or next((x.load for x in LAYOUTS if x.name == what), "")
    return extra_of_module(target.partition(":")[0])


def _shipped(name: str) -> Optional[str]:
    """Folder of a checkpoint shipped inside the package (e.g. ``metaworld-64``), if any."""
    if os.sep in name or "/" in name:
        return None
    try:
        spec = importlib.util.find_spec("mmreward.robotics.pretrained")
    except (ImportError, ValueError):
        return None
    if not spec or not spec.submodule_search_locations:
        return None
    here = os.path.join(list(spec.submodule_search_locations)[0], name)
    return here if os.path.isfile(os.path.join(here, "config.json")) else None


def _hub_cache_snapshot(path: str) -> Optional[str]:
    """The snapshot folder of a hub-cache repository folder (``…/hub/models--org--name``, which holds
    ``blobs/``, ``refs/`` and ``snapshots/<commit>/``): the one ``refs/main`` names, else its only snapshot;
    None for any other folder. Several snapshots and no ``refs/main`` is an error naming them."""
    from mmreward.core.folders import CheckpointError

    snapshots = os.path.join(path, "snapshots")
    hub_like = (os.path.basename(os.path.normpath(path)).startswith("models--")
                or os.path.isdir(os.path.join(path, "blobs")))
    if not (hub_like and os.path.isdir(snapshots)):
        return None  # a run folder that happens to hold a snapshots/ folder is not a hub cache entry
    commits = sorted(n for n in os.listdir(snapshots) if os.path.isdir(os.path.join(snapshots, n)))
    ref = os.path.join(path, "refs", "main")
    if os.path.isfile(ref):
        try:
            with open(ref, encoding="utf-8") as f:
                commit = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} is a hub-cache folder whose refs/main cannot be read: {e}") from e
        if commit in commits:
            return os.path.join(snapshots, commit)
        raise CheckpointError(f"{path} is a hub-cache folder whose refs/main names snapshot {commit[:60]!r}, which "
                              f"snapshots/ lacks (it holds {commits[:4]}): a download that did not finish; pass one "
                              "snapshot folder or fetch the model again")
    if len(commits) == 1:
        return os.path.join(snapshots, commits[0])
    if not commits:
        raise CheckpointError(f"{path} is a hub-cache folder with no snapshot in snapshots/: a download that did not "
                              "finish; fetch the model again")
    raise CheckpointError(f"{path} is a hub-cache folder with {len(commits)} snapshots {commits[:4]} and no refs/main "
                          "to pick one: pass the snapshot folder (…/snapshots/<commit>)")


def _weight_patterns(repo_id: str) -> list[str]:
    """The weight files of a hub repository to fetch: its ``.safetensors``, and the top-level ``.pt`` / ``.pth``
    checkpoints published scorers ship (ImageReward.pt, HPS_v2*_compressed.pt, the aesthetic MLP's .pth), which
    were left out, so that those hub ids had no weights; top-level ``.bin`` files only when the repository has no
    ``.safetensors`` (most carry both). Named one by one: a pattern like ``*.pt`` would also fetch a Trainer's
    ``checkpoint-*/optimizer.pt`` or Meta's ``original/consolidated.*.pth`` (gigabytes no loader reads)."""
    patterns = ["*.safetensors"]
    try:
        from huggingface_hub import list_repo_files

        files = list_repo_files(repo_id)
    except Exception:  # noqa: BLE001 - offline (the cache answers) or unknown: snapshot_download reports it
        return patterns
    top = [f for f in files if "/" not in f]
    endings = (".pt", ".pth") if any(f.endswith(".safetensors") for f in files) else (".pt", ".pth", ".bin")
    return patterns + [f for f in top if f.endswith(endings)]


def resolve_folder(path: Union[str, os.PathLike], weights: bool = True) -> str:
    """A local model folder for ``path``: the folder itself, a run folder's ``model/``, a shipped
    checkpoint name, or a hub id fetched into the cache (JSON, tokenizer and weight files, see
    :func:`_weight_patterns`; ``weights=False``: no weights)."""
    from mmreward.core.folders import CheckpointError, local_path_only, recover_folder

    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"a model path must be a folder path, shipped name or hub id (str or os.PathLike), "
                        f"got {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path.strip():
        raise CheckpointError(f"a model path must be a folder path, shipped name or hub id, got {path!r}")
    path = os.path.expanduser(path)  # "~/runs/rm": the user's folder, as a shell would read it
    recover_folder(path)
    if os.path.isdir(path):
        config = os.path.join(path, "config.json")
        if os.path.islink(config) and not os.path.exists(config):  # a hub snapshot whose download stopped
            raise CheckpointError(f"{config} is a link to {os.readlink(config)}, which does not exist: a download or "
                                  "copy that did not finish; fetch the file again")
        if not os.path.exists(config):
            snapshot = _hub_cache_snapshot(path)
            if snapshot is not None:
                return resolve_folder(snapshot, weights)  # its own config.json checked as above
            from mmreward.core.checkpoint import pick_run_model

            # a training run's output folder: its model/, or its reward/ (train-video's model/ is the video model)
            return pick_run_model(path, lambda model_type: model_type in MODEL_TYPES) or path
        from mmreward.core.folders import verify_folder

        # a saved folder's manifest (its paths, links out, sizes) is checked before its config.json is read: a
        # config.json linked to a file elsewhere is named as such, not parsed (checksums come with the load)
        verify_folder(path, checksums=False)
        return path
    shipped = _shipped(path)
    if shipped:
        return shipped
    if os.path.exists(path):
        raise CheckpointError(f"{path!r} is a file, not a model folder")
    looks_like_hub_id = path.count("/") == 1 and not local_path_only(path)  # owner/name
    if not looks_like_hub_id:
        raise CheckpointError(f"model folder {path!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"] + (_weight_patterns(path) if weights else [])
        return snapshot_download(path, allow_patterns=patterns)
    except Exception as e:  # offline, unknown repo, no network, huggingface_hub missing
        owner = path.split("/")[0]
        if os.path.isdir(owner):  # "runs/rmm": a mistyped local folder far more likely than a hub repo
            near = sorted(n for n in os.listdir(owner) if not n.startswith("."))[:8]
            raise CheckpointError(f"model folder {path!r} does not exist ({owner}/ holds {near}), nor could it be "
                                  f"fetched as a hub id ({type(e).__name__})") from e
        from mmreward.core.extras import missing_extra

        missing = missing_extra(e, what=f"fetching {path!r} from the hub")  # not a network problem: say what to install
        if missing is not None:
            raise missing from e
        raise CheckpointError(f"{path!r} is not a local folder and could not be fetched from the hub: "
                              f"{type(e).__name__}: {e}") from e


def _detects(layout: Layout, folder: str, config: Optional[dict]) -> bool:
    """``layout.detect(folder, config)``; a registered (not built-in) detect function that fails is an error
    naming its layout, since it runs for every folder ``mmreward.load`` opens."""
    fn = _resolve(layout.detect, f"layout {layout.name!r}")
    if layout.detect.startswith("mmreward."):
        return bool(fn(folder, config))
    from mmreward.core.folders import CheckpointError

    try:
        return bool(fn(folder, config))
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a user's detect function raises
        raise LoadError(f"layout {layout.name!r} ({layout.detect}): its detect function failed on {folder}: "
                        f"{type(e).__name__}: {e}") from e


def _scalar_head_lm(folder: str) -> bool:
    """Whether ``folder`` holds a ``ScalarHeadLM`` (``backbone/`` + ``head/``, no ``config.json``)."""
    head = os.path.join(folder, "head", "config.json")
    if os.path.isfile(os.path.join(folder, "config.json")) or not os.path.isdir(os.path.join(folder, "backbone")) \
            or not os.path.isfile(head):
        return False
    try:
        with open(head, encoding="utf-8") as f:
            body = json.load(f)
    except (OSError, ValueError, RecursionError):  # RecursionError: deeply nested arrays
        return False
    return isinstance(body, dict) and "ScalarHeadLM" in json.dumps(body)


def not_a_model_folder(folder: Union[str, os.PathLike]) -> Optional[str]:
    """Why a folder without ``config.json`` is no reward model although mmreward wrote it, in one line that
    says what to open or run instead: a training snapshot, a run that has not saved its model yet
    (:func:`mmreward.core.checkpoint.run_folder_problem`), or a meta-RM (``ScalarHeadLM``, which the
    generative judges read); None for anything else."""
    from mmreward.core.checkpoint import run_folder_problem

    problem = run_folder_problem(folder)
    if problem is not None:
        return problem
    folder = os.path.expanduser(os.fsdecode(os.fspath(folder)))
    for where in (folder, os.path.join(folder, "model")):
        if _scalar_head_lm(where):
            return (f"{where} holds a ScalarHeadLM (backbone/ + head/, as `mmreward text train-meta-rm` writes "
                    "the DeepSeek-GRM meta-RM), which is no reward model of its own: use it with `mmreward text "
                    f"judge grm --meta-rm {where}` (or as --model of `judge critic_rm` / `train-critic-rm`)")
    return None


def saved_model_type(path: Union[str, os.PathLike]) -> Optional[str]:
    """The ``model_type`` in the ``config.json`` of the folder ``path`` names (a shipped name or a run folder
    too), read alone (nothing loads); None when it cannot be told (the load reports why)."""
    from mmreward.core.model import read_config

    try:
        model_type = read_config(resolve_folder(path, weights=False)).get("model_type")
    except Exception:  # noqa: BLE001 - a missing / unreadable folder is reported by the load
        return None
    return model_type if isinstance(model_type, str) else None


def refuse_mmreward_model(flag: str, path: Union[str, os.PathLike], accepted: Sequence[str], wanted: str) -> None:
    """Refuse a ``flag`` folder that holds a model mmreward saved whose type is not in ``accepted`` (a text RM
    given where a backbone or a judge goes): transformers cannot open it and answers with a many-line
    "Unrecognized configuration class ... pip install --upgrade transformers", which misleads."""
    model_type = saved_model_type(path)
    if model_type in MODEL_TYPES and model_type not in accepted:
        raise ValueError(f"{flag} {os.fspath(path)} holds an mmreward {model_type!r} model: give {wanted}")


def _trainer_checkpoints_problem(folder: str) -> Optional[str]:
    """A transformers ``Trainer`` output folder (TRL's trainers) that holds ``checkpoint-<step>/`` folders but no
    model of its own (the run stopped before its final save, or saves only checkpoints): which to load."""
    import re

    steps = []
    for name in os.listdir(folder):
        match = re.fullmatch(r"checkpoint-(\d+)", name)
        where = os.path.join(folder, name)
        if match and any(os.path.isfile(os.path.join(where, f)) for f in ("config.json", "adapter_config.json")):
            steps.append((int(match.group(1)), name))
    if not steps:
        return None
    names = [n for _, n in sorted(steps)]
    shown = ", ".join(names[-4:]) + (f" (and {len(names) - 4} earlier)" if len(names) > 4 else "")
    return (f"{folder} is a training output folder with checkpoints {shown} but no model of its own: load one of "
            f"them, e.g. the newest, {os.path.join(folder, names[-1])}")


def detect(folder: str) -> tuple[str, Callable[..., Any]]:
    """``(what, loader)`` for a local folder: ``loader(folder, device=..., dtype=...)``."""
    from mmreward.core.model import read_config

    config: Optional[dict] = None
    if os.path.isfile(os.path.join(folder, "config.json")):
        config = read_config(folder)
        mt = config.get("model_type")
        if isinstance(mt, str) and mt in MODEL_TYPES:
            cls = model_class(mt)
            return mt, cls.from_pretrained
    for layout in LAYOUTS:
        if _detects(layout, folder, config):
            return layout.name, _resolve(layout.load, f"layout {layout.name!r}")
    # a config.json of {} (or without model_type) is not "no config.json", which sent users looking for a file
    what = "no config.json" if config is None else f"model_type {config.get('model_type')!r}" \
        if "model_type" in config else "a config.json without model_type"
    if config is None:
        problem = not_a_model_folder(folder) or _trainer_checkpoints_problem(folder)
        if problem is not None:
            raise LoadError(problem)
    raise LoadError(f"{folder}: cannot tell which reward model this is ({what}); mmreward reads its own "
                    f"model types ({', '.join(sorted(MODEL_TYPES))}) and the published layouts "
                    f"{', '.join(x.name for x in LAYOUTS)}")


def load(path: Union[str, os.PathLike], *, device: Any = "cpu", dtype: Any = None, **kwargs: Any) -> Any:
    """The reward model saved at ``path``, on ``device``, in eval mode: the class its ``config.json`` names
    (``model_type``), or the loader of the published layout the folder holds (see ``mmreward info FOLDER``).

    ``path``: a folder (``str`` / ``pathlib.Path``; ``~`` is the home folder), a training run's output folder
    (its ``model/``), a checkpoint name shipped with mmreward (``"metaworld-64"``) or a hub id (``"org/name"``,
    fetched into the hub cache). Each call builds a model of its own: two loads share no tensor.
    ``device``: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device``.
    ``dtype``: ``None`` / ``"auto"`` (as saved), ``"fp32"``, ``"bf16"``, ``"fp16"``, ``"fp64"`` or a floating
    ``torch.dtype``. Other keywords are options of the folder's loader (``step_separator=`` of a PRM layout …);
    one it does not take is an error naming it.

    The model's ``score(inputs)`` takes a list of the inputs of ``type(model).input_types`` (``help(model.score)``
    names them) and returns ``Tensor[N]``, float32 on the CPU.
    """
    folder = resolve_folder(path)
    if os.path.isdir(os.path.expanduser(os.fsdecode(os.fspath(path)))):
        from mmreward.core.checkpoint import unfinished_run_note

        note = unfinished_run_note(path)  # a run continued past its model/ (running, or killed)
        if note is not None:
            warnings.warn(note, stacklevel=2)
    from mmreward.core.extras import needs_extra

    with needs_extra(what=folder):  # a layout's detect function that needs a package not installed
        what, loader = detect(folder)
    if kwargs:
        _check_load_options(what, loader, folder, kwargs)
    with needs_extra(extra_of(what), what=f"{what} ({folder})"):  # transformers for a text RM: 'mmreward[text]'
        model = loader(folder, device=device, dtype=dtype, **kwargs)
    owner = getattr(loader, "__self__", None)
    from mmreward.core.model import Pretrained, check_finite_weights

    if not (isinstance(owner, type) and issubclass(owner, Pretrained)):  # from_pretrained checked it already
        # a published checkpoint with NaN weights would score NaN for every input without an error
        check_finite_weights(model, folder, nan_only=dtype is not None)
    return model


def _check_load_options(what: str, loader: Callable[..., Any], folder: str, kwargs: dict) -> None:
    """A keyword of ``mmreward.load`` that this folder's loader does not take (``normalize_reward=`` on a
    classifier, ``step_separator=`` on a Qwen PRM) is one error naming the option and the layout, not an
    internal TypeError."""
    import inspect

    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):  # a builtin / C loader: let the call itself say
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    taken = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
             and n not in ("device", "dtype")]
    unknown = [k for k in kwargs if k not in params or k in ("folder", "path")]
    if unknown:
        raise ValueError(f"mmreward.load: {unknown[0]}= is not an option of {what} folders ({folder}); "
                         + (f"they take {', '.join(taken)}" if taken else "they take no options besides device / dtype"))


__all__ = ["LoadError", "MODEL_TYPES", "LAYOUTS", "Layout", "detect", "extra_of", "load", "model_class", "not_a_model_folder",
           "register_layout", "register_model", "resolve_folder"]
