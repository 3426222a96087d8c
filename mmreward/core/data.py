"""Record readers shared by the domain packages: JSON, JSONL and saved ``datasets`` datasets (or an
in-memory list of dicts) → a list of dicts, with errors that name the file, row and line.

    rows = read_records("pairs.jsonl")                 # [{...}, {...}, ...]
    rows = read_records("data/train_ds", split="train")  # datasets.save_to_disk folder

Accepted layouts:

* ``.jsonl`` / ``.ndjson``: one JSON object per line (blank lines skipped).
* ``.json``: a list of objects, or an object holding one under a key ``data`` / ``rows`` /
  ``examples`` / ``train`` (or ``split=``; an object holding several lists of rows needs it), or — when
  the whole file does not parse — JSON lines.
* a folder written by ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (a
  ``DatasetDict`` needs ``split=`` unless it has exactly one split; ``datasets`` imported lazily).

Row indices in errors are 0-based positions in the returned list; JSONL errors also give the
1-based line number.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Optional, Union

RecordSource = Union[str, os.PathLike, Iterable[dict]]

_LIST_KEYS = ("data", "rows", "examples", "train")


class DataError(ValueError):
    """Input data is unreadable or a row is malformed (the message names the row and field)."""


def _not_utf8(path: str, data: bytes, e: UnicodeDecodeError, lineno: Optional[int] = None) -> DataError:
    """The DataError for bytes that are not UTF-8 (``data``: the file, or line ``lineno`` of it)."""
    lineno = lineno or data[:e.start].count(b"\n") + 1
    column = e.start - data.rfind(b"\n", 0, e.start)
    return DataError(f"{path}: line {lineno} is not UTF-8 text (byte {data[e.start:e.start + 1]!r} at column "
                     f"{column}); re-save the file as UTF-8")


def _no_splits(split: Optional[str], what: str) -> None:
    """A split asked of a source that has none is an error, not silently the whole source."""
    if split:
        raise DataError(f"{what}, not a set of splits: split {split!r} applies to a .json object of lists "
                        "or a saved DatasetDict (leave the split out)")


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                # utf-8-sig on the first line: a byte-order mark (Windows editors, Excel's "UTF-8" export) is no data
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, raw, e, lineno) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno} (row {len(rows)}) is not valid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {lineno} (row {len(rows)}) must be a JSON object, "
                                f"got {type(obj).__name__}")
            rows.append(obj)
    return rows


# the flag is the caller's: the split of --eval-data is --eval-split (of --solutions, --solutions-split)
_CHOOSE_SPLIT = "choose one with split=... (on the command line: --split for --data, --eval-split for --eval-data)"


def _read_json(path: str, split: Optional[str]) -> list[dict]:
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")  # a leading byte-order mark is no data
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data, e) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("{") and "\n" in text.strip():
            try:
                rows = _read_jsonl(path)  # JSON lines saved with a .json name
            except DataError:
                rows = None
            if rows is not None:
                _no_splits(split, f"{path} holds JSON lines")
                return rows
        raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    if isinstance(obj, dict):
        if split and not isinstance(obj.get(split), list):
            splits = sorted(k for k, v in obj.items() if isinstance(v, list))
            raise DataError(f"{path} has no split {split!r}; its lists are under {splits}")
        if not split:  # several lists of rows ("train" + "test"): which one is the user's to say, as for a
            # saved DatasetDict (an evaluation read from "train" would report training rows without a word)
            row_lists = sorted(k for k, v in obj.items() if isinstance(v, list) and v and isinstance(v[0], dict))
            if len(row_lists) > 1:
                raise DataError(f"{path} holds several lists of rows, {row_lists[:8]}: {_CHOOSE_SPLIT}")
        keys = [split] if split else list(_LIST_KEYS)
        for k in keys:
            if isinstance(obj.get(k), list):
                obj = obj[k]
                break
        else:
            splits = sorted(k for k, v in obj.items() if isinstance(v, list))
            if splits:  # lists under other names: splits to choose from, as a DatasetDict's
                raise DataError(f"{path} holds lists under {splits[:8]}, none of them "
                                f"{' / '.join(repr(k) for k in keys)}: {_CHOOSE_SPLIT}")
            raise DataError(f"{path}: expected a list of objects (or an object with a list under "
                            f"{' / '.join(repr(k) for k in keys)}), got an object with keys {sorted(obj)[:8]}")
    elif isinstance(obj, list):
        _no_splits(split, f"{path} holds one list of rows")
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a list of objects, got {type(obj).__name__}")
    for i, r in enumerate(obj):
        if not isinstance(r, dict):
            raise DataError(f"{path}: row {i} must be a JSON object, got {type(r).__name__}")
    return obj


def _read_saved_dataset(path: str, split: Optional[str]) -> list[dict]:
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"{path} is a folder: reading a saved dataset needs the `datasets` package ({e})") from None
    try:
        ds = datasets.load_from_disk(path)
    except Exception as e:  # datasets raises FileNotFoundError / ValueError for non-dataset folders
        raise DataError(f"{path}: not a dataset saved with `save_to_disk`: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds.keys())
        if split is None:
            if len(names) != 1:
                raise DataError(f"{path} holds splits {names}: {_CHOOSE_SPLIT}")
            split = names[0]
        if split not in ds:
            raise DataError(f"{path} has no split {split!r}; it has {names}")
        ds = ds[split]
    else:
        _no_splits(split, f"{path} is a dataset without splits")
    return [dict(r) for r in ds]


def data_path(path: Union[str, os.PathLike]) -> str:
    """``path`` of a data file as :func:`read_records` reads it: ``~/pairs.jsonl`` (quoted, or from Python) is the
    home folder's, unless a file of that literal name exists."""
    path = os.fspath(path)
    if path.startswith("~") and not os.path.exists(path):
        path = os.path.expanduser(path)
    return path


