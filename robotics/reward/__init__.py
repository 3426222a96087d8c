"""Reward models of Diffusion Reward: the conditional-entropy reward (:mod:`.diffusion_reward`), the
RND novelty bonus it mixes in (:mod:`.rnd`) and the optional ranker of expert frame order that adds a
progress term (:mod:`.progress`)."""
from .diffusion_reward import DiffusionReward, DiffusionRewardConfig  # noqa: F401
from .progress import ProgressConfig, ProgressModel, train_progress  # noqa: F401
from .rnd import RND, RNDConfig  # noqa: F401
