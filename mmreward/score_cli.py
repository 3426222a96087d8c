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

Large files are read, checked (every row, before any is scored), scored and written a chunk of rows at a time
(:data:`CHUNK_ROWS`), so memory does not grow with the file; ``--resume`` keeps the rows scored so far in
``OUT.partial`` and continues a stopped run from there.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import sys
import time
from typing import Any, Callable, Iterator, Optional, Sequence

from mmreward.core.cli_config import CLIParser, add_split_options, json_text, output_path

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _check_input_file(path: str) -> None:
    if "://" in path and not os.path.exists(path):
        raise FileNotFoundError(f"input {path!r} is a URL: mmreward score reads local files (download it first)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"input file {path!r} does not exist (positional arguments are image / video / "
                                f"episode files; text inputs go in --data rows)")


def _animated(path: str) -> bool:
    """Whether the image at ``path`` (GIF, WebP, APNG …) has more than one frame (an unreadable file is left to the
    model's reader)."""
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
        if is_image and p.lower().endswith((".gif", ".webp", ".png")) and _animated(p):
            if I.VideoPrompt in types:  # scored as the video it is, as `mmreward score-video` scores it
                is_image = False
            elif I.ImagePrompt in types:
                import warnings

                warnings.warn(f"{p} is an animated image: this model scores images, so only its first frame is "
                              "scored", stacklevel=2)
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


def _row_inputs(model: Any, rows: list[dict], source: str, first: int = 0,
                origin: Optional[Callable[[int], Optional[tuple[str, int]]]] = None) -> tuple[list, list[tuple[int, str]]]:
    """Inputs for the model and, per input, (row index in ``rows``, slot) — slot ``chosen`` / ``rejected`` when a
    preference row is scored twice by a single-response model. ``first``: the number of ``rows[0]`` among all rows
    (rows read a chunk at a time); ``origin(i)``: ``(file, row in it)`` of row ``i`` read from several files (a
    folder of shards), which errors name instead of ``source`` and ``i``."""
    from mmreward.core import inputs as I
    from mmreward.core.data import DataError

    types = tuple(model.input_types)
    if I.TextPair in types:
        from mmreward.text.data import is_preference_row, preference_inputs
    items, where = [], []
    for j, row in enumerate(rows):
        file, i = (origin(first + j) if origin else None) or (source, first + j)
        if not isinstance(row, dict):
            raise DataError(f"{file}: row {i} must be a JSON object")
        if I.TextPair in types and is_preference_row(row):  # read as training reads it (text.data.pair_from_row)
            items.extend(preference_inputs(row, i, file))
            where.extend([(j, "chosen"), (j, "rejected")])
            continue
        if I.Conversation in types and not I.Conversation.matches(row, given=True):
            pair = _conversation_pair(row, i, file)  # a VLM RM's own preference rows, as `vision eval` reads them
            if pair is not None:
                items.extend(pair)
                where.extend([(j, "chosen"), (j, "rejected")])
                continue
        kind = I.input_type_of(types, row)
        try:
            items.append(kind.from_record(row, f"row {i}"))
        except DataError as e:
            raise DataError(f"{file}: {e}") from None
        where.append((j, "score"))
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
    p.add_argument("--data", help="rows to score: .json / .jsonl / .parquet / dataset folder / hub dataset id, fields "
                                  "of the model's input type; - reads JSON lines from stdin")
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
    p.add_argument("--out", type=output_path, help="write the JSON lines (--json's output) to this file instead of printing them "
                                 "(.gz: gzipped; - : stdout); the file appears whole when scoring ends")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows scored so far in OUT.partial, and continue the scoring a run that stopped left "
                        "there (needs --out and --data)")
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
    if args.split and args.data == "-":
        p.error("--split chooses a split of a data source that has several; JSON lines on stdin have none")
    if args.resume and (not args.out or args.out == "-" or not args.data):
        p.error("--resume continues a file of scored rows: it needs --data rows and an --out file")
    if args.out == "-":  # the usual name of stdout: what --json prints (a file named "-" was written)
        args.out, args.json = None, True
    if args.out:
        args.out = os.path.expanduser(args.out)
        kind = _other_format(args.out)
        if kind:  # JSON lines under a .parquet / .csv name: a reader of that format fails on it, or misreads it
            p.error(f"--out {args.out!r} names a {kind} file, but --out writes JSON lines (--json's output): name it "
                    f".jsonl (or .jsonl.gz, gzipped) and convert it if you need {kind}")
    if args.data and args.prompt is not None:
        p.error("--prompt is the text that image / video files given as arguments should match; rows of --data "
                "carry their own 'prompt' field")
    import mmreward
    from mmreward.core import inputs as I
    from mmreward.core.cli_config import check_output_file
    from mmreward.core.data import iter_records, jsonl_rows, read_records, resolve_media_paths, row_origin, streams

    # an --out that is one of the inputs (or a folder) is refused before anything is read or scored
    check_output_file(args.out, "--out", [("--data", None if args.data == "-" else args.data), ("input", args.files)],
                      folders=[("--model", args.model)])

    # the inputs are read and checked before the model loads: a typo in a file name costs nothing, and a line
    # that is not JSON is named before any is scored
    source: Optional[list] = None  # the rows in memory; None: read again from args.data at each pass
    if args.data:
        if args.data == "-":  # read once, so held in memory; relative media paths are the working folder's
            source = list(jsonl_rows(sys.stdin.buffer, "<stdin>"))
        elif args.split:  # a split may also be the rows' own field 'split' (HelpSteer2), as training reads it
            from mmreward.text.data import _read_pair_rows

            source = _read_pair_rows(args.data, args.split, f"{args.data}: ")
        elif not streams(args.data):
            source = read_records(args.data)
        n_rows = len(source) if source is not None else sum(1 for _ in iter_records(args.data))
        if not n_rows:
            raise ValueError(f"{args.data} holds no rows" + (f" in split {args.split!r}" if args.split else ""))
    else:
        for f in args.files:
            _check_input_file(f)
    model = mmreward.load(args.model, device=args.device, dtype=args.dtype)
    if args.data:
        # rows are read, checked and scored a chunk at a time: memory holds one chunk of rows and scores, not the
        # file and all its results (a model whose batch counts something inside one input gets them all at once)
        batch = args.batch_size or getattr(model, "default_batch_size", None) or 1
        counts_inputs = getattr(model, "batch_size_counts_inputs", True)
        size = -(-CHUNK_ROWS // batch) * batch if counts_inputs else max(n_rows, 1)

        read: list = [source]  # the rows being read: where a folder's shards start

        def chunks() -> Any:
            rows = iter(source) if source is not None else iter_records(args.data)
            read[0] = source if source is not None else rows
            for start in range(0, n_rows, size):
                chunk = list(itertools.islice(rows, size))
                if chunk:
                    yield start, chunk

        def inputs(start: int, chunk: list) -> tuple[list, list]:
            # the printed rows keep their paths as written; the model reads them against the data file's folder
            rows = resolve_media_paths(chunk, "." if args.data == "-" else args.data)
            return _row_inputs(model, rows, "<stdin>" if args.data == "-" else args.data, start, origin)

        def origin(i: int) -> Optional[tuple[str, int]]:
            return row_origin(read[0], i)  # a folder of shards: the shard and its row, not a row of all of them

        def row_name(i: int) -> str:
            return "{}: row {}".format(*(origin(i) or ("<stdin>" if args.data == "-" else args.data, i)))

        # every row is checked before any is scored: a bad row 37,123 is named before hours of scoring, not after
        from mmreward.core.cli_config import error_at_row

        n_inputs, natural_parts = 0, False
        for start, chunk in chunks():
            items, where = inputs(start, chunk)
            try:
                _precheck(model, items)
            except (ValueError, TypeError, FileNotFoundError) as e:
                raise error_at_row(e, where, lambda j: row_name(start + j), "score") from None
            n_inputs += len(items)
            natural_parts = natural_parts or (type(model).has_parts() and any(isinstance(it, I.PART_INPUTS)
                                                                              for it in items))
    else:
        if args.prompt is not None and not {I.ImagePrompt, I.VideoPrompt} & set(model.input_types):
            raise ValueError(f"--prompt is for image scorers; {type(model).__name__} scores "
                             f"{' / '.join(t.__name__ for t in model.input_types)}, which take no prompt")
        if I.Episode in model.input_types:
            args.files = _episode_files(args.files)
        rows = [{"file": f} for f in args.files]
        items, where = _file_inputs(model, args.files, args.prompt), [(i, "score") for i in range(len(args.files))]
        n_inputs = len(items)
        natural_parts = type(model).has_parts() and any(isinstance(it, I.PART_INPUTS) for it in items)

        def chunks() -> Any:
            yield 0, rows

        def inputs(start: int, chunk: list) -> tuple[list, list]:
            return items, where

        row_name = (lambda i: args.files[i])

    # per-part scores are shown by default where the parts are the point (steps, frames)
    parts = natural_parts if args.parts is None else args.parts
    if parts and not type(model).has_parts():
        raise ValueError(f"{type(model).__name__} scores whole inputs: it has no per-step or per-frame scores")
    ranking = bool(args.files) and args.prompt is not None and not parts
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    began = time.monotonic()
    pairs: list[dict] = []  # the scores of preference rows only, for the pairwise accuracy
    scored: list[dict] = []  # ranked files only: they are printed best first, once all are scored
    new_inputs = [0]  # inputs scored by this run (--resume: not those an earlier run kept)

    def score_all(write: Any, done: int = 0, kept: Any = None) -> None:
        """Score every row from row ``done`` on; ``kept(start, rows)`` (rows before ``done``, scored by an earlier
        run) checks them and returns how many inputs they were."""
        import torch

        from mmreward.core.cli_config import error_at_row

        # each chunk's warnings are held and told once at the end, a truncation count summed over all chunks: once
        # per calling line, it told the first chunk's count ("truncated 3 of 4096 inputs") for the whole file
        with scoring(n_inputs, progress) as (bar, tally):
            for start, chunk in chunks():
                if start < done:
                    cut = min(done - start, len(chunk))
                    n = kept(start, chunk[:cut])
                    if bar is not None:
                        bar.update(n)
                    chunk, start = chunk[cut:], start + cut
                    if not chunk:
                        continue
                items, where = inputs(start, chunk)
                new_inputs[0] += len(items)
                # a warning about input i of this chunk (a PRM's first truncated solution) names its row
                tally.name = (lambda i, start=start, where=where: row_name(start + where[i][0]))
                try:
                    with torch.no_grad():
                        part_scores = (_scored(model, items, args.batch_size, "score_parts", bar, tally) if parts
                                       else None)
                        scores = model.aggregate_parts(part_scores) if part_scores is not None else None
                        if scores is None:
                            scores = _scored(model, items, args.batch_size, "score", bar if not parts else None, tally)
                except (ValueError, TypeError) as e:  # DataError too: "input K" is the K-th scored input of the
                    # chunk; name the file's row or the file (a preference row is two inputs)
                    raise error_at_row(e, where, lambda j: row_name(start + j), "score") from None
                out: list[dict] = [dict() for _ in chunk]
                for k, ((j, slot), s) in enumerate(zip(where, scores.tolist())):
                    out[j][slot if slot == "score" else f"score_{slot}"] = float(s)  # unrounded: the pairwise accuracy too
                    if part_scores is not None:
                        out[j]["parts" if slot == "score" else f"parts_{slot}"] = _to_list(part_scores[k])
                pairs.extend({k: o[k] for k in ("score_chosen", "score_rejected")} for o in out if "score_chosen" in o)
                if ranking:
                    scored.extend(out)
                else:
                    write(start, chunk, out)

    if args.out and args.resume:
        header = {"model": _model_identity(args.model), "data": _identity(args.data), "split": args.split,
                  "dtype": args.dtype, "parts": parts, "rows": n_rows}
        _write_resumable(args, score_all, header, pairs)
    elif args.out:
        _write_out(args, score_all, scored if ranking else None)
    if args.out:
        took = time.monotonic() - began
        print(f"mmreward score: {n_inputs if args.files else n_rows} {'files' if args.files else 'rows'} scored "
              f"({new_inputs[0]} inputs in {took:.1f} s, {new_inputs[0] / max(took, 1e-9):.1f} inputs/s), written to "
              f"{args.out}",
              file=sys.stderr)
    elif args.json:
        score_all(lambda start, chunk, out: sys.stdout.write(_json_lines(chunk, out)))
        if ranking:
            print(_ranking_json(args, scored))
    else:
        score_all(lambda start, chunk, out: _print_table(start, chunk, out))
        if ranking:
            _print_ranking(args, scored)
    line = _pairwise_line(pairs)
    if line:
        print(line, file=sys.stderr if args.json or args.out else sys.stdout)
    return 0


def _prechecks(model: Any) -> bool:
    """Whether :func:`_precheck` checks anything of a text model's inputs beyond their fields (a PRM's or a text
    RM's encoding): a pass over the file for it is wasted on others (a generative judge)."""
    return callable(getattr(model, "encode_one", None)) or (callable(getattr(model, "encode", None))
                                                            and callable(getattr(model, "check_fits", None)))


def _precheck(model: Any, items: list) -> None:
    """The checks a text RM or PRM makes of every input before its first forward (a PRM solution longer than
    max_length, a conversation a chat template refuses, token ids past the embeddings), made of every row before
    any chunk is scored: found in chunk 9, they cost the scoring of chunks 0-8 (with --out, all of it)."""
    from mmreward.core.inputs import StepSolution, TextPair

    for i, it in enumerate(items):  # a media file named by a row that is not there: found when decoded, mid-run
        for name in ("image", "images", "video", "frames"):
            values = getattr(it, name, None)
            for v in values if isinstance(values, list) else [values]:
                if isinstance(v, str) and v and "://" not in v and v[:5].lower() != "data:" and not os.path.exists(v):
                    raise FileNotFoundError(f"input {i}: field {name!r}: file {v!r} does not exist")
    if callable(getattr(model, "encode_one", None)) and items and all(isinstance(it, StepSolution) for it in items):
        for i, it in enumerate(items):
            model.encode_one(it.problem, it.steps, where=f"input {i}")
    elif callable(getattr(model, "encode", None)) and callable(getattr(model, "check_fits", None)) \
            and items and all(isinstance(it, TextPair) for it in items):
        rows = model.encode(items)
        getattr(model, "check_encoded", lambda rows: None)(rows)
        model.check_fits(rows)


CHUNK_ROWS = 4096  # rows read, scored and written at a time (rounded up to whole batches)
PROGRESS_CHUNK_BATCHES = 16  # batches per progress update
# output names of formats other than JSON lines, which --out does not write
_OTHER_FORMATS = {".parquet": "parquet", ".csv": "CSV", ".tsv": "TSV", ".arrow": "Arrow", ".feather": "Feather",
                  ".xlsx": "Excel", ".xls": "Excel", ".pkl": "pickle", ".pickle": "pickle", ".npz": "numpy", ".npy": "numpy"}


def _other_format(path: str) -> Optional[str]:
    """The format a file name promises when it is not JSON lines (``.parquet``, ``.csv`` …, also gzipped), else None."""
    name = path.lower().removesuffix(".gz")
    return next((kind for ext, kind in _OTHER_FORMATS.items() if name.endswith(ext)), None)


# the warning text_encoder.truncation_warning gives for one call (mmreward.text.data)
_TRUNCATED = re.compile(r"truncated (\d+) of (\d+) (\w+) to max_length=(\S+) tokens \((\S+): (\d+) prompt and "
                        r"(\d+) response tokens cut, up to (\d+) from one input")


# vision scorers' note of animated images read by their first frame (vision/scoring.py): summed over the chunks
_ANIMATED = re.compile(r"^(\d+) animated image\(s\) were read by their first frame only \(first: (.*?)\): ")

# the warning ProcessRewardModel._warn_truncated gives for one call (mmreward.text.prm.model)
_PRM_TRUNCATED = re.compile(r"truncated (\d+) of \d+ inputs to (.+?) tokens \(truncate=True\): (\d+) of their steps "
                            r"are unscored \(NaN; first: input (\d+), (steps \S+ of \d+)\) and score\(\) aggregates "
                            r"\((\w+)\)")


@contextlib.contextmanager
def scoring(n_inputs: int, progress: bool) -> Iterator[tuple[Any, "_WarningTally"]]:
    """``(bar, tally)`` for scoring ``n_inputs`` inputs a chunk at a time: a progress bar on stderr (None without
    ``progress``) and a :class:`_WarningTally` every warning goes to; at the exit (an error's too) the bar closes,
    Python's warning state is restored and each warning is told once, truncation summed over ``n_inputs``."""
    import warnings

    tally = _WarningTally()
    bar = _bar(n_inputs) if progress else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = tally.add
            yield bar, tally
    finally:
        if bar is not None:
            bar.close()
        tally.tell(n_inputs)


class _WarningTally:
    """The warnings of every chunk, each kept once as it comes (truncation counts summed over the chunks: a text
    encoder's and a PRM's with ``truncate=True``), told once at the end: memory does not grow with the number of
    batches that warn. ``name(i)``: what input ``offset + i`` of the current call is (the file's row), set by the
    caller for each call, so that the first truncated solution is named by its row, not its place in a chunk."""

    def __init__(self) -> None:
        self.seen: dict[tuple, tuple] = {}  # (category, text) -> (message, category, filename, lineno), first seen
        self.cut: dict[tuple, tuple] = {}  # (what, max_length, policy) -> summed counts
        self.steps: dict[tuple, list] = {}  # (max_length, aggregation) -> [solutions, steps, first]
        self.name: Optional[Callable[[int], str]] = None
        self.offset = 0
        self.animated: list = [0, None, None]  # images read by their first frame, the first one, its warning's text

    def add(self, message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        m = _TRUNCATED.search(str(message))
        s = None if m else _PRM_TRUNCATED.search(str(message))
        a = None if m or s else _ANIMATED.search(str(message))
        if a:
            self.animated[0] += int(a[1])
            self.animated[1:] = self.animated[1:] if self.animated[1] else [a[2], str(message)[a.end():]]
        elif s:
            i = self.offset + int(s[4])
            where = self.name(i) if self.name else f"input {i}"
            self.add_cut_steps(s[2], s[6], int(s[1]), int(s[3]), f"{where}, {s[5]}")
        elif m:
            key = (m[3], m[4], m[5])
            n, total, prompt, response, most = self.cut.get(key, (0, 0, 0, 0, 0))
            self.cut[key] = (n + int(m[1]), total + int(m[2]), prompt + int(m[6]), response + int(m[7]),
                             max(most, int(m[8])))
        else:
            self.seen.setdefault((category, str(message)), (message, category, filename, lineno))

    def add_cut_steps(self, length: str, aggregation: str, n: int, steps: int, first: str) -> None:
        """``n`` more solutions cut to ``length`` tokens, ``steps`` of their steps unscored; ``first``: where the first
        one is (kept if one was counted before)."""
        tally = self.steps.setdefault((length, aggregation), [0, 0, first])
        tally[0], tally[1] = tally[0] + n, tally[1] + steps

    def tell(self, n_inputs: int) -> None:
        import warnings

        for message, category, filename, lineno in self.seen.values():
            warnings.warn_explicit(message, category, filename, lineno)
        for (what, length, policy), (n, total, prompt, response, most) in self.cut.items():
            warnings.warn(f"truncated {n} of {max(total, n_inputs)} {what} to max_length={length} tokens ({policy}: "
                          f"{prompt} prompt and {response} response tokens cut, up to {most} from one input; special "
                          "and template tokens kept)", UserWarning, stacklevel=3)
        if self.animated[0]:
            n, first, advice = self.animated
            warnings.warn(f"{n} animated image(s) were read by their first frame only (first: {first}): {advice}",
                          UserWarning, stacklevel=3)
        for (length, aggregation), (n, steps, first) in self.steps.items():
            warnings.warn(f"truncated {n} of {n_inputs} solutions to {length} tokens (truncate=True): {steps} of their "
                          f"steps are unscored (NaN; null in JSON lines; first: {first}) and each score aggregates "
                          f"({aggregation}) only the scored steps", UserWarning, stacklevel=3)


def _bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="scoring", unit="input", dynamic_ncols=True, file=sys.stderr)


def _pairwise_line(pairs: list[dict]) -> Optional[str]:
    return pairwise_accuracy_line(pairs) if pairs else None


def pairwise_accuracy_line(pairs: list[dict]) -> Optional[str]:
    """``pairwise accuracy: A over N pairs`` of rows with ``score_chosen`` / ``score_rejected``; a pair with a
    NaN / inf score (a model overflowing in fp16; ``None``, as JSON writes NaN) is left out and counted, not read
    as a wrong pair."""
    import math

    def finite(x: Any) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(x)

    kept = [o for o in pairs if finite(o["score_chosen"]) and finite(o["score_rejected"])]
    dropped = len(pairs) - len(kept)
    note = f" ({dropped} pair{'s' if dropped > 1 else ''} with a non-finite score left out)" if dropped else ""
    if not pairs:
        return None
    if not kept:
        return f"pairwise accuracy: undefined: every one of the {len(pairs)} pairs has a non-finite score"
    correct = sum(1 for o in kept if o["score_chosen"] > o["score_rejected"])
    return f"pairwise accuracy: {correct / len(kept):.4f} over {len(kept)} pairs{note}"


def _write_out(args: Any, score_all: Any, ranked: Optional[list]) -> None:
    """Score into a hidden file beside ``--out``, renamed to it once every row is written (a killed run leaves no
    half file under the name; the next write to it removes the leftover); ``.gz``: gzipped."""
    from mmreward.core.folders import atomic_write

    def write(tmp: str) -> None:
        if args.out.lower().endswith(".gz"):
            import gzip

            f = gzip.open(tmp, "wt", encoding="utf-8")
        else:
            f = open(tmp, "w", encoding="utf-8")
        with f:
            score_all(lambda start, chunk, out: f.write(_json_lines(chunk, out)))
            if ranked is not None:
                f.write(_ranking_json(args, ranked) + "\n")

    atomic_write(args.out, write)


_SCORE_KEYS = ("score", "score_chosen", "score_rejected", "parts", "parts_chosen", "parts_rejected")
_PARTIAL = "mmreward score partial"  # the key of a partial file's first line, which says what it is of


def _identity(path: Optional[str]) -> Optional[str]:
    return os.path.realpath(path) if path and os.path.exists(path) else path


def _model_identity(path: str) -> Any:
    """What the model folder holds, by content: each weight / config / tokenizer file's size and SHA-256. A model
    retrained in place between a stopped run and its ``--resume`` is another model, whose scores must not be mixed
    with the kept ones; a ``touch`` or a copy of the same files is the same model (file times refused it). Whole
    files are hashed: a sample of blocks misses a retrained head of a few KB in a multi-GB file, and reading the
    weights once more costs about what loading them does. The folder's path is kept to say which folder changed,
    not compared."""
    from mmreward.core.folders import file_sha256

    where = _identity(path)
    if not where or not os.path.isdir(where):
        return where
    if not os.path.isfile(os.path.join(where, "config.json")) and os.path.isdir(os.path.join(where, "model")):
        where = os.path.join(where, "model")  # a run folder: the model it loads, not its snapshots
    files = {}
    for d, subdirs, names in os.walk(where):
        # a Trainer's checkpoint-N/ folders, logs and optimizer / RNG states are not read by the load: not hashed
        # (a TRL output folder holds gigabytes of them)
        subdirs[:] = sorted(n for n in subdirs if not _NOT_MODEL_DIRS.fullmatch(n))
        for name in names:
            if name.endswith(_MODEL_FILES) and name not in _TRAINING_STATE_FILES and not name.startswith("rng_state"):
                full = os.path.join(d, name)
                files[os.path.relpath(full, where)] = [os.path.getsize(full), file_sha256(full)]
    identity = {"path": where, "files": dict(sorted(files.items()))}
    if os.path.isfile(os.path.join(where, "adapter_config.json")) and not os.path.isfile(os.path.join(where, "config.json")):
        # a LoRA adapter scores as its base model + the adapter: a base changed in place is another model too
        identity["base_model"] = _adapter_base_identity(where)
    return identity


def _adapter_base_identity(folder: str) -> Any:
    """The identity of the base model a PEFT adapter folder names: its local folder's (or its snapshot in the
    local HF cache), else the name as written."""
    from mmreward.text.peft_adapters import local_base_folder

    try:
        with open(os.path.join(folder, "adapter_config.json"), encoding="utf-8") as f:
            spec = json.load(f)
        base, revision = spec.get("base_model_name_or_path"), spec.get("revision")
    except (OSError, ValueError, AttributeError):
        return None  # the load reports an unreadable config
    local = local_base_folder(base, revision)
    if local is None or os.path.isfile(os.path.join(local, "adapter_config.json")):
        return base
    found = _model_identity(local)
    return {"name": base, "files": found["files"]} if isinstance(found, dict) else base


_MODEL_FILES = (".safetensors", ".json", ".bin", ".pt", ".pth", ".gguf", ".txt", ".model", ".jinja")
_NOT_MODEL_DIRS = re.compile(r"checkpoint-\d+|runs|logs|\.git|\.cache|__pycache__")
_TRAINING_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin", "trainer_state.json")


def _same_run(was: Any, now: Any) -> bool:
    """Whether two partial-file headers are of the same command: the model compared by its files' content, not by
    the folder it is in."""
    def files(header: Any) -> Any:
        if not isinstance(header, dict):
            return header
        model = header.get("model")
        return {**header, "model": [model.get("files"), model.get("base_model")] if isinstance(model, dict) else model}

    return files(was) == files(now)


def _write_resumable(args: Any, score_all: Any, header: dict, pairs: list, prog: str = "mmreward score",
                     score_keys: Sequence[str] = ()) -> None:
    """``--resume``: rows scored into ``OUT.partial`` (a first line saying which model, data and settings; then
    ``--out``'s lines, flushed to disk after each chunk), continued where an earlier run of the same command
    stopped: the rows it kept are checked against the data (every field but the scores: :data:`_SCORE_KEYS` and
    ``score_keys``), not scored again; ``kept(start, rows, lines)`` also appends each kept line, read back, to
    ``lines`` when given (a caller that tallies the scores of every row). Once every row is there, ``--out`` is
    written from it at once (gzipped for ``.gz``) and the partial file removed. ``prog`` names the command in
    messages."""
    import fcntl
    import shutil

    from mmreward.core.data import DataError
    from mmreward.core.folders import atomic_write, file_mode

    partial = args.out + ".partial"
    f = os.fdopen(os.open(partial, os.O_RDWR | os.O_CREAT, file_mode()), "r+b")
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # two runs appending to one file would interleave rows
        except OSError:
            raise ValueError(f"{partial} is being written by another run of {prog}") from None
        first = f.readline()
        if not first.endswith(b"\n"):  # new (or killed while writing its first line)
            f.seek(0)
            f.truncate()
            f.write((json.dumps({_PARTIAL: header}) + "\n").encode())
            done, end = 0, f.tell()
        else:
            try:
                was = json.loads(first)[_PARTIAL]
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{partial} is not a partial file of {prog} --resume: delete or move it") \
                    from None
            if not _same_run(was, header):
                diff = ", ".join(("the model folder's files changed (retrained or replaced)"
                                  if v.get("files") != was[k].get("files") else
                                  "the base model of the LoRA adapter changed (retrained or replaced)")
                                 if k == "model" and isinstance(v, dict) and isinstance(was.get(k), dict)
                                 else f"{k} {was.get(k)!r} then, {v!r} now"
                                 for k, v in header.items() if not _same_run({k: was.get(k)}, {k: v}))
                raise DataError(f"{partial} holds rows scored with other settings ({diff}): run that command again "
                                "to continue it, or delete the file to start over")
            done, end = 0, f.tell()
            for line in f:
                if not line.endswith(b"\n"):  # the line a killed run was writing
                    break
                done, end = done + 1, end + len(line)
        f.seek(end)
        f.truncate()  # a half-written last line goes; its row is scored again
        reader = open(partial, "rb")
        reader.readline()
        if done:
            print(f"{prog}: continuing {partial}: {done} of {header['rows']} rows were scored", file=sys.stderr)
        ignored = set(_SCORE_KEYS) | set(score_keys)

        def kept(start: int, rows: list, lines: Optional[list] = None) -> int:
            n = 0
            for k, row in enumerate(rows, start):
                got = json.loads(reader.readline())
                want = json.loads(json_text(row, ensure_ascii=False, default=str))
                if lines is not None:
                    lines.append(got)
                if {a: b for a, b in got.items() if a not in ignored} != \
                        {a: b for a, b in want.items() if a not in ignored}:
                    raise DataError(f"{partial}: row {k} is not row {k} of {args.data} (the data changed since it "
                                    "was scored): delete the file to start over")
                if "score_chosen" in got:  # a NaN score was written as null: NaN again, as the run gave it
                    pairs.append({a: float("nan") if got[a] is None else got[a] for a in ("score_chosen", "score_rejected")})
                n += 2 if "score_chosen" in got else 1
            return n

        def write(start: int, chunk: list, out: list) -> None:
            f.write(_json_lines(chunk, out).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

        try:
            with reader:
                score_all(write, done, kept)
        except DataError:  # the data changed, or a row the model refuses: said as it is
            raise
        except BaseException:
            print(f"{prog}: the rows scored so far are kept in {partial}: run the same command again to "
                  "continue", file=sys.stderr)
            raise

    def copy(tmp: str) -> None:
        import gzip

        with open(partial, "rb") as src, (gzip.open(tmp, "wb") if args.out.lower().endswith(".gz")
                                          else open(tmp, "wb")) as dst:
            src.readline()  # the partial file's own first line
            shutil.copyfileobj(src, dst)

    atomic_write(args.out, copy)
    os.unlink(partial)


def _scored(model: Any, items: list, batch_size: Optional[int], method: str, bar: Any,
            tally: Optional[_WarningTally] = None) -> Any:
    """``model.score`` / ``model.score_parts`` of ``items``; with a progress ``bar``, called on consecutive chunks
    of whole batches (an error's "input K" counted in ``items``) and the bar moved after each. Models whose batch
    counts something inside one input (episode rewards) are scored in one call, as without a bar; so are generative
    judges (their sampling seeds and name shuffles count the inputs of a call: a call cut in pieces would judge
    otherwise than without a bar), whose ``scoring_progress`` moves the bar as their prompts are read. ``tally``:
    told where each call starts in ``items``."""
    import torch

    call = getattr(model, method)
    if tally is not None:
        tally.offset = 0
    progress = getattr(model, "scoring_progress", None)
    if bar is not None and callable(progress):
        with progress(bar, len(items)):
            return call(items, batch_size=batch_size)
    if bar is None or not getattr(model, "batch_size_counts_inputs", True):
        got = call(items, batch_size=batch_size)
        if bar is not None:
            bar.update(len(items))
        return got
    chunk = (batch_size or model.default_batch_size) * PROGRESS_CHUNK_BATCHES
    out: list = []
    for start in range(0, len(items), chunk):
        if tally is not None:
            tally.offset = start
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


def _print_table(start: int, rows: list[dict], out: list[dict]) -> None:
    for i, (r, o) in enumerate(zip(rows, out), start):
        shown = "  ".join(f"{k}={v:.4f}" for k, v in o.items() if not k.startswith("parts"))
        extra = "  ".join(f"{k}=[{', '.join(f'{x:.3f}' for x in v[:12])}{', …' if len(v) > 12 else ''}]"
                          for k, v in o.items() if k.startswith("parts"))
        label = r.get("file") or _summary(r)
        print(f"{i:>5}  {shown}  {extra}  {label}".rstrip())


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
    for key in ("prompt", "problem", "question", "messages", "text", "caption", "image", "file_name", "image_path",
                "video", "frames", "episode"):
        if key in row:
            v = row[key]
            text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
            return text.replace("\n", " ")[:60]
    return ""


__all__ = ["main"]
