"""Reward models of Diffusion Reward: the conditional-entropy reward (:mod:`.diffusion_reward`) and
the RND novelty bonus it mixes in (:mod:`.rnd`)."""
from .diffusion_reward import DiffusionReward, DiffusionRewardConfig  # noqa: F401
from .rnd import RND, RNDConfig  # noqa: F401
