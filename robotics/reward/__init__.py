"""Reward models of Diffusion Reward: the conditional-entropy reward (:mod:`.diffusion_reward`), the
RND novelty bonus it mixes in (:mod:`.rnd`) and the optional ranker of expert frame order that adds a
progress term (:mod:`.progress`). All three follow one contract (:mod:`.base`): ``score`` /
``score_parts`` on :class:`mmreward.core.inputs.Episode` inputs, ``save_pretrained`` /
``from_pretrained``."""
from .base import EpisodeScorer  # noqa: F401
from .diffusion_reward import DiffusionReward, DiffusionRewardConfig  # noqa: F401
from .progress import ProgressConfig, ProgressModel, train_progress  # noqa: F401
from .rnd import RND, RNDConfig  # noqa: F401

# config.json's model_type -> class, for the robotics reward models
MODEL_CLASSES = {cls.model_type: cls for cls in (DiffusionReward, ProgressModel, RND)}
