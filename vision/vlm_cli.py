"""Command line for the vision-language reward models: ``mmreward vision train-vlm-rm | train-visual-prm |
score-vlm | colour-data``.

    mmreward vision colour-data --out data/colours --kind preference --n 256          # PNGs + rows.jsonl
    mmreward vision train-vlm-rm --data data/colours/rows.jsonl --eval-data held.jsonl \\
        --backbone path/to/qwen2-vl --output-dir runs/vlm_rm --max-steps 500 --lr 1e-5
    mmreward vision train-visual-prm --data steps.jsonl --backbone path/to/qwen2-vl --output-dir runs/vprm
    mmreward vision score-vlm --model runs/vlm_rm/model --data rows.jsonl [--json]

Rows are JSONL (see :mod:`mmreward.vision.vlm_rm` / :mod:`mmreward.vision.visual_prm` for the keys);
image paths are read relative to the JSONL file's folder. ``--data synthetic`` (and ``--backbone tiny``)
train on exactly-labelled colour rows with a tiny Qwen2-VL built from a config, so the whole path runs
offline in a minute. The training options are generated from the model config and
:class:`~mmreward.core.trainer.TrainConfig` and call :func:`~mmreward.vision.vlm_rm.train_vlm_reward` /
:func:`~mmreward.vision.visual_prm.train_visual_prm`, the functions a Python user calls; the trained
model is saved to ``<output-dir>/model``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from mmreward.core.cli_config import CLIParser, add_config_options, config_from_args, print_training_summary

KINDS = {"vlm-rm": "preference", "visual-prm": "steps"}


def read_rows(path: str, what: str) -> list[dict]:
    """JSONL / JSON rows with image paths made absolute against the file's folder."""
    from mmreward.core.data import read_records

    rows = read_records(path)
    base = os.path.dirname(os.path.abspath(path))
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{what} {path}: row {i} is not an object")
        for key in ("images", "image"):
            if key not in row:
                continue
            imgs = row[key]
            resolve = lambda p: os.path.join(base, p) if isinstance(p, str) and not os.path.isabs(p) else p  # noqa: E731
            row[key] = [resolve(p) for p in imgs] if isinstance(imgs, list) else resolve(imgs)
    if not rows:
        raise ValueError(f"{what} {path} holds no rows")
    return rows


def _synthetic(kind: str, n: int, seed: int) -> list[dict]:
    from mmreward.vision import vlm_data as D

    return D.colour_preference_rows(n, seed=seed) if kind == "preference" else D.colour_step_rows(n, seed=seed)


