"""``mmreward robotics <verb>``: collect episodes, import videos, list tasks, summarise a folder,
train and apply Diffusion Reward models, train DrQ-v2 agents with them, and train state-based Adroit
experts (SAC) for collection.

    mmreward robotics collect --tasks door-open-v3,drawer-open-v3 --episodes 10 --policy noisy \\
        --noise 0.3 --size 64 --action-repeat 2 --out data/mw --seed 0
    mmreward robotics import-videos demos/adroit-door/ --task adroit-door --out data/adroit
    mmreward robotics tasks
    mmreward robotics info data/mw

    mmreward robotics train-codec --data data/mw --out runs/codec --steps 2000 --preset small
    mmreward robotics train-video --data data/mw --codec runs/codec --out runs/video --steps 5000
        # ... also fits the expert statistics and writes the combined model to runs/video/reward
    mmreward robotics fit-stats --data data/mw --codec runs/codec --video runs/video --out runs/reward
    mmreward robotics train-progress --data data/mw --out runs/progress --attach runs/video/reward
    mmreward robotics score --model runs/video/reward data/eval/*.npz --json --plot rewards.png
    mmreward robotics score clip.mp4            # the shipped Meta-World checkpoint

    mmreward robotics train-rl --task metaworld/drawer-open-v3 --reward diffusion --out runs/rl
    mmreward robotics train-expert --task adroit-door --out runs/expert-door --steps 1000000
    mmreward robotics collect --tasks adroit-door --policy expert --expert-model runs/expert-door/model

Every command has the same flags for the same settings: ``--model`` (a reward-model folder or a
shipped name), ``--data`` (episode folders, comma-separated), ``--out``, ``--seed`` (python, numpy and
torch are seeded with it before any model is built, so equal seeds give bit-identical results),
``--device`` (checked against this machine before anything loads), ``--batch-size``, ``--threads``,
``--progress / --no-progress``. Options of the dataclass configs are generated from them
(:func:`mmreward.core.cli_config.add_config_options`), one flag per field: :class:`CollectConfig`,
:class:`ImportConfig`, :class:`VQGANTrainConfig`, :class:`VideoTrainConfig`,
:class:`DiffusionRewardConfig`, :class:`RLConfig`, :class:`DrQV2Config`, :class:`ExpertConfig`,
:class:`SACConfig`. Errors are one line on
stderr naming the file / field / device, exit status 2 (:func:`mmreward.core.cli_config.run_cli`).
"""
from __future__ import annotations

import argparse
import os
import sys
import typing
from collections import Counter
from dataclasses import asdict, fields
from typing import Any, Optional, Sequence

from mmreward.core.cli_config import (CLIParser, add_config_options, check_output_file, check_output_folder,
                                      config_from_args, flag_named, json_text, removing_new_folders_on_error, run_cli)

PRESETS = ("small", "paper")


def _split_list(text: str) -> list[str]:
    return [x for x in text.replace(" ", ",").split(",") if x]


def _split_tasks(text: str) -> list[str]:
    """``--tasks``: comma-separated task labels, each kept whole: ``import-videos --task "my task"`` keeps a
    free-form label with spaces, which a split at spaces made impossible to select."""
    return [x.strip() for x in text.split(",") if x.strip()]


def _prepare(args: argparse.Namespace) -> Any:
    """Check ``--device``, set ``--threads`` and seed every RNG with ``--seed``, before any model is
    built; returns the device (None for commands without one)."""
    import torch

    from mmreward.core.device import resolve_device
    from mmreward.core.train import seed_everything

    device = resolve_device(args.device) if getattr(args, "device", None) is not None else None
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(int(args.threads))
    if getattr(args, "seed", None) is not None:
        if not 0 <= args.seed < 2 ** 32:  # numpy's and the environments' seed range, as every other seed here
            raise ValueError(f"--seed must be in [0, 2**32 - 1], got {args.seed}")
        seed_everything(int(args.seed))
    return device


def _check_output_files(**paths: Optional[str]) -> None:
    """Refuse output files (``flag_name=path``) that name a folder before any work: otherwise the
    results are computed and then lost to IsADirectoryError when written."""
    for name, path in paths.items():
        if path and os.path.isdir(path):
            raise ValueError(f"--{name.replace('_', '-')} {path!r} is a folder: name a file to write")


def _check_model_out(flag: str, out: str, inputs: Sequence[tuple[str, Optional[str]]]) -> None:
    """Refuse to save a model to ``out`` when it is, or holds, a folder the work reads (``(flag, path)``
    pairs): saving swaps the new folder in place of ``out``, so a training run's snapshots and logs, a
    model being read or the episodes themselves would be deleted. Checked before any training."""
    target = os.path.realpath(out)
    for in_flag, path in inputs:
        if not path:
            continue
        source = os.path.realpath(path)
        if source == target or source.startswith(target.rstrip(os.sep) + os.sep):
            raise ValueError(f"{flag} {out!r} is or holds the {in_flag} folder {path!r}: saving the model there "
                             "would replace it; name another folder")


def _check_replaceable(flag: str, out: str) -> None:
    """A model is saved to ``out`` only if it is new, empty or a folder mmreward saved: a folder of the
    user's own files (videos, a project) was refused only when saving, after the statistics were fitted
    (train-video: after the whole training run), so the work was lost. Checked before any work."""
    from mmreward.core.folders import CheckpointError, check_replaceable

    try:
        check_replaceable(out)
    except (ValueError, CheckpointError) as e:
        raise ValueError(f"{flag} {out!r}: {e}") from None


def _data_list(args: argparse.Namespace) -> list[str]:
    """The ``--data`` folders; one named twice (``d,d/``, or through a link) would count its episodes twice."""
    folders = [f for f in args.data.split(",") if f]
    if not folders:
        raise ValueError("--data names no episode folder")
    seen: dict[str, str] = {}
    for f in folders:
        real = os.path.realpath(f)
        if real in seen:
            raise ValueError(f"--data names the folder {real} twice ({seen[real]!r} and {f!r}): its episodes would "
                             "count twice")
        seen[real] = f
    return folders


