"""``mmreward robotics …``: collect episodes, import videos, list tasks, summarise a folder, and
train / apply Diffusion Reward models.

    mmreward robotics collect --tasks door-open-v3,drawer-open-v3 --episodes 10 --policy noisy \\
        --noise 0.3 --size 64 --action-repeat 2 --out data/mw --seed 0
    mmreward robotics import-videos --task adroit-door --out data/adroit demos/adroit-door/
    mmreward robotics tasks
    mmreward robotics info data/mw

    mmreward robotics train-codec --data data/mw --out runs/codec --steps 2000 --size small
    mmreward robotics train-video --data data/mw --codec runs/codec --out runs/video --steps 5000
        # ... also fits the expert statistics and writes the combined model to runs/video/reward
    mmreward robotics fit-stats --data data/mw --codec runs/codec --video runs/video --out runs/reward
    mmreward robotics reward --model runs/video/reward data/eval/*.npz --json --plot rewards.png
    mmreward robotics reward clip.mp4           # the shipped Meta-World checkpoint

    mmreward robotics train-rl --task metaworld/drawer-open-v3 --reward diffusion --out runs/rl

``collect``'s options are generated from :class:`mmreward.robotics.collect.CollectConfig` and the
trainers' options from :class:`~mmreward.robotics.codec.vqgan.VQGANTrainConfig`,
:class:`~mmreward.robotics.video.vq_diffusion.VideoTrainConfig` and
:class:`~mmreward.robotics.reward.diffusion_reward.DiffusionRewardConfig`; every command calls the
same functions a Python user calls (:func:`train_vqgan`, :func:`train_video_model`,
:meth:`DiffusionReward.fit_statistics`, :meth:`DiffusionReward.__call__`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from collections import Counter
from dataclasses import MISSING, fields
from typing import Optional, Sequence

from mmreward.core.cli_config import CLIParser, add_config_options, config_from_args


def _collect(args: argparse.Namespace) -> int:
    from mmreward.robotics.collect import CollectConfig, collect

    config = config_from_args(CollectConfig, args)
    summary = collect(config)
    print("\n".join(summary.lines()))
    return 0


def _import_videos(args: argparse.Namespace) -> int:
    from mmreward.robotics.collect import import_videos

    summary = import_videos(args.sources, args.out, task=args.task, size=args.size, stride=args.stride,
                            policy=args.policy, progress=args.progress)
    print("\n".join(summary.lines()))
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from mmreward.robotics.envs import list_tasks

    for suite, names in list_tasks().items():
        print(f"{suite} ({len(names)}): {' '.join(names) if names else '(package not installed)'}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from mmreward.robotics.data.episodes import read_manifest

    entries = read_manifest(args.folder)
    groups = Counter((e["task"], e.get("policy"), e.get("noise")) for e in entries)
    wins = Counter((e["task"], e.get("policy"), e.get("noise")) for e in entries if e.get("success"))
    frames = sum(int(e["frames"]) for e in entries)
    print(f"{args.folder}: {len(entries)} episodes, {frames} frames")
    for key in sorted(groups, key=str):
        task, policy, noise = key
        tag = f"{policy} σ={noise:g}" if policy == "noisy" else str(policy)
        print(f"  {task:<28} {tag:<14} {groups[key]:>4} episodes, {wins[key]} successful")
    return 0


# ---------------------------------------------------------------------------------------------
# Diffusion Reward: train-codec, train-video, fit-stats, reward
# ---------------------------------------------------------------------------------------------
PRESETS = ("small", "paper")
# DiffusionRewardConfig fields whose names clash with the trainers' options
_REWARD_RENAME = {"batch_size": "reward_batch_size", "seed": "reward_seed"}


def _split_list(text: str) -> list[str]:
    return [x for x in text.replace(" ", ",").split(",") if x]


def _tuple_of(text: str) -> tuple:
    out = []
    for x in _split_list(text):
        out.append(int(x) if x.lstrip("-").isdigit() else float(x))
    return tuple(out)


def _add_dataclass_options(parser, config_cls, dest_prefix: str, rename: Optional[dict] = None,
                           skip: Sequence[str] = ()) -> None:
    """One ``--flag`` per field of ``config_cls`` (default: the field's default), stored as
    ``dest_prefix + name``; ``rename`` maps field names to other flag names."""
    hints = typing.get_type_hints(config_cls)
    for f in fields(config_cls):
        if f.name in skip:
            continue
        flag = "--" + (rename or {}).get(f.name, f.name).replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()
        t = hints[f.name]
        t = next((a for a in typing.get_args(t) if a is not type(None)), t)
        dest = dest_prefix + f.name
        if t is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=default)
        elif t is tuple:
            parser.add_argument(flag, dest=dest, type=_tuple_of, default=default,
                                help=f"comma-separated (default: {','.join(map(str, default))})")
        else:
            parser.add_argument(flag, dest=dest, type=t, default=default, help=f"(default: {default})")


def _dataclass_from(args: argparse.Namespace, config_cls, dest_prefix: str, skip: Sequence[str] = (), **extra):
    kw = {f.name: getattr(args, dest_prefix + f.name) for f in fields(config_cls) if f.name not in skip}
    kw.update(extra)
    return config_cls(**kw)


def _overrides(pairs: Sequence[str], config_cls) -> dict:
    """``["channels=32,32,64,64", "num_codes=256"]`` → typed keyword overrides of ``config_cls``."""
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in fields(config_cls)}
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--set takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in names:
            raise ValueError(f"{config_cls.__name__} has no field {key!r} (fields: {', '.join(sorted(names))})")
        t = hints[key]
        t = next((a for a in typing.get_args(t) if a is not type(None)), t)
        if t is tuple:
            out[key] = _tuple_of(value)
        elif t is bool:
            out[key] = value.strip().lower() in ("1", "true", "yes", "on")
        else:
            out[key] = t(value)
    return out


def _setup_torch(args: argparse.Namespace) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))


def load_episode_folder(folder: str, tasks: Optional[Sequence[str]] = None,
                        policies: Optional[Sequence[str]] = None) -> list:
    """``[(manifest entry, Episode)]`` of an episode folder, keeping the listed tasks / policy
    kinds (``None`` or ``["all"]``: every episode)."""
    from .data.episodes import load_episode, read_manifest

    entries = read_manifest(folder)
    if tasks:
        entries = [e for e in entries if e["task"] in set(tasks)]
    if policies and "all" not in policies:
        entries = [e for e in entries if e.get("policy") in set(policies)]
    if not entries:
        have = sorted({(e["task"], e.get("policy")) for e in read_manifest(folder)})
        raise ValueError(f"no episodes in {folder} match tasks={list(tasks) if tasks else 'all'} "
                         f"policies={list(policies) if policies else 'all'} (the folder has {have}; "
                         "--policies all uses every episode)")
    return [(e, load_episode(os.path.join(folder, e["file"]))) for e in entries]


def model_dir(path: str, model_type: Optional[str] = None) -> str:
    """A saved model folder: ``path`` itself, a trainer's ``path/model`` or ``path/reward``; with
    ``model_type``, the first of those holding that kind of model."""
    seen = []
    for cand in (path, os.path.join(path, "model"), os.path.join(path, "reward")):
        cfg_path = os.path.join(cand, "config.json")
        if not os.path.isfile(cfg_path):
            continue
        try:
            with open(cfg_path, encoding="utf-8") as f:
                kind = json.load(f).get("model_type")
        except (OSError, ValueError):
            kind = None
        if model_type is None or kind == model_type:
            return cand
        seen.append(f"{cand} ({kind})")
    found = f"; found {', '.join(seen)}" if seen else ""
    want = f"a {model_type!r} model" if model_type else "a saved model (config.json)"
    raise ValueError(f"{path} holds no {want}, nor do {path}/model or {path}/reward{found}")


def _resume_flag(args: argparse.Namespace) -> bool:
    """True to continue a training state in ``args.out``; errors when one exists and neither
    --resume nor --overwrite was given (a fresh run would silently replace it)."""
    from .training import STATE_NAME

    exists = os.path.exists(os.path.join(args.out, STATE_NAME + ".json"))
    if exists and not (args.resume or args.overwrite):
        raise ValueError(f"{args.out} holds a training state: pass --resume to continue it or --overwrite "
                         "to start again")
    return bool(args.resume)


def _frames_of(eps: list) -> list:
    return [ep.frames for _, ep in eps]


def _train_codec(args: argparse.Namespace) -> int:
    _setup_torch(args)
    from .codec.vqgan import VQGANConfig, VQGANTrainConfig, evaluate_vqgan, train_vqgan

    eps = _load_training_episodes(args)
    frames = _frames_of(eps)
    preset = VQGANConfig.paper if args.size == "paper" else VQGANConfig
    cfg = preset(**{"image_size": int(frames[0].shape[1]), **_overrides(args.set, VQGANConfig)})
    tc = _dataclass_from(args, VQGANTrainConfig, "tc_")
    resume = _resume_flag(args)
    n_frames = sum(int(f.shape[0]) for f in frames)
    print(f"train-codec: {len(frames)} episodes, {n_frames} frames, {args.size} VQGAN "
          f"({cfg.num_codes} codes, {cfg.latent_size}x{cfg.latent_size} tokens) -> {args.out}")
    model = train_vqgan(frames, cfg, args.out, tc, resume=resume, stop_at=args.stop_at, progress_bar=args.progress,
                        device=args.device)
    import numpy as np

    pool = np.concatenate(frames)
    pick = np.random.default_rng(0).permutation(pool.shape[0])[:args.eval_frames]
    m = evaluate_vqgan(model, pool[np.sort(pick)])
    print(f"saved {os.path.join(args.out, 'model')}: PSNR {m['psnr']:.2f} dB, L1 {m['l1']:.4f}, "
          f"perplexity {m['perplexity']:.1f}, code usage {m['code_usage']:.2f} (on {len(pick)} training frames)")
    return 0


def _load_training_episodes(args: argparse.Namespace) -> list:
    """``--data``: one episode folder, or several separated by commas (their episodes in that order)."""
    folders = [f for f in args.data.split(",") if f]
    if not folders:
        raise ValueError("--data names no episode folder")
    return [item for f in folders for item in load_episode_folder(f, args.tasks, args.policies)]


def _reward_parts(args: argparse.Namespace):
    from .reward.diffusion_reward import DiffusionRewardConfig
    from .reward.rnd import RND, RNDConfig

    rcfg = _dataclass_from(args, DiffusionRewardConfig, "rc_")
    rnd = None
    if args.rnd != "none":
        rnd = RND(RNDConfig.paper() if args.rnd == "paper" else RNDConfig())
    return rcfg, rnd


def build_reward_model(codec, video, frames: Sequence, config=None, rnd=None, out: Optional[str] = None):
    """:class:`DiffusionReward` from a codec + video model with expert statistics fitted on
    ``frames`` (expert episodes), saved to ``out`` when given; returns ``(model, statistics)``."""
    from .reward.diffusion_reward import DiffusionReward

    reward = DiffusionReward(codec, video, config, rnd)
    stats = reward.fit_statistics(list(frames))
    if out:
        reward.save_pretrained(out)
    return reward, stats


def _train_video(args: argparse.Namespace) -> int:
    _setup_torch(args)
    from .codec.vqgan import VQGAN
    from .video.vq_diffusion import VideoTrainConfig, VQDiffusionConfig, train_video_model

    codec = VQGAN.from_pretrained(model_dir(args.codec, "vqgan"), args.device)
    eps = _load_training_episodes(args)
    frames = _frames_of(eps)
    s = codec.config.latent_size
    preset = VQDiffusionConfig.paper if args.size == "paper" else VQDiffusionConfig
    cfg = preset(**{"num_codes": codec.config.num_codes, "token_shape": (s, s), **_overrides(args.set, VQDiffusionConfig)})
    tc = _dataclass_from(args, VideoTrainConfig, "tc_")
    resume = _resume_flag(args)
    rcfg, rnd = _reward_parts(args)  # checked before training
    print(f"train-video: {len(frames)} episodes, {args.size} VQ-Diffusion ({cfg.depth} blocks of width {cfg.dim}, "
          f"{cfg.num_history} history frames) -> {args.out}")
    video = train_video_model(frames, cfg, args.out, tc, codec=codec, resume=resume, stop_at=args.stop_at,
                              progress_bar=args.progress, device=args.device)
    print(f"saved {os.path.join(args.out, 'model')}")
    if not args.fit_stats:
        return 0
    if args.stop_at is not None and int(args.stop_at) < tc.steps:
        print(f"stopped at step {args.stop_at} of {tc.steps}: expert statistics not fitted (run again to continue)")
        return 0
    out = args.reward_out or os.path.join(args.out, "reward")
    _, stats = build_reward_model(codec, video, frames, rcfg, rnd, out)
    print(f"expert statistics over {stats['frames']} frames: mean {stats['mean']:.4f}, std {stats['std']:.4f}")
    print(f"saved Diffusion Reward model {out} (use: mmreward robotics reward --model {out} EPISODES...)")
    return 0


def _fit_stats(args: argparse.Namespace) -> int:
    _setup_torch(args)
    from .codec.vqgan import VQGAN
    from .video.vq_diffusion import ConditionalVQDiffusion

    codec = VQGAN.from_pretrained(model_dir(args.codec, "vqgan"), args.device)
    video = ConditionalVQDiffusion.from_pretrained(model_dir(args.video, "vq_diffusion"), args.device)
    rcfg, rnd = _reward_parts(args)
    frames = _frames_of(_load_training_episodes(args))
    _, stats = build_reward_model(codec, video, frames, rcfg, rnd, args.out)
    print(f"expert statistics over {stats['frames']} frames: mean {stats['mean']:.4f}, std {stats['std']:.4f}")
    print(f"saved Diffusion Reward model {args.out}")
    return 0


def _train_progress(args: argparse.Namespace) -> int:
    _setup_torch(args)
    import torch

    from .reward.progress import ProgressConfig, train_progress

    frames = _frames_of(_load_training_episodes(args))
    cfg = ProgressConfig(**{"image_size": int(frames[0].shape[1]), **_overrides(args.set, ProgressConfig)})
    reward = None
    if args.attach:  # loaded (and checked) before training
        from .pretrained import load_pretrained
        from .reward.diffusion_reward import DiffusionReward

        reward = load_pretrained() if args.attach == "default" else DiffusionReward.from_pretrained(args.attach)
    print(f"train-progress: {len(frames)} expert episodes, ranker of frame order ({args.steps} steps) -> {args.out}")
    torch.manual_seed(args.seed)
    model, m = train_progress(frames, cfg, args.out, steps=args.steps, seed=args.seed, show_progress=args.progress)
    val = (f", held-out pair accuracy {m['val_pair_acc']:.3f}, score-vs-time ρ {m['val_time_spearman']:.3f} "
           f"({m['val_episodes']} episodes)" if "val_pair_acc" in m else "")
    print(f"saved {args.out}: train pair accuracy {m['train_pair_acc']:.3f}{val}; {m['seconds']:.0f} s")
    if reward is not None:
        reward.to(model.device).set_progress(model)
        reward.config.progress_scale = float(args.progress_scale)
        reward.config.validate()
        out = args.attach_out or os.path.join(args.out, "reward")
        reward.save_pretrained(out)
        print(f"saved Diffusion Reward + progress (β = {args.progress_scale:g}) {out} "
              f"(use: mmreward robotics reward --model {out} ...)")
    return 0


def reward_inputs(sources: Sequence[str], size: int, tasks=None, policies=None) -> list[dict]:
    """Episodes to score: episode ``.npz`` files, episode folders (``manifest.json``), videos and
    frame folders (resized to ``size``). Each item: ``name``, ``path``, ``frames`` (uint8
    ``[T, H, W, 3]``), ``success`` (per frame, or None), ``meta``."""
    import numpy as np

    from .data.episodes import load_episode, manifest_path
    from .data.video import expand_sources, load_frames

    items = []
    for src in sources:
        if os.path.isdir(src) and os.path.isfile(manifest_path(src)):
            for entry, ep in load_episode_folder(src, tasks, policies):
                items.append(_episode_item(os.path.join(src, entry["file"]), ep, entry))
        elif src.lower().endswith(".npz"):
            items.append(_episode_item(src, load_episode(src), {}))
        else:
            for path in expand_sources([src]):
                frames = load_frames(path, size=(size, size))
                items.append({"name": os.path.basename(os.path.normpath(path)), "path": path,
                              "frames": np.ascontiguousarray(frames), "success": None, "meta": {}})
    if not items:
        raise ValueError("no episodes, videos or frame folders given")
    return items


def _episode_item(path: str, ep, entry: dict) -> dict:
    import numpy as np

    success = np.concatenate([[False], ep.success]) if ep.labelled else None
    meta = {k: entry[k] for k in ("task", "policy", "noise", "seed") if k in entry}
    if ep.labelled:
        meta["success"] = bool(ep.success.any())
    return {"name": os.path.splitext(os.path.basename(path))[0], "path": path, "frames": ep.frames,
            "success": success, "meta": meta}


def _write_per_step(path: str, results: list[dict]) -> None:
    from mmreward.core.checkpoint import atomic_write, atomic_write_text

    if path.endswith(".json"):
        atomic_write_text(path, json.dumps({r["name"]: r["rewards"] for r in results}, indent=1) + "\n")
    elif path.endswith(".npz"):
        import numpy as np

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **{f"{i:04d}_{r['name']}": np.asarray(r["rewards"], np.float32)
                               for i, r in enumerate(results)})

        atomic_write(path, write)
    else:
        lines = ["episode,frame,reward"]
        for r in results:
            lines += [f"{r['name']},{i},{v:.6g}" for i, v in enumerate(r["rewards"])]
        atomic_write_text(path, "\n".join(lines) + "\n")


def _reward(args: argparse.Namespace) -> int:
    _setup_torch(args)
    import torch

    from .reward.diffusion_reward import DiffusionReward

    if args.model:
        folder = model_dir(args.model, "diffusion_reward")
    else:
        from .pretrained import pretrained_path

        folder = pretrained_path()
    model = DiffusionReward.from_pretrained(folder, args.device)
    if args.batch_size:
        model.config.batch_size = int(args.batch_size)
    if args.seed is not None:
        model.config.seed = int(args.seed)
    if args.no_ranker:
        model.set_progress(None)
    items = reward_inputs(args.inputs, model.codec.config.image_size, args.tasks, args.policies)
    from tqdm.auto import tqdm

    results = []
    for item in tqdm(items, desc="reward", unit="ep", disable=not args.progress or len(items) < 2):
        frames = torch.from_numpy(item["frames"])
        success = torch.from_numpy(item["success"]) if (args.success and item["success"] is not None) else None
        r = model(frames, success=success).cpu()
        results.append({"name": item["name"], "path": item["path"], "frames": int(r.numel()),
                        "total": float(r.sum()), "mean": float(r.mean()), "rewards": [float(v) for v in r],
                        **item["meta"]})
    if args.out:
        _write_per_step(args.out, results)
    if args.plot:
        from mmreward.core.logging import plot_curves

        curves = {r["name"]: (list(range(r["frames"])), r["rewards"]) for r in results}
        plot_curves(args.plot, curves, title=f"Diffusion Reward ({os.path.basename(os.path.normpath(folder))})",
                    xlabel="frame", ylabel="reward")
    if args.json:
        print(json.dumps({"model": folder, "progress_ranker": model.progress is not None, "episodes": results}))
        return 0
    width = max(8, min(48, max(len(r["name"]) for r in results)))
    print(f"{'episode':<{width}} {'frames':>6} {'total':>10} {'mean':>9}")
    for r in results:
        print(f"{r['name'][:width]:<{width}} {r['frames']:>6} {r['total']:>10.3f} {r['mean']:>9.4f}")
    if args.out:
        print(f"per-step rewards -> {args.out}")
    if args.plot:
        print(f"plot -> {args.plot}")
    return 0


def _add_common(p: argparse.ArgumentParser, data: bool = True, policies_default: str = "expert,demo") -> None:
    if data:
        p.add_argument("--data", required=True,
                       help="episode folder (manifest.json + episode files); several: comma-separated")
    p.add_argument("--tasks", type=_split_list, default=None, help="keep only these tasks (default: all)")
    p.add_argument("--policies", type=_split_list, default=_split_list(policies_default),
                   help=f"keep only these policy kinds; 'all' keeps every episode (default: {policies_default})")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")


def _add_train_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder: metrics.csv, train_state.*, model/")
    p.add_argument("--size", choices=PRESETS, default="small",
                   help="model preset: small (CPU) or paper (official sizes) (default: small)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model-config field, e.g. --set num_codes=256 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the training state in --out")
    p.add_argument("--overwrite", action="store_true", help="start again even if --out holds a training state")
    p.add_argument("--stop-at", type=int, default=None, help="end this call after this many total steps")


def _add_reward_options(p: argparse.ArgumentParser) -> None:
    from .reward.diffusion_reward import DiffusionRewardConfig

    g = p.add_argument_group("reward model (DiffusionRewardConfig)")
    _add_dataclass_options(g, DiffusionRewardConfig, "rc_", rename=_REWARD_RENAME)
    g.add_argument("--rnd", choices=("none", "small", "paper"), default="none",
                   help="add an RND exploration bonus (untrained predictor; default: none)")


def _add_model_commands(sub) -> None:
    from .codec.vqgan import VQGANTrainConfig
    from .video.vq_diffusion import VideoTrainConfig

    p = sub.add_parser("train-codec", help="train the VQGAN frame codec on expert episodes",
                       description="Train a VQGAN (64x64 frames -> 8x8 tokens) on the frames of an episode folder.")
    _add_common(p)
    _add_train_common(p)
    p.add_argument("--eval-frames", type=int, default=1024, help="frames for the final PSNR / usage report")
    _add_dataclass_options(p.add_argument_group("training (VQGANTrainConfig)"), VQGANTrainConfig, "tc_")
    p.set_defaults(run=_train_codec)

    p = sub.add_parser("train-video", help="train the conditional VQ-Diffusion video model (+ fit statistics)",
                       description="Train the video model on expert episodes tokenised by --codec, then fit the "
                                   "expert reward statistics and save the combined DiffusionReward model "
                                   "(--reward-out, default OUT/reward).")
    _add_common(p)
    p.add_argument("--codec", required=True, help="VQGAN folder (train-codec's --out, or its model/)")
    _add_train_common(p)
    p.add_argument("--fit-stats", action=argparse.BooleanOptionalAction, default=True,
                   help="fit expert statistics and save the combined reward model after training")
    p.add_argument("--reward-out", default=None, help="combined reward model folder (default: OUT/reward)")
    _add_dataclass_options(p.add_argument_group("training (VideoTrainConfig)"), VideoTrainConfig, "tc_")
    _add_reward_options(p)
    p.set_defaults(run=_train_video)

    p = sub.add_parser("fit-stats", help="fit expert statistics and save a combined DiffusionReward model",
                       description="Combine a codec and a video model into a DiffusionReward model whose raw "
                                   "reward is z-scored with statistics measured on expert episodes.")
    _add_common(p)
    p.add_argument("--codec", required=True, help="VQGAN folder")
    p.add_argument("--video", required=True, help="VQ-Diffusion folder (train-video's --out, or its model/)")
    p.add_argument("--out", required=True, help="output folder of the combined model")
    _add_reward_options(p)
    p.set_defaults(run=_fit_stats)

    p = sub.add_parser("train-progress", help="train a progress ranker on expert frame order (+ attach it)",
                       description="Train a ranker that scores later frames of expert episodes above earlier ones "
                                   "(robotics/reward/progress.py) and, with --attach, save a Diffusion Reward model "
                                   "whose learned term adds β times the ranker's z-score.")
    _add_common(p)
    p.add_argument("--out", required=True, help="ranker folder (config.json + model.safetensors + metrics.json)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of pair sampling and initialisation (default: 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a ProgressConfig field, e.g. --set min_gap=5 (repeatable)")
    p.add_argument("--attach", default=None, metavar="REWARD_DIR",
                   help="DiffusionReward folder ('default': the shipped model) to save with the ranker attached")
    p.add_argument("--attach-out", default=None, help="where to save it (default: OUT/reward)")
    p.add_argument("--progress-scale", type=float, default=1.0, help="β of the ranker's z-score (default: 1)")
    p.set_defaults(run=_train_progress)

    p = sub.add_parser("reward", help="per-frame Diffusion Rewards of episodes or videos",
                       description="Score episode files (.npz), episode folders, videos or frame folders with a "
                                   "DiffusionReward model; prints total and mean reward per episode.")
    p.add_argument("inputs", nargs="+", help="episode .npz files, episode folders, videos, frame folders")
    p.add_argument("--model", default=None, help="DiffusionReward folder (default: the shipped Meta-World model)")
    p.add_argument("--json", action="store_true", help="print one JSON document (with per-step rewards)")
    p.add_argument("--plot", default=None, metavar="PNG", help="save per-step reward curves")
    p.add_argument("--out", default=None, metavar="FILE", help="write per-step rewards (.csv, .json or .npz)")
    p.add_argument("--success", action="store_true", help="add the episodes' success flags (sparse reward)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per video-model batch")
    p.add_argument("--seed", type=int, default=None, help="chain-noise seed (default: the model's)")
    p.add_argument("--no-ranker", action="store_true",
                   help="ignore the model's progress ranker, if any (the paper's rule: likelihood term only)")
    _add_common(p, data=False, policies_default="all")
    p.set_defaults(run=_reward)


def build_parser() -> argparse.ArgumentParser:
    from mmreward.robotics.collect import CollectConfig
    from mmreward.robotics.envs.base import FLIPS

    parser = CLIParser(prog="mmreward robotics", description="robot-learning data (collect, import, inspect), Diffusion Reward models (train, score) "
                                     "and visual RL with learned rewards (train-rl)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="collect expert / noisy / random episodes (Meta-World, Adroit)",
                       description="Collect rendered episodes into an episode folder (npz files + manifest.json).")
    add_config_options(p, CollectConfig, choices={"policy": ("expert", "noisy", "random"), "flip": FLIPS})
    p.set_defaults(run=_collect)

    p = sub.add_parser("import-videos", help="store videos / frame folders as episodes (e.g. Adroit demos)")
    p.add_argument("sources", nargs="+", help="videos, frame folders, or folders of those (one episode each)")
    p.add_argument("--task", required=True, help="task id / label for these episodes, e.g. adroit-door")
    p.add_argument("--out", required=True, help="output episode folder")
    p.add_argument("--size", type=int, default=64, help="frame height and width (default: 64)")
    p.add_argument("--stride", type=int, default=1, help="keep every n-th frame (default: 1)")
    p.add_argument("--policy", default="demo", help="policy label stored in the manifest (default: demo)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.set_defaults(run=_import_videos)

    p = sub.add_parser("tasks", help="list the task ids of each suite")
    p.set_defaults(run=_tasks)

    p = sub.add_parser("info", help="summarise an episode folder's manifest")
    p.add_argument("folder")
    p.set_defaults(run=_info)

    _add_model_commands(sub)

    from mmreward.robotics.rl.drqv2 import DrQV2Config
    from mmreward.robotics.rl.workspace import RLConfig

    p = sub.add_parser("train-rl", help="train a DrQ-v2 agent from pixels with a learned or sparse reward",
                       description="DrQ-v2 in Meta-World / Adroit with the chosen reward source; logs (CSV + "
                                   "TensorBoard), evaluation videos, learning curves and snapshots go to --out. "
                                   "A run whose --out holds a snapshot continues from it (--no-resume: start again).")
    add_config_options(p.add_argument_group("run (RLConfig)"), RLConfig)
    add_config_options(p.add_argument_group("agent (DrQV2Config)"), DrQV2Config)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(run=_train_rl)
    return parser


def _train_rl(args: argparse.Namespace) -> int:
    from mmreward.robotics.rl.drqv2 import DrQV2Config
    from mmreward.robotics.rl.workspace import RLConfig, train_rl

    _setup_torch(args)
    config, agent = config_from_args(RLConfig, args), config_from_args(DrQV2Config, args)
    summary = train_rl(config, agent)
    print(json.dumps({k: summary[k] for k in ("frames", "episodes", "success_rate", "episode_return", "fps")}))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.run(args) or 0)
    except (ValueError, RuntimeError, ImportError, FileNotFoundError) as e:
        print(f"mmreward robotics {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