def _model_type(folder: str) -> Optional[str]:
    """``model_type`` of an mmreward VLM model folder, None for any other folder."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    return cfg.get("model_type") if isinstance(cfg, dict) and "backbone_config" in cfg else None


def _backbone(spec: str):
    """``tiny`` → (tiny Qwen2-VL config, its processor); a train-vlm-rm / train-visual-prm model folder →
    (its fine-tuned backbone, its processor); a transformers VLM folder → (folder, its processor)."""
    from mmreward.vision import vlm_data as D

    if spec == "tiny":
        proc = D.tiny_processor(D.COLOUR_WORDS)
        return D.tiny_qwen2vl_config(proc), proc
    if not os.path.isdir(spec):
        raise ValueError(f"--backbone {spec!r} is neither 'tiny' nor a local model folder")
    if _model_type(spec) is not None:
        model = _load_any(spec, "--backbone")
        return model.backbone, model.processor
    return spec, D.load_processor(spec)


def _train(argv: Sequence[str], model_kind: str) -> int:
    from mmreward.core.trainer import TrainConfig

    if model_kind == "vlm-rm":
        from mmreward.vision.vlm_rm import VLMRewardConfig as Config, VLMRewardModel as Model
        from mmreward.vision.vlm_rm import evaluate_pairwise as evaluate, train_vlm_reward as train
    else:
        from mmreward.vision.visual_prm import VisualPRMConfig as Config, VisualPRM as Model
        from mmreward.vision.visual_prm import evaluate_steps as evaluate, train_visual_prm as train
    prog = f"mmreward vision train-{model_kind}"
    parser = CLIParser(prog=prog, description=f"train a {Model.__name__} on JSONL rows")
    parser.add_argument("--data", required=True, help="training rows (.jsonl / .json) or 'synthetic' (colour rows)")
    parser.add_argument("--eval-data", default=None, help="held-out rows (default with synthetic: 64 fresh rows)")
    parser.add_argument("--n-train", type=int, default=256, help="rows of synthetic data")
    parser.add_argument("--backbone", default="tiny",
                        help="local transformers VLM folder (with its processor), a train-vlm-rm / train-visual-prm "
                             "model folder (starts from its fine-tuned backbone), or 'tiny' (a small Qwen2-VL)")
    add_config_options(parser.add_argument_group("model"), Config)
    add_config_options(parser.add_argument_group("training"), TrainConfig)
    ns = parser.parse_args(argv)
    args = vars(ns)
    try:
        kind = KINDS[model_kind]
        synthetic = args["data"] == "synthetic"
        rows = _synthetic(kind, args["n_train"], args["seed"]) if synthetic else read_rows(args["data"], "--data")
        if args["eval_data"]:
            eval_rows = read_rows(args["eval_data"], "--eval-data")
        else:
            eval_rows = _synthetic(kind, 64, args["seed"] + 1) if synthetic else None
        cfg, tcfg = config_from_args(Config, ns), config_from_args(TrainConfig, ns)
        backbone, processor = _backbone(args["backbone"])
        import torch

        torch.manual_seed(tcfg.seed)  # the head's initial weights
        model = Model(cfg, backbone, processor)
        before = evaluate(model, eval_rows) if eval_rows else None
        history = train(model, rows, tcfg, eval_rows=eval_rows)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    folder = os.path.join(tcfg.output_dir, "model")
    model.save_pretrained(folder)
    print_training_summary(history, before, folder)
    return 0


def _load_any(path: str, what: str = "--model"):
    """A saved VLM reward model or VisualPRM, whichever the folder holds; ValueError otherwise."""
    from mmreward.core.checkpoint import CheckpointError
    from mmreward.vision.visual_prm import VisualPRM
    from mmreward.vision.vlm_rm import VLMRewardModel

    model_type = _model_type(path)
    cls = {VLMRewardModel.model_type: VLMRewardModel, VisualPRM.model_type: VisualPRM}.get(model_type)
    if cls is None:
        raise ValueError(f"{what} {path} is not a VLM reward model or VisualPRM folder (no readable config.json "
                         f"with model_type '{VLMRewardModel.model_type}' or '{VisualPRM.model_type}')")
    try:
        return cls.from_pretrained(path)
    except CheckpointError as e:
        raise ValueError(f"{what}: cannot load {path}: {e}") from None


def _score(argv: Sequence[str]) -> int:
    import torch

    parser = CLIParser(prog="mmreward vision score-vlm",
                                     description="score JSONL rows with a trained VLM reward model or VisualPRM")
    parser.add_argument("--model", required=True, help="a train-vlm-rm / train-visual-prm model folder")
    parser.add_argument("--data", required=True,
                        help="rows: preference rows (chosen / rejected), or rows with 'conversation' (VLM RM) / "
                             "'question' + 'steps' (VisualPRM)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args(argv)
    from mmreward.vision import vlm_data as D
    from mmreward.vision.visual_prm import VisualPRM

    try:
        model = _load_any(args.model)
        rows = read_rows(args.data, "--data")
        images = [D.row_images(r, i) for i, r in enumerate(rows)]
        with torch.no_grad():
            if isinstance(model, VisualPRM):
                steps = model.step_scores(rows)
                results = [{"row": i, "score": float(model.score([r])[0]), "steps": [round(float(s), 4) for s in st]}
                           for i, (r, st) in enumerate(zip(rows, steps))]
            elif all("conversations_chosen" in r for r in rows):
                chosen = model.score(images, [r["conversations_chosen"] for r in rows])
                rejected = model.score(images, [r["conversations_rejected"] for r in rows])
                results = [{"row": i, "chosen": float(c), "rejected": float(rj), "margin": float(c - rj)}
                           for i, (c, rj) in enumerate(zip(chosen, rejected))]
            else:
                missing = [i for i, r in enumerate(rows) if "conversation" not in r]
                if missing:
                    raise ValueError(f"row {missing[0]}: needs 'conversation' or chosen / rejected conversations")
                scores = model.score(images, [r["conversation"] for r in rows])
                results = [{"row": i, "score": float(s)} for i, s in enumerate(scores)]
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"mmreward vision score-vlm: {e}", file=sys.stderr)
        return 2
    if args.json:
        for r in results:
            print(json.dumps(r))
        return 0
    keys = [k for k in results[0] if k != "row"]
    print("row  " + "  ".join(f"{k:>10}" for k in keys))
    for r in results:
        print(f"{r['row']:>3}  " + "  ".join(f"{r[k]:>10.4f}" if isinstance(r[k], float) else f"{str(r[k]):>10}"
                                           for k in keys))
    if "margin" in keys:
        acc = sum(r["margin"] > 0 for r in results) / len(results)
        print(f"chosen ranked first in {acc:.1%} of {len(results)} rows")
    return 0


def _colour_data(argv: Sequence[str]) -> int:
    parser = CLIParser(prog="mmreward vision colour-data",
                                     description="write exactly-labelled colour rows (PNG images + rows.jsonl)")
    parser.add_argument("--out", required=True, help="folder for the images and rows.jsonl")
    parser.add_argument("--kind", choices=("preference", "steps"), default="preference",
                        help="preference rows (VLM RM) or step-labelled rows (VisualPRM)")
    parser.add_argument("--n", type=int, default=64, help="number of rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from PIL import Image

    from mmreward.core.checkpoint import atomic_write_text

    if args.n < 1:
        print("mmreward vision colour-data: --n must be >= 1", file=sys.stderr)
        return 2
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    lines = []
    for i, row in enumerate(_synthetic(args.kind, args.n, args.seed)):
        name = f"images/{i:05d}.png"
        Image.fromarray(row.pop("images")[0]).save(os.path.join(args.out, name))
        lines.append(json.dumps({"images": [name], **row}))
    atomic_write_text(os.path.join(args.out, "rows.jsonl"), "\n".join(lines) + "\n")
    print(f"{args.n} {args.kind} rows: {os.path.join(args.out, 'rows.jsonl')}")
    return 0


SUBCOMMANDS = {
    "train-vlm-rm": (lambda a: _train(a, "vlm-rm"), "train a VLM scalar reward model on preference rows"),
    "train-visual-prm": (lambda a: _train(a, "visual-prm"), "train a VisualPRM on step-labelled rows"),
    "score-vlm": (_score, "score rows with a trained VLM reward model or VisualPRM"),
    "colour-data": (_colour_data, "write exactly-labelled synthetic colour rows (images + JSONL)"),
}
