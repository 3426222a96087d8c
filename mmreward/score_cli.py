"""``mmreward score``: score inputs with any reward model ``mmreward.load`` opens.

    mmreward score --model runs/rm --data rows.jsonl                 # text RM / judge / PRM / VLM rows
    mmreward score --model runs/scorer --prompt "a red circle" a.png b.png   # images, ranked
    mmreward score --model metaworld-64 episode.npz clip.mp4         # robot episodes: per-frame rewards
    mmreward score --model runs/prm --data steps.jsonl --json        # PRM: per-step scores too

Rows (``--data``, JSON / JSONL / saved dataset) carry the field names of the model's input type
(:mod:`mmreward.core.inputs`): ``prompt`` + ``response`` for text RMs, ``problem`` + ``steps`` for
PRMs, ``prompt`` + ``image`` for image scorers, ``messages`` + ``images`` for VLM RMs, ``frames``
for episodes … A text row with ``chosen`` and ``rejected`` (a VLM row: ``conversations_chosen`` and
``conversations_rejected``, or a published layout's ``question`` / ``chosen`` / ``rejected``) is scored twice and the pairwise accuracy
is reported. Relative paths in the fields ``image``, ``images``, ``video``, ``frames`` and
``episode`` are read against the data file's folder, as every other ``--data`` reads them (URLs and
``data:`` strings are left alone; the printed rows show the paths as written). Files given as
arguments become the model's file input: images (with ``--prompt``), videos (with ``--prompt`` for
image scorers), episode files or videos for robot rewards; their paths are read against the working
folder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

from mmreward.core.cli_config import CLIParser, add_split_options, json_text, output_path

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _check_input_file(path: str) -> None:
    if "://" in path and not os.path.exists(path):
        raise FileNotFoundError(f"input {path!r} is a URL: mmreward score reads local files (download it first)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"input file {path!r} does not exist (positional arguments are image / video / "
                                f"episode files; text inputs go in --data rows)")


def _animated(path: str) -> bool:
    """Whether the GIF at ``path`` has more than one frame (an unreadable file is left to the model's reader)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return bool(getattr(im, "is_animated", False))
    except Exception:
        return False


def _file_inputs(model: Any, paths: Sequence[str], prompt: Optional[str]) -> list:
    from mmreward.core import inputs as I

    types = tuple(model.input_types)
    out = []
    for p in paths:
        _check_input_file(p)
        is_image = os.path.isfile(p) and p.lower().endswith(IMAGE_EXTS)
        if is_image and p.lower().endswith(".gif") and _animated(p):
            if I.VideoPrompt in types:  # scored as the video it is, as `mmreward score-video` scores it
                is_image = False
            elif I.ImagePrompt in types:
                import warnings

                warnings.warn(f"{p} is an animated GIF: this model scores images, so only its first frame is scored",
                              stacklevel=2)
        if I.ImagePrompt in types and is_image:
            out.append(I.ImagePrompt(prompt if prompt is not None else "", p))
        elif I.VideoPrompt in types and not is_image:
            out.append(I.VideoPrompt(prompt if prompt is not None else "", p))
        elif I.Episode in types:
            out.append(I.Episode(p))
        else:
            names = " / ".join(t.__name__ for t in types)
            raise ValueError(f"{p}: this model scores {names}; give its inputs as rows with --data")
    return out


def _episode_files(paths: Sequence[str]) -> list[str]:
    """For a robot reward: a folder that is not one episode's frames stands for its episodes (an episode
    folder's manifest entries, or a plain folder's .npz files, videos and frame folders), as `mmreward
    robotics score` reads it; such a folder was "frame folder … holds no images"."""
    from mmreward.robotics.data.inputs import find_episodes
    from mmreward.robotics.data.video import frame_files

    out: list[str] = []
    for p in paths:
        if os.path.isdir(p) and not frame_files(p):
            out += [source.path for source in find_episodes([p])]
        else:
            out.append(p)
    return out


def _row_inputs(model: Any, rows: list[dict], source: str) -> tuple[list, list[tuple[int, str]]]:
    """Inputs for the model and, per input, (row index, slot) — slot ``chosen`` / ``rejected`` when a
    preference row is scored twice by a single-response model."""
    from mmreward.core import inputs as I
    from mmreward.core.data import DataError

    types = tuple(model.input_types)
    if I.TextPair in types:
        from mmreward.text.data import is_preference_row, preference_inputs
    items, where = [], []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{source}: row {i} must be a JSON object")
        if I.TextPair in types and is_preference_row(row):  # read as training reads it (text.data.pair_from_row)
            items.extend(preference_inputs(row, i, source))
            where.extend([(i, "chosen"), (i, "rejected")])
            continue
        if I.Conversation in types and not I.Conversation.matches(row, given=True):
            pair = _conversation_pair(row, i, source)  # a VLM RM's own preference rows, as `vision eval` reads them
            if pair is not None:
                items.extend(pair)
                where.extend([(i, "chosen"), (i, "rejected")])
                continue
        kind = I.input_type_of(types, row)
        try:
            items.append(kind.from_record(row, f"row {i}"))
        except DataError as e:
            raise DataError(f"{source}: {e}") from None
        where.append((i, "score"))
    return items, where


def _conversation_pair(row: dict, i: int, source: str) -> Optional[list]:
    """The chosen and rejected :class:`~mmreward.core.inputs.Conversation` of a VLM preference row (mmreward's
    ``conversations_chosen`` / ``conversations_rejected`` + ``images``, or a published layout's ``question``,
    ``chosen``, ``rejected``, ``image``), or None for another row."""
    if not (("conversations_chosen" in row and "conversations_rejected" in row)
            or ("chosen" in row and "rejected" in row)):
        return None
    from mmreward.core.data import DataError
    from mmreward.core.inputs import Conversation
    from mmreward.vision.vlm_data import published_pair_row

    try:
        row = published_pair_row(row, f"row {i}")
        images = row.get("images")
        return [Conversation.from_record({"messages": row[f"conversations_{k}"], "images": images},
                                         f"row {i} ({k})") for k in ("chosen", "rejected")]
    except DataError as e:
        raise DataError(f"{source}: {e}") from None


def _to_list(t: Any) -> list:
    # the model's own values: rounding to 6 places turned a score of 3e-7 into 0.0 and made `--json` differ
    # from model.score() (the table rounds for display only)
    return [float(v) for v in t.tolist()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = CLIParser(prog="mmreward score", description="score inputs with any reward model folder")
    p.add_argument("files", nargs="*", help="image / video / episode files (instead of --data rows)")
    p.add_argument("--model", required=True, help="model folder, run folder, shipped name (metaworld-64) or hub id")
    p.add_argument("--data", help="rows to score: .json / .jsonl / .parquet / dataset folder / hub dataset id, fields of the model's input type")
    add_split_options(p, "--data")
    p.add_argument("--prompt", help="the text images / videos given as files should match")
    p.add_argument("--batch-size", type=int, default=None, help="inputs per forward (default: the model's)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--dtype", default=None, help="cast the model: fp32 | bf16 | fp16 (default: as saved)")
    p.add_argument("--parts", action=argparse.BooleanOptionalAction, default=None,
                   help="print per-step / per-frame scores (default: on for steps, episodes and videos)")
    p.add_argument("--json", action="store_true", help="print JSON lines (row fields + scores) instead of a table")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar on stderr (default: when stderr is a terminal)")
    p.add_argument("--out", type=output_path, help="write the JSON lines (--json's output) to this file instead of printing them; "
                                 "written whole when scoring ends")
    args = p.parse_args(argv)
    if bool(args.files) == bool(args.data):
        p.error("give either --data ROWS or input files, not both / neither")

    # "~/rows.jsonl" quoted (or from a config / script) is the home folder's, as the shell would read it
    args.data = os.path.expanduser(args.data) if args.data else args.data
    args.files = [os.path.expanduser(f) for f in args.files]
    if args.batch_size is not None and args.batch_size < 1:
        p.error(f"--batch-size must be an integer >= 1, got {args.batch_size}")
    if args.split and not args.data:
        p.error("--split chooses a split of --data rows; input files have none")
    if args.out:
        args.out = os.path.expanduser(args.out)
    if args.data and args.prompt is not None:
        p.error("--prompt is the text that image / video files given as arguments should match; rows of --data "
                "carry their own 'prompt' field")
    import mmreward
    from mmreward.core import inputs as I
    from mmreward.core.cli_config import check_output_file
    from mmreward.core.data import read_records, resolve_media_paths

    # an --out that is one of the inputs (or a folder) is refused before anything is read or scored
    check_output_file(args.out, "--out", [("--data", args.data), ("input", args.files)],
                      folders=[("--model", args.model)])

    # the inputs are read and checked before the model loads: a typo in a file name costs nothing
    if args.data:
        if args.split:  # a split may also be the rows' own field 'split' (HelpSteer2), as training reads it
            from mmreward.text.data import _read_pair_rows

            rows = _read_pair_rows(args.data, args.split, f"{args.data}: ")
        else:
            rows = read_records(args.data)
        if not rows:
            raise ValueError(f"{args.data} holds no rows" + (f" in split {args.split!r}" if args.split else ""))
    else:
        for f in args.files:
            _check_input_file(f)
    model = mmreward.load(args.model, device=args.device, dtype=args.dtype)
    if args.data:
        items, where = _row_inputs(model, resolve_media_paths(rows, args.data), args.data)
    else:
        if args.prompt is not None and not {I.ImagePrompt, I.VideoPrompt} & set(model.input_types):
            raise ValueError(f"--prompt is for image scorers; {type(model).__name__} scores "
                             f"{' / '.join(t.__name__ for t in model.input_types)}, which take no prompt")
        if I.Episode in model.input_types:
            args.files = _episode_files(args.files)
        rows = [{"file": f} for f in args.files]
        items, where = _file_inputs(model, args.files, args.prompt), [(i, "score") for i in range(len(args.files))]

    # per-part scores are shown by default where the parts are the point (steps, frames)
    natural_parts = type(model).has_parts() and any(isinstance(it, I.PART_INPUTS) for it in items)
    parts = natural_parts if args.parts is None else args.parts
    if parts and not type(model).has_parts():
        raise ValueError(f"{type(model).__name__} scores whole inputs: it has no per-step or per-frame scores")
    import torch

    from mmreward.core.cli_config import error_at_row

    row_name = (lambda i: f"{args.data}: row {i}") if args.data else (lambda i: args.files[i])
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        with torch.no_grad():
            part_scores = _scored(model, items, args.batch_size, "score_parts", progress) if parts else None
            scores = model.aggregate_parts(part_scores) if part_scores is not None else None
            if scores is None:
                scores = _scored(model, items, args.batch_size, "score", progress)
    except (ValueError, TypeError) as e:  # DataError too: "input K" is the K-th scored input; name the file's
        # row or the file (a preference row is two inputs)
        raise error_at_row(e, where, row_name, "score") from None
    out: list[dict] = [dict() for _ in rows]
    for k, ((i, slot), s) in enumerate(zip(where, scores.tolist())):
        out[i][slot if slot == "score" else f"score_{slot}"] = float(s)  # unrounded: the pairwise accuracy too
        if part_scores is not None:
            out[i]["parts" if slot == "score" else f"parts_{slot}"] = _to_list(part_scores[k])
    _print(args, rows, out)
    return 0


PROGRESS_CHUNK_BATCHES = 16  # batches per progress update


def _scored(model: Any, items: list, batch_size: Optional[int], method: str, progress: bool) -> Any:
    """``model.score`` / ``model.score_parts`` of ``items``; with ``progress``, a bar on stderr. A model whose
    ``score`` has its own bar (text RMs: it sorts all inputs by length first) gets one call; others are called
    on consecutive chunks of whole batches (an error's "input K" counted in ``items``). Models whose batch
    counts something inside one input (episode rewards) are scored in one call, as without a bar."""
    import inspect

    import torch

    call = getattr(model, method)
    if not progress or len(items) <= 1:
        return call(items, batch_size=batch_size)
    if "progress" in inspect.signature(call).parameters:
        return call(items, batch_size=batch_size, progress=True)
    if not getattr(model, "batch_size_counts_inputs", True):
        return call(items, batch_size=batch_size)
    from tqdm.auto import tqdm

    chunk = (batch_size or model.default_batch_size) * PROGRESS_CHUNK_BATCHES
    out: list = []
    with tqdm(total=len(items), desc="scoring", unit="input", dynamic_ncols=True, file=sys.stderr) as bar:
        for start in range(0, len(items), chunk):
            try:
                got = call(items[start:start + chunk], batch_size=batch_size)
            except (ValueError, TypeError) as e:
                raise _shifted(e, start) from None
            out += list(got) if method == "score_parts" else [got]
            bar.update(min(chunk, len(items) - start))
    return out if method == "score_parts" else torch.cat(out)


def _shifted(error: Exception, start: int) -> Exception:
    """``error`` with its "input K" (counted in one chunk) counted from the chunk's ``start``."""
    from mmreward.core.cli_config import shift_input_index

    try:
        return type(error)(shift_input_index(str(error), start))
    except TypeError:  # an exception class with another signature
        return error


def _json_lines(rows: list[dict], out: list[dict]) -> str:
    return "".join(json_text({**r, **o}, ensure_ascii=False, default=str) + "\n" for r, o in zip(rows, out))


def _print(args: Any, rows: list[dict], out: list[dict]) -> None:
    pairs = [o for o in out if "score_chosen" in o]
    ranking = args.files and args.prompt is not None and not any("parts" in o for o in out)
    if args.out:
        from mmreward.core.folders import atomic_write_text

        atomic_write_text(args.out, _ranking_json(args, out) + "\n" if ranking else _json_lines(rows, out))
        print(f"mmreward score: {len(out)} {'files' if args.files else 'rows'} scored, written to {args.out}",
              file=sys.stderr)
    elif ranking:
        _print_ranking(args, out)
        return
    elif args.json:
        print(_json_lines(rows, out), end="")
    else:
        for i, (r, o) in enumerate(zip(rows, out)):
            shown = "  ".join(f"{k}={v:.4f}" for k, v in o.items() if not k.startswith("parts"))
            extra = "  ".join(f"{k}=[{', '.join(f'{x:.3f}' for x in v[:12])}{', …' if len(v) > 12 else ''}]"
                              for k, v in o.items() if k.startswith("parts"))
            label = r.get("file") or _summary(r)
            print(f"{i:>5}  {shown}  {extra}  {label}".rstrip())
    if pairs:
        from mmreward.text.cli import pairwise_accuracy_line  # NaN pairs left out and counted, not read as wrong

        print(pairwise_accuracy_line(pairs), file=sys.stderr if args.json or args.out else sys.stdout)


def _ranking(args: Any, out: list[dict]) -> list[dict]:
    """Files scored against one prompt, in argument order, each with its rank (1 = best)."""
    scores = [o["score"] for o in out]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    rank = {i: r + 1 for r, i in enumerate(order)}
    return [{"image": f, "score": scores[i], "rank": rank[i]} for i, f in enumerate(args.files)]


def _ranking_json(args: Any, out: list[dict]) -> str:
    return json_text({"prompt": args.prompt, "results": _ranking(args, out)}, indent=2)


def _print_ranking(args: Any, out: list[dict]) -> None:
    """Files scored against one prompt: ranked best first."""
    if args.json:
        print(_ranking_json(args, out))
        return
    width = max(len(f) for f in args.files)
    print(f"prompt: {args.prompt}")
    print(f"{'rank':>4}  {'score':>9}  image")
    for r in sorted(_ranking(args, out), key=lambda r: r["rank"]):
        print(f"{r['rank']:>4}  {r['score']:>9.4f}  {r['image']:<{width}}")


def _summary(row: dict) -> str:
    for key in ("prompt", "problem", "question", "messages", "text", "image", "video", "frames", "episode"):
        if key in row:
            v = row[key]
            text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
            return text.replace("\n", " ")[:60]
    return ""


__all__ = ["main"]
