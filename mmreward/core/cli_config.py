"""Dataclass configs ↔ argparse: one ``--flag`` per field, so every CLI maps 1:1 onto the config the
Python API takes (cleanrl style). Help comes from the field's ``metadata["help"]``.

    add_config_options(parser, TrainConfig)              # --max-steps, --lr, --progress/--no-progress …
    config = config_from_args(TrainConfig, parser.parse_args())

Types: ``bool`` → ``--x / --no-x``; ``Optional[X]`` → X, or ``none`` / ``null`` for None; ``list`` →
comma-separated strings; ``tuple`` → comma-separated numbers; anything else is called on the text.

Flag names are the same in every command: a field's flag is ``--field-name`` unless
:data:`FLAG_NAMES` (or the field's ``metadata["flag"]``) says otherwise — ``output_dir`` is ``--out``
everywhere; the long spelling stays accepted, hidden from ``--help``.

Errors: :class:`CLIParser` reports a bad option in one line (``prog: error: …``, exit 2) and
:func:`run_cli` turns any exception a command raises into one line on stderr — exit 2 for user
errors (bad data, paths, devices, checkpoints), 1 for anything else — with the traceback only when
``MMREWARD_DEBUG=1``; a warning while a command runs is one line too (``prog: warning: …``).
:func:`check_output_file` / :func:`check_output_folder` refuse an output path before the work (a
folder as a file, a path under a file, an output that is one of the inputs), and
:func:`removing_new_folders_on_error` leaves no empty output folder behind a command refused part-way.
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import math
import numbers
import os
import re
import sys
import typing
from dataclasses import MISSING, fields
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

# field name -> the flag every command uses for it
FLAG_NAMES = {"output_dir": "--out", "out_dir": "--out"}


# a command-line word that is a negative number, not an option: argparse's own pattern knows only -1 and -0.5,
# so `--missing-reward -1e3`, `--refine-clip -1e-3` or `--widen-below -inf` failed as "expected one argument"
_NEGATIVE_NUMBER = re.compile(r"^-(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)


class CLIParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``prog: error: message (see prog --help)``;
    a negative number in any spelling float() reads (``-1e3``, ``-inf``) is a value, not an option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # numpy floats too
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def json_text(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` for command output: NaN / ±inf (a diverged model's score, a mean over no episodes)
    become ``null``, since ``NaN`` is not JSON and breaks ``jq`` and JavaScript readers."""
    return json.dumps(_finite_or_none(obj), allow_nan=False, **kwargs)


def _user_error_types() -> tuple[type, ...]:
    from .data import DataError
    from .device import DeviceError
    from .folders import CheckpointError

    return (DataError, CheckpointError, DeviceError, ValueError, TypeError, LookupError, OSError, ImportError)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, KeyError) and len(e.args) == 1:
        text = f"missing key {e.args[0]!r}"
    if isinstance(e, (ImportError, OSError)) and not isinstance(e, FileNotFoundError) and type(e).__name__ not in text \
            and "pip install 'mmreward[" not in text:
        text = f"{type(e).__name__}: {text}"
    return text if len(text) <= 2000 else text[:2000] + " …"


def _one_line_warnings(prog: str) -> Callable[..., str]:
    """A ``warnings.formatwarning`` that shows a warning as one line, ``prog: warning: message`` (Python's
    own shows two: the warning and the source line that raised it, a traceback-like excerpt of code)."""
    def formatwarning(message: Any, category: type, filename: str, lineno: int, line: Optional[str] = None) -> str:
        text = " ".join(str(message).split()) or category.__name__
        return f"{prog}: warning: {text}\n"

    return formatwarning


_SUBCOMMAND: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar("mmreward_cli_subcommand", default=None)


def entering_subcommand(name: str) -> None:
    """Called by a command group (``mmreward text``, ``prm``, ``vision``) once it has dispatched to a valid
    subcommand: an error it raises then reads ``mmreward text score: error: …``, naming the command run."""
    _SUBCOMMAND.set(name)


