"""Record readers shared by the domain packages: JSON, JSONL, Parquet, dataset folders and hub datasets
(or an in-memory list of dicts) → a list of dicts, with errors that name the file, row and line.

    rows = read_records("pairs.jsonl")                   # [{...}, {...}, ...]
    rows = read_records("train-00000-of-00001.parquet")  # a file of a hub dataset
    rows = read_records("data/train_ds", split="train")  # datasets.save_to_disk folder
    rows = read_records("hh-rlhf", split="test")         # a downloaded dataset repository
    rows = read_records("Anthropic/hh-rlhf", split="test[:500]")  # a hub dataset id

Accepted layouts:

* ``.jsonl`` / ``.ndjson``: one JSON object per line (blank lines skipped).
* ``.json``: a list of objects, or an object holding one under a key ``data`` / ``rows`` /
  ``examples`` / ``train`` (or ``split=``; an object holding several lists of rows needs it), or — when
  the whole file does not parse — JSON lines.
* either of the two gzip-compressed (``.jsonl.gz``, ``.json.gz``: Anthropic HH-RLHF's files).
* ``.csv`` / ``.tsv`` (either may be ``.gz``): a header line, then one row per record (:func:`_read_csv`: empty
  cells are missing values, number and true / false columns typed as ``datasets`` types them).
* ``.parquet`` (pyarrow, imported lazily): the files hub datasets are stored as. Image columns in the
  ``datasets`` layout (``{"bytes", "path"}``) become ``data:`` URIs / paths the image readers take.
* a folder written by ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a folder of
  data files as a dataset repository holds them (a downloaded hub dataset: ``data/train-*.parquet``,
  ``test.jsonl``, a README's ``configs``: the splits and their files as ``datasets.load_dataset_builder``
  resolves them, each file read by the readers here). Either needs ``split=``
  unless it has exactly one split; ``datasets`` is imported lazily.
* a hub dataset id (``owner/name``) that is not a local path: ``datasets.load_dataset(id, split=...)``,
  which downloads it (or reads the local cache under ``HF_HUB_OFFLINE=1``). For a repository folder, a
  saved DatasetDict or a hub id ``split`` may slice (``"train[:1000]"``, ``"train[-10%:]"``); a window that
  selects none of the split's rows (``"train[5:2]"``) or a percentage outside -100..100 is an error.

Row indices in errors are 0-based positions in the returned list; JSONL errors also give the
1-based line number.

``iter_records(source)`` gives the same rows one at a time: JSON-lines and parquet files, and dataset folders of
such shards, are then read as the rows are consumed (memory holds a row, not the file); other sources are read
whole first (``streams(source)`` says which).
"""
from __future__ import annotations

import itertools
import json
import os
import re
import threading
from typing import Any, Iterable, Iterator, Optional, Union

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


def _utf8_text(path: str, data: bytes) -> str:
    """A whole file's bytes as text; a leading byte-order mark (Windows editors, Excel's "UTF-8" exports) is no
    data. It is cut before decoding, so a bad byte's position is counted in the file's own bytes ("utf-8-sig"
    counts after the mark: the error named the byte three places before the bad one)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data, e) from None


def _no_splits(split: Optional[str], what: str) -> None:
    """A split asked of a source that has none is an error, not silently the whole source."""
    if split:
        raise DataError(f"{what}, not a set of splits: split {split!r} applies to a source of several splits (a "
                        "dataset repository folder, a saved DatasetDict, a hub id, a .json object of lists) or to "
                        "preference rows that name their split in a field 'split' (leave the split out)")


def _open_bytes(path: str):
    """The file's bytes as a binary stream: ``.gz`` files decompressed (their damage shows when read)."""
    if path.lower().endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    return open(path, "rb")


def _gzip_error(path: str, e: Exception) -> DataError:
    return DataError(f"{path}: not a readable gzip file ({e})")


def _read_jsonl(path: str) -> list[dict]:
    return list(_iter_jsonl(path))