def _data_folders(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [("--data", f) for f in _data_list(args)]


def _model_inputs(flag: str, path: Optional[str], model_types: Sequence[str]) -> list[tuple[str, Optional[str]]]:
    """``path`` as given and the model folder it resolves to (a run folder's model/ or reward/)."""
    from .pretrained import model_folder

    return [(flag, path), (flag, model_folder(path, tuple(model_types)))] if path else []


class _SetParser(argparse.ArgumentParser):
    """Parses ``--set`` values with a config's own flags; a bad value is a ValueError naming it."""

    def error(self, message: str):  # type: ignore[override]
        flag, sep, why = message.partition(": ")  # "argument --num-codes: invalid int value: 'x'"
        field = flag.removeprefix("argument --").replace("-", "_")
        raise ValueError(f"--set {field}=: {why}" if sep else f"--set: {message}")


def _overrides(pairs: Sequence[str], config_cls: type) -> dict:
    """``--set KEY=VALUE`` pairs → overrides of ``config_cls``'s fields, each value parsed like that
    field's own flag would be (``channels=32,32,64``, ``attention=false``, ``num_codes=256`` …)."""
    names = sorted(f.name for f in fields(config_cls))
    parser = _SetParser(add_help=False)
    add_config_options(parser, config_cls)
    argv, given = [], []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {pair!r}")
        if key not in names:
            raise ValueError(f"{config_cls.__name__} has no field {key!r} (fields: {', '.join(names)})")
        flag = "--" + key.replace("_", "-")
        if typing.get_type_hints(config_cls)[key] is bool:
            if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(f"--set {key}= takes true or false, got {value!r}")
            argv.append(flag if value.strip().lower() in ("true", "1", "yes", "on") else "--no-" + flag[2:])
        else:
            argv.append(f"{flag}={value}")
        given.append(key)
    parsed = vars(parser.parse_args(argv))
    return {k: parsed[k] for k in given}


# ---------------------------------------------------------------------------------------------
# data: collect, import-videos, tasks, info
# ---------------------------------------------------------------------------------------------
def _collect(args: argparse.Namespace) -> int:
    from .collect import CollectConfig, collect

    _prepare(args)
    print("\n".join(collect(config_from_args(CollectConfig, args)).lines()))
    return 0


def _import_videos(args: argparse.Namespace) -> int:
    from .collect import ImportConfig, import_videos

    print("\n".join(import_videos(args.sources, **asdict(config_from_args(ImportConfig, args))).lines()))
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from .envs import list_tasks

    for suite, names in list_tasks().items():
        print(f"{suite} ({len(names)}): {' '.join(names) if names else '(package not installed)'}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .data.episodes import read_manifest

    entries = read_manifest(args.folder)
    groups = Counter((e["task"], e.get("policy"), e.get("noise")) for e in entries)
    wins = Counter((e["task"], e.get("policy"), e.get("noise")) for e in entries if e.get("success"))
    # imported videos have no success flags (labelled false, success null): "0 successful" would be a claim
    labelled = Counter((e["task"], e.get("policy"), e.get("noise")) for e in entries
                       if e.get("labelled", True) and e.get("success") is not None)
    frames = sum(int(e["frames"]) for e in entries)
    print(f"{args.folder}: {len(entries)} episodes, {frames} frames")
    for key in sorted(groups, key=str):
        task, policy, noise = key
        tag = f"{policy} σ={noise:g}" if policy == "noisy" and isinstance(noise, (int, float)) else str(policy)
        known = labelled[key]
        outcome = (f"{wins[key]} successful" if known == groups[key] else "unlabelled (no success flags)"
                   if known == 0 else f"{wins[key]} successful of {known} labelled")
        print(f"  {task:<28} {tag:<14} {groups[key]:>4} episodes, {outcome}")
    return 0


# ---------------------------------------------------------------------------------------------
# Diffusion Reward: train-codec, train-video, fit-stats, train-progress, score
# ---------------------------------------------------------------------------------------------
def _training_frames(args: argparse.Namespace, with_tasks: bool = False, with_paths: bool = False):
    """Frames of the ``--data`` episode folders (comma-separated; their episodes in that order);
    ``with_tasks``: also each episode's task (its manifest entry's, else its folder); ``with_paths``: then
    also each episode's file."""
    from mmreward.core.data import DataError

    from .data.episodes import holds_tasks, load_episode, select_entries

    folders = _data_list(args)
    # --tasks select from all the folders together: `--data data/mw,data/mine --tasks reach-v3,pick cup` was
    # refused because data/mw has no "pick cup" episodes. Only a folder with none of the labels is left out: one
    # that --policies alone empties (data/noisy, collected with --policy noisy) is refused, not dropped
    use = [f for f in folders if not args.tasks or holds_tasks(f, args.tasks)]
    # the labels are checked on the manifests, before any frame is read: a misspelt one was named only after
    # every selected episode had been loaded
    chosen, refused = [], None
    for f in use:
        try:
            chosen.append((f, select_entries(f, args.tasks, args.policies)))
        except DataError as e:  # named after the labels: a misspelt label is the likelier cause
            refused = refused or e
    _check_each_task_selected(args.tasks, {e["task"] for _, entries in chosen for e in entries}, folders,
                              args.policies)
    if refused is not None:
        raise refused
    found = [(load_episode(os.path.join(f, e["file"])).frames, e.get("task", f), os.path.join(f, e["file"]))
             for f, entries in chosen for e in entries]
    first = found[0]
    for fr, _, path in found:  # was "episodes have different frame shapes: [(32, 32, 3), (48, 48, 3)]": which?
        if fr.shape[1:3] != first[0].shape[1:3]:
            raise ValueError(f"--data episodes have different frame sizes: {first[2]} has {first[0].shape[1]}x"
                             f"{first[0].shape[2]} frames, {path} {fr.shape[1]}x{fr.shape[2]}; train on episodes of "
                             "one size (import-videos / collect them with one --size)")
    frames = [fr for fr, _, _ in found]
    if with_paths:
        return frames, [t for _, t, _ in found], [p for _, _, p in found]
    return (frames, [t for _, t, _ in found]) if with_tasks else frames


def _check_each_task_selected(tasks: Optional[Sequence[str]], selected: set, folders: Sequence[str],
                              policies: Optional[Sequence[str]]) -> None:
    """Every ``--tasks`` label must select some episode: ``--tasks PlateSlide,reach`` trained on the reach
    episodes alone, the label that matched nothing dropped without a word."""
    from .data.episodes import match_tasks, read_manifest

    for task in tasks or ():
        if not match_tasks([task], selected) & selected:
            # the folders and, for score, the episode folders a plain folder stands for
            subs = [os.path.join(f, k) for f in folders if os.path.isdir(f) and not os.path.isfile(
                os.path.join(f, "manifest.json")) for k in sorted(os.listdir(f))]
            have = {str(e.get("task")) for f in [*folders, *subs] if os.path.isfile(os.path.join(f, "manifest.json"))
                    for e in read_manifest(f)}
            where = ", ".join(folders)
            if match_tasks([task], have) & have:  # the task is there, not with these policies
                raise ValueError(f"--tasks {task!r} selects no episodes with --policies {','.join(policies or ())} in "
                                 f"{where}: add its episodes' policy to --policies (all: every policy)")
            raise ValueError(f"--tasks {task!r} selects no episodes in {where} (their tasks: {', '.join(sorted(have))}):"
                             " spell it as listed, or drop it from --tasks")


def _check_frame_size(frames: list, codec, args: argparse.Namespace) -> None:
    """The ``--data`` episodes must have the ``--codec``'s frame size (named here, before any work)."""
    size = codec.config.image_size
    for f in frames:
        if tuple(f.shape[1:3]) != (size, size):
            raise ValueError(f"--data episodes have {f.shape[1]}x{f.shape[2]} frames but the --codec {args.codec!r} "
                             f"takes {size}x{size}: use episodes collected at --size {size} or a codec trained on "
                             "these")


def _stopped_early(args: argparse.Namespace, steps: int, more: str = "") -> bool:
    """``--stop-at`` ended the call before ``steps``: says so (the model is saved only when the run ends:
    "saved OUT/model" was printed for a folder that did not exist)."""
    if args.stop_at is None or int(args.stop_at) >= steps:
        return False
    # the step the run is at: a resumed run past --stop-at does not go back to it (one that had finished was
    # reported as "stopped at step 400 of 20000 ... run again with --resume", its model saved all along)
    from mmreward.core.checkpoint import newest_snapshot_step

    reached = newest_snapshot_step(args.out) if os.path.isdir(args.out) else None
    if reached is None:
        reached = int(args.stop_at)
    if reached >= steps:
        return False
    past = (f" (--stop-at {args.stop_at} is before the step the run had reached: nothing was trained)"
            if reached > int(args.stop_at) else "")
    print(f"stopped at step {reached} of {steps}{past}: the model is saved to {os.path.join(args.out, 'model')} "
          f"when the run ends{more}; run again with --resume to continue")
    return True


def _train_codec(args: argparse.Namespace) -> int:
    import numpy as np

    from .codec.vqgan import VQGANConfig, VQGANTrainConfig, evaluate_vqgan, train_vqgan

    if args.eval_frames < 1:  # checked before training, not after it
        raise ValueError(f"--eval-frames must be >= 1, got {args.eval_frames}")
    device = _prepare(args)
    frames = _training_frames(args)
    h, w = frames[0].shape[1:3]
    if h != w:  # was "frames must be 32x32 pixels, got 32x48": a size the user never asked for
        raise ValueError(f"--data episodes have {h}x{w} frames, but the codec takes square frames: import or collect "
                         f"them with --size N (import-videos center-crops to a square)")
    preset = VQGANConfig.paper if args.preset == "paper" else VQGANConfig
    cfg = preset(**{"image_size": int(frames[0].shape[1]), **_overrides(args.set, VQGANConfig)})
    cfg.validate()  # before the banner ("10x10 tokens" was printed for 84 px frames the codec cannot take)
    print(f"train-codec: {len(frames)} episodes, {sum(len(f) for f in frames)} frames, {args.preset} VQGAN "
          f"({cfg.num_codes} codes, {cfg.latent_size}x{cfg.latent_size} tokens) -> {args.out}")
    tc = config_from_args(VQGANTrainConfig, args)
    model = train_vqgan(frames, cfg, args.out, tc, resume=args.resume, overwrite=args.overwrite, stop_at=args.stop_at,
                        progress_bar=args.progress, device=str(device))
    if _stopped_early(args, tc.steps):
        return 0
    pool = np.concatenate(frames)
    pick = np.random.default_rng(0).permutation(pool.shape[0])[:args.eval_frames]
    m = evaluate_vqgan(model, pool[np.sort(pick)])
    print(f"saved {os.path.join(args.out, 'model')}: PSNR {m['psnr']:.2f} dB, L1 {m['l1']:.4f}, "
          f"perplexity {m['perplexity']:.1f}, code usage {m['code_usage']:.2f} (on {len(pick)} training frames)")
    return 0


def _reward_config(args: argparse.Namespace):
    """The :class:`DiffusionRewardConfig` of the reward options (its chain-noise seed is ``--seed``)."""
    from .reward.diffusion_reward import DiffusionRewardConfig

    cfg = config_from_args(DiffusionRewardConfig, args, skip=("batch_size", "seed"),
                           batch_size=args.reward_batch_size, seed=args.seed)
    try:
        cfg.validate()
    except ValueError as e:  # the config names its field ("batch_size must be …"): the command line knows a flag
        raise ValueError(flag_named(str(e), cfg, {"batch_size": "--reward-batch-size"})) from None
    return cfg


def _save_reward_model(codec, video, frames: list, tasks: list, args: argparse.Namespace, out: str) -> None:
    """A :class:`DiffusionReward` of ``codec`` + ``video`` (+ an untrained RND with ``--rnd``), its
    expert statistics fitted on ``frames`` (the goal distance's against the last frames of other
    episodes of the same task, ``tasks``), saved to ``out``."""
    from .reward.diffusion_reward import DiffusionReward
    from .reward.progress import group_goals
    from .reward.rnd import RND, RNDConfig

    size = codec.config.image_size  # the frames the reward model scores: RNDConfig's default is 64 px
    rnd = None if args.rnd == "none" else RND((RNDConfig.paper if args.rnd == "paper" else RNDConfig)(image_size=size))
    reward = DiffusionReward(codec, video, _reward_config(args), rnd)
    stats = reward.fit_statistics(frames)
    stats |= reward.fit_goal_statistics(frames, [group_goals(frames, tasks, k) for k in range(len(frames))])
    reward.save_pretrained(out)
    print(f"expert statistics over {stats['frames']} frames: mean {stats['mean']:.4f}, std {stats['std']:.4f}, "
          f"goal-distance std {stats['goal_std']:.4f}")
    print(f"saved Diffusion Reward model {out} (use: mmreward robotics score --model {out} EPISODES...)")


def _train_video(args: argparse.Namespace) -> int:
    from .codec.vqgan import VQGAN
    from .pretrained import model_folder
    from .video.vq_diffusion import VideoTrainConfig, VQDiffusionConfig, train_video_model

    device = _prepare(args)
    _reward_config(args)  # checked before training
    if args.fit_stats:
        reward_out = args.reward_out or os.path.join(args.out, "reward")
        _check_model_out("--reward-out", reward_out,
                         [("--out", args.out), *_model_inputs("--codec", args.codec, ("vqgan",)), *_data_folders(args)])
        _check_replaceable("--reward-out", reward_out)
    codec = VQGAN.from_pretrained(model_folder(args.codec, ("vqgan",)), device)
    frames, tasks = _training_frames(args, with_tasks=True)
    _check_frame_size(frames, codec, args)
    s = codec.config.latent_size
    preset = VQDiffusionConfig.paper if args.preset == "paper" else VQDiffusionConfig
    cfg = preset(**{"num_codes": codec.config.num_codes, "token_shape": (s, s),
                    **_overrides(args.set, VQDiffusionConfig)})
    tc = config_from_args(VideoTrainConfig, args)
    print(f"train-video: {len(frames)} episodes, {args.preset} VQ-Diffusion ({cfg.depth} blocks of width {cfg.dim}, "
          f"{cfg.num_history} history frames) -> {args.out}")
    video = train_video_model(frames, cfg, args.out, tc, codec=codec, resume=args.resume, overwrite=args.overwrite,
                              stop_at=args.stop_at, progress_bar=args.progress, device=str(device))
    # after the run, never before: a run refused on its settings or data must leave the folder as it was
    _drop_stale_reward(args)
    if _stopped_early(args, tc.steps, " (expert statistics not fitted yet)" if args.fit_stats else ""):
        return 0
    print(f"saved {os.path.join(args.out, 'model')}")
    if not args.fit_stats:
        return 0
    _save_reward_model(codec, video, frames, tasks, args, args.reward_out or os.path.join(args.out, "reward"))
    return 0


def _drop_stale_reward(args: argparse.Namespace) -> None:
    """Remove the run's ``OUT/reward`` (what ``score --model OUT`` and ``train-rl --model OUT`` read) when it
    holds the reward model of another video model than ``OUT/model`` (or ``OUT/model`` is gone: an
    ``--overwrite`` run stopped early). ``train-video --overwrite --no-fit-stats`` (or ``--resume`` to more
    steps) left the previous model's reward there, and ``score --model OUT`` scored with it without a word.
    Only a folder mmreward saved."""
    import torch

    from mmreward.core.checkpoint import discard

    from .video.vq_diffusion import ConditionalVQDiffusion

    folder = os.path.join(args.out, "reward")
    if not (os.path.isfile(os.path.join(folder, "manifest.json"))
            and os.path.isfile(os.path.join(folder, "video", "config.json"))):
        return
    try:
        old = ConditionalVQDiffusion.from_pretrained(os.path.join(folder, "video")).state_dict()
        new = ConditionalVQDiffusion.from_pretrained(os.path.join(args.out, "model")).state_dict()
        if old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old):
            return  # the reward of this very model (a finished run called again): still right
    except (OSError, ValueError, RuntimeError, KeyError):  # unreadable or no OUT/model: not its reward model
        pass
    discard(folder)  # never half-deleted under its name
    print(f"removed {folder}: the reward model of a video model this run replaced (score --model {args.out} "
          f"would have used it); mmreward robotics fit-stats builds one for the new model")


def _fit_stats(args: argparse.Namespace) -> int:
    from .codec.vqgan import VQGAN
    from .pretrained import model_folder
    from .video.vq_diffusion import ConditionalVQDiffusion

    device = _prepare(args)
    _reward_config(args)
    _check_model_out("--out", args.out, [*_model_inputs("--codec", args.codec, ("vqgan",)),
                                         *_model_inputs("--video", args.video, ("vq_diffusion",)), *_data_folders(args)])
    _check_replaceable("--out", args.out)
    codec = VQGAN.from_pretrained(model_folder(args.codec, ("vqgan",)), device)
    video = ConditionalVQDiffusion.from_pretrained(model_folder(args.video, ("vq_diffusion",)), device)
    frames, tasks = _training_frames(args, with_tasks=True)
    _check_frame_size(frames, codec, args)
    _save_reward_model(codec, video, frames, tasks, args, args.out)
    return 0


def _train_progress(args: argparse.Namespace) -> int:
    from .pretrained import model_folder
    from .reward.diffusion_reward import DiffusionReward
    from .reward.progress import ProgressConfig, train_progress

    if not args.attach:  # they only shape the attached model: silently ignored otherwise
        given = [flag for flag, value in (("--progress-scale", args.progress_scale), ("--attach-out", args.attach_out))
                 if value is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to the model saved with "
                             "--attach; give --attach MODEL or leave it out")
    device = _prepare(args)
    _check_model_out("--out", args.out, _data_folders(args))
    if args.attach:
        _check_model_out("--attach-out", args.attach_out or os.path.join(args.out, "reward"),
                         [("--out", args.out), *_model_inputs("--attach", args.attach, ("diffusion_reward",)),
                          *_data_folders(args)])
    frames, tasks, paths = _training_frames(args, with_paths=True)
    short = [p for f, p in zip(frames, paths) if len(f) < 2]
    if short and len(short) < len(frames):
        # a 1-frame demo (import-videos of a still image / a 1-frame clip) trains the codec and the video model
        # (no window) but failed the ranker with "episode 1 has 1 frame", naming no file the user could leave out
        print(f"train-progress: left out {len(short)} episode{'s' if len(short) > 1 else ''} of 1 frame "
              f"({short[0]}{' …' if len(short) > 1 else ''}): the ranker needs a first and a last frame",
              file=sys.stderr)
        kept = [k for k, f in enumerate(frames) if len(f) >= 2]
        frames, tasks = [frames[k] for k in kept], [tasks[k] for k in kept]
    elif short:
        raise ValueError(f"every --data episode has 1 frame ({short[0]} …): the progress ranker needs episodes of at "
                         "least 2 frames (a first and a last)")
    cfg = ProgressConfig(**{"image_size": int(frames[0].shape[1]), **_overrides(args.set, ProgressConfig)})
    reward = None
    scale = 1.0 if args.progress_scale is None else float(args.progress_scale)
    if args.attach:  # loaded and checked before training: these failed only after it
        reward = DiffusionReward.from_pretrained(model_folder(args.attach, ("diffusion_reward",)), device)
        reward.config.progress_scale = scale
        reward.config.validate()
        size = reward.codec.config.image_size
        if size != cfg.image_size:
            raise ValueError(f"--attach {args.attach!r} takes {size}x{size} frames but the --data episodes are "
                             f"{cfg.image_size}x{cfg.image_size}: train the ranker on episodes of the reward model's "
                             "frame size")
    print(f"train-progress: {len(frames)} expert episodes, ranker of frame order ({args.steps} steps) -> {args.out}")
    model, m = train_progress(frames, cfg, args.out, steps=args.steps, seed=args.seed, show_progress=args.progress,
                              resume=args.resume, overwrite=args.overwrite, stop_at=args.stop_at,
                              groups=tasks,  # goal-conditioned: pair goals from episodes of the same task
                              save_every=args.ckpt_every)
    if _stopped_early(args, args.steps, " (and attached)" if args.attach else ""):  # no statistics: nothing to attach
        return 0
    val = (f", held-out pair accuracy {m['val_pair_acc']:.3f}, score-vs-time ρ {m['val_time_spearman']:.3f} "
           f"({m['val_episodes']} episodes)" if "val_pair_acc" in m else "")
    print(f"saved {args.out}: train pair accuracy {m['train_pair_acc']:.3f}{val}; {m['seconds']:.0f} s")
    if reward is not None:
        reward.set_progress(model.to(reward.device))
        out = args.attach_out or os.path.join(args.out, "reward")
        reward.save_pretrained(out)
        print(f"saved Diffusion Reward + progress (β = {scale:g}) {out} "
              f"(use: mmreward robotics score --model {out} ...)")
    return 0


PER_STEP_FORMATS = (".csv", ".json", ".npz")


def _unique_names(found: list) -> list[str]:
    """Episode names, made unique: ``run1/ep_0.npz`` and ``run2/ep_0.npz`` were both ``ep_0``, and the
    per-step ``--out .json`` (keyed by name) kept only one of them. A repeated name becomes the path
    (then ``path#k`` for the same path given twice)."""
    from collections import Counter

    counts = Counter(src.name for src in found)
    names, seen = [], set()
    for src in found:
        name = src.name if counts[src.name] == 1 else src.path
        base, k = name, 1
        while name in seen:
            k += 1
            name = f"{base}#{k}"
        seen.add(name)
        names.append(name)
    return names


def _write_per_step(path: str, results: list[dict]) -> None:
    from mmreward.core.folders import atomic_write, atomic_write_text

    if path.endswith(".json"):
        atomic_write_text(path, json_text({r["name"]: r["rewards"] for r in results}, indent=1) + "\n")
    elif path.endswith(".npz"):
        import numpy as np

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **{f"{i:04d}_{r['name']}": np.asarray(r["rewards"], np.float32)
                               for i, r in enumerate(results)})

        atomic_write(path, write)
    else:  # .csv
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")  # a name with a comma or quote is quoted, not split
        w.writerow(["episode", "frame", "reward"])
        for r in results:
            w.writerows([r["name"], i, f"{v:.6g}"] for i, v in enumerate(r["rewards"]))
        atomic_write_text(path, buf.getvalue())