def run_cli(prog: str, main: Callable[[list[str]], Optional[int]], argv: Sequence[str]) -> int:
    """Run ``main(argv)``; exceptions become one line on stderr (see the module docstring), and so
    do warnings while it runs (``prog: warning: …``; the full form with ``MMREWARD_DEBUG=1``)."""
    import warnings

    previous = warnings.formatwarning
    if os.environ.get("MMREWARD_DEBUG") != "1":
        warnings.formatwarning = _one_line_warnings(prog)
    token = _SUBCOMMAND.set(None)
    try:
        return _run_cli(prog, main, argv)
    finally:
        _SUBCOMMAND.reset(token)
        warnings.formatwarning = previous


def _run_cli(prog: str, main: Callable[[list[str]], Optional[int]], argv: Sequence[str]) -> int:
    try:
        return int(main(list(argv)) or 0)
    except SystemExit as e:  # argparse / explicit exits keep their status
        code = e.code
        if isinstance(code, str):
            print(code if code.startswith(prog.split()[0]) else f"{prog}: error: {code}", file=sys.stderr)
            return 2
        return int(code or 0)
    except BrokenPipeError:  # `mmreward … | head`: the reader is gone; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if os.environ.get("MMREWARD_DEBUG") == "1":
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI boundary: one line, never a traceback
        if os.environ.get("MMREWARD_DEBUG") == "1":
            raise
        sub = _SUBCOMMAND.get()
        if sub and not prog.endswith(f" {sub}"):
            prog = f"{prog} {sub}"
        from .extras import missing_extra

        missing = missing_extra(e)  # an optional package not installed: the extra to install, a user's fix
        if missing is not None:
            print(f"{prog}: error: {' '.join(str(missing).split())}", file=sys.stderr)
            return 2
        user = isinstance(e, _user_error_types())
        hint = "" if user else " (unexpected error: MMREWARD_DEBUG=1 shows the traceback)"
        print(f"{prog}: error: {_one_line(e)}{hint}", file=sys.stderr)
        return 2 if user else 1


def error_at_row(error: Exception, where: Sequence[tuple[int, str]], row_name: Callable[[int], str],
                 whole: str) -> Exception:
    """``error`` with a leading ``input K`` (the K-th scored input; a chosen / rejected row gives two)
    told as the user's row and slot: ``row_name(i)`` + `` (slot)`` unless the slot is ``whole``; other
    errors as they are."""
    import re

    m = re.match(r"input (\d+)\b", str(error))
    if not m or int(m.group(1)) >= len(where):
        return error
    row, slot = where[int(m.group(1))]
    named = row_name(row) + (f" ({slot})" if slot != whole else "")
    try:
        return type(error)(named + str(error)[m.end():])
    except TypeError:  # an exception class with another signature
        return error


def shift_input_index(message: str, start: int) -> str:
    """``message`` with the first input index it names ("input 3", "query 3", "prompts[3]", counted within a
    slice of the caller's inputs) moved by ``start``, the slice's offset."""
    return re.sub(r"\b(input |query |prompts\[)(\d+)\b", lambda m: f"{m.group(1)}{int(m.group(2)) + start}",
                  message, count=1)


def split_flag(data_flag: str) -> str:
    """The flag choosing a split of ``data_flag``: ``--data`` → ``--split``, ``--eval-data`` → ``--eval-split``,
    ``--solutions`` → ``--solutions-split``."""
    name = data_flag[2:]
    return "--split" if name == "data" else f"--{name[:-len('-data')] if name.endswith('-data') else name}-split"


def add_split_options(parser: argparse.ArgumentParser, *data_flags: str) -> None:
    """A split flag (:func:`split_flag`) for each of ``data_flags`` whose rows ``read_records`` reads: a saved
    DatasetDict or a .json object holding several lists of rows needs one named."""
    for flag in data_flags:
        parser.add_argument(split_flag(flag), help=f"split of {flag} when it holds several (a dataset folder or hub id: "
                                                   "'test', 'train[:1000]'; a .json object of lists)")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape_separator(text: str) -> str:
    """A separator typed on a command line: ``\\n`` / ``\\t`` / ``\\r`` / ``\\\\`` become the characters they name
    (``--step-separator '\\n\\n'`` is a blank line, not four characters); anything else stays as typed."""
    import re

    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)


