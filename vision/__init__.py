"""Vision reward models: ImageReward-style image scorers, ReFL, video scoring, VLM reward models,
VisualPRM and StableReinforce.

``import mmreward.vision`` is light (no transformers / diffusers); each name loads its module on
first use, so a missing optional module only fails when that name is used:

    from mmreward.vision import ImageRewardModel, ConvTextConfig
    model = ImageRewardModel.from_pretrained("runs/shapes/model")
    model.score("two red circles on the left", ["a.png", "b.png"])      # Tensor[2]
"""
from __future__ import annotations

import importlib

# public name -> module (relative to this package)
_LAZY = {
    # image scorer (image_reward.py)
    "ImageRewardModel": "image_reward",
    "ImageRewardConfig": "image_reward",
    "ConvTextConfig": "image_reward",
    "word_tokenizer": "image_reward",
    # training (train.py)
    "ImageRewardTrainConfig": "train",
    "train_image_reward": "train",
    "evaluate": "train",
    "read_jsonl": "train",
    # ReFL (refl.py)
    "ReFLConfig": "refl",
    "DiffusionParts": "refl",
    "train_refl": "refl",
    # video (video.py)
    "score_video": "video",
    "read_frames": "video",
    "plot_video_score": "video",
    "VideoScore": "video",
    "VideoReadError": "video",
    # image helpers (images.py)
    "load_image": "images",
    "ImageLoadError": "images",
    # VLM reward models, VisualPRM, StableReinforce (vlm_rm.py, visual_prm.py, stable_reinforce.py)
    "VLMRewardModel": "vlm_rm",
    "VLMRewardConfig": "vlm_rm",
    "train_vlm_reward": "vlm_rm",
    "VisualPRM": "visual_prm",
    "VisualPRMConfig": "visual_prm",
    "train_visual_prm": "visual_prm",
    "StableReinforceConfig": "stable_reinforce",
    "stable_reinforce_step": "stable_reinforce",
}
_SUBMODULES = ("image_reward", "images", "synthetic", "train", "refl", "video", "cli", "vlm_rm", "visual_prm",
               "stable_reinforce")


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        value = getattr(module, name)
        globals()[name] = value  # cache: later look-ups skip __getattr__
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_SUBMODULES))
