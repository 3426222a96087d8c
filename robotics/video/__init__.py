"""Video models of Diffusion Reward: conditional VQ-Diffusion over VQGAN tokens
(:mod:`.vq_diffusion`) and its discrete-diffusion arithmetic (:mod:`.diffusion_math`)."""
from .vq_diffusion import (  # noqa: F401
    ConditionalVQDiffusion,
    ContextCache,
    VideoTrainConfig,
    VQDiffusionConfig,
    token_windows,
    train_video_model,
    window_indices,
)
