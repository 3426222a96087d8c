"""A data engineer's view of `mmreward score --data`: large JSON-lines / parquet files are read, scored and written
a chunk of rows at a time (memory does not grow with the file), in input order, every row checked before any is
scored; the output file is JSON lines under any JSON-lines name (gzipped for .gz), appears whole or not at all,
and `-` means stdin / stdout."""
import gzip
import io
import json
import os
import sys

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "text"))

from mmreward.cli import main  # noqa: E402
from text_rm_fixtures import peak_memory_of_command, stop_text_scoring_at  # noqa: E402

WORDS = "what is the answer to two plus three five six seven a b c d e f g h say".split()


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory):
    """A tiny Llama text RM (max_length 64) saved as a folder."""
    from text_rm_fixtures import save_tiny_rm

    return save_tiny_rm(tmp_path_factory.mktemp("rm") / "m")


def _rows(n, long=(), meta=0):
    """``n`` rows of varied lengths (so length-sorted batches reorder them), ``long`` rows past max_length."""
    out = []
    for i in range(n):
        k = 80 if i in long else 1 + (i * 7) % 13
        out.append({"id": i, "prompt": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 5)),
                    "response": " ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(k)),
                    **({"meta": "x" * meta} if meta else {})})
    return out


def _write_jsonl(path, rows):
    from text_rm_fixtures import write_jsonl

    return write_jsonl(path, rows)


@pytest.fixture
def calls(monkeypatch):
    """The number of inputs of each call of the text RM's scoring."""
    from text_rm_fixtures import count_score_calls

    return count_score_calls(monkeypatch)


def test_rows_are_scored_a_chunk_at_a_time_in_input_order(rm_folder, tmp_path, calls, monkeypatch, capsys):
    """All rows of the file went to one score call (the file, every input, every tokenised input and the whole
    output text in memory at once: 9 KB per 0.4 KB row, 0.94 GB for 50k rows): now a chunk at a time, and the
    scores come back in the file's order although batches are sorted by length."""
    import mmreward
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 8)
    rows = _rows(30)
    rows[5], rows[17] = dict(rows[3], id=5), dict(rows[3], id=17)  # duplicates: in its chunk, the same score
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--model", rm_folder, "--data", data, "--batch-size", "3", "--out", str(out)]) == 0
    assert max(calls) <= 9 and sum(calls) == 30  # 8 rows rounded up to whole batches of 3
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["id"] for g in got] == list(range(30))
    model = mmreward.load(rm_folder)
    alone = torch.stack([model.score([{"prompt": r["prompt"], "response": r["response"]}])[0] for r in rows])
    torch.testing.assert_close(torch.tensor([g["score"] for g in got]), alone, atol=1e-5, rtol=1e-5)
    assert got[5]["score"] == got[3]["score"] and abs(got[17]["score"] - got[3]["score"]) < 1e-5
    err = capsys.readouterr().err
    assert "30 rows scored" in err and "inputs/s" in err  # throughput is reported


def test_memory_does_not_grow_with_the_number_of_rows(rm_folder, tmp_path, monkeypatch):
    """Peak Python memory of a 1 200-row file is about that of a 120-row one (the rows held are one chunk's)."""
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 64)

    def peak(n):
        data = _write_jsonl(tmp_path / f"rows{n}.jsonl", _rows(n, meta=4000))
        return peak_memory_of_command(lambda: main(["score", "--model", rm_folder, "--data", data, "--out",
                                                    str(tmp_path / f"o{n}.jsonl"), "--no-progress"]))

    small, large = peak(120), peak(1200)
    assert large < small + 2_000_000, (small, large)  # the whole file's rows would be 5+ MB more


def test_a_bad_row_in_the_middle_is_named_before_any_row_is_scored(rm_folder, tmp_path, calls, monkeypatch, capsys):
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 8)
    rows = _rows(50)
    rows[37] = {"id": 37, "prompt": "a"}
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--model", rm_folder, "--data", data, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rows.jsonl: row 37" in err[0] and "'response'" in err[0]
    assert calls == [] and not out.exists()
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    lines[37] = '{"id": 37, "prompt": '
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["score", "--model", rm_folder, "--data", data, "--out", str(out)]) == 2
    assert "line 38 (row 37) is not valid JSON" in capsys.readouterr().err and calls == []