def _iter_jsonl(path: str) -> Iterator[dict]:
    """The rows of a JSON-lines file (``.gz``: gzipped) one at a time, as they are read."""
    try:
        with _open_bytes(path) as f:
            yield from jsonl_rows(f, path)
    except (EOFError, OSError) as e:  # gzip.BadGzipFile is an OSError; a cut-off .gz ends in EOFError
        if path.lower().endswith(".gz") and not isinstance(e, FileNotFoundError):
            raise _gzip_error(path, e) from None
        raise


# the longest JSON line read (bytes): a line is read whole before it is parsed, so a file of one multi-GB line (a
# JSON array saved with a .jsonl name, a broken export, a hostile upload) would take that much memory, and then
# several times more as text and objects; a real row (a long conversation, an inline image) is far below it
MAX_LINE_BYTES_ENV = "MMREWARD_MAX_LINE_BYTES"
DEFAULT_MAX_LINE_BYTES = 256 << 20


def max_line_bytes() -> int:
    """The longest JSON line read: ``$MMREWARD_MAX_LINE_BYTES`` (bytes), else 256 MiB."""
    value = os.environ.get(MAX_LINE_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_LINE_BYTES
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise DataError(f"{MAX_LINE_BYTES_ENV} must be a whole number of bytes >= 1, got {value!r}")
    return limit


def _lines_upto(f: Iterable[bytes], limit: int) -> Iterable[bytes]:
    """The lines of ``f``, none read past ``limit + 1`` bytes (a longer line comes in pieces: the first one, of
    ``limit + 1`` bytes without its newline, says the line is too long before the rest of it is read)."""
    readline = getattr(f, "readline", None)
    if readline is None:  # an iterable of lines already in memory
        return f
    import functools

    return iter(functools.partial(readline, limit + 1), b"")  # C-level calls: as fast as iterating the file


def _too_long(path: str, lineno: int, limit: int) -> DataError:
    return DataError(f"{path}: line {lineno} is longer than {limit} bytes (the most one JSON line may hold): not a "
                     "JSON-lines file (one JSON object per line), or a row far larger than any input; set "
                     f"{MAX_LINE_BYTES_ENV} (bytes) to read longer lines")


def jsonl_rows(f: Iterable[bytes], path: str) -> Iterator[dict]:
    """The JSON objects of the lines of the binary stream ``f`` (a file, ``sys.stdin.buffer``) named ``path`` in
    errors, one at a time: blank lines skipped, each error naming the line and the row. A line longer than
    :func:`max_line_bytes` is an error naming it (read no further than the limit)."""
    row = 0
    limit = max_line_bytes()
    for lineno, raw in enumerate(_lines_upto(f, limit), 1):
        if len(raw) > limit and not raw.endswith(b"\n"):  # limit bytes and the newline are limit + 1
            raise _too_long(path, lineno, limit)
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
            raise DataError(f"{path}: line {lineno} (row {row}) is not valid JSON: {e.msg}") from None
        except RecursionError:  # 100 000 nested brackets: Python's parser gives up
            raise DataError(f"{path}: line {lineno} (row {row}) is nested too deeply to be read") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {lineno} (row {row}) must be a JSON object, got {type(obj).__name__}")
        row += 1
        yield obj


# the flag is the caller's: the split of --eval-data is --eval-split (of --solutions, --solutions-split)
_CHOOSE_SPLIT = "choose one with split=... (on the command line: --split for --data, --eval-split for --eval-data)"


def _read_text(path: str) -> str:
    """The whole text of a (``.gz``: gzipped) UTF-8 file; a damaged gzip stream or a byte that is not UTF-8 is
    named with where it is."""
    try:
        with _open_bytes(path) as f:
            data = f.read()
    except (EOFError, OSError) as e:
        if path.lower().endswith(".gz") and not isinstance(e, FileNotFoundError):
            raise _gzip_error(path, e) from None
        raise
    return _utf8_text(path, data)


def _read_json(path: str, split: Optional[str]) -> list[dict]:
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except RecursionError:
        raise DataError(f"{path}: nested too deeply to be read as JSON") from None
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
    if isinstance(obj, dict) and split and "[" in split and not isinstance(obj.get(split), list):
        name, window, percent = _split_window(split, path)  # "train[:1000]" of an object of lists
        return _in_window(_read_json(path, name), window, percent, split, name, path)
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


JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.txt", ".jsonl.gz", ".ndjson.gz")
JSON_SUFFIXES = (".json", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
# files a dataset repository holds its rows in (what ``datasets.load_dataset`` reads from a folder)
_REPO_DATA_SUFFIXES = JSONL_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES + CSV_SUFFIXES + (".arrow",)
# CSV columns kept as text even when every cell is a number: a response "4" is an answer, not a count
CSV_TEXT_COLUMNS = ("prompt", "chosen", "rejected", "response", "text", "question", "input", "system", "context",
                    "response_0", "response_1", "response_2", "response1", "response2", "answer", "solution",
                    "completion", "instruction", "query", "problem")
_CSV_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


_CSV_LIMIT_LOCK = threading.Lock()


def _read_csv(path: str, split: Optional[str]) -> list[dict]:
    """Rows of a CSV (``.tsv``: tab-separated) file with a header line, as ``datasets`` / pandas read one: an
    empty cell is a missing value (None), a column whose every cell is a number holds numbers (except
    :data:`CSV_TEXT_COLUMNS`), one of ``true`` / ``false`` only holds booleans; every other cell is text."""
    import csv
    import io

    _no_splits(split, f"{path} is a CSV file")
    text = _read_text(path)
    delimiter = "\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    # csv's own cap on one cell is 128 KiB: a long answer or an inline image (a data: URI) that a JSON line holds
    # was refused in a CSV ("field larger than field limit"); a cell may be as long as a JSON line (the whole file
    # is in memory already). The cap is csv's global setting: raised (never lowered, so that concurrent reads in
    # other threads keep theirs), under a lock
    with _CSV_LIMIT_LOCK:
        if csv.field_size_limit() < max_line_bytes():
            csv.field_size_limit(max_line_bytes())
    try:
        header = next(reader, None)
        if header is None:
            return []
        names = [h.strip() for h in header]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise DataError(f"{path}: line 1 is not a header of distinct column names: {names[:12]}")
        rows, lines = [], []
        for record in reader:
            if not record or all(not c.strip() for c in record) and len(record) <= 1:  # a blank line
                continue
            if len(record) != len(names):
                raise DataError(f"{path}: line {reader.line_num} (row {len(rows)}) has {len(record)} fields, the "
                                f"header names {len(names)} ({', '.join(names[:12])}); quote a field that holds "
                                f"{'a tab' if delimiter == chr(9) else 'a comma'} or a line break")
            rows.append([c if c != "" else None for c in record])
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: not readable as CSV ({e})") from None
    for j, name in enumerate(names):
        cells = [r[j] for r in rows if r[j] is not None]
        if not cells or name in CSV_TEXT_COLUMNS:
            continue
        if all(c.strip().lower() in ("true", "false") for c in cells):
            kind = "bool"
        elif all(_CSV_NUMBER.fullmatch(c.strip()) for c in cells):
            kind = "int" if all(re.fullmatch(r"[+-]?\d+", c.strip()) for c in cells) else "float"
        else:
            continue
        for r in rows:
            if r[j] is not None:
                c = r[j].strip()
                r[j] = c.lower() == "true" if kind == "bool" else int(c) if kind == "int" else float(c)
    return [dict(zip(names, r)) for r in rows]
# the metadata a dataset repository keeps beside its data files: not rows
_REPO_METADATA = ("dataset_infos.json", "dataset_info.json", "dataset_dict.json", "state.json")
_FORMATS = ".json, .jsonl, .csv, .tsv (any of them may be .gz), .parquet, a dataset folder or a hub dataset id"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _read_parquet(path: str, split: Optional[str]) -> list[dict]:
    _no_splits(split, f"{path} is a parquet file")
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install 'mmreward[published]'): {e}") from None
    try:
        # pyarrow directly: datasets would copy the file into its cache first, and fail there on a damaged
        # file with an error that does not name it
        rows = pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({' '.join(str(e).split())})") from None
    return [_parquet_row(r) for r in rows]


def _parquet_row(r: dict) -> dict:
    return {k: _image_bytes(_image_struct(v)) if k in _IMAGE_FIELDS else _image_struct(v) for k, v in r.items()}


def _iter_parquet(path: str) -> Iterator[dict]:
    """The rows of a parquet file a batch of rows at a time (not the whole table in memory)."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        for batch in batches:
            yield from (_parquet_row(r) for r in batch.to_pylist())
    except (pyarrow.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({' '.join(str(e).split())})") from None


_IMAGE_FIELDS = ("image", "images")  # row fields the image readers take (a data: URI of raw bytes included)


def _image_bytes(value: Any) -> Any:
    """An image column stored as raw encoded bytes (a binary column, not the ``datasets`` struct) → a ``data:``
    URI, which the image readers open (bytes themselves they refuse); lists of them likewise."""
    if isinstance(value, list):
        return [_image_bytes(v) for v in value]
    if isinstance(value, (bytes, bytearray)) and value:
        return _data_uri(bytes(value))
    return value


def inline_image(value: Any) -> Any:
    """One image as dataset rows give it → what the image readers take: a ``datasets`` Image value
    (``{"bytes", "path"}``) or encoded bytes (a binary column, as Pick-a-Pic's ``jpg_0``) become a ``data:`` URI
    (the value's path when it has no bytes; a null image None); anything else is returned as it is."""
    value = _image_struct(value)
    if isinstance(value, memoryview):
        value = bytes(value)
    return _image_bytes(value) if isinstance(value, (bytes, bytearray)) else value


def _data_uri(data: bytes) -> str:
    import base64

    return f"data:{_image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def _image_struct(value: Any) -> Any:
    """A ``datasets`` Image value as parquet stores it (``{"bytes": b, "path": p}``) → a ``data:`` URI of its
    bytes (or its path when it has no bytes), which the image readers open; lists of them likewise."""
    if isinstance(value, list):  # a list column of images may hold nulls anywhere, the first included
        return [_image_struct(v) for v in value] if any(isinstance(v, dict) for v in value) else value
    if not (isinstance(value, dict) and set(value) == {"bytes", "path"}):
        return value
    data, path = value["bytes"], value["path"]
    if isinstance(data, (bytes, bytearray)) and data:
        return _data_uri(bytes(data))
    if isinstance(path, str) and path:
        return path
    if data in (None, b"") and path in (None, ""):  # a null image (datasets writes a missing one so): no image
        return None
    return value


def _image_mime(data: bytes) -> str:
    for magic, mime in ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"),
                        (b"BM", "image/bmp")):
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"  # the image reader recognises the format from the bytes


def _is_saved_dataset(path: str) -> bool:
    """A folder written by ``save_to_disk`` (a Dataset's ``state.json``, a DatasetDict's ``dataset_dict.json``)."""
    return any(os.path.isfile(os.path.join(path, f)) for f in ("state.json", "dataset_dict.json"))


def _repo_data_files(path: str, limit: int = 8) -> list[str]:
    """Up to ``limit`` data files under the folder ``path`` (hidden folders such as ``.cache`` skipped)."""
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.lower().endswith(_REPO_DATA_SUFFIXES) and f not in _REPO_METADATA and not f.startswith("."):
                found.append(os.path.relpath(os.path.join(root, f), path))
                if len(found) >= limit:
                    return found
    return found


def _import_datasets(what: str):
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"{what}: reading it needs the `datasets` package (pip install 'mmreward[text]'): {e}") from None
    return datasets


def _load_dataset(source: str, split: Optional[str], what: str) -> list[dict]:
    """Rows of a dataset repository (a local folder of data files or a hub id) read by ``load_dataset``."""
    datasets = _import_datasets(what)
    try:
        ds = datasets.load_dataset(source, split=split or None)
    except Exception as e:  # datasets raises many types (ValueError, DatasetGenerationError, ConnectionError...)
        detail = " ".join(str(e).split())[:400]
        if split and "split" in detail.lower():
            raise DataError(f"{what} has no split {split!r}: {detail}") from None
        raise DataError(f"{what}: cannot read it as a dataset ({type(e).__name__}: {detail})") from None
    return _rows_of(ds, split, what, datasets)


def _rows_of(ds: Any, split: Optional[str], what: str, datasets: Any) -> list[dict]:
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds.keys())
        if split is None:
            if len(names) != 1:
                raise DataError(f"{what} holds splits {names}: {_CHOOSE_SPLIT}")
            split = names[0]
        if split not in ds:
            raise DataError(f"{what} has no split {split!r}; it has {names}")
        ds = ds[split]
    elif not isinstance(ds, datasets.Dataset):  # an IterableDataset (streaming) or a future type
        raise DataError(f"{what}: expected a Dataset or DatasetDict, got {type(ds).__name__}")
    return [dict(r) for r in ds]


