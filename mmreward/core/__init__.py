"""Core pieces shared by the domain packages (imports flow down only: domains → core → ops):

* ``model`` — the one model contract: ``RewardScorer`` (``score`` / ``score_parts`` /
  ``save_pretrained`` / ``from_pretrained``) and ``Pretrained`` for sub-models;
* ``inputs`` — the documented input of ``score`` per modality (``TextPair``, ``StepSolution``, …);
* ``folders`` — atomic files and folders (swap into place, manifest with sizes + SHA-256, umask);
* ``checkpoint`` — safetensors + JSON tensors, one-file training states, run snapshots (one unit
  each, newest two kept, verified on load) and the start rules of a run folder (resume / overwrite);
* ``device`` — ``--device`` / dtype requests checked against this torch build;
* ``trainer`` — the one training loop (``Trainer`` / ``TrainConfig``: ``loss_fn`` or ``step_fn``
  steps, accumulation, autocast, DDP, evaluation, snapshots with exact resume, logs, curves, the
  final ``model/``; see docs/training.md);
* ``train`` — seeding (``seed_everything``: call it before building a model), RNG capture,
  warmup + cosine schedules;
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