def _uses_goal(model) -> bool:
    """Whether the model scores against goal frames: a goal term, or a goal-conditioned progress ranker."""
    ranker = model if model.model_type == "progress_ranker" else getattr(model, "progress", None)
    return getattr(model.config, "goal_scale", 0) > 0 or bool(ranker is not None and ranker.config.goal_conditioned)


def _set_goal(model, sources: list) -> None:
    """The last frames of the ``--goal`` episodes become the model's goal frames."""
    import torch

    from .data.inputs import episode_tensors, find_episodes

    if not _uses_goal(model):
        raise ValueError(f"--goal needs a model that scores against a goal (a Diffusion Reward model with goal_scale "
                         f"> 0, or a goal-conditioned progress ranker); this {model.model_type} model has neither")
    if model.model_type != "progress_ranker" and model.config.goal_scale > 0 and int(model.goal_statistics[1]) == 0:
        raise ValueError("this model has no goal statistics (saved before the goal term): refit them with "
                         "fit-stats, or use DiffusionReward.fit_goal_statistics")
    found = find_episodes(sources)
    last = [episode_tensors(src.input, model.image_size, src.name)[0][-1] for src in found]
    model.set_goal(torch.stack(last))
    print(f"goal: the last frames of {len(last)} episodes", file=sys.stderr)


