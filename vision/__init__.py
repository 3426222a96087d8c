"""Vision reward models: ImageReward-style image scorers, ReFL, video scoring, VLM reward models,
VisualPRM and StableReinforce — every model a :class:`mmreward.core.model.RewardScorer`.

``import mmreward.vision`` is light (no transformers / diffusers); each name loads its module on
first use, so a missing optional module only fails when that name is used:

    import mmreward
    from mmreward.vision import ImagePrompt, VideoPrompt
    model = mmreward.load("runs/shapes/model")                                  # an ImageRewardModel
    model.score([ImagePrompt("two red circles on the left", "a.png"),
                 ImagePrompt("two red circles on the left", "b.png")])           # Tensor[2]
    model.score_parts([VideoPrompt("a blue square", "clip.mp4")])                # [Tensor[T]]: per frame

Test-size models and tokenizers (``word_tokenizer``, ``tiny_clip_config``, ``tiny_processor``,
``tiny_qwen2vl_config``) are in :mod:`mmreward.vision.testing`, not exported here.
"""
from __future__ import annotations

import importlib

# public name -> module (relative to this package, or absolute)
_LAZY = {
    # score inputs (mmreward.core.inputs)
    "ImagePrompt": "mmreward.core.inputs",
    "VideoPrompt": "mmreward.core.inputs",
    "Conversation": "mmreward.core.inputs",
    "VisualSteps": "mmreward.core.inputs",
    # image scorers (image_scorer.py, image_reward.py)
    "ImageScorer": "image_scorer",
    "ImageRewardModel": "image_reward",
    "ImageRewardConfig": "image_reward",
    "ConvTextConfig": "image_reward",
    # training (train.py)
    "ImageRewardTrainConfig": "train",
    "RankedExample": "train",
    "train_image_reward": "train",
    "evaluate_image_reward": "train",
    "read_ranked_sets": "train",
    # ReFL (refl.py)
    "ReFLConfig": "refl",
    "DiffusionParts": "refl",
    "train_refl": "refl",
    # video (video.py) and image decoding errors (images.py)
    "score_video": "video",
    "read_frames": "video",
    "plot_video_score": "video",
    "VideoScore": "video",
    "VideoReadError": "video",
    "ImageLoadError": "images",
    # VLM reward models, VisualPRM, StableReinforce (vlm_rm.py, visual_prm.py, stable_reinforce.py)
    "VLMRewardModel": "vlm_rm",
    "VLMRewardConfig": "vlm_rm",
    "ConversationPair": "vlm_rm",
    "train_vlm_reward": "vlm_rm",
    "evaluate_vlm_reward": "vlm_rm",
    "VisualPRM": "visual_prm",
    "VisualPRMConfig": "visual_prm",
    "LabelledSteps": "visual_prm",
    "train_visual_prm": "visual_prm",
    "evaluate_visual_prm": "visual_prm",
    "StableReinforceConfig": "stable_reinforce",
    "stable_reinforce_step": "stable_reinforce",
}
_SUBMODULES = ("image_scorer", "image_reward", "images", "synthetic", "train", "refl", "video", "cli", "vlm_cli",
               "vlm_base", "vlm_data", "vlm_rm", "visual_prm", "stable_reinforce")

__all__ = sorted(_LAZY)


def _module(name: str):
    path = _LAZY[name]
    return importlib.import_module(path if path.startswith("mmreward.") else f"{__name__}.{path}")


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_module(name), name)
        globals()[name] = value  # cache: later look-ups skip __getattr__
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_SUBMODULES))
