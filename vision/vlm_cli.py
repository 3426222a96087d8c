"""``mmreward vision train-vlm-rm | train-visual-prm | colour-data``: the VLM reward model commands.

    mmreward vision colour-data --out data/colours --kind preference --n 256 --seed 0   # PNGs + rows.jsonl
    mmreward vision train-vlm-rm --data data/colours/rows.jsonl --eval-data held/rows.jsonl \\
        --backbone path/to/qwen2-vl --out runs/vlm_rm --max-steps 500 --lr 1e-5 --device cuda
    mmreward vision train-visual-prm --data steps.jsonl --backbone runs/vlm_rm/model --out runs/vprm

Rows are JSON / JSONL (preference rows for :mod:`~mmreward.vision.vlm_rm`, step-labelled rows for
:mod:`~mmreward.vision.visual_prm`); image paths are read relative to the file's folder.
``--data synthetic`` (and ``--backbone tiny``) train on exactly-labelled colour rows with a tiny
Qwen2-VL built from a config, so the whole path runs offline in a minute. The options are generated
from the model config and :class:`~mmreward.vision.vlm_base.VLMTrainConfig` (TrainConfig + LoRA / checkpointing) (``--out``, ``--seed``,
``--batch-size`` …); the commands seed everything from ``--seed`` before building the model and call
:func:`~mmreward.vision.vlm_rm.train_vlm_reward` / :func:`~mmreward.vision.visual_prm.train_visual_prm`,
the functions a Python user calls. The trained model is saved to ``<out>/model``; score it with
``mmreward score --model <out>/model --data rows.jsonl`` or evaluate it with ``mmreward vision eval``.
An ``--out`` holding a run is resumed only with the same rows, objective and processor (chat template,
tokenizer, image size / max pixels; else refused, naming what differs, before any evaluation); a resumed run prints its final held-out figures without a "before".
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

from mmreward.core.cli_config import (CLIParser, add_config_options, add_split_options, check_split_sources,
                                      config_from_args, output_path, print_training_summary)

from .cli import add_device_option, read_rows

VLM_MODEL_TYPES = ("vlm_reward", "visual_prm")


def _synthetic(kind: str, n: int, seed: int) -> list[dict]:
    from mmreward.vision import synthetic as S

    return S.colour_preference_rows(n, seed=seed) if kind == "preference" else S.colour_step_rows(n, seed=seed)


def _backbone(spec: str) -> tuple[Any, Any]:
    """``tiny`` → (tiny Qwen2-VL config, its processor); a train-vlm-rm / train-visual-prm model folder →
    (its fine-tuned backbone, its processor); a transformers VLM folder → (folder, its processor)."""
    from mmreward.vision import vlm_data as D
    from mmreward.vision.scoring import model_folder

    if spec == "tiny":
        from mmreward.vision.synthetic import COLOUR_WORDS
        from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config

        proc = tiny_processor(COLOUR_WORDS)
        return tiny_qwen2vl_config(proc), proc
    spec = model_folder(spec)  # "~/…" and a train-vlm-rm run folder (its model/), as mmreward.load reads them
    if not os.path.isdir(spec):
        raise FileNotFoundError(f"--backbone {spec!r} is neither 'tiny' nor a local model folder")
    from mmreward.registry import refuse_mmreward_model

    refuse_mmreward_model("--backbone", spec, VLM_MODEL_TYPES,
                          "'tiny', a transformers VLM folder or a train-vlm-rm / train-visual-prm model folder")
    if os.path.isfile(os.path.join(spec, "config.json")):
        from mmreward.core.model import read_config

        if read_config(spec).get("model_type") in VLM_MODEL_TYPES:
            import mmreward

            model = mmreward.load(spec)
            return model.backbone, model.processor
    else:  # a data or processor-only folder: transformers would only say it finds no processing class there
        raise ValueError(f"--backbone {spec!r} has no config.json: give 'tiny', a transformers VLM folder (config.json, "
                         "weights and processor files) or a train-vlm-rm / train-visual-prm model folder")
    try:
        return spec, D.load_processor(spec)
    except (OSError, ValueError, KeyError) as e:  # a model folder without (or with broken) processor files
        raise ValueError(f"--backbone {spec!r}: cannot load its processor (tokenizer, image processor, chat "
                         f"template files): {e}") from e


def _train(argv: Sequence[str], kind: str) -> int:
    from mmreward.core.device import resolve_device
    from mmreward.core.train import seed_everything
    from mmreward.vision.vlm_base import VLMTrainConfig as TrainConfig

    if kind == "preference":
        from mmreward.vision.vlm_rm import VLMRewardConfig as Config, VLMRewardModel as Model
        from mmreward.vision.vlm_rm import as_pairs as as_examples, evaluate_vlm_reward as evaluate
        from mmreward.vision.vlm_rm import check_pairs_fit as check_fit, train_vlm_reward as train
        prog = "mmreward vision train-vlm-rm"
    else:
        from mmreward.vision.visual_prm import VisualPRMConfig as Config, VisualPRM as Model
        from mmreward.vision.visual_prm import as_labelled as as_examples, evaluate_visual_prm as evaluate
        from mmreward.vision.visual_prm import check_steps_fit as check_fit, train_visual_prm as train
        prog = "mmreward vision train-visual-prm"
    parser = CLIParser(prog=prog, description=f"train a {Model.__name__} on {kind} rows")
    parser.add_argument("--data", required=True, help=f"training {kind} rows (.jsonl / .json) or 'synthetic' (colour rows)")
    parser.add_argument("--eval-data", default=None, help="held-out rows (default with synthetic: 64 fresh rows)")
    add_split_options(parser, "--data", "--eval-data")
    parser.add_argument("--n-train", type=int, default=256, help="rows of synthetic data")
    parser.add_argument("--backbone", default="tiny",
                        help="local transformers VLM folder (with its processor), a train-vlm-rm / train-visual-prm "
                             "model folder (starts from its fine-tuned backbone), or 'tiny' (a small Qwen2-VL)")
    add_device_option(parser)
    add_config_options(parser.add_argument_group("model"), Config)
    add_config_options(parser.add_argument_group("training"), TrainConfig)
    ns = parser.parse_args(argv)
    if ns.n_train < 1:
        raise ValueError(f"--n-train must be >= 1, got {ns.n_train}")
    if ns.data != "synthetic" and ns.n_train != parser.get_default("n_train"):  # it was silently ignored
        raise ValueError(f"--n-train {ns.n_train} is the number of synthetic rows; --data {ns.data} is a file, "
                         "whose rows are all used: drop --n-train, or use --data synthetic")
    if ns.split and ns.data == "synthetic":  # the generated rows have no splits: --split would be ignored
        raise ValueError(f"--split {ns.split} chooses a split of a --data file; --data synthetic has none")
    check_split_sources(ns, "--eval-data")
    device = resolve_device(ns.device)
    cfg, tcfg = config_from_args(Config, ns), config_from_args(TrainConfig, ns)
    if ns.backbone != "tiny":  # the run's files would land in the model folder it starts from
        from mmreward.core.cli_config import check_output_folder
        from mmreward.vision.scoring import user_path

        check_output_folder(tcfg.output_dir, "--out", [("--backbone", user_path(ns.backbone))])
    synthetic = ns.data == "synthetic"
    raw = _synthetic(kind, ns.n_train, tcfg.seed) if synthetic else read_rows(ns.data, ns.split)
    rows = as_examples(raw, ns.data)
    if ns.eval_data:
        raw_eval = read_rows(ns.eval_data, ns.eval_split)
        eval_rows = as_examples(raw_eval, ns.eval_data)
        if not synthetic:
            _warn_shared_rows(raw, raw_eval, ns.eval_data)
    else:
        eval_rows = as_examples(_synthetic(kind, 64, tcfg.seed + 1), "synthetic eval rows") if synthetic else None
    backbone, processor = _backbone(ns.backbone)
    seed_everything(tcfg.seed)  # the head's initial weights: the same command gives the same model
    model = Model(cfg, backbone, processor).to(device)
    # the held-out figures before training are those of this fresh model only when the run starts at step 0:
    # a folder holding a run is resumed from its snapshot (the fresh model's figures would not be the run's
    # "before") or refused by the Trainer, which must happen before any evaluation is spent
    from mmreward.core.checkpoint import run_files_present
    from mmreward.core.trainer import RUN_FILES

    out = tcfg.output_dir
    fresh = not (os.path.lexists(out) and not os.path.isdir(out)) and (tcfg.overwrite or not run_files_present(out, RUN_FILES))
    if fresh:  # every row is encoded once before the held-out figures are spent (train() skips them then):
        check_fit(model, rows, eval_rows, tcfg.batch_size)  # one past the context is named before any step
    before = evaluate(model, eval_rows) if eval_rows and fresh else None
    history = train(model, rows, tcfg, eval_rows=eval_rows)  # the Trainer saves the final model to <out>/model
    # a resumed run: its final held-out figures, without a "before"
    print_training_summary(history, before if before is not None or not eval_rows else {},
                           os.path.join(tcfg.output_dir, "model"))
    return 0


def _warn_shared_rows(train: list, held: list, what: str) -> None:
    """One warning when held-out rows are also training rows (the same fields, image paths resolved against
    their files: e.g. the training file given again as --eval-data): the held-out figures would then measure
    memorisation, not how the model generalises."""
    import hashlib

    from mmreward.core.data import MEDIA_PATH_FIELDS

    def key(row: Any) -> str:
        if isinstance(row, dict):  # "held/../red.png" and "red.png" beside the training file are one image
            row = {k: ([_real(x) for x in v] if isinstance(v, list) else _real(v)) if k in MEDIA_PATH_FIELDS else v
                   for k, v in row.items()}
        # a digest: rows of a parquet file hold their images as data: URIs, too large to keep twice
        try:
            text = json.dumps(row, sort_keys=True, default=_plain)
        except (TypeError, ValueError):  # keys of mixed types (rows built in Python): compared as written
            text = repr(row)
        return hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()

    seen = {key(r) for r in train}
    shared = [i for i, r in enumerate(held) if key(r) in seen]
    if shared:
        import warnings

        warnings.warn(f"--eval-data {what}: {len(shared)} of its {len(held)} rows are also training rows (first: row "
                      f"{shared[0]}): the held-out figures count them as unseen, so they overstate how the model "
                      "generalises", stacklevel=3)


def _plain(value: Any) -> Any:
    """A numpy array / scalar as a list / number (its str() elides the middle of a long array), else its str()."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _real(path: Any) -> Any:
    return os.path.normpath(path) if isinstance(path, str) and os.path.isabs(path) else path