def test_iter_records_reads_as_consumed_with_read_records_errors(tmp_path):
    from mmreward.core.data import DataError, iter_records, read_records, streams

    rows = _rows(20)
    lines = [json.dumps(r) for r in rows]
    lines[15] = "not json"
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:]) + "\n")
    assert streams(str(path)) and not streams(str(path), split="train")
    it = iter_records(str(path))
    assert [next(it)["id"] for _ in range(10)] == list(range(10))  # read before the bad line is reached
    with pytest.raises(DataError, match=r"line 17 \(row 15\) is not valid JSON"):
        list(it)
    with pytest.raises(DataError, match=r"line 17 \(row 15\) is not valid JSON"):
        read_records(str(path))
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "rows.parquet"), row_group_size=7)
    assert list(iter_records(str(tmp_path / "rows.parquet"))) == read_records(str(tmp_path / "rows.parquet")) == rows


def test_truncation_is_counted_over_the_whole_file_once(rm_folder, tmp_path, monkeypatch, recwarn):
    """Truncated rows in several chunks: one warning counting all of them (not the first chunk's count)."""
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 8)
    data = _write_jsonl(tmp_path / "rows.jsonl", _rows(30, long=(2, 12, 25)))
    assert main(["score", "--model", rm_folder, "--data", data, "--json"]) == 0
    warned = [str(w.message) for w in recwarn if "truncated" in str(w.message)]
    assert len(warned) == 1 and "truncated 3 of 30 inputs to max_length=64" in warned[0], warned


def test_out_names_and_dash(rm_folder, tmp_path, monkeypatch, capsys):
    """`--out scored.parquet` / `.csv` wrote JSON lines under that name and `.jsonl.gz` wrote plain text (both
    unreadable as named); `--out -` wrote a file named "-"; `--data -` said "data file '-' does not exist"."""
    from mmreward.core.data import read_records

    rows = _rows(5)
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    base = ["score", "--model", rm_folder, "--data", data]
    for name in ("scored.parquet", "scored.csv", "scored.csv.gz"):
        assert main([*base, "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "JSON lines" in err[0] and not (tmp_path / name).exists()
    assert main([*base, "--json"]) == 0
    printed = capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "scored.jsonl.gz")]) == 0
    assert gzip.decompress((tmp_path / "scored.jsonl.gz").read_bytes()).decode() == printed
    assert [r["id"] for r in read_records(str(tmp_path / "scored.jsonl.gz"))] == list(range(5))
    monkeypatch.chdir(tmp_path)
    assert main([*base, "--out", "-"]) == 0
    assert capsys.readouterr().out == printed and not (tmp_path / "-").exists()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((tmp_path / "rows.jsonl").read_bytes())))
    assert main(["score", "--model", rm_folder, "--data", "-", "--json"]) == 0
    assert capsys.readouterr().out == printed


