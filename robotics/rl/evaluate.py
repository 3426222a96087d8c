"""A trained pixel agent on held-out scenes: ``mmreward robotics eval-rl``.

    from mmreward.robotics.rl import evaluate_run
    evaluate_run("runs/adroit-rl", episodes=20)   # success rate (Wilson interval), returns, progress

Loads the DrQ-v2 agent of a ``train-rl`` run folder (its newest snapshot, or ``checkpoint-<frame>``),
runs its deterministic policy on ``episodes`` scenes whose reset seeds no training or training-time
evaluation episode uses (those of :func:`~mmreward.robotics.rl.evaluate_expert`), and reports the
success rate with its 95 % Wilson interval, the environment return, and the task's progress
measures per episode where the task has them (Adroit door / hammer / relocate: the palm's distance
to the object at the start, the closest it came and its mean over the episode; door: the widest the
door opened). The progress measures matter on Adroit
because Gymnasium-Robotics' dense reward pays the hand for staying away from the object (see
``envs/adroit.py``), so its return says little about progress. Reads the run, writes nothing there.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any, Optional

import numpy as np

from .expert import HELDOUT_SEED_BASE, t_interval, wilson_interval


def _mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean with a 95 % t-interval over episodes."""
    return {"mean": float(np.mean(values)), "ci95": t_interval(values)}


def progress_row(start: dict[str, float], after: list[dict[str, float]]) -> dict[str, float]:
    """One episode's progress from :func:`~mmreward.robotics.envs.adroit.progress_measures` at the
    start and after every step: start / closest / mean palm–object distance, widest door angle
    (the keys the task has; empty for tasks without measures)."""
    row = {}
    if "approach_distance" in start:
        dist = [m["approach_distance"] for m in after]
        row.update(start_approach_distance=start["approach_distance"], min_approach_distance=float(np.min(dist)),
                   mean_approach_distance=float(np.mean(dist)))
    if "door_angle" in start:
        row["max_door_angle"] = float(np.max([m["door_angle"] for m in after]))
    return row


def _snapshot(run: str, frame: Optional[int]) -> tuple[int, Any]:
    from mmreward.core.checkpoint import CheckpointError, Snapshots

    snaps = Snapshots(run)
    if frame is None:
        # the newest readable one, read only: Snapshots.load_latest would rename an unreadable newer one to
        # *.unreadable, and this command writes nothing in the run (which may be training right now: a
        # snapshot it is replacing or dropping can vanish while it is read)
        errors = []
        for at, path in snaps.list():
            try:
                state = Snapshots.read(path)
            except (CheckpointError, OSError) as e:
                errors.append(f"{os.path.basename(path)}: {e}")
                continue
            if errors:
                warnings.warn(f"{run}: skipping unreadable snapshot(s) ({'; '.join(errors)}); evaluating the one "
                              f"at frame {at}", stacklevel=3)
            return at, state
        if errors:
            raise CheckpointError(f"{run} holds no readable snapshot: {'; '.join(errors)}")
        raise FileNotFoundError(f"{run} holds no readable snapshot (checkpoint-<frame>/) of a train-rl run")
    frames = [f for f, _ in snaps.list()]
    if frame not in frames:
        raise FileNotFoundError(f"{run} has no snapshot at frame {frame}; it has {frames or 'none'}")
    return frame, Snapshots.read(snaps.path(frame))


def _run_settings(path: str, rl_config: type, agent_config: type) -> tuple[Any, Any]:
    """The run and agent settings of a train-rl ``train_config.json``; errors name the file and what is
    wrong with it (another command's run folder, damaged JSON, settings of another version)."""
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged: not valid JSON ({e})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict) or not isinstance(saved.get("agent"), dict):
        if isinstance(saved, dict) and isinstance(saved.get("config_class"), str):  # the Trainer's runs say which
            what = f"those of a {saved['config_class']} run (train-codec, train-video, …)"
        elif isinstance(saved, dict) and isinstance(saved.get("config"), dict):
            what = "those of another command's run"
        else:
            what = f"no 'config' and 'agent' objects; it has {sorted(saved) if isinstance(saved, dict) else type(saved).__name__}"
        raise ValueError(f"{path} does not hold a train-rl run's settings ({what}): --run takes a train-rl output folder")
    if "num_train_frames" not in saved["config"] and {"steps", "eval_every"} <= set(saved["config"]):
        # was "its 'config' settings do not fit RLConfig (... unexpected keyword argument 'steps')"
        run = os.path.dirname(path) or "."
        raise ValueError(f"{run} is a train-expert run (a state-based SAC policy), not a train-rl run: evaluate it "
                         f"with `mmreward robotics eval-expert --model {run}`")
    settings = []
    for key, cls in (("config", rl_config), ("agent", agent_config)):
        try:
            settings.append(cls(**saved[key]))
        except TypeError as e:
            raise ValueError(f"{path}: its {key!r} settings do not fit {cls.__name__} ({e})") from None
    return settings[0], settings[1]