def train_vlm_rm_main(argv: Sequence[str]) -> int:
    return _train(argv, "preference")


def train_visual_prm_main(argv: Sequence[str]) -> int:
    return _train(argv, "steps")


def colour_data_main(argv: Sequence[str]) -> int:
    parser = CLIParser(prog="mmreward vision colour-data",
                       description="write exactly-labelled colour rows (PNG images + rows.jsonl)")
    parser.add_argument("--out", required=True, type=output_path, help="folder for the images and rows.jsonl")
    parser.add_argument("--kind", choices=("preference", "steps"), default="preference",
                        help="preference rows (VLM RM) or step-labelled rows (VisualPRM)")
    parser.add_argument("--n", type=int, default=64, help="number of rows")
    parser.add_argument("--seed", type=int, default=0, help="generator seed: the same seed writes the same rows")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the rows.jsonl and images an --out folder already holds")
    args = parser.parse_args(argv)
    from PIL import Image

    from mmreward.core.folders import atomic_write_text
    from mmreward.vision.scoring import user_path

    args.out = user_path(args.out, output=True)  # "~/colours": the home folder's, not a "./~" folder
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.seed < 0:  # numpy's generator said only "expected non-negative integer", naming no flag
        raise ValueError(f"--seed must be an integer >= 0, got {args.seed}")
    from mmreward.core.cli_config import check_output_folder

    check_output_folder(args.out, "--out")
    rows = _synthetic(args.kind, args.n, args.seed)
    images = [row.pop("images")[0] for row in rows]
    names = [f"images/{i:05d}.png" for i in range(len(rows))]
    text = "\n".join(json.dumps({"images": [name], **row}) for name, row in zip(names, rows)) + "\n"
    rows_path, image_dir = os.path.join(args.out, "rows.jsonl"), os.path.join(args.out, "images")
    if os.path.lexists(rows_path) and not os.path.isfile(rows_path):
        raise ValueError(f"--out {args.out}: {rows_path} exists and is not a file")
    had_rows = os.path.exists(rows_path)
    numbered = sorted(f for f in (os.listdir(image_dir) if os.path.isdir(image_dir) else [])
                      if f.endswith(".png") and f[:-4].isdigit() and len(f) == 9)
    if numbered and not had_rows and not args.overwrite:
        # images no rows.jsonl of this command names: the user's own files, which the run would replace or delete
        raise ValueError(f"--out {args.out}: {os.path.join(image_dir, numbered[0])} and its images/ folder hold "
                         "images no colour-data rows.jsonl names (your files?): name another folder, or add "
                         "--overwrite to replace them")
    if had_rows:
        with open(rows_path, encoding="utf-8", errors="replace") as f:
            same = f.read() == text  # the same command again: the same files, rewritten
        if not same and not args.overwrite:
            # writing the images would change those the folder's rows.jsonl names (its labels would then
            # describe other pixels) and lose the rows written before
            raise ValueError(f"--out {args.out} already holds a rows.jsonl of other rows (another colour-data run, or "
                             "your data): name another folder, or add --overwrite to replace it and its images")
        os.remove(rows_path)  # first: an interrupted rewrite leaves no rows naming changed images
    keep = {os.path.basename(n) for n in names}
    for f in numbered:  # numbered images of an earlier, larger set (this command's, or --overwrite): named by no row now
        if f not in keep:
            os.remove(os.path.join(image_dir, f))
    os.makedirs(image_dir, exist_ok=True)
    for name, img in zip(names, images):
        Image.fromarray(img).save(os.path.join(args.out, name))
    # the rows are written last and atomically: a rows.jsonl never names an image that is not there
    atomic_write_text(rows_path, text)
    print(f"{args.n} {args.kind} rows: {os.path.join(args.out, 'rows.jsonl')}")
    return 0
