"""Frame codecs of Diffusion Reward: the VQGAN that turns 64×64 frames into 8×8 code tokens."""
from .vqgan import (  # noqa: F401
    VQGAN,
    PatchDiscriminator,
    VectorQuantizer,
    VQGANConfig,
    VQGANTrainConfig,
    evaluate_vqgan,
    frames_to_float,
    psnr,
    train_vqgan,
)