def _score(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from mmreward.core.model import read_config

    from .data.inputs import find_episodes
    from .pretrained import DEFAULT, model_folder
    from .reward import MODEL_CLASSES

    if args.out and not args.out.endswith(PER_STEP_FORMATS):  # before any scoring, not after it
        raise ValueError(f"--out {args.out!r}: use a {', '.join(PER_STEP_FORMATS)} file")
    _check_output_files(out=args.out, plot=args.plot)
    filters = [flag for flag, given in (("--tasks", args.tasks is not None), ("--policies", args.policies != ["all"]))
               if given]

    def episode_folders(src: str) -> bool:  # an episode folder, or a folder of them (it stands for its contents)
        if os.path.isfile(os.path.join(src, "manifest.json")):
            return True
        return os.path.isdir(src) and any(os.path.isfile(os.path.join(src, k, "manifest.json")) for k in os.listdir(src))

    if filters and not any(episode_folders(src) for src in args.inputs):
        raise ValueError(f"{' / '.join(filters)} select episodes of episode folders (by their manifest.json), but no "
                         "input is one: every input would be scored, unfiltered")
    sources = [("input", args.inputs), ("--goal", args.goal)]  # an episode .npz given as --out would be replaced
    check_output_file(args.out, "--out", sources)
    check_output_file(args.plot, "--plot", [*sources, ("--out", args.out)])
    device = _prepare(args)
    folder = model_folder(args.model or DEFAULT, tuple(MODEL_CLASSES))
    model = MODEL_CLASSES[read_config(folder)["model_type"]].from_pretrained(folder, device)
    ranker = getattr(model, "progress", None) is not None
    if not args.ranker:
        if not hasattr(model, "set_progress"):
            raise ValueError(f"--no-ranker applies to Diffusion Reward models; {folder} holds a {model.model_type}")
        model.set_progress(None)
        ranker = False
    if args.seed is not None and hasattr(model.config, "seed"):
        model.config.seed = int(args.seed)
    for flag, field in (("--motion-scale", "motion_scale"), ("--goal-scale", "goal_scale"),
                        ("--displacement-scale", "displacement_scale"), ("--displacement-cap", "displacement_cap"),
                        ("--consistency-scale", "consistency_scale"), ("--compute-dtype", "compute_dtype")):
        value = getattr(args, field)
        if value is not None:
            if not hasattr(model.config, field):
                raise ValueError(f"{flag} applies to Diffusion Reward models; {folder} holds a {model.model_type}")
            setattr(model.config, field, value if field == "compute_dtype" else float(value))
            try:
                model.config.validate()
            except ValueError as e:
                raise ValueError(flag_named(str(e), model.config)) from None
    if args.displacement_cap is not None and model.config.displacement_scale == 0:  # it bounds a term that is off
        raise ValueError("--displacement-cap bounds the displacement term, which this model has off "
                         "(displacement_scale 0): give --displacement-scale DELTA too")
    for term in ("motion", "displacement", "consistency"):  # terms fitted from expert frames alone
        if getattr(model.config, f"{term}_scale", 0) > 0 and int(getattr(model, f"{term}_statistics")[1]) == 0:
            how = "fit_statistics" if term == "motion" else f"fit_{term}_statistics"
            raise ValueError(f"this model has no {term} statistics (saved before the {term} term): refit them with "
                             f"mmreward robotics fit-stats, or use DiffusionReward.{how}")
    if args.goal:
        _set_goal(model, args.goal)
    elif _uses_goal(model):
        raise ValueError("this model scores against a goal: give --goal DEMO (episodes whose last frames show the "
                         "task's goal)")
    found = find_episodes(args.inputs, tasks=args.tasks, policies=args.policies, with_success=args.success)
    _check_each_task_selected(args.tasks, {s.meta["task"] for s in found if "task" in s.meta}, args.inputs,
                              args.policies)
    whole = [s for s in found if not s.from_folder]
    if filters and whole:  # a loose .npz or video next to episode folders has no manifest entry to filter by
        print(f"{' / '.join(filters)}: {len(whole)} of {len(found)} inputs are not in an episode folder (loose .npz "
              "files, videos, frame folders) and are scored whole, unfiltered", file=sys.stderr)
    names = _unique_names(found)
    if args.success:  # videos and imported demos carry no flags: --success had no effect on them, without a word
        flagless = [n for src, n in zip(found, names) if src.input.success is None]
        if flagless:
            shown = ", ".join(flagless[:3]) + (f" and {len(flagless) - 3} more" if len(flagless) > 3 else "")
            print(f"--success: {len(flagless)} of {len(found)} episodes have no success flags (videos, frame folders "
                  f"and imported demos are unlabelled): {shown} scored without the success term", file=sys.stderr)
    results = []
    bar = tqdm(list(zip(found, names)), desc="score", unit="ep", disable=not args.progress or len(found) < 2)
    for src, name in bar:
        (r,) = model.score_parts([src.input], batch_size=args.batch_size)
        results.append({"name": name, "path": src.path, "frames": int(r.numel()), "total": float(r.sum()),
                        "mean": float(r.mean()), "rewards": [float(v) for v in r], **src.meta})
    if args.out:
        _write_per_step(args.out, results)
    if args.plot:
        from mmreward.core.logging import plot_curves

        curves = {r["name"]: (list(range(r["frames"])), r["rewards"]) for r in results}
        plot_curves(args.plot, curves, title=f"{type(model).__name__} ({os.path.basename(os.path.normpath(folder))})",
                    xlabel="frame", ylabel="reward")
    if args.json:
        print(json_text({"model": folder, "model_type": model.model_type, "progress_ranker": ranker,
                          "episodes": results}))
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


# ---------------------------------------------------------------------------------------------
# visual RL
# ---------------------------------------------------------------------------------------------
def _train_rl(args: argparse.Namespace) -> int:
    from .rl.drqv2 import DrQV2Config
    from .rl.workspace import RLConfig, train_rl

    device = _prepare(args)
    summary = train_rl(config_from_args(RLConfig, args, device=str(device)), config_from_args(DrQV2Config, args))
    print(json_text({k: summary[k] for k in ("frames", "episodes", "success_rate", "episode_return", "fps")}))
    return 0


def _train_expert(args: argparse.Namespace) -> int:
    from .rl.expert import ExpertConfig, train_expert
    from .rl.sac import SACConfig

    device = _prepare(args)
    summary = train_expert(config_from_args(ExpertConfig, args, device=str(device)), config_from_args(SACConfig, args))
    print(json_text({k: summary[k] for k in ("steps", "frames", "episodes", "success_rate", "episode_return", "best",
                                              "steps_per_second")}))
    return 0


def _eval_expert(args: argparse.Namespace) -> int:
    from .rl.expert import evaluate_expert

    _check_output_files(json=args.json)
    check_output_file(args.json, "--json")  # under a file, or in a read-only folder: refused before the episodes
    _prepare(args)
    summary = evaluate_expert(args.model, episodes=args.episodes, seed=args.seed, reward=args.reward,
                              episode_steps=args.episode_steps)
    if args.json:
        from mmreward.core.folders import atomic_write_text

        atomic_write_text(args.json, json_text(summary, indent=1) + "\n")
    print(json_text(summary))
    return 0


def _eval_rl(args: argparse.Namespace) -> int:
    from .rl.evaluate import evaluate_run

    _check_output_files(json=args.json)
    check_output_file(args.json, "--json")  # under a file, or in a read-only folder: refused before the episodes
    _prepare(args)
    summary = evaluate_run(args.run_dir, episodes=args.episodes, seed=args.seed, frame=args.frame, device=args.device)
    if args.json:
        from mmreward.core.folders import atomic_write_text

        atomic_write_text(args.json, json_text(summary, indent=1) + "\n")
    print(json_text({k: v for k, v in summary.items() if k != "per_episode"}))
    return 0


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------
def _add_runtime(p: argparse.ArgumentParser, seed: bool = False) -> None:
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seed of python / numpy / torch (default: 0)")


def _add_data(p: argparse.ArgumentParser, policies_default: str = "expert,demo", required: bool = True) -> None:
    if required:
        p.add_argument("--data", required=True,
                       help="episode folder (manifest.json + episode files); several: comma-separated")
    p.add_argument("--tasks", type=_split_tasks, default=None,
                   help="keep only these tasks, comma-separated (default: all)")
    p.add_argument("--policies", type=_split_list, default=_split_list(policies_default),
                   help=f"keep only these policy kinds; 'all' keeps every episode (default: {policies_default})")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")


def _add_run(p: argparse.ArgumentParser, out_help: str = "run folder: metrics.csv, snapshots, model/") -> None:
    p.add_argument("--out", required=True, help=out_help)
    start = p.add_mutually_exclusive_group()  # both: --overwrite silently deleted the run --resume asked for
    start.add_argument("--resume", action="store_true", help="continue the run in --out from its newest snapshot")
    start.add_argument("--overwrite", action="store_true", help="start again even if --out holds a run")
    p.add_argument("--stop-at", type=int, default=None, help="end this call after this many total steps")


def _alias(p: argparse.ArgumentParser, flag: str, dest: str, kind: type = int) -> None:
    """``flag``: another spelling of the option whose value is ``dest``, hidden from ``--help`` — the name the
    other mmreward commands give the same setting (``--max-steps``, ``--save-every``, ...)."""
    p.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _add_training(p: argparse.ArgumentParser, train_config: type) -> None:
    _add_run(p)
    # `text train`, `prm train`, `vision train ...` (TrainConfig) spell these --max-steps / --save-every
    _alias(p, "--max-steps", "steps")
    _alias(p, "--save-every", "ckpt_every")
    p.add_argument("--preset", choices=PRESETS, default="small",
                   help="model preset: small (CPU) or paper (official sizes) (default: small)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model-config field, e.g. --set num_codes=256 (repeatable)")
    add_config_options(p.add_argument_group(f"training ({train_config.__name__})"), train_config)


def _add_reward_options(p: argparse.ArgumentParser) -> None:
    from .reward.diffusion_reward import REWARD_TYPES, DiffusionRewardConfig

    g = p.add_argument_group("reward model (DiffusionRewardConfig; its chain-noise seed is --seed)")
    # choices: --help lists them and a misspelt one is refused naming the flag (the config named its field)
    add_config_options(g, DiffusionRewardConfig, skip=("batch_size", "seed"),
                       choices={"reward_type": REWARD_TYPES, "entropy_estimator": ("vlb", "x0_entropy"),
                                "compute_dtype": ("float32", "bfloat16")})
    g.add_argument("--reward-batch-size", type=int, default=DiffusionRewardConfig.batch_size,
                   help=f"windows per video-model batch when the saved model scores "
                        f"(default: {DiffusionRewardConfig.batch_size})")
    g.add_argument("--rnd", choices=("none", "small", "paper"), default="none",
                   help="add an RND exploration bonus (untrained predictor; default: none)")


def _add_model_commands(sub) -> None:
    from .codec.vqgan import VQGANTrainConfig
    from .video.vq_diffusion import VideoTrainConfig

    p = sub.add_parser("train-codec", help="train the VQGAN frame codec on expert episodes",
                       description="Train a VQGAN (64x64 frames -> 8x8 tokens) on the frames of episode folders.")
    _add_data(p)
    _add_runtime(p)
    _add_training(p, VQGANTrainConfig)
    p.add_argument("--eval-frames", type=int, default=1024, help="frames for the final PSNR / usage report")
    p.set_defaults(run=_train_codec)

    p = sub.add_parser("train-video", help="train the conditional VQ-Diffusion video model (+ fit statistics)",
                       description="Train the video model on expert episodes tokenised by --codec, then fit the "
                                   "expert reward statistics and save the combined DiffusionReward model "
                                   "(--reward-out, default OUT/reward).")
    _add_data(p)
    _add_runtime(p)
    p.add_argument("--codec", required=True, help="VQGAN folder (train-codec's --out, or its model/)")
    _add_training(p, VideoTrainConfig)
    p.add_argument("--fit-stats", action=argparse.BooleanOptionalAction, default=True,
                   help="fit expert statistics and save the combined reward model after training")
    p.add_argument("--reward-out", default=None, help="combined reward model folder (default: OUT/reward)")
    _add_reward_options(p)
    p.set_defaults(run=_train_video)

    p = sub.add_parser("fit-stats", help="fit expert statistics and save a combined DiffusionReward model",
                       description="Combine a codec and a video model into a DiffusionReward model whose raw "
                                   "reward is z-scored with statistics measured on expert episodes.")
    _add_data(p)
    _add_runtime(p, seed=True)
    p.add_argument("--codec", required=True, help="VQGAN folder")
    p.add_argument("--video", required=True, help="VQ-Diffusion folder (train-video's --out, or its model/)")
    p.add_argument("--out", required=True, help="output folder of the combined model")
    _add_reward_options(p)
    p.set_defaults(run=_fit_stats)

    p = sub.add_parser("train-progress", help="train a progress ranker on expert frame order (+ attach it)",
                       description="Train a ranker that scores later frames of expert episodes above earlier ones "
                                   "(robotics/reward/progress.py) and, with --attach, save a Diffusion Reward model "
                                   "whose learned term adds β times the ranker's z-score.")
    _add_data(p)
    _add_runtime(p, seed=True)
    _add_run(p, "ranker folder (config.json + model.safetensors + metrics.json)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default: 2000)")
    _alias(p, "--max-steps", "steps")
    p.add_argument("--ckpt-every", type=int, default=500,
                   help="snapshot interval in steps (0 = only at the end; default: 500)")
    _alias(p, "--save-every", "ckpt_every")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a ProgressConfig field, e.g. --set min_gap=5 (repeatable)")
    p.add_argument("--attach", default=None, metavar="MODEL",
                   help="Diffusion Reward folder or shipped name (metaworld-64) to save with the ranker attached")
    p.add_argument("--attach-out", default=None, help="where to save it (default: OUT/reward)")
    p.add_argument("--progress-scale", type=float, default=None,
                   help="β of the ranker's z-score in the --attach model (default: 1)")
    p.set_defaults(run=_train_progress)

    p = sub.add_parser("score", help="per-frame rewards of episodes or videos (Diffusion Reward, ranker, RND)",
                       description="Score episode files (.npz), episode folders, videos or frame folders with a "
                                   "robotics reward model; prints total and mean reward per episode.")
    p.add_argument("inputs", nargs="+", help="episode .npz files, episode folders, videos, frame folders")
    p.add_argument("--model", default=None,
                   help="reward-model folder (DiffusionReward, progress ranker or RND) or a shipped name "
                        "(default: the shipped metaworld-64)")
    p.add_argument("--json", action="store_true", help="print one JSON document (with per-step rewards)")
    p.add_argument("--plot", default=None, metavar="PNG", help="save per-step reward curves")
    p.add_argument("--out", default=None, metavar="FILE", help="write per-step rewards (.csv, .json or .npz)")
    p.add_argument("--success", action="store_true", help="add the episodes' success flags (sparse reward)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows (frames) per forward batch (default: the model's own)")
    p.add_argument("--seed", type=int, default=None, help="chain-noise seed (default: the model's)")
    p.add_argument("--ranker", action=argparse.BooleanOptionalAction, default=True,
                   help="use the model's progress ranker, if any (--no-ranker: the paper's rule, likelihood term only)")
    p.add_argument("--goal", action="append", default=None, metavar="SRC",
                   help="demonstration (episode file / folder, video) whose last frames are the goal frames of the "
                        "goal distance (--goal-scale) or a goal-conditioned ranker, e.g. of a task the model was "
                        "not trained on (repeatable)")
    p.add_argument("--motion-scale", type=float, default=None, metavar="LAMBDA",
                   help="λ of a Diffusion Reward model's motion deficit (default: the model's motion_scale)")
    p.add_argument("--goal-scale", type=float, default=None, metavar="GAMMA",
                   help="γ of a Diffusion Reward model's goal distance (default: the model's goal_scale)")
    p.add_argument("--displacement-scale", type=float, default=None, metavar="DELTA",
                   help="δ of a Diffusion Reward model's displacement from the episode's first frame "
                        "(default: the model's displacement_scale)")
    p.add_argument("--displacement-cap", type=float, default=None, metavar="C",
                   help="bound on the displacement in expert stds before δ (default: the model's displacement_cap)")
    p.add_argument("--consistency-scale", type=float, default=None, metavar="KAPPA",
                   help="κ of a Diffusion Reward model's motion consistency (default: the model's consistency_scale)")
    p.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default=None,
                   help="a Diffusion Reward model's matmuls / convolutions in bfloat16 (an autocast: faster on CPUs "
                        "with AVX512-BF16 / AMX, not bit-identical; default: the model's compute_dtype)")
    _add_data(p, policies_default="all", required=False)
    _add_runtime(p)
    p.set_defaults(run=_score)


