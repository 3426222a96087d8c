"""Published vision reward models in their own formats, loaded with our modules — no
``trust_remote_code``, no pickled code (``.pt`` files only through ``torch.load(weights_only=True)``):

==========================  =========================================  ==========================================
layout                      recognised by                              class (``model_type`` once saved)
==========================  =========================================  ==========================================
ImageReward v1.0            ``ImageReward.pt`` + ``med_config.json``    :class:`~.imagereward.BLIPImageReward`
                                                                       (``imagereward_blip``)
HPSv2 / HPSv2.1             ``HPS_v2*.pt`` (open_clip ViT-H-14)         :class:`~.clip_scorers.CLIPScorer`
open_clip CLIP              ``open_clip_config.json`` + weights         (``clip_scorer``: ``hpsv2`` /
PickScore, CLIP score       a transformers ``CLIPModel`` folder         ``pickscore`` / ``clip_score`` /
LAION aesthetic             … + ``*linearMSE.pth`` / ``*reluMSE.pth``   ``aesthetic``)
Skywork-VL-Reward           Qwen2(.5)-VL + ``value_head.safetensors``  :class:`~.skywork_vl.QwenVLRewardModel`
                                                                       (``qwen_vl_reward``)
==========================  =========================================  ==========================================

VisualPRM and IXC-2.5-Reward are refused with the reason (:mod:`mmreward.core.remote_code`: their
model code ships inside the checkpoint). ``mmreward.load(folder)`` picks the layout (``mmreward.registry.LAYOUTS``); the
returned model scores
``ImagePrompt`` / ``VideoPrompt`` (image scorers) or ``Conversation`` (VLM RMs) like any other and
``save_pretrained`` writes it in mmreward's own format. :mod:`.qwen_vl` is the Qwen2-VL / Qwen2.5-VL
processor that needs no torchvision; :mod:`.vl_rewardbench` evaluates VLM RMs on VL-RewardBench.
Parity with each model's official code: ``docs/published_models.md``.
"""
from __future__ import annotations

import importlib

# public name -> module of this package (imported on first use: no transformers at import time)
_LAZY = {
    "BLIPImageReward": "imagereward", "BLIPImageRewardConfig": "imagereward", "load_imagereward": "imagereward",
    "CLIPScorer": "clip_scorers", "CLIPScorerConfig": "clip_scorers", "load_hpsv2": "clip_scorers",
    "load_open_clip": "clip_scorers", "load_hf_clip": "clip_scorers",
    "QwenVLRewardModel": "skywork_vl", "load_skywork_vl": "skywork_vl",
    "HPSv3RewardModel": "hpsv3", "load_hpsv3": "hpsv3",
    "QwenVLProcessor": "qwen_vl", "QwenVisionConfig": "qwen_vl", "QwenVideo": "qwen_vl",
    "VLRewardBenchItem": "vl_rewardbench", "read_vl_rewardbench": "vl_rewardbench",
    "evaluate_vl_rewardbench": "vl_rewardbench",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
