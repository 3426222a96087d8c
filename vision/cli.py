"""``mmreward vision <command>`` and ``mmreward score-video`` (``mmreward score`` is the generic :mod:`mmreward.score_cli`).

    mmreward vision train --data synthetic --n-train 6400 --no-head-dropout --out runs/shapes \\
        --max-steps 400 --lr 4e-3 --batch-size 16 --warmup-steps 20 --seed 0
    mmreward vision train --data prefs.jsonl --eval-data held.jsonl --backbone path/to/clip --lr 1e-5
    mmreward vision train-vlm-rm --data rows.jsonl --backbone path/to/qwen2-vl --out runs/vlm_rm
    mmreward vision train-visual-prm --data steps.jsonl --backbone runs/vlm_rm/model --out runs/vprm
    mmreward vision eval --model runs/vlm_rm/model --data held.jsonl
    mmreward vision colour-data --out data/colours --kind preference --n 256
    mmreward score --model runs/shapes/model --prompt "two red circles on the left" a.png b.png [--json]
    mmreward score-video --model runs/shapes/model --prompt "a blue square" clip.mp4 --plot score.png

Every command spells its options the same way: ``--model`` (a model folder), ``--data`` (rows:
JSON / JSONL, image and video paths relative to the file), ``--out`` (the output folder; a training
run writes its final model to ``<out>/model``), ``--seed``, ``--device`` (cpu | cuda | cuda:N |
auto, checked before any work) and ``--batch-size``. Training options are generated one to one from
the dataclass configs the Python functions take. Commands raise clear exceptions
(DataError / CheckpointError / DeviceError / ValueError …) that ``mmreward`` prints as one line
(exit 2). The VLM commands live in :mod:`mmreward.vision.vlm_cli`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import fields
from typing import Any, Optional, Sequence

from mmreward.core.cli_config import CLIParser, add_config_options, add_split_options, json_text, output_path

# ------------------------------------------------------------------ shared by the vision commands
def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")


def read_rows(path: str, split: Optional[str] = None) -> list[dict]:
    """Rows of a JSON / JSONL file (or saved dataset; ``split``: one split of a saved DatasetDict / a
    .json object of lists) with relative image / video paths made absolute against the file's folder."""
    from mmreward.core.data import DataError, read_records, resolve_media_paths

    rows = read_records(path, split=split)  # "~/rows.jsonl" included, its media paths next to it
    if not rows:
        raise DataError(f"{path} holds no rows" + (f" in split {split!r}" if split else ""))
    return resolve_media_paths(rows, path)


def load_scorer(path: str, device: str, reads: type, dtype: Optional[str] = None) -> Any:
    """The reward model at ``path`` (``mmreward.load``, cast to ``dtype`` when given), which must score
    ``reads`` inputs."""
    import mmreward

    model = mmreward.load(path, device=device, dtype=dtype)
    types = getattr(model, "input_types", ())
    if reads not in types:
        hint = ""
        if any(t.__name__ == "Episode" for t in types):  # a robot reward (Diffusion Reward): a video is an episode
            hint = f"; it scores robot episodes: `mmreward score --model {path} VIDEO` gives per-frame rewards"
        raise TypeError(f"--model {path} holds a {type(model).__name__}, which does not score {reads.__name__} "
                        f"inputs{hint}")
    return model


EPISODE_MODEL_TYPES = ("diffusion_reward", "progress_ranker", "rnd")  # robot rewards: a video is an episode


def _episode_model(path: str) -> bool:
    """Whether the folder ``path`` names holds a robot reward (from its ``config.json`` alone)."""
    from mmreward.registry import saved_model_type

    return saved_model_type(path) in EPISODE_MODEL_TYPES


