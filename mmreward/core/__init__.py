"""Core pieces shared by the domain packages (imports flow down only: domains → core → ops):

* ``checkpoint`` — atomic safetensors + JSON model folders and exact-resume training states;
* ``pretrained`` — ``save_pretrained`` / ``from_pretrained`` for dataclass-config modules;
* ``trainer`` — the shared training loop (``Trainer`` / ``TrainConfig``: accumulation, autocast,
  DDP, evaluation, snapshots with exact resume, logs, curves);
* ``train`` — seeding, RNG capture, warmup + cosine schedules;
* ``data`` — JSON / JSONL / ``datasets`` record readers with row-numbered errors;
* ``logging`` — CSV + TensorBoard metric logger and curve plots;
* ``cli_config`` — dataclass configs ↔ argparse options for every CLI.
"""
from .checkpoint import (  # noqa: F401
    CheckpointError,
    atomic_write,
    atomic_write_text,
    load_model,
    load_state,
    save_model,
    save_state,
)
