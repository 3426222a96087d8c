"""Core pieces shared by the domain packages: checkpoints (atomic safetensors + JSON), and — as
the domain packages land — scorer base, training-loop pieces, data readers, logging and plots."""
from .checkpoint import (  # noqa: F401
    CheckpointError,
    atomic_write,
    atomic_write_text,
    load_model,
    load_state,
    save_model,
    save_state,
)