# ------------------------------------------------------------------ mmreward score / score-video
def score_video_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = CLIParser(prog="mmreward score-video", description="score a video's frames against a prompt")
    parser.add_argument("video", help="mp4 / gif / … file or a folder of frames")
    parser.add_argument("--model", required=True, help="an image reward model folder (save_pretrained output)")
    parser.add_argument("--prompt", help="the text the video should match (required)")
    parser.add_argument("--stride", type=int, default=1, help="score every N-th frame")
    parser.add_argument("--max-frames", type=int, default=None, help="score at most this many frames")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per forward pass")
    add_device_option(parser)
    parser.add_argument("--dtype", default=None, help="cast the model: fp32 | bf16 | fp16 (default: as saved)")
    parser.add_argument("--plot", default=None, type=output_path, help="write a PNG of the score over time here")
    parser.add_argument("--json", action="store_true", help="print JSON (per-frame scores and aggregates)")
    args = parser.parse_args(argv)
    from mmreward.core.inputs import ImagePrompt
    from mmreward.core.model import check_batch_size
    from mmreward.vision.scoring import user_path
    from mmreward.vision.video import check_plot_path, check_sampling, plot_video_score, score_video

    args.video, args.plot = user_path(args.video), user_path(args.plot, output=True)
    # checked before the model loads and the video is scored, not after
    check_sampling(args.stride, args.max_frames)
    check_batch_size(args.batch_size)
    if args.plot:
        check_plot_path(args.plot)
    if args.prompt is None and not _episode_model(args.model):  # a robot reward is refused below with its command
        raise ValueError("--prompt is required: the text the video's frames should match")
    model = load_scorer(args.model, args.device, ImagePrompt, args.dtype)
    result = score_video(model, args.prompt, args.video, batch_size=args.batch_size, stride=args.stride,
                         max_frames=args.max_frames)
    if args.plot:
        plot_video_score(result, args.plot)
    if args.json:
        print(json_text(result.to_dict(), indent=2))
        return 0
    print(f"prompt: {result.prompt}\nframes: {len(result.scores)}" + (f" (fps {result.fps:.3g})" if result.fps else ""))
    print(f"mean {result.mean:.4f}  min {result.min:.4f}  max {result.max:.4f}  trend {result.trend:+.4g}/frame")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


# ------------------------------------------------------------------ mmreward vision train / eval
def train_main(argv: Sequence[str]) -> int:
    from mmreward.core.trainer import TrainConfig
    from mmreward.vision.train import ImageRewardTrainConfig, train_image_reward

    parser = CLIParser(prog="mmreward vision train", description="train an ImageReward-style scorer on ranked image sets")
    add_config_options(parser, ImageRewardTrainConfig)
    add_config_options(parser, TrainConfig)
    args = vars(parser.parse_args(argv))
    cfg = ImageRewardTrainConfig(**{f.name: args[f.name] for f in fields(ImageRewardTrainConfig)})
    tcfg = TrainConfig(**{f.name: args[f.name] for f in fields(TrainConfig)})
    _warn_unused_synthetic_options(cfg, parser)
    from mmreward.core.cli_config import check_output_folder
    from mmreward.vision.scoring import user_path

    if cfg.backbone not in ("conv", "clip-tiny"):  # the run's files would land in the model it starts from
        check_output_folder(tcfg.output_dir, "--out", [("--backbone", user_path(cfg.backbone))])
        from mmreward.registry import refuse_mmreward_model

        refuse_mmreward_model("--backbone", cfg.backbone, ("image_reward",),
                              "a transformers backbone folder or an image_reward folder to continue training")
    _, history = train_image_reward(cfg, tcfg)
    from mmreward.core.train import end_distributed, is_main_process

    if is_main_process():  # under torchrun: one summary, printed by the rank that wrote the model
        last = history[-1] if history else {}
        # json_text: a NaN metric (a held-out set of ties) is null, not NaN, which is not JSON
        print(json_text({k: round(v, 4) for k, v in last.items() if k in ("step", "loss") or k.startswith("eval_")}))
        print(f"model: {os.path.join(tcfg.output_dir, 'model')}")
    end_distributed()
    return 0


def _warn_unused_synthetic_options(cfg: Any, parser: argparse.ArgumentParser) -> None:
    """The synthetic-data options (``--n-train``, ``--set-size`` …) given with a ``--data`` file (or ``--n-eval``
    with ``--eval-data``) were silently ignored: a one-line warning names them (not an error: one list of
    options is commonly reused for the synthetic and the file runs). A default value cannot be told from an
    absent flag, so only values other than the default are named."""
    import warnings

    names = ("n_train", "n_eval", "set_size", "data_seed") if cfg.data != "synthetic" else \
        ("n_eval",) if cfg.eval_data else ()
    given = [f"--{n.replace('_', '-')} {getattr(cfg, n)}" for n in names if getattr(cfg, n) != parser.get_default(n)]
    if given:
        what = f"--data {cfg.data}" if cfg.data != "synthetic" else f"--eval-data {cfg.eval_data}"
        warnings.warn(f"{', '.join(given)} set{'s' if len(given) == 1 else ''} up synthetic data, but {what} is a "
                      f"file of ranked sets, used as it is: {'it is' if len(given) == 1 else 'they are'} ignored",
                      stacklevel=2)


