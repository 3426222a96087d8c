"""Diffusion Reward checkpoints shipped with mmreward.

``metaworld-64`` (the default): a small VQGAN + conditional VQ-Diffusion trained on scripted-expert
videos of four Meta-World v3 tasks (door-open, drawer-open, button-press, window-open; 64×64 frames,
``corner`` camera, action repeat 2; 80 episodes per task), in relative-likelihood mode with its
expert statistics, plus a ranker of expert frame order (``progress/``) whose z-score is added to the
learned term (β = 1; ``reward.set_progress(None)`` gives the paper's rule). How it was made:
``scripts/make_default_checkpoint.sh``; how well it ranks episodes:
``benchmarks/results/diffusion_reward_pooled_scale80.json`` and ``docs/diffusion_reward.md``.

``metaworld-64-v1``: the same design trained on 40 episodes per task for 30 000 video steps
(``scripts/make_checkpoint_metaworld64_v1.sh``); the RL runs in ``docs/visual_rl.md`` use it (``checkpoint=pretrained_path("metaworld-64-v1")`` reproduces them).

    from mmreward.robotics.pretrained import load_pretrained
    reward = load_pretrained()            # DiffusionReward, eval mode, on CPU
    r = reward(frames)                    # uint8 [T, 64, 64, 3] -> [T]
    mmreward.load("metaworld-64")         # the same model through the registry

``adroit-64``: the same design trained on 80 videos of the shipped Adroit door expert (64×64,
``vil_camera``, action repeat 2, 100 steps), with its ranker and the motion deficit at λ = 2
(``scripts/make_checkpoint_adroit64.sh``; figures in ``docs/adroit.md``).

``metaworld-64-v1`` is in the format of mmreward 0.1 (no ``manifest.json``); the current code reads
it as it is, so its weights stay byte-identical.

``experts/<task>/``: trained state-based expert policies (:class:`~mmreward.robotics.rl.StatePolicy`)
for tasks without a scripted expert (Adroit), the default of ``collect --policy expert`` for their
task (:func:`shipped_expert`); ``docs/adroit.md`` gives how they were trained and their success rates.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

DEFAULT = "metaworld-64"
HERE = os.path.dirname(os.path.abspath(__file__))


def available() -> list[str]:
    """Names of the shipped checkpoints (folders holding a ``config.json``)."""
    return sorted(d for d in os.listdir(HERE) if os.path.isfile(os.path.join(HERE, d, "config.json")))


def pretrained_path(name: Optional[str] = None) -> str:
    """Folder of the shipped checkpoint ``name`` (default :data:`DEFAULT`)."""
    name = name or DEFAULT
    path = os.path.join(HERE, name)
    if not os.path.isfile(os.path.join(path, "config.json")):
        have = available()
        raise FileNotFoundError(f"no shipped Diffusion Reward checkpoint {name!r} in {HERE} "
                                f"(shipped: {', '.join(have) if have else 'none'}); "
                                "train one with `mmreward robotics train-codec` / `train-video`")
    return path


def load_pretrained(name: Optional[str] = None, device: Any = "cpu"):
    """The shipped :class:`~mmreward.robotics.reward.DiffusionReward` ``name`` (default :data:`DEFAULT`)."""
    from ..reward.diffusion_reward import DiffusionReward

    return DiffusionReward.from_pretrained(pretrained_path(name), device)


def model_folder(path: str, model_types: Sequence[str] = ()) -> str:
    """The saved model folder ``path`` names: a shipped checkpoint name, the folder itself, or a
    trainer's ``path/model`` / ``path/reward``; with ``model_types``, the first of those holding one
    of those kinds of model, else the part of that kind (``codec/``, ``video/``, ``progress/``,
    ``rnd/``) of a Diffusion Reward folder among them (FileNotFoundError / ValueError saying what was
    found otherwise)."""
    path = os.path.expanduser(os.fspath(path))  # "~/runs/video": the user's folder, as mmreward.load reads it
    if not os.path.exists(path) and os.path.isfile(os.path.join(HERE, path, "config.json")):
        path = os.path.join(HERE, path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model folder {path!r} does not exist (shipped: {', '.join(available())})")
    seen = []
    cands = [path, os.path.join(path, "model"), os.path.join(path, "reward")]
    if model_types:  # a Diffusion Reward folder's parts: fit-stats --codec metaworld-64 --video metaworld-64
        cands += [os.path.join(base, part) for base in (path, os.path.join(path, "reward"))
                  for part in ("codec", "video", "progress", "rnd")]
    for cand in cands:
        cfg_path = os.path.join(cand, "config.json")
        if not os.path.isfile(cfg_path):
            continue
        try:
            with open(cfg_path, encoding="utf-8") as f:
                kind = json.load(f).get("model_type")
        except (OSError, ValueError, AttributeError):
            kind = None
        if not model_types or kind in model_types:
            return cand
        if cand in cands[:3]:
            seen.append(f"{cand} ({kind})")
    found = f"; found {', '.join(seen)}" if seen else ""
    want = f"{' / '.join(map(repr, model_types))} model" if model_types else "saved model (config.json)"
    shown = path.rstrip("/" + os.sep) or path  # "run/" named "run//model"
    raise ValueError(f"no {want} in {shown}, {shown}/model or {shown}/reward{found}{_snapshot_hint(path)}")


def _snapshot_hint(path: str) -> str:
    """What a folder without a model holds when it is part of a training run (a snapshot, or a run that has
    not saved its model yet), as "; ..." to end an error message; "" otherwise."""
    from mmreward.core.checkpoint import run_folder_problem

    problem = run_folder_problem(path)
    return f"; {problem}" if problem else ""


__all__ = ["DEFAULT", "available", "pretrained_path", "load_pretrained", "model_folder"]


def shipped_expert(task: str) -> Optional[str]:
    """Folder of the shipped expert policy for ``task`` (e.g. ``adroit-door``), or None."""
    folder = os.path.join(HERE, "experts", task)
    return folder if os.path.isfile(os.path.join(folder, "config.json")) else None