def check_split_sources(args: argparse.Namespace, *data_flags: str) -> None:
    """A split of a data flag that was not given is an error (it would be silently ignored)."""
    for flag in data_flags:
        split = getattr(args, split_flag(flag)[2:].replace("-", "_"), None)
        if split and not getattr(args, flag[2:].replace("-", "_"), None):
            raise ValueError(f"{split_flag(flag)} {split} chooses a split of {flag}, which is not given")


# files a model / run folder keeps at its top level (deeper files, in model/, checkpoint-*/, tb/, are all kept)
_SAVED_NAMES = ("config.json", "manifest.json", "train_config.json", "metrics.csv", "diverged.json", "curves.png",
                "generation_config.json", "preprocessor_config.json", "special_tokens_map.json", "merges.txt")
_SAVED_PREFIXES = ("tokenizer", "vocab", "chat_template", "added_tokens", "video_preprocessor")
_SAVED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".model", ".index.json")


def _saved_file_of(folder: str, path: str) -> bool:
    """Whether the existing file ``path`` is one that the model / run folder ``folder`` keeps (weights,
    configs, tokenizer, logs, anything in a subfolder, anything its ``manifest.json`` lists), which a result
    written there would replace; a results file of an earlier run of the same command is not."""
    real = os.path.realpath(folder)
    rel = os.path.relpath(os.path.realpath(path), real)
    if rel == os.curdir or rel.startswith(os.pardir + os.sep) or rel == os.pardir:
        return False
    if os.sep in rel:
        return True
    name = rel.lower()
    if name in _SAVED_NAMES or name.startswith(_SAVED_PREFIXES) or name.endswith(_SAVED_SUFFIXES):
        return True
    try:
        with open(os.path.join(real, "manifest.json"), encoding="utf-8") as f:
            listed = json.load(f).get("files", {})
    except (OSError, ValueError, AttributeError):
        return False
    return rel in listed


def check_output_file(path: Optional[str], flag: str = "--out",
                      inputs: Sequence[tuple[str, Any]] = (), folders: Sequence[tuple[str, Any]] = ()) -> None:
    """Refuse an output *file* a command would only fail to write (or write destructively) after all
    its work: ``path`` is a folder, sits under a file, is one of the ``inputs`` (``(flag, path)``
    pairs, e.g. ``("--data", args.data)``), which the atomic write would replace with the results, or is an
    existing file inside one of the ``folders`` (``("--model", args.model)``: its ``config.json``, a run's
    ``metrics.csv``), which the write would break. Raises ``ValueError`` naming the flag; call it before
    loading models or reading data."""
    if not path:
        return
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is a folder: name a file to write")
    _check_creatable(os.path.dirname(os.path.abspath(path)), path, flag)
    exists = os.path.exists(path)
    for in_flag, folder in folders:
        if exists and folder and os.path.isdir(folder) and _saved_file_of(os.fspath(folder), path):
            raise ValueError(f"{flag} {path!r} is a file of the {in_flag} folder {os.fspath(folder)!r}: writing "
                             "the results there would replace it and break what is saved there; name a file "
                             "outside that folder")
    for in_flag, source in inputs:
        sources = [source] if isinstance(source, (str, os.PathLike)) else list(source or ())
        for s in sources:
            if not s:
                continue
            same = os.path.realpath(s) == os.path.realpath(path)
            if same or (exists and os.path.exists(s) and os.path.samefile(s, path)):
                raise ValueError(f"{flag} {path!r} is the {in_flag} file {os.fspath(s)!r}: writing the results "
                                 "there would replace it; name another file")