def test_an_interrupted_run_leaves_the_old_output_and_no_half_file(rm_folder, tmp_path, monkeypatch, capsys):
    """Scored into a hidden file beside --out, renamed once every row is written, with the umask's mode: a run
    stopped in its third chunk leaves the earlier output as it was and nothing else."""
    from mmreward import score_cli
    from mmreward.text import RewardModel

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 8)
    data = _write_jsonl(tmp_path / "rows.jsonl", _rows(30))
    out = tmp_path / "scored.jsonl"
    old = os.umask(0o027)
    try:
        assert main(["score", "--model", rm_folder, "--data", data, "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o640
    before = out.read_bytes()
    real, n = RewardModel._score, []

    def stopped(self, items, batch_size, progress=False):
        n.append(1)
        if len(n) == 3:
            raise KeyboardInterrupt
        return real(self, items, batch_size, progress)

    monkeypatch.setattr(RewardModel, "_score", stopped)
    assert main(["score", "--model", rm_folder, "--data", data, "--out", str(out), "--batch-size", "4"]) == 130
    assert len(n) == 3 and "interrupted" in capsys.readouterr().err
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["rows.jsonl", "scored.jsonl"]


def test_a_folder_of_shards_is_streamed_and_a_bad_row_names_its_shard(rm_folder, tmp_path, capsys):
    """A dataset folder of JSON-lines shards was read whole, and a bad row was named by its place among all rows
    ("shards: row 2500"), which no shard has."""
    pytest.importorskip("datasets")
    from mmreward.core.data import RecordStream, iter_records, read_records

    rows = _rows(12)
    (tmp_path / "shards" / "data").mkdir(parents=True)
    _write_jsonl(tmp_path / "shards" / "data" / "train-00000-of-00003.jsonl", rows[:4])
    _write_jsonl(tmp_path / "shards" / "data" / "train-00001-of-00003.jsonl", rows[4:8])
    bad = [*rows[8:10], {"id": 10, "prompt": "a"}, rows[11]]
    shard = _write_jsonl(tmp_path / "shards" / "data" / "train-00002-of-00003.jsonl", bad)
    folder = str(tmp_path / "shards")
    stream = iter_records(folder)
    assert isinstance(stream, RecordStream) and [r["id"] for r in stream] == list(range(12))
    assert [r["id"] for r in read_records(folder)] == list(range(12))
    assert main(["score", "--model", rm_folder, "--data", folder, "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{shard}: row 2:" in err[0], err
    # a bad row of the FIRST shard, in a chunk read before the second shard is opened, names its shard too
    first = _write_jsonl(tmp_path / "shards" / "data" / "train-00000-of-00003.jsonl", [rows[0], {"id": 1, "prompt": "a"}])
    _write_jsonl(tmp_path / "shards" / "data" / "train-00002-of-00003.jsonl", rows[8:])
    from mmreward import score_cli

    chunk = score_cli.CHUNK_ROWS
    score_cli.CHUNK_ROWS = 2
    try:
        assert main(["score", "--model", rm_folder, "--data", folder, "--json", "--batch-size", "2"]) == 2
    finally:
        score_cli.CHUNK_ROWS = chunk
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{first}: row 1:" in err[0], err


def test_a_prm_solution_past_max_length_is_named_before_any_chunk_is_scored(tmp_path, monkeypatch, capsys):
    """A PRM checks every input's length before its first forward; scored a chunk at a time, a solution too long in
    a late chunk was found only after the earlier chunks were scored (and, with --out, all of that was lost)."""
    from mmreward import score_cli
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("char")
    folder = str(tmp_path / "prm")
    ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, heads=2, seed=0), tok,
                                     max_length=80).save_pretrained(folder)
    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 4)
    rows = [{"problem": "1+1", "steps": ["1+1=2", "2+1=3"]} for _ in range(20)]
    rows[17] = {"problem": "1+1", "steps": ["1+1=2"] * 40}
    data = _write_jsonl(tmp_path / "steps.jsonl", rows)
    seen = []
    real = ProcessRewardModel.forward

    def counted(self, *a, **k):
        seen.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(ProcessRewardModel, "forward", counted)
    assert main(["score", "--model", folder, "--data", data, "--out", str(tmp_path / "o.jsonl"),
                 "--batch-size", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps.jsonl: row 17" in err[0] and "max_length=80" in err[0], err
    assert seen == []


def test_a_missing_image_in_a_late_row_is_named_before_any_row_is_scored(tmp_path, monkeypatch, capsys):
    """An image file a row names that is not there was found when its chunk was decoded, mid-run."""
    import mmreward
    from mmreward.core.inputs import ImagePrompt

    scored = []

    class Stub:
        input_types = (ImagePrompt,)
        default_batch_size = 2

        @classmethod
        def has_parts(cls):
            return False

        def score(self, items, batch_size=None, **kw):
            scored.extend(items)
            return torch.zeros(len(items))

    (tmp_path / "a.png").write_bytes(b"x")
    rows = [{"prompt": "p", "image": "a.png"} for _ in range(12)]
    rows[9] = {"prompt": "p", "image": "gone.png"}
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    monkeypatch.setattr(mmreward, "load", lambda *a, **k: Stub())
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 4)
    assert main(["score", "--model", "stub", "--data", data, "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rows.jsonl: row 9" in err[0] and "gone.png" in err[0] and scored == [], err
    rows[9] = {"prompt": "p", "image": "data:image/png;base64,AAAA"}  # URIs and URLs are the model's to read
    _write_jsonl(tmp_path / "rows.jsonl", rows)
    assert main(["score", "--model", "stub", "--data", data, "--json"]) == 0 and len(scored) == 12


def test_resume_continues_an_interrupted_run_without_scoring_its_rows_again(rm_folder, tmp_path, calls, monkeypatch,
                                                                           capsys):
    """There was no way to continue a stopped run: every row was scored again. `--resume` keeps the rows scored in
    OUT.partial (chunk by chunk, on disk) and continues from there; the result equals an uninterrupted run's."""
    from mmreward import score_cli
    from mmreward.text import RewardModel

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 8)
    rows = _rows(30)
    rows[4] = {"prompt": "a b", "chosen": "five", "rejected": "six six"}  # a pair: two inputs, kept as such
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    out, partial = tmp_path / "scored.jsonl.gz", tmp_path / "scored.jsonl.gz.partial"
    cmd = ["score", "--model", rm_folder, "--data", data, "--out", str(out), "--batch-size", "4", "--resume"]
    assert main(["score", "--model", rm_folder, "--data", data, "--json", "--batch-size", "4"]) == 0
    whole = capsys.readouterr()
    real = stop_text_scoring_at(monkeypatch, calls, 2)  # a Ctrl-C in the third chunk
    calls.clear()
    assert main(cmd) == 130
    assert "kept in" in capsys.readouterr().err and not out.exists()
    assert len(partial.read_text().splitlines()) == 1 + 16  # its first line, then two chunks of rows
    with open(partial, "a") as f:
        f.write('{"id": 16, "prom')  # killed while writing a line: that row is scored again
    monkeypatch.setattr(RewardModel, "_score", real)
    calls.clear()
    assert main(cmd) == 0
    err = capsys.readouterr().err
    assert "continuing" in err and "16 of 30 rows" in err and sum(calls) == 14
    assert gzip.decompress(out.read_bytes()).decode() == whole.out and not partial.exists()
    assert "pairwise accuracy: " in err and err.count("over 1 pairs") == 1


def test_resume_refuses_a_partial_file_of_other_data_or_settings(rm_folder, tmp_path, monkeypatch, capsys):
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 8)
    rows = _rows(12)
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    partial = tmp_path / "scored.jsonl.partial"
    header = {"mmreward score partial": {"model": score_cli._model_identity(rm_folder), "data": os.path.realpath(data),
                                         "split": None, "dtype": None, "parts": False, "rows": 12}}
    kept = [{**rows[0], "score": 0.5}, {**rows[1], "response": "edited", "score": 0.25}]
    partial.write_text("".join(json.dumps(r) + "\n" for r in [header, *kept]))
    cmd = ["score", "--model", rm_folder, "--data", data, "--out", str(out), "--resume"]
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "row 1 is not row 1" in err[-1] and not out.exists() and partial.exists()
    assert main([*cmd, "--dtype", "bf16"]) == 2
    assert "other settings" in capsys.readouterr().err and partial.exists()
    assert main(["score", "--model", rm_folder, "--data", data, "--resume", "--json"]) == 2
    assert "--resume" in capsys.readouterr().err
    # the model folder retrained in place since: its scores must not be mixed with the kept ones
    weights = os.path.join(rm_folder, "model.safetensors")
    with open(weights, "rb") as f:
        original = f.read()
    with open(weights, "wb") as f:  # one byte of the last tensor's data changed: other weights, same size
        f.write(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        assert main(cmd) == 2
        assert "the model folder's files changed" in capsys.readouterr().err and partial.exists()
    finally:
        with open(weights, "wb") as f:
            f.write(original)