def eval_main(argv: Sequence[str]) -> int:
    parser = CLIParser(prog="mmreward vision eval",
                       description="held-out metrics of a vision reward model on labelled rows: ranked image sets "
                                   "(image scorer), preference rows (VLM RM) or step-labelled rows (VisualPRM)")
    parser.add_argument("--model", required=True, help="an image_reward / vlm_reward / visual_prm model folder")
    parser.add_argument("--data", required=True, help="labelled rows (.json / .jsonl); paths relative to the file")
    add_split_options(parser, "--data")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per forward pass")
    add_device_option(parser)
    parser.add_argument("--dtype", default=None, help="cast the model: fp32 | bf16 | fp16 (default: as saved)")
    parser.add_argument("--out", type=output_path, help="also write the metrics (JSON) to this file")
    args = parser.parse_args(argv)
    from mmreward.core.cli_config import check_output_file
    from mmreward.vision.scoring import user_path

    args.out = user_path(args.out, output=True)
    from mmreward.core.model import check_batch_size

    check_batch_size(args.batch_size)  # before the model loads
    check_output_file(args.out, "--out", [("--data", args.data), ("--model", args.model)],
                      folders=[("--model", args.model)])
    from mmreward.vision.image_reward import ImageRewardModel
    from mmreward.vision.train import evaluate_image_reward, read_ranked_sets
    from mmreward.vision.visual_prm import VisualPRM, as_labelled, evaluate_visual_prm
    from mmreward.vision.vlm_rm import VLMRewardModel, as_pairs, evaluate_vlm_reward

    readers = {ImageRewardModel: lambda: read_ranked_sets(args.data, args.split),
               VLMRewardModel: lambda: as_pairs(read_rows(args.data, args.split), args.data),
               VisualPRM: lambda: as_labelled(read_rows(args.data, args.split), args.data)}
    evaluators = {ImageRewardModel: evaluate_image_reward, VLMRewardModel: evaluate_vlm_reward,
                  VisualPRM: evaluate_visual_prm}
    # the rows are read (and a bad one named) before the model loads, when its config.json says which it is
    from mmreward.registry import saved_model_type

    saved_type = saved_model_type(args.model)
    kind = next((c for c in readers if c.model_type == saved_type), None)
    data = readers[kind]() if kind is not None else None
    import mmreward

    model = mmreward.load(args.model, device=args.device, dtype=args.dtype)
    if type(model) not in evaluators:
        raise TypeError(f"--model {args.model} holds a {type(model).__name__}; vision eval evaluates "
                        f"{', '.join(c.__name__ for c in evaluators)}")
    if kind is not type(model):
        data = readers[type(model)]()
    # the metrics as the Python evaluators return them (not rounded: the CLI and the API give the same numbers)
    text = json_text({"model_type": model.model_type, **evaluators[type(model)](model, data, args.batch_size)})
    if args.out:
        from mmreward.core.folders import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


# ------------------------------------------------------------------ the command table
# name -> ("module:function", one-line help); modules are imported only when their command runs
SUBCOMMANDS = {
    "train": ("mmreward.vision.cli:train_main", "train an image scorer (synthetic shapes or JSONL ranked image sets)"),
    "train-vlm-rm": ("mmreward.vision.vlm_cli:train_vlm_rm_main", "train a VLM scalar reward model on preference rows"),
    "train-visual-prm": ("mmreward.vision.vlm_cli:train_visual_prm_main", "train a VisualPRM on step-labelled rows"),
    "eval": ("mmreward.vision.cli:eval_main", "held-out metrics of a vision reward model on labelled rows"),
    "colour-data": ("mmreward.vision.vlm_cli:colour_data_main",
                    "write exactly-labelled synthetic colour rows (images + JSONL) for the VLM models"),
    "vl-rewardbench": ("mmreward.vision.published.vl_rewardbench:main",
                       "accuracy of a VLM reward model on VL-RewardBench (released jsonl / parquet)"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mmreward vision <command> [options]\n\ncommands:")
        for name, (_, text) in SUBCOMMANDS.items():
            print(f"  {name:<18} {text}")
        print("\nalso: `mmreward score …` (images) and `mmreward score-video …` (videos)")
        return 0 if argv else 2
    if argv[0] in ("score", "score-video"):  # scoring is the top-level command every model shares
        raise ValueError(f"`mmreward vision {argv[0]}` is `mmreward {argv[0]}`: images, videos and VLM rows are "
                         f"scored with `mmreward score --model MODEL --data rows.jsonl` (or image files with --prompt)"
                         + (", a video's frames with `mmreward score-video`" if argv[0] == "score-video" else ""))
    if argv[0] not in SUBCOMMANDS:
        raise ValueError(f"unknown command {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}")
    from mmreward.core.cli_config import entering_subcommand

    entering_subcommand(argv[0])
    module, _, function = SUBCOMMANDS[argv[0]][0].partition(":")
    return getattr(importlib.import_module(module), function)(argv[1:])