def _read_saved_dataset(path: str, split: Optional[str]) -> list[dict]:
    datasets = _import_datasets(f"{path} is a saved dataset folder")
    try:
        ds = datasets.load_from_disk(path)
    except Exception as e:  # datasets raises FileNotFoundError / ValueError for damaged folders
        raise DataError(f"{path}: not a readable dataset saved with `save_to_disk`: {e}") from None
    if isinstance(ds, datasets.Dataset):
        _no_splits(split, f"{path} is a dataset without splits")
    if split and "[" in split and isinstance(ds, datasets.DatasetDict):  # "train[:1000]", as for a repository
        name, window, percent = _split_window(split, path)
        return _in_window(_rows_of(ds, name, path, datasets), window, percent, split, name, path)
    return _rows_of(ds, split, path, datasets)


def _model_folder_type(path: str) -> Optional[str]:
    """The ``model_type`` (or architecture) of a model folder — its own ``config.json``, or a training run's
    ``model/config.json`` — else None: given as data, its JSON files were read as rows ("manifest.json:
    expected a list of objects"), a message that never said the folder is a model."""
    for config in (os.path.join(path, "config.json"), os.path.join(path, "model", "config.json")):
        try:
            with open(config, encoding="utf-8") as f:
                cfg = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(cfg, dict):
            archs = cfg.get("architectures")
            kind = cfg.get("model_type") or (archs[0] if isinstance(archs, list) and archs else None)
            if isinstance(kind, str) and kind:
                return kind
    return None


