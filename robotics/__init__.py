"""mmreward.robotics — Diffusion Reward (Huang et al., ECCV 2024) and visual RL for robot
manipulation.

Data layer:

* :mod:`.envs` — Meta-World v3 and Adroit tasks as pixel environments (one camera, frames the right
  way up, action repeat); scripted Meta-World experts;
* :mod:`.collect` — expert / noisy-expert / random episode collection and video import
  (``mmreward robotics collect`` / ``import-videos``);
* :mod:`.data` — episode files + manifest, :class:`EpisodeDataset` frame windows, video I/O, and
  episodes on disk as score inputs (:func:`find_episodes`).

Models (each a :class:`mmreward.core.model.RewardScorer` or, for the sub-models, ``Pretrained``):

* :mod:`.codec` — the VQGAN frame codec (64×64 frames ↔ 8×8 tokens), :func:`train_vqgan`;
* :mod:`.video` — conditional VQ-Diffusion over tokens, :func:`train_video_model`;
* :mod:`.reward` — :class:`DiffusionReward` (conditional-entropy reward), the :class:`RND` bonus and
  the :class:`ProgressModel` ranker of expert frame order. All three score :class:`Episode` inputs
  (``score`` → the summed reward per episode, ``score_parts`` → per-frame rewards) and load with
  ``mmreward.load(folder)`` (the shipped ``metaworld-64`` by name).

Visual RL:

* :mod:`.rl` — DrQ-v2 (:class:`DrQV2Agent`), an episode replay buffer that relabels finished episodes
  with the chosen reward source, and the :class:`Workspace` / :func:`train_rl` loop
  (``mmreward robotics train-rl``).

``Episode`` here is the score input (:class:`mmreward.core.inputs.Episode`: frames + optional
success flags); the stored-episode record (frames, actions, rewards, success) is
:class:`mmreward.robotics.data.Episode`.

Importing this package loads no simulator, OpenCV or plotting library; names below resolve lazily.
"""
from __future__ import annotations

import importlib

# public name -> "module:attribute"
_LAZY = {
    # data
    "Episode": "mmreward.core.inputs:Episode",
    "collect_episodes": "mmreward.robotics.collect:collect_episodes",
    "import_videos": "mmreward.robotics.collect:import_videos",
    "CollectConfig": "mmreward.robotics.collect:CollectConfig",
    "ImportConfig": "mmreward.robotics.collect:ImportConfig",
    "CollectSummary": "mmreward.robotics.collect:CollectSummary",
    "make_env": "mmreward.robotics.envs:make_env",
    "list_tasks": "mmreward.robotics.envs:list_tasks",
    "EpisodeDataset": "mmreward.robotics.data.episodes:EpisodeDataset",
    "EpisodeFileError": "mmreward.robotics.data.episodes:EpisodeFileError",
    "load_episode": "mmreward.robotics.data.episodes:load_episode",
    "load_episode_folder": "mmreward.robotics.data.episodes:load_episode_folder",
    "save_episode": "mmreward.robotics.data.episodes:save_episode",
    "read_manifest": "mmreward.robotics.data.episodes:read_manifest",
    "find_episodes": "mmreward.robotics.data.inputs:find_episodes",
    "load_frames": "mmreward.robotics.data.video:load_frames",
    "VideoError": "mmreward.robotics.data.video:VideoError",
    # models: VQGAN codec, conditional VQ-Diffusion, Diffusion Reward + RND + progress ranker
    "VQGAN": "mmreward.robotics.codec.vqgan:VQGAN",
    "VQGANConfig": "mmreward.robotics.codec.vqgan:VQGANConfig",
    "VQGANTrainConfig": "mmreward.robotics.codec.vqgan:VQGANTrainConfig",
    "train_vqgan": "mmreward.robotics.codec.vqgan:train_vqgan",
    "evaluate_vqgan": "mmreward.robotics.codec.vqgan:evaluate_vqgan",
    "ConditionalVQDiffusion": "mmreward.robotics.video.vq_diffusion:ConditionalVQDiffusion",
    "VQDiffusionConfig": "mmreward.robotics.video.vq_diffusion:VQDiffusionConfig",
    "VideoTrainConfig": "mmreward.robotics.video.vq_diffusion:VideoTrainConfig",
    "train_video_model": "mmreward.robotics.video.vq_diffusion:train_video_model",
    "token_windows": "mmreward.robotics.video.vq_diffusion:token_windows",
    "DiffusionReward": "mmreward.robotics.reward.diffusion_reward:DiffusionReward",
    "DiffusionRewardConfig": "mmreward.robotics.reward.diffusion_reward:DiffusionRewardConfig",
    "RND": "mmreward.robotics.reward.rnd:RND",
    "RNDConfig": "mmreward.robotics.reward.rnd:RNDConfig",
    "ProgressModel": "mmreward.robotics.reward.progress:ProgressModel",
    "ProgressConfig": "mmreward.robotics.reward.progress:ProgressConfig",
    "train_progress": "mmreward.robotics.reward.progress:train_progress",
    "DiffusionRewardWrapper": "mmreward.robotics.wrappers:DiffusionRewardWrapper",
    "DiffusionRewardVectorWrapper": "mmreward.robotics.wrappers:DiffusionRewardVectorWrapper",
    "MetaWorldPixelEnv": "mmreward.robotics.wrappers:MetaWorldPixelEnv",
    "PixelGymEnv": "mmreward.robotics.wrappers:PixelGymEnv",
    "relabel_episode": "mmreward.robotics.wrappers:relabel_episode",
    "load_pretrained": "mmreward.robotics.pretrained:load_pretrained",
    # visual RL: DrQ-v2 with learned rewards
    "DrQV2Agent": "mmreward.robotics.rl.drqv2:DrQV2Agent",
    "DrQV2Config": "mmreward.robotics.rl.drqv2:DrQV2Config",
    "RLConfig": "mmreward.robotics.rl.workspace:RLConfig",
    "Workspace": "mmreward.robotics.rl.workspace:Workspace",
    "train_rl": "mmreward.robotics.rl.workspace:train_rl",
    "make_reward_source": "mmreward.robotics.rl.rewards:make_reward_source",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        module, _, attr = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmreward.robotics' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