def read_records(source: RecordSource, *, split: Optional[str] = None) -> list[dict]:
    """Rows of ``source`` (a path to .json / .jsonl / a saved dataset folder, or an iterable of dicts)."""
    if isinstance(source, (str, os.PathLike)):
        path = data_path(source)
        if os.path.isdir(path):
            return _read_saved_dataset(path, split)
        if not os.path.exists(path):
            raise FileNotFoundError(f"data file {path!r} does not exist")
        if path.endswith((".jsonl", ".ndjson", ".jsonl.txt")):
            _no_splits(split, f"{path} is a JSON-lines file")
            return _read_jsonl(path)
        if path.endswith(".json"):
            return _read_json(path, split)
        raise DataError(f"{path}: unknown data format (expected .json, .jsonl or a saved `datasets` folder)")
    if isinstance(source, dict):
        raise TypeError("expected a list of dicts or a path, got a single dict")
    _no_splits(split, f"a {type(source).__name__} of rows")
    if hasattr(source, "column_names") and hasattr(source, "__getitem__"):  # an in-memory datasets.Dataset
        return [dict(r) for r in source]
    try:
        rows = list(source)
    except TypeError:
        raise TypeError(f"expected a path or a list of dicts, got {type(source).__name__}") from None
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DataError(f"row {i} must be a dict, got {type(r).__name__}")
    return rows


# row fields that hold media paths (one path or a list of them)
MEDIA_PATH_FIELDS = ("image", "images", "video", "frames", "episode")


def resolve_media_paths(rows: list, data: str) -> list:
    """Copies of ``rows`` whose relative media paths (:data:`MEDIA_PATH_FIELDS`; URLs and ``data:``
    strings left alone) point into the folder of the data file ``data``: rows written next to their
    images score from any working folder, and a same-named file in the working folder is never read
    instead. Rows that are not objects pass through (their reader reports them)."""
    base = os.path.dirname(os.path.abspath(data_path(data)))  # "~/rows.jsonl": its images are next to it there

    def resolve(value: Any) -> Any:
        if not isinstance(value, str) or not value or os.path.isabs(value) or "://" in value \
                or value.startswith("data:"):
            return value
        return os.path.join(base, value)

    out = []
    for row in rows:
        if isinstance(row, dict):
            row = dict(row)
            for key in MEDIA_PATH_FIELDS:
                if key in row:
                    value = row[key]
                    row[key] = [resolve(v) for v in value] if isinstance(value, list) else resolve(value)
        out.append(row)
    return out


def require_fields(row: dict, index: int, fields: Iterable[str], where: str = "") -> None:
    """Raise ``DataError`` naming the row and the first missing field."""
    for name in fields:
        if name not in row or row[name] is None:
            have = ", ".join(sorted(map(str, row))[:10]) or "none"
            raise DataError(f"{where}row {index}: missing field {name!r} (fields present: {have})")


def describe(value: Any, limit: int = 60) -> str:
    """Short repr for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