def _read_folder(path: str, split: Optional[str]) -> list[dict]:
    if _is_saved_dataset(path):
        return _read_saved_dataset(path, split)
    kind = _model_folder_type(path)
    if kind is not None:
        raise DataError(f"{path} is a model folder ({kind}), not data: give it as the model (--model), and the "
                        "data as a data file or dataset folder")
    if not _repo_data_files(path, limit=1):
        raise DataError(f"{path} is a folder with neither a saved dataset (save_to_disk) nor data files "
                        f"({', '.join(_REPO_DATA_SUFFIXES)}); give a data file or a dataset folder")
    return _read_repo_folder(path, split)


_SPLIT_WINDOW = re.compile(r"(?P<name>[^\[\]]+?)\s*(?:\[\s*(?P<start>-?\d+%?)?\s*:\s*(?P<stop>-?\d+%?)?\s*\])?")


def _split_window(split: str, what: str) -> tuple[str, slice, bool]:
    """``"test"`` / ``"train[:1000]"`` / ``"train[10%:]"`` → (split name, the rows' slice, whether percent)."""
    m = _SPLIT_WINDOW.fullmatch(split.strip())
    if not m:
        raise DataError(f"{what}: split {split!r} is not NAME or NAME[start:stop] (e.g. 'train[:1000]')")
    start, stop = m["start"], m["stop"]
    percent = any(x is not None and x.endswith("%") for x in (start, stop))
    if percent and not all(x is None or x.endswith("%") for x in (start, stop)):
        raise DataError(f"{what}: split {split!r} mixes a row count with a percentage")

    def num(x):
        return None if x is None else int(x.rstrip("%"))
    return m["name"], slice(num(start), num(stop)), percent


