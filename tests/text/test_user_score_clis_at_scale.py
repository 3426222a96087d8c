"""A data engineer's view of `mmreward text score` and `mmreward prm score` on large preference / PRM files: rows
are read, checked (every row before any is scored), scored and written a chunk at a time with `mmreward score`'s
helpers (memory does not grow with the file), in input order; `--out` writes JSON lines under a JSON-lines name
(gzipped for .gz), refuses other formats' names, appears whole or not at all, and `-` is stdout."""
import gzip
import json
import os
import sys

import pytest

pytest.importorskip("transformers")
sys.path.insert(0, os.path.dirname(__file__))

from mmreward.cli import main  # noqa: E402
from text_rm_fixtures import peak_memory_of_command, stop_text_scoring_at  # noqa: E402

WORDS = "what is the answer to two plus three five six seven a b c d e f g h say".split()


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory):
    """A tiny Llama text RM (max_length 64) saved as a folder."""
    from text_rm_fixtures import save_tiny_rm

    return save_tiny_rm(tmp_path_factory.mktemp("rm") / "m")


@pytest.fixture(scope="module")
def prm_folder(tmp_path_factory):
    """A tiny character-level PRM (max_length 80) saved as a folder."""
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("char")
    folder = str(tmp_path_factory.mktemp("prm") / "m")
    ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, heads=2, seed=0), tok,
                                     max_length=80).save_pretrained(folder)
    return folder


def _rows(n, meta=0):
    """``n`` rows of varied lengths (so length-sorted batches reorder them); row 4 a preference pair."""
    out = []
    for i in range(n):
        out.append({"id": i, "prompt": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 5)),
                    "response": " ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(1 + (i * 7) % 13)),
                    **({"meta": "x" * meta} if meta else {})})
    if n > 4:
        out[4] = {"id": 4, "prompt": "a b", "chosen": "five", "rejected": "six six"}
    return out


def _steps(n, meta=0, long=()):
    """``n`` ProcessBench rows of two subsets (``long``: rows of 40 steps, past the PRM's max_length)."""
    return [{"id": f"{'gsm8k' if i % 2 else 'math'}-{i}", "problem": "1+1",
             "steps": ["1+1=2"] * 40 if i in long else ["1+1=2", f"2+1={3 + i % 3}", "3+1=4"][: 1 + i % 3],
             "label": 0 if i in long else -1 if i % 3 == 0 else i % 3, **({"meta": "x" * meta} if meta else {})}
            for i in range(n)]


def _write_jsonl(path, rows):
    from text_rm_fixtures import write_jsonl

    return write_jsonl(path, rows)


@pytest.fixture
def calls(monkeypatch):
    """The number of inputs of each call of the text RM's scoring."""
    from text_rm_fixtures import count_score_calls

    return count_score_calls(monkeypatch)


@pytest.fixture
def prm_calls(monkeypatch):
    """The number of solutions of each `score_parts` call of the PRM."""
    from mmreward.text.prm.model import ProcessRewardModel

    seen, real = [], ProcessRewardModel.score_parts

    def counted(self, items, *a, **k):
        seen.append(len(items))
        return real(self, items, *a, **k)

    monkeypatch.setattr(ProcessRewardModel, "score_parts", counted)
    return seen