def utf8_text(value: Optional[str], flag: str) -> Optional[str]:
    """``value`` (a command-line text, not a path) when it is UTF-8; bytes that are not (Python keeps them
    as lone surrogates) reached the tokenizer as "TextEncodeInput must be Union[...]"."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{flag} is not UTF-8 text (byte {value[e.start].encode('utf-8', 'surrogateescape')!r} "
                             f"at character {e.start + 1}): pass it in UTF-8") from None
    return value


def check_output_folder(path: Optional[str], flag: str = "--out", inputs: Sequence[tuple[str, Any]] = ()) -> None:
    """Refuse an output *folder* that can never be created (``path`` is a file, or sits under one) or that
    is one of the input model folders (``(flag, folder)`` pairs, e.g. ``("--model", args.model)``; for a run
    folder, its ``model/``, so ``--out`` may name the run to continue): the run's snapshots, logs and model
    would be written into the model it starts from. Raises
    ``ValueError`` naming the flag; call it before the work (a training run, a collection)."""
    if not path:
        return
    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is a file, not a folder: name a folder to write")
    _check_creatable(os.path.abspath(path), path, flag)
    for in_flag, folder in inputs:
        folder = os.path.expanduser(os.fspath(folder)) if folder else None
        if not folder or not os.path.isdir(folder):
            continue
        own = os.path.join(folder, "model") if os.path.isdir(os.path.join(folder, "model")) else folder
        if os.path.realpath(own) == os.path.realpath(path):
            raise ValueError(f"{flag} {path} is the {in_flag} folder: the run's snapshots, logs and model would be "
                             "written into it; name another folder")


def _check_creatable(folder: str, path: str, flag: str) -> None:
    """``folder`` (where ``path`` goes) exists and is writable, or can be made: its nearest existing
    ancestor is a writable folder."""
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder) if os.path.dirname(folder) != folder else ""
    if not folder:
        return
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path!r}: {folder!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path!r}: the folder {folder!r} is not writable (permission denied)")


@contextlib.contextmanager
def removing_new_folders_on_error(*paths: Optional[str]) -> Iterator[None]:
    """Run the block; when it fails, remove the folders among ``paths`` (and their parents) that did not
    exist before it and hold no file, so that a command refused part-way (a bad camera name found once
    the simulator starts) leaves no half-created output folder. Only empty folders are removed
    (``os.rmdir``): no file a command wrote, nothing that was there before."""
    new: set[str] = set()
    for path in paths:
        if not path:
            continue
        path = os.path.abspath(os.fspath(path))
        while not os.path.lexists(path) and os.path.dirname(path) != path:
            new.add(path)
            path = os.path.dirname(path)
    try:
        yield
    except BaseException:
        for path in sorted(new, key=lambda p: p.count(os.sep), reverse=True):  # the deepest first
            if os.path.islink(path) or not os.path.isdir(path):
                continue
            for root, _, _ in list(os.walk(path, topdown=False)):  # empty folders inside it, then it
                try:
                    os.rmdir(root)
                except OSError:  # not empty (a file was written there): left as it is
                    pass
        raise


def output_path(text: str) -> str:
    """``type=`` of an output-path flag (``--out``, ``--plot``): an empty or blank value (``--out "$OUT"`` with
    ``OUT`` unset) names nothing to write. Read as "no output", the results were silently not written; read as
    a path, the files went into the working folder. Refused at parse time, naming the flag."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"an empty path names nothing to write, got {text!r}: name a path")
    return text