def _read_repo_folder(path: str, split: Optional[str]) -> list[dict]:
    """Rows of a dataset repository folder: its splits and their files as ``datasets`` resolves them (file-name
    patterns such as ``data/train-*``, or the README's ``configs``), each file read by the readers here, so
    an error names the file, row and line (and nothing is copied into the ``datasets`` cache)."""
    files, name, window, percent = _repo_split_files(path, split)
    metadata = [f for f in files if os.path.basename(f).lower() in _FOLDER_METADATA]
    if metadata and all(f in metadata or not f.lower().endswith(_REPO_DATA_SUFFIXES) for f in files):
        # an imagefolder: its rows are in the metadata files, each naming media beside it (file_name); a folder of
        # data files that holds a metadata.jsonl as well is read whole, as before
        files = metadata
    else:
        metadata = []
    rows = FileRows()
    for f in files:
        rows.files.append((len(rows), f))
        rows.extend(resolve_media_paths(read_records(f), f) if metadata else read_records(f))
    return _in_window(rows, window, percent, split, name, path)


def _repo_split_files(path: str, split: Optional[str]) -> tuple[list[str], str, slice, bool]:
    """(the data files of split ``split`` of a dataset repository folder, the split's name, the rows' window, whether
    the window is in percent), as ``datasets`` resolves them."""
    datasets = _import_datasets(f"{path} is a dataset folder")
    try:
        files = datasets.load_dataset_builder(path).config.data_files or {}
    except Exception as e:  # several configs, unknown layouts: datasets' message says which
        raise DataError(f"{path}: cannot tell the splits of this dataset folder ({' '.join(str(e).split())[:300]}); "
                        "give one data file instead") from None
    files = {str(k): list(v) for k, v in files.items()}
    names = list(files)
    if not names:
        raise DataError(f"{path}: no data files found for any split")
    window, percent = slice(None), False
    if split:
        split, window, percent = _split_window(split, path)
    elif len(names) != 1:
        raise DataError(f"{path} holds splits {names}: {_CHOOSE_SPLIT}")
    else:
        split = names[0]
    if split not in files:
        raise DataError(f"{path} has no split {split!r}; it has {names}")
    return [str(f) for f in files[split]], split, window, percent


