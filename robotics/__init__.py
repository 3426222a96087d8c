"""mmreward.robotics — Diffusion Reward (Huang et al., ECCV 2024) and visual RL for robot
manipulation.

Data layer:

* :mod:`.envs` — Meta-World v3 and Adroit tasks as pixel environments (one camera, frames the right
  way up, action repeat); scripted Meta-World experts;
* :mod:`.collect` — expert / noisy-expert / random episode collection and video import
  (``mmreward robotics collect`` / ``import-videos``);
* :mod:`.data` — episode files + manifest, :class:`EpisodeDataset` frame windows, video I/O.

Models:

* :mod:`.codec` — the VQGAN frame codec (64×64 frames ↔ 8×8 tokens), :func:`train_vqgan`;
* :mod:`.video` — conditional VQ-Diffusion over tokens, :func:`train_video_model`;
* :mod:`.reward` — :class:`DiffusionReward` (conditional-entropy reward) and the :class:`RND` bonus.

Visual RL:

* :mod:`.rl` — DrQ-v2 (:class:`DrQV2Agent`), an episode replay buffer that relabels finished episodes
  with the chosen reward source, and the :class:`Workspace` / :func:`train_rl` loop
  (``mmreward robotics train-rl``).

Importing this package loads no simulator, OpenCV or plotting library; names below resolve lazily.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "collect_episodes": "mmreward.robotics.collect",
    "import_videos": "mmreward.robotics.collect",
    "CollectConfig": "mmreward.robotics.collect",
    "CollectSummary": "mmreward.robotics.collect",
    "make_env": "mmreward.robotics.envs",
    "list_tasks": "mmreward.robotics.envs",
    "Episode": "mmreward.robotics.data.episodes",
    "EpisodeDataset": "mmreward.robotics.data.episodes",
    "EpisodeFileError": "mmreward.robotics.data.episodes",
    "load_episode": "mmreward.robotics.data.episodes",
    "save_episode": "mmreward.robotics.data.episodes",
    "read_manifest": "mmreward.robotics.data.episodes",
    "load_frames": "mmreward.robotics.data.video",
    "VideoError": "mmreward.robotics.data.video",
    # models: VQGAN codec, conditional VQ-Diffusion, Diffusion Reward + RND
    "VQGAN": "mmreward.robotics.codec.vqgan",
    "VQGANConfig": "mmreward.robotics.codec.vqgan",
    "VQGANTrainConfig": "mmreward.robotics.codec.vqgan",
    "train_vqgan": "mmreward.robotics.codec.vqgan",
    "evaluate_vqgan": "mmreward.robotics.codec.vqgan",
    "ConditionalVQDiffusion": "mmreward.robotics.video.vq_diffusion",
    "VQDiffusionConfig": "mmreward.robotics.video.vq_diffusion",
    "VideoTrainConfig": "mmreward.robotics.video.vq_diffusion",
    "train_video_model": "mmreward.robotics.video.vq_diffusion",
    "token_windows": "mmreward.robotics.video.vq_diffusion",
    "DiffusionReward": "mmreward.robotics.reward.diffusion_reward",
    "DiffusionRewardConfig": "mmreward.robotics.reward.diffusion_reward",
    "RND": "mmreward.robotics.reward.rnd",
    "RNDConfig": "mmreward.robotics.reward.rnd",
    "DiffusionRewardWrapper": "mmreward.robotics.wrappers",
    "MetaWorldPixelEnv": "mmreward.robotics.wrappers",
    "PixelGymEnv": "mmreward.robotics.wrappers",
    # visual RL: DrQ-v2 with learned rewards
    "DrQV2Agent": "mmreward.robotics.rl.drqv2",
    "DrQV2Config": "mmreward.robotics.rl.drqv2",
    "RLConfig": "mmreward.robotics.rl.workspace",
    "Workspace": "mmreward.robotics.rl.workspace",
    "train_rl": "mmreward.robotics.rl.workspace",
    "make_reward_source": "mmreward.robotics.rl.rewards",
    "relabel_episode": "mmreward.robotics.wrappers",
    "load_pretrained": "mmreward.robotics.pretrained",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmreward.robotics' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