class _OutputPath(argparse.Action):
    """:func:`output_path` as an action, for a config field whose default is ``""`` ("no output"): argparse runs
    a ``type=`` on a string default too, while an action runs only when the flag is given."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        try:
            setattr(namespace, self.dest, output_path(values))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e)) from None


def _split(text: str) -> list[str]:
    return [x for x in text.replace(" ", ",").split(",") if x]


def _numbers(text: str) -> tuple:
    try:
        return tuple(int(x) if x.lstrip("-").isdigit() else float(x) for x in _split(text))
    except ValueError:  # argparse's own message would read "invalid _numbers value"
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _or_none(kind: type):
    def parse(text: str) -> Any:
        return None if text.strip().lower() in ("none", "null") else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its errors
    return parse


def _shown_value(value: Any) -> str:
    """One default value for --help: a string as it is unless it has blanks at its ends, line breaks,
    tabs or other unprintable characters (then its repr, e.g. '\\n\\n': printed, they broke the help
    line into empty ones)."""
    text = str(value)
    if isinstance(value, str) and (not value.isprintable() or value != value.strip()):
        # argparse folds runs of spaces into one: those of the repr are written as \x20
        text = re.sub(r" {2,}", lambda m: "\\x20" * len(m.group()), repr(value))
    return text


def _shown_default(default: Any) -> str:
    """A field's default as ``--help`` shows it after "default:" (argparse's % formatting escaped)."""
    text = ",".join(map(_shown_value, default)) if isinstance(default, (list, tuple)) else _shown_value(default)
    return text.replace("%", "%%")


def flag_of(field: Any) -> str:
    """The command-line flag of a config dataclass field, as :func:`add_config_options` adds it."""
    return field.metadata.get("flag") or FLAG_NAMES.get(field.name, "--" + field.name.replace("_", "-"))


def flag_named(message: str, config: Any, flags: Optional[Mapping[str, str]] = None) -> str:
    """``message`` of a config check (``"batch_size must be …"``) with its leading field name spelt as the flag
    that sets it (``flags`` for fields a command spells otherwise); other messages unchanged."""
    name = message.split(" ", 1)[0]
    field = next((f for f in fields(config) if f.name == name), None) if hasattr(config, "__dataclass_fields__") \
        else None
    if field is None:
        return message
    return (flags or {}).get(name, flag_of(field)) + message[len(name):]


def add_config_options(parser: argparse.ArgumentParser, config_cls: type, *, skip: Sequence[str] = (),
                       choices: Optional[Mapping[str, Sequence[Any]]] = None) -> None:
    """Add one ``--field-name`` option per field of ``config_cls`` (``parser`` may be an argument group)."""
    hints = typing.get_type_hints(config_cls)
    for f in fields(config_cls):
        if f.name in skip:
            continue
        long_flag = "--" + f.name.replace("_", "-")
        flag = flag_of(f)
        default = f.default if f.default is not MISSING else f.default_factory()
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = type(None) in typing.get_args(hint) and len(args) == 1
        kind = args[0] if optional else hint
        shown = "" if default in (None, "") else f" (default: {_shown_default(default)})"
        help_text = f.metadata.get("help", "") + shown
        kw: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        writes = flag == "--out" and kind is str and not optional  # an output path: never empty (see output_path)
        if flag != long_flag:  # the long spelling still works, hidden from --help
            parser.add_argument(long_flag, dest=f.name, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                                **({"action": _OutputPath} if writes else {"type": _or_none(kind) if optional else kind}))
        if kind is list or typing.get_origin(kind) is list:
            kw["type"] = _split
        elif kind is tuple or typing.get_origin(kind) is tuple:
            kw["type"] = _numbers
        elif writes:
            kw["action"] = _OutputPath
        else:
            kw["type"] = _or_none(kind) if optional else kind
            if optional:  # what 'none' means, unless the help says it (a field's metadata may: "none_help")
                none_help = f.metadata.get("none_help", "'none' for none")
                if none_help and not re.search(r"'none'|\bnone:", kw["help"], re.IGNORECASE):
                    kw["help"] += f"; {none_help}"
        if choices and f.name in choices:
            kw["choices"] = tuple(choices[f.name])
        parser.add_argument(flag, **kw)


def config_from_args(config_cls: type, args: argparse.Namespace, *, skip: Sequence[str] = (), **extra: Any) -> Any:
    """The ``config_cls`` instance that :func:`add_config_options`' flags describe (plus ``extra``)."""
    kw = {f.name: getattr(args, f.name) for f in fields(config_cls) if f.name not in skip and hasattr(args, f.name)}
    kw.update(extra)
    return config_cls(**kw)


def print_training_summary(history: Sequence[Mapping[str, Any]], before: Optional[Mapping[str, float]],
                           model_folder: str) -> None:
    """The last line a training command prints: final step / loss and, with held-out figures from
    before training, those beside the Trainer's final ``eval_*`` ones (one JSON line), then the model folder."""
    last = history[-1] if history else {}
    shown = {"step": last.get("step"), "loss": last.get("loss")}
    if before is not None:
        shown |= {f"eval_{k}_before": v for k, v in before.items()}
        shown |= {k: v for k, v in last.items() if k.startswith("eval_")}
    print(json_text({k: round(v, 4) if isinstance(v, float) else v for k, v in shown.items()}))
    print(f"model: {model_folder}")


__all__ = ["CLIParser", "FLAG_NAMES", "add_config_options", "flag_named", "flag_of", "check_output_file", "check_output_folder", "config_from_args", "output_path", "print_training_summary",
           "removing_new_folders_on_error", "run_cli", "utf8_text"]