def build_parser() -> argparse.ArgumentParser:
    from .collect import CollectConfig, ImportConfig
    from .envs.adroit import STATE_REWARDS
    from .envs.base import FLIPS
    from .rl.drqv2 import DrQV2Config
    from .rl.expert import ExpertConfig
    from .rl.rewards import REWARD_SOURCES
    from .rl.sac import SACConfig
    from .rl.workspace import RLConfig

    parser = CLIParser(prog="mmreward robotics",
                       description="robot-learning data (collect, import, inspect), Diffusion Reward models "
                                   "(train, score), visual RL with learned rewards (train-rl) and state-based "
                                   "Adroit experts (train-expert)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CLIParser)

    p = sub.add_parser("collect", help="collect expert / noisy / random episodes (Meta-World, Adroit)",
                       description="Collect rendered episodes into an episode folder (npz files + manifest.json).")
    add_config_options(p, CollectConfig, choices={"policy": ("expert", "noisy", "random"), "flip": FLIPS})
    _alias(p, "--episode-steps", "max_steps")  # train-expert / eval-expert's name for the steps per episode
    p.set_defaults(run=_collect)

    p = sub.add_parser("import-videos", help="store videos / frame folders as episodes (e.g. Adroit demos)",
                       description="Store videos / frame folders / .npz frame arrays (or folders of those) as "
                                   "unlabelled episodes.")
    p.add_argument("sources", nargs="+", help="videos, frame folders, .npz files with uint8 'frames' [T, H, W, 3], "
                                              "or folders of those (one episode each)")
    p.add_argument("--task", required=True, help="task id / label for these episodes, e.g. adroit-door")
    add_config_options(p, ImportConfig, skip=("task",))
    p.set_defaults(run=_import_videos)

    p = sub.add_parser("tasks", help="list the task ids of each suite")
    p.set_defaults(run=_tasks)

    p = sub.add_parser("info", help="summarise an episode folder's manifest")
    p.add_argument("folder", help="an episode folder (the --out of collect or import-videos, with its manifest.json)")
    p.set_defaults(run=_info)

    _add_model_commands(sub)

    p = sub.add_parser("train-rl", help="train a DrQ-v2 agent from pixels with a learned or sparse reward",
                       description="DrQ-v2 in Meta-World / Adroit with the chosen reward source; logs (CSV + "
                                   "TensorBoard), evaluation videos, learning curves and snapshots go to --out. "
                                   "A run whose --out holds a snapshot continues from it (--no-resume: refuse instead; "
                                   "--overwrite: start again).")
    run = p.add_argument_group("run (RLConfig)")
    add_config_options(run, RLConfig, skip=("checkpoint", "reward_clip"),
                       choices={"reward": REWARD_SOURCES})
    # the same flags as the other commands for the reward model and its clip (old spellings still accepted)
    run.add_argument("--model", dest="checkpoint", default=None, metavar="MODEL",
                     help="Diffusion Reward folder or shipped name (default: the shipped metaworld-64)")
    run.add_argument("--clip-min", dest="reward_clip", type=float, default=None, metavar="CLIP_MIN",
                     help="lower bound on the learned reward's standardised term (default: none)")
    run.add_argument("--checkpoint", dest="checkpoint", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    run.add_argument("--reward-clip", dest="reward_clip", type=float, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    # train-expert's spellings of the same settings
    _alias(run, "--eval-episodes", "num_eval_episodes")
    # the data commands' spelling (collect / train-codec --tasks): one task here, several are refused by name
    _alias(run, "--tasks", "task", str)
    _alias(run, "--replay-size", "replay_buffer_size")
    add_config_options(p.add_argument_group("agent (DrQV2Config)"), DrQV2Config)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(run=_train_rl)

    p = sub.add_parser("train-expert", help="train a state-based Adroit expert with SAC (for collect --policy expert)",
                       description="SAC on an Adroit task's state observations and dense reward; logs (CSV + "
                                   "TensorBoard), curves, snapshots and the best policy (OUT/model, for collect "
                                   "--policy expert --expert-model OUT/model) go to --out. A run whose --out holds a "
                                   "snapshot continues from it (--no-resume: refuse instead).")
    add_config_options(p.add_argument_group("run (ExpertConfig)"), ExpertConfig, choices={"reward": STATE_REWARDS})
    # the spellings of the other training commands (TrainConfig, train-rl) for the same settings; not
    # --max-steps, which `collect` spells the steps per episode (--episode-steps here)
    for flag, dest in (("--save-every", "snapshot_every"), ("--num-eval-episodes", "eval_episodes"),
                       ("--replay-buffer-size", "replay_size")):
        _alias(p, flag, dest)
    _alias(p, "--tasks", "task", str)  # collect's spelling, as train-rl takes it: one task, several refused by name
    add_config_options(p.add_argument_group("agent (SACConfig)"), SACConfig)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(run=_train_expert)

    p = sub.add_parser("eval-expert", help="success rate of a trained Adroit expert on held-out scenes",
                       description="Runs a train-expert policy (deterministic actions, state observations, no "
                                   "rendering) on --episodes scenes no training episode used; prints the "
                                   "success rate with its 95% Wilson interval as JSON.")
    p.add_argument("--model", required=True, help="the policy folder (train-expert's OUT/model) or the run folder")
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes")
    p.add_argument("--seed", type=int, default=0, help="which held-out scene set (reset seeds 1.5e9 + 1000·seed + i)")
    p.add_argument("--reward", choices=STATE_REWARDS, default="dense", help="reward the mean return is reported in")
    p.add_argument("--episode-steps", type=int, default=None, help="agent steps per episode (default: the task's)")
    p.add_argument("--json", default=None, help="also write the summary here")
    p.add_argument("--out", dest="json", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # as score / prm eval
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(run=_eval_expert)

    p = sub.add_parser("eval-rl", help="a trained pixel agent (train-rl) on held-out scenes",
                       description="Runs the newest (or --frame) snapshot's DrQ-v2 policy of a train-rl run "
                                   "(deterministic actions) on --episodes scenes no training or training-time "
                                   "evaluation episode used; prints the success rate with its 95% Wilson "
                                   "interval, the return and, on Adroit, progress (palm-object distance, door "
                                   "angle) with 95% intervals, as JSON.")
    p.add_argument("--run", dest="run_dir", required=True, help="the train-rl output folder")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    p.add_argument("--seed", type=int, default=0, help="which held-out scene set (reset seeds 1.5e9 + 1000·seed + i)")
    p.add_argument("--frame", type=int, default=None, help="the snapshot to load (default: the newest)")
    p.add_argument("--device", default="cpu", help="run the agent on this device: cpu | cuda | cuda:N | auto")
    p.add_argument("--json", default=None, help="also write the summary, with every episode, here")
    p.add_argument("--out", dest="json", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # as score / prm eval
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(run=_eval_rl)
    return parser


# output folders each command creates (an --out of score / eval-* is a file, checked by the command)
_OUT_FOLDERS = ("out", "reward_out", "attach_out")


def _checked(args: argparse.Namespace) -> int:
    """``args.run(args)`` once its output folders can be created: a file given as one failed only after
    the data was read, the model built, or (``collect``) the simulator had run."""
    if args.command in ("score", "eval-expert", "eval-rl", "tasks", "info"):
        return args.run(args)
    folders = [getattr(args, dest, None) for dest in _OUT_FOLDERS]
    for dest, folder in zip(_OUT_FOLDERS, folders):
        check_output_folder(folder, "--" + dest.replace("_", "-"))
    with removing_new_folders_on_error(*folders):  # refused part-way: no empty output folder left behind
        return args.run(args)


# flags that name files or folders: "~/runs/x" is the user's folder there, as a shell reads it (quoted, or
# from a script, it reached the commands as a folder literally named "~" in the working directory)
_PATH_DESTS = ("out", "reward_out", "attach_out", "data", "codec", "video", "attach", "inputs", "model", "plot",
               "goal", "checkpoint", "json", "run_dir", "folder", "sources", "expert_data", "expert_model")


def _expand_user(args: argparse.Namespace) -> None:
    """Expand a leading ``~`` in every path flag of ``args`` (each folder of a comma-separated ``--data``)."""
    def expand(value: Any, dest: str) -> Any:
        if isinstance(value, (list, tuple)):
            return type(value)(expand(v, dest) for v in value)
        if not isinstance(value, str) or "~" not in value:
            return value
        if dest == "data":
            return ",".join(os.path.expanduser(v) for v in value.split(","))
        return os.path.expanduser(value)

    for dest in _PATH_DESTS:
        if hasattr(args, dest):
            setattr(args, dest, expand(getattr(args, dest), dest))


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    _expand_user(args)
    return run_cli(f"mmreward robotics {args.command}", lambda _: _checked(args), [])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry of ``mmreward robotics``: errors are one line on stderr, exit status 2 for bad input."""
    return run_cli("mmreward robotics", _run, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