# ------------------------------------------------------------------ text score
def test_text_score_scores_a_chunk_at_a_time_in_input_order(rm_folder, tmp_path, calls, monkeypatch, capsys):
    """Every row of the file went to one score call (file, inputs, tokens and output in memory at once): now a
    chunk at a time, the rows in the file's order, the table numbered across chunks, the pairwise line last."""
    import mmreward
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 8)
    rows = _rows(30)
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    assert main(["text", "score", "--model", rm_folder, "--data", data, "--batch-size", "3", "--json",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    got = [json.loads(x) for x in captured.out.splitlines()]
    assert max(calls) <= 10 and sum(calls) == 31  # 9 rows (whole batches of 3) a chunk; row 4 is two inputs
    assert [g["id"] for g in got] == list(range(30))
    want = mmreward.load(rm_folder).score([{"prompt": r["prompt"], "response": r["response"]} for r in rows if "response" in r])
    assert [g["score"] for g in got if "score" in g] == pytest.approx(want.tolist(), abs=1e-5)
    assert "pairwise accuracy: " in captured.err  # beside JSON lines, on stderr
    assert main(["text", "score", "--model", rm_folder, "--data", data, "--batch-size", "3", "--no-progress"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["row", "score", "rejected", "prompt"] and table[-1].startswith("pairwise accuracy")
    assert [int(x.split()[0]) for x in table[1:-1]] == list(range(30))


def test_text_score_memory_does_not_grow_with_the_number_of_rows(rm_folder, tmp_path, monkeypatch):
    """Peak Python memory of a 1 200-row file is about that of a 120-row one (the rows held are one chunk's)."""
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 64)

    def peak(n):
        data = _write_jsonl(tmp_path / f"rows{n}.jsonl", _rows(n, meta=4000))
        return peak_memory_of_command(lambda: main(["text", "score", "--model", rm_folder, "--data", data, "--out",
                                                    str(tmp_path / f"o{n}.jsonl"), "--no-progress"]))

    small, large = peak(120), peak(1200)
    assert large < small + 2_000_000, (small, large)  # the whole file's rows would be 5+ MB more


def test_text_score_out_names_gzip_dash_and_atomic_write(rm_folder, tmp_path, monkeypatch, capsys):
    """`text score` had no --out (10 GB of JSON lines went through the terminal's pipe); now as `mmreward score`'s:
    other formats' names refused, .gz gzipped, - is stdout, and a stopped run leaves the old file as it was."""
    from mmreward import score_cli
    from mmreward.text import RewardModel

    data = _write_jsonl(tmp_path / "rows.jsonl", _rows(20))
    base = ["text", "score", "--model", rm_folder, "--data", data, "--no-progress", "--batch-size", "4"]
    for name in ("scored.parquet", "scored.csv.gz"):
        assert main([*base, "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "JSON lines" in err[0] and not (tmp_path / name).exists(), err
    assert main([*base, "--json"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "scored.jsonl.gz"
    assert main([*base, "--out", str(out)]) == 0
    assert gzip.decompress(out.read_bytes()).decode() == printed
    assert "20 rows scored" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main([*base, "--out", "-"]) == 0
    assert capsys.readouterr().out == printed and not (tmp_path / "-").exists()

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 8)
    before, real, n = out.read_bytes(), RewardModel._score, []

    def stopped(self, items, batch_size, progress=False):
        n.append(1)
        if len(n) == 3:
            raise KeyboardInterrupt
        return real(self, items, batch_size, progress)

    monkeypatch.setattr(RewardModel, "_score", stopped)
    assert main([*base, "--out", str(out)]) == 130
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["rows.jsonl", "scored.jsonl.gz"]


def test_text_score_resume_continues_a_stopped_run(rm_folder, tmp_path, calls, monkeypatch, capsys):
    """A stopped run of a large file scored it all again; `--resume` continues from OUT.partial, as `mmreward
    score --resume` does, and the result equals an uninterrupted run's."""
    from mmreward import score_cli
    from mmreward.text import RewardModel

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 8)
    data = _write_jsonl(tmp_path / "rows.jsonl", _rows(30))
    out, partial = tmp_path / "scored.jsonl", tmp_path / "scored.jsonl.partial"
    cmd = ["text", "score", "--model", rm_folder, "--data", data, "--out", str(out), "--batch-size", "4", "--resume",
           "--no-progress"]
    assert main(["text", "score", "--model", rm_folder, "--data", data, "--json", "--batch-size", "4"]) == 0
    whole = capsys.readouterr().out
    real = stop_text_scoring_at(monkeypatch, calls, 2)  # a Ctrl-C in the third chunk
    calls.clear()
    assert main(cmd) == 130
    assert "kept in" in capsys.readouterr().err and not out.exists()
    assert len(partial.read_text().splitlines()) == 1 + 16
    monkeypatch.setattr(RewardModel, "_score", real)
    calls.clear()
    assert main(cmd) == 0
    err = capsys.readouterr().err
    assert "16 of 30 rows" in err and sum(calls) == 14 and "pairwise accuracy: " in err
    assert out.read_text() == whole and not partial.exists()


def test_text_score_bad_rows_are_named_by_file_and_row_before_any_is_scored(rm_folder, tmp_path, calls, monkeypatch,
                                                                              capsys):
    """A bad row in a late chunk is named by its file and row (a folder's shard and its row there), read before
    the model loads and before any row is scored."""
    pytest.importorskip("datasets")
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 4)
    rows = _rows(30)
    rows[23] = {"id": 23, "prompt": "a"}
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    assert main(["text", "score", "--model", rm_folder, "--data", data, "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rows.jsonl: row 23" in err[0] and calls == [], err
    (tmp_path / "shards" / "data").mkdir(parents=True)
    _write_jsonl(tmp_path / "shards" / "data" / "train-00000-of-00002.jsonl", rows[:20])
    shard = _write_jsonl(tmp_path / "shards" / "data" / "train-00001-of-00002.jsonl", rows[20:])
    assert main(["text", "score", "--model", rm_folder, "--data", str(tmp_path / "shards"), "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{shard}: row 3" in err[0] and calls == [], err


# ------------------------------------------------------------------ prm score
def test_prm_score_scores_a_chunk_at_a_time_with_the_whole_files_processbench_table(prm_folder, tmp_path, prm_calls,
                                                                                    monkeypatch, capsys):
    """All solutions went to one score_parts call and every step score was kept for the table: now a chunk at a
    time, rows in the file's order, and the ProcessBench table is that of all rows (processbench_report's)."""
    import mmreward
    from mmreward import score_cli
    from mmreward.core.cli_config import json_text
    from mmreward.text.prm.eval import processbench_report

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 4)
    rows = _steps(30)
    data = _write_jsonl(tmp_path / "steps.jsonl", rows)
    assert main(["prm", "score", "--model", prm_folder, "--data", data, "--batch-size", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    got, report = [json.loads(x) for x in lines[:-1]], json.loads(lines[-1])["processbench"]
    assert max(prm_calls) == 4 and sum(prm_calls) == 30
    assert [g["id"] for g in got] == [r["id"] for r in rows]
    parts = mmreward.load(prm_folder).score_parts([{"problem": r["problem"], "steps": r["steps"]} for r in rows])
    assert [g["step_scores"] for g in got] == [pytest.approx(p.tolist(), abs=1e-6) for p in parts]
    ref = processbench_report(parts, [r["label"] for r in rows], [r["id"].split("-")[0] for r in rows], 0.5)
    assert report == json.loads(json_text(ref)) and "note" not in report


def test_prm_score_memory_does_not_grow_with_the_number_of_rows(prm_folder, tmp_path, monkeypatch):
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 64)

    def peak(n):
        data = _write_jsonl(tmp_path / f"steps{n}.jsonl", _steps(n, meta=4000))
        return peak_memory_of_command(lambda: main(["prm", "score", "--model", prm_folder, "--data", data, "--out",
                                                    str(tmp_path / f"o{n}.jsonl")]))

    small, large = peak(120), peak(1200)
    assert large < small + 2_000_000, (small, large)  # the whole file's rows would be 5+ MB more


def test_prm_score_out_names_gzip_and_dash(prm_folder, tmp_path, monkeypatch, capsys):
    """`--out scores.parquet` wrote JSON lines under a parquet name, `--out scores.jsonl.gz` plain text under a
    gzip name, `--out -` a file named "-"."""
    data = _write_jsonl(tmp_path / "steps.jsonl", _steps(6))
    base = ["prm", "score", "--model", prm_folder, "--data", data]
    for name in ("scores.parquet", "scores.csv"):
        assert main([*base, "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "JSON lines" in err[0] and not (tmp_path / name).exists(), err
    assert main(base) == 0
    printed = capsys.readouterr().out.splitlines()
    out = tmp_path / "scores.jsonl.gz"
    assert main([*base, "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote 6 rows to {out}", printed[-1]]
    assert gzip.decompress(out.read_bytes()).decode().splitlines() == printed[:-1]
    monkeypatch.chdir(tmp_path)
    assert main([*base, "--out", "-"]) == 0
    assert capsys.readouterr().out.splitlines() == printed and not (tmp_path / "-").exists()


def test_prm_score_a_late_solution_past_max_length_is_named_by_file_and_row_before_any_is_scored(
        prm_folder, tmp_path, monkeypatch, prm_calls, capsys):
    """It was found inside the scoring, named "input 17" (the 17th solution, not a row of the file)."""
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 4)
    rows = _steps(20)
    rows.insert(3, {"type": "pair", "prompt": "p", "chosen": "a", "rejected": "b"})  # an MCTS export's: skipped
    rows[18] = {"problem": "1+1", "steps": ["1+1=2"] * 40}
    data = _write_jsonl(tmp_path / "steps.jsonl", rows)
    assert main(["prm", "score", "--model", prm_folder, "--data", data, "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps.jsonl: row 18" in err[0] and "max_length=80" in err[0], err
    assert prm_calls == [] and not (tmp_path / "o.jsonl").exists()


def test_prm_score_truncation_is_told_once_for_the_whole_file(prm_folder, tmp_path, monkeypatch, capsys):
    """With --truncate, each chunk told its own count ("truncated 1 of 4 inputs, first: input 2"); now one
    warning counts the file's solutions and names the first one's file and row."""
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 4)
    data = _write_jsonl(tmp_path / "steps.jsonl", _steps(20, long=(6, 13, 14)))
    with pytest.warns(UserWarning) as caught:
        assert main(["prm", "score", "--model", prm_folder, "--data", data, "--truncate", "--out",
                     str(tmp_path / "o.jsonl")]) == 0
    told = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert len(told) == 1 and "truncated 3 of 20 solutions" in told[0] and "steps.jsonl: row 6, steps" in told[0], told
    scored = [json.loads(x) for x in open(tmp_path / "o.jsonl")]
    assert None in scored[6]["step_scores"] and None not in scored[5]["step_scores"]