class FileRows(list):
    """The rows of several files (a dataset folder's shards), with where each file's rows start (``files``:
    ``(first row, path)``), so that an error about row 73,451 can name its shard and its row there."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.files: list[tuple[int, str]] = []


def row_origin(rows: Any, index: int) -> Optional[tuple[str, int]]:
    """``(file, row in that file)`` of ``rows[index]`` when ``rows`` came from several files (:class:`FileRows`),
    else None (one file or rows in memory: the index is the row's own)."""
    files = getattr(rows, "files", None)
    if not files or (len(files) < 2 and not getattr(rows, "several_files", False)):
        return None
    # the last file starting at or before the row: an empty shard starts where the next one does
    start, path = [f for f in files if f[0] <= index][-1]
    return path, index - start


def _in_window(rows: list, window: slice, percent: bool, asked: Optional[str], split: str, what: str) -> list:
    """The rows of split ``split`` that the window of ``asked`` (``"train[:1000]"``) selects, as datasets slices."""
    if window == slice(None):
        return rows
    n = len(rows)
    if percent:
        if any(x is not None and not -100 <= x <= 100 for x in (window.start, window.stop)):
            raise DataError(f"{what}: split {asked!r}: a percentage must lie in -100%..100%")
        window = slice(*(None if x is None else round(n * x / 100) for x in (window.start, window.stop)))
    picked = rows[window]
    if n and not picked:  # train[5:2], train[:0], train[200:] of 100 rows: an empty read is a mistyped window
        raise DataError(f"{what}: split {asked!r} selects none of the {n} rows of split {split!r}")
    return picked


def data_path(path: Union[str, os.PathLike]) -> str:
    """``path`` of a data file as :func:`read_records` reads it: ``~/pairs.jsonl`` (quoted, or from Python) is the
    home folder's, unless a file of that literal name exists."""
    path = os.fspath(path)
    if path.startswith("~") and not os.path.exists(path):
        path = os.path.expanduser(path)
    return path


def in_memory_rows(source: Any, split: Optional[str]) -> tuple[Any, Optional[str]]:
    """(rows, split left to apply) of an in-memory ``datasets.DatasetDict`` (what ``load_dataset(id)`` returns
    without ``split=``: one split picked, as from a saved DatasetDict folder) or a pandas DataFrame (its rows,
    missing cells None); any other source unchanged."""
    kind = type(source).__name__
    if kind in ("DatasetDict", "IterableDatasetDict") and isinstance(source, dict):
        names = list(source)
        if split:
            name, window, percent = _split_window(split, f"the {kind}")
            if name not in source:
                raise DataError(f"the {kind} has no split {name!r}; it has {names}")
            if kind == "IterableDatasetDict" and window != slice(None):
                # a stream has no length: read only the rows the window names (not the whole, maybe endless, stream)
                if percent or any(x is not None and x < 0 for x in (window.start, window.stop)):
                    raise DataError(f"the {kind}: split {split!r} counts from the end or in percent, which a "
                                    "streaming split (no length) cannot: give row counts, e.g. 'train[:1000]'")
                return _in_window([dict(r) for r in itertools.islice(source[name], window.start, window.stop)],
                                  slice(None), False, split, name, f"the {kind}"), None
            return _in_window([dict(r) for r in source[name]], window, percent, split, name, f"the {kind}"), None
        if len(names) != 1:
            raise DataError(f"the {kind} holds splits {names}: pass one split (e.g. ds[{names[0]!r}], or "
                            f"split={names[0]!r} where the function takes split=), so that held-out rows are not "
                            "trained on or evaluated")
        return source[names[0]], None
    library = type(source).__module__.split(".")[0]
    if kind == "DataFrame" and library == "pandas":
        # iterating a DataFrame gives its column names ("row 0 must be a dict, got str"); NaN is pandas' empty cell
        return source.astype(object).where(source.notna(), None).to_dict("records"), split
    if kind == "DataFrame" and library == "polars":
        return source.to_dicts(), split
    return source, split


def read_records(source: RecordSource, *, split: Optional[str] = None) -> list[dict]:
    """Rows of ``source``: a path (.json / .jsonl / .parquet / a dataset folder / a hub dataset id), or in
    memory a list of dicts, a ``datasets.Dataset`` / ``DatasetDict`` (one split) or a pandas DataFrame."""
    if not isinstance(source, (str, os.PathLike)):
        source, split = in_memory_rows(source, split)
    if isinstance(source, (str, os.PathLike)):
        path = data_path(source)
        if os.path.isdir(path):
            return _read_folder(path, split)
        if not os.path.exists(path):
            if _HUB_ID.fullmatch(path) and not path.lower().endswith(_REPO_DATA_SUFFIXES):
                return _read_hub_dataset(path, split)
            raise FileNotFoundError(f"data file {path!r} does not exist")
        suffix = path.lower()  # "PAIRS.JSONL" (a Windows export) is JSON lines too
        if suffix.endswith(JSONL_SUFFIXES):
            _no_splits(split, f"{path} is a JSON-lines file")
            return _read_jsonl(path)
        if suffix.endswith(JSON_SUFFIXES):
            return _read_json(path, split)
        if suffix.endswith(PARQUET_SUFFIXES):
            return _read_parquet(path, split)
        if suffix.endswith(CSV_SUFFIXES):
            return _read_csv(path, split)
        raise DataError(f"{path}: unknown data format (expected {_FORMATS})")
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


_STREAMED = JSONL_SUFFIXES + PARQUET_SUFFIXES


def _streamed_files(source: Any, split: Optional[str]) -> Optional[list[str]]:
    """The files :func:`iter_records` reads one after the other as their rows are consumed: a JSON-lines file
    (``.gz`` too), a parquet file, or a dataset repository folder of one split whose every shard is one of these;
    None for any other source (or a split asked)."""
    if split or not isinstance(source, (str, os.PathLike)):
        return None
    path = data_path(source)
    if os.path.isfile(path):
        return [path] if path.lower().endswith(_STREAMED) else None
    if not os.path.isdir(path) or _is_saved_dataset(path) or _model_folder_type(path) is not None \
            or not _repo_data_files(path, limit=1):
        return None
    try:
        files = _repo_split_files(path, None)[0]
    except DataError:  # read_records names what is wrong with the folder
        return None
    return files if files and all(f.lower().endswith(_STREAMED) for f in files) else None


def streams(source: Any, split: Optional[str] = None) -> bool:
    """Whether :func:`iter_records` reads ``source`` as its rows are consumed (a JSON-lines or parquet file, or a
    folder of such shards, without a split): memory then holds one row (a parquet batch), and reading it again is
    cheap."""
    return _streamed_files(source, split) is not None


class RecordStream:
    """An iterator of the rows of files read one after the other, recording where each file's rows start
    (``files``: ``(first row, path)``, as :class:`FileRows`), so that :func:`row_origin` names a shard's row."""

    def __init__(self, paths: list[str]) -> None:
        self.files: list[tuple[int, str]] = []
        # known from the start: a row of the first shard is named by its shard before the second is opened
        self.several_files = len(paths) > 1
        self._rows = self._read(paths)

    def _read(self, paths: list[str]) -> Iterator[dict]:
        n = 0
        for path in paths:
            self.files.append((n, path))
            for row in _iter_parquet(path) if path.lower().endswith(PARQUET_SUFFIXES) else _iter_jsonl(path):
                n += 1
                yield row

    def __iter__(self) -> "RecordStream":
        return self

    def __next__(self) -> dict:
        return next(self._rows)


def iter_records(source: RecordSource, *, split: Optional[str] = None) -> Iterator[dict]:
    """The rows of ``source`` one at a time, the same rows, in the same order and with the same errors as
    :func:`read_records` gives: a source that :func:`streams` is read as the rows are consumed (a 10 GB JSON-lines
    file scores in the memory of one chunk of rows; the result is a :class:`RecordStream`), any other is read
    whole first."""
    files = _streamed_files(source, split)
    if files is None:
        return iter(read_records(source, split=split))
    if any(f.lower().endswith(PARQUET_SUFFIXES) for f in files):
        try:
            import pyarrow  # noqa: F401
        except ImportError as e:
            raise DataError(f"{files[0]}: reading parquet needs pyarrow (pip install 'mmreward[published]'): {e}") from None
    return RecordStream(files)


def _read_hub_dataset(repo_id: str, split: Optional[str]) -> list[dict]:
    """``owner/name`` that is no local path: the hub dataset of that id; when it cannot be had (offline, no
    such dataset) the error says both readings, since a mistyped local folder looks the same."""
    try:
        return _load_dataset(repo_id, split, f"hub dataset {repo_id!r}")
    except DataError as e:
        if split and "has no split" in str(e):
            raise
        raise FileNotFoundError(f"{repo_id!r} is neither a local file or folder nor a hub dataset that could be "
                                f"read ({e})") from None


# row fields that hold media paths (one path or a list of them)
# image_path: RLAIF-V, MM-RLHF, ImageRewardDB; file_name: Hugging Face imagefolder's metadata files
MEDIA_PATH_FIELDS = ("image", "images", "image_path", "file_name", "video", "frames", "episode")
# the metadata files of a Hugging Face imagefolder / videofolder (beside the media they describe, which datasets
# lists among the folder's data files too)
_FOLDER_METADATA = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


def media_path(value: str, base: str) -> str:
    """A media path of a data row, read against ``base``, the data file's folder: absolute paths, URLs and
    ``data:`` strings as they are; ``~/…`` the home folder's, as an image given to ``score`` is read (unless
    ``base`` holds that literal path); other paths joined to ``base``."""
    if os.path.isabs(value) or "://" in value or value[:5].lower() == "data:":
        return value
    if value.startswith("~") and not os.path.exists(os.path.join(base, value)):
        return os.path.expanduser(value)
    return os.path.join(base, value)


def resolve_media_paths(rows: list, data: str) -> list:
    """Copies of ``rows`` whose relative media paths (:data:`MEDIA_PATH_FIELDS`; URLs and ``data:``
    strings left alone) point into the folder of the data file ``data``: rows written next to their
    images score from any working folder, and a same-named file in the working folder is never read
    instead; ``~/…`` paths are the home folder's (unless the data file's folder holds that literal path). Rows
    of a dataset folder resolve against the folder; of a hub dataset id, they stay as they are.
    Rows that are not objects pass through (their reader reports them)."""
    path = data_path(data)  # "~/rows.jsonl": its images are next to it there
    if os.path.isdir(path):
        base = os.path.abspath(path)
    elif os.path.exists(path):
        base = os.path.dirname(os.path.abspath(path))
    else:
        return list(rows)  # a hub dataset: no folder the paths could be relative to

    def resolve(value: Any) -> Any:
        return media_path(value, base) if isinstance(value, str) and value else value

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