def evaluate_run(run: str, *, episodes: int = 20, seed: int = 0, frame: Optional[int] = None,
                 device: str = "cpu") -> dict[str, Any]:
    """Evaluate the agent of the ``train-rl`` run folder ``run`` (snapshot at ``frame``, default the
    newest) on ``episodes`` scenes with reset seeds ``HELDOUT_SEED_BASE + 1000·seed + i``."""
    import torch

    from ..envs import make_env
    from ..envs.adroit import progress_measures
    from .drqv2 import DrQV2Agent, DrQV2Config
    from .replay import stack_frames
    from .rewards import env_reward_for
    from .workspace import RLConfig, parse_task

    for name, value, least in (("episodes", episodes, 1), ("seed", seed, 0)) + ((("frame", frame, 0),) if frame is not None else ()):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):  # 2.5 failed in range()
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    if not isinstance(run, (str, os.PathLike)):
        raise TypeError(f"run must be a train-rl run folder (a path), got {type(run).__name__}")
    run = os.fspath(run)  # the summary's "run" as a string (a pathlib.Path did not serialise)
    from mmreward.core.device import resolve_device

    device = resolve_device(device)  # an unknown / absent device named before the environment is built
    path = os.path.join(run, "train_config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run} is not a train-rl run folder (no train_config.json)")
    cfg, agent_cfg = _run_settings(path, RLConfig, DrQV2Config)
    at_frame, state = _snapshot(run, frame)
    task = parse_task(cfg.task)
    env = make_env(task, seed=cfg.seed, size=cfg.size, camera=cfg.camera, action_repeat=cfg.action_repeat,
                   max_steps=cfg.episode_steps, reward=env_reward_for(cfg.reward))  # the return it trained on
    try:
        agent = DrQV2Agent((3 * cfg.frame_stack, cfg.size, cfg.size), env.action_dim, agent_cfg).to(device)
        agent.load_state_dict(state["agent"])
        low, high = (np.asarray(b, np.float32) for b in (env.action_space.low, env.action_space.high))
        seeds = [(HELDOUT_SEED_BASE + 1000 * seed + i) % (2 ** 31 - 1) for i in range(episodes)]
        rows, t0 = [], time.time()
        for s in seeds:
            _, frame0 = env.reset(seed=s)
            frames, ret, success = [frame0], 0.0, False
            start, after = progress_measures(env, task), []
            while True:
                obs = stack_frames(frames, len(frames) - 1, cfg.frame_stack)
                with torch.no_grad():
                    a = agent.act(obs, 0, eval_mode=True).numpy().astype(np.float32)
                st = env.step(low + (a + 1.0) * 0.5 * (high - low))
                frames.append(st.frame)
                ret, success = ret + float(st.reward), success or bool(st.success)
                after.append(progress_measures(env, task))
                if st.done:
                    break
            row = {"seed": s, "success": success, "episode_return": ret, **progress_row(start, after)}
            rows.append(row)
    finally:
        env.close()
    k = sum(r["success"] for r in rows)
    out = {"run": run, "task": task, "reward": cfg.reward, "train_seed": cfg.seed, "frame": at_frame,
           "episodes": episodes, "successes": int(k), "success_rate": k / episodes,
           "success_rate_ci95": list(wilson_interval(int(k), episodes)),
           "episode_return": _mean_ci([r["episode_return"] for r in rows]),
           "seeds": [seeds[0], seeds[-1]], "seconds": time.time() - t0, "per_episode": rows}
    for key in ("start_approach_distance", "min_approach_distance", "mean_approach_distance", "max_door_angle"):
        if key in rows[0]:
            out[key] = _mean_ci([r[key] for r in rows])
    return out
