"""An RLHF engineer scoring 100k-row files with every scoring command: `prm score --resume` as `mmreward score
--resume` / `text score --resume` (a stopped run continued, byte for byte; another model or input refused), a resume
that compares the model's files by content (a touch or a copy is the same model), progress bars for generative
judges that do not change what they judge, a judge's own batch size kept by `text eval` / `text score`, one
truncation warning per file from `mmreward score` of a PRM, and no file pass a model does not need."""
import json
import os
import shutil
import sys

import pytest

pytest.importorskip("transformers")
sys.path.insert(0, os.path.dirname(__file__))

from mmreward.cli import main  # noqa: E402


def _prm(folder, seed=0, **kw):
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("char")
    ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, heads=2, seed=seed), tok,
                                     max_length=80, **kw).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def prm_folder(tmp_path_factory):
    return _prm(tmp_path_factory.mktemp("prm") / "m")


def _steps(n, long=()):
    """``n`` ProcessBench rows of two subsets (``long``: rows of 40 steps, past the PRM's max_length)."""
    return [{"id": f"{'gsm8k' if i % 2 else 'math'}-{i}", "problem": "1+1",
             "steps": ["1+1=2"] * 40 if i in long else ["1+1=2", f"2+1={3 + i % 3}", "3+1=4"][: 1 + i % 3],
             "label": 0 if i in long else -1 if i % 3 == 0 else i % 3} for i in range(n)]


def _write(path, rows):
    from text_rm_fixtures import write_jsonl

    return write_jsonl(path, rows)


@pytest.fixture
def prm_calls(monkeypatch):
    """The number of solutions of each `score_parts` call; ``stop_at[0]``: the call that raises KeyboardInterrupt."""
    from mmreward.text.prm.model import ProcessRewardModel

    seen, real, stop_at = [], ProcessRewardModel.score_parts, [None]

    def counted(self, items, *a, **k):
        seen.append(len(items))
        if len(seen) == stop_at[0]:
            raise KeyboardInterrupt
        return real(self, items, *a, **k)

    monkeypatch.setattr(ProcessRewardModel, "score_parts", counted)
    return seen, stop_at


def _truncation(caught):
    return [str(w.message) for w in caught if "truncated" in str(w.message)]


# ------------------------------------------------------------------ prm score --resume
def test_prm_score_resume_continues_a_stopped_run_byte_for_byte(prm_folder, tmp_path, prm_calls, monkeypatch,
                                                                 capsys):
    """`prm score` had no --resume: a run stopped at row 90,000 of 100,000 scored everything again. Now it keeps
    OUT.partial as `mmreward score --resume` does; the continued run scores only the rest, and its file, its
    ProcessBench table and its truncation count equal an uninterrupted run's."""
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 4)
    calls, stop_at = prm_calls
    data = _write(tmp_path / "steps.jsonl", _steps(30, long=(5, 22)))
    base = ["prm", "score", "--model", prm_folder, "--data", data, "--batch-size", "2", "--truncate"]
    with pytest.warns(UserWarning) as caught:
        assert main([*base, "--out", str(tmp_path / "straight.jsonl")]) == 0
    straight_table = capsys.readouterr().out.splitlines()[-1]
    straight_warning = _truncation(caught)
    assert len(straight_warning) == 1 and "truncated 2 of 30 solutions" in straight_warning[0]

    out, partial = tmp_path / "scored.jsonl", tmp_path / "scored.jsonl.partial"
    calls.clear()
    stop_at[0] = 3  # killed in the third chunk
    with pytest.warns(UserWarning, match="truncated 1 of"):  # told for the rows scored before the kill
        assert main([*base, "--out", str(out), "--resume"]) == 130
    assert "kept in" in capsys.readouterr().err and not out.exists()
    assert len(partial.read_text().splitlines()) == 1 + 8  # its header line, then two chunks of rows
    calls.clear()
    stop_at[0] = None
    with pytest.warns(UserWarning) as caught:
        assert main([*base, "--out", str(out), "--resume"]) == 0
    captured = capsys.readouterr()
    assert "8 of 30 rows were scored" in captured.err and sum(calls) == 22
    assert out.read_bytes() == (tmp_path / "straight.jsonl").read_bytes() and not partial.exists()
    assert captured.out.splitlines()[-1] == straight_table  # the table of every row, kept ones included
    assert _truncation(caught) == straight_warning  # row 5, kept from the first run, still counted and named


def test_prm_score_resume_refuses_another_model_input_or_settings_and_takes_a_copy_of_the_model(
        prm_folder, tmp_path, prm_calls, monkeypatch, capsys):
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 4)
    calls, stop_at = prm_calls
    rows = _steps(12)
    data = _write(tmp_path / "steps.jsonl", rows)
    out, partial = tmp_path / "scored.jsonl", tmp_path / "scored.jsonl.partial"

    def cmd(model=prm_folder, *extra):
        return ["prm", "score", "--model", model, "--data", data, "--out", str(out), "--resume", "--batch-size", "2",
                *extra]

    stop_at[0] = 2
    assert main(cmd()) == 130
    kept = partial.read_bytes()
    capsys.readouterr()
    stop_at[0] = None

    other = _prm(tmp_path / "other", seed=1)  # another model
    assert main(cmd(other)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "the model folder's files changed" in err[-1] and partial.read_bytes() == kept
    assert main(cmd(prm_folder, "--aggregation", "prod")) == 2
    assert "other settings" in capsys.readouterr().err and partial.read_bytes() == kept
    changed = [dict(r) for r in rows]
    changed[2]["steps"] = ["1+1=2"] * 5  # another solution under the same id
    _write(tmp_path / "steps.jsonl", changed)
    assert main(cmd()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "steps.jsonl: row 2" in err[-1] and "data changed" in err[-1] and partial.read_bytes() == kept, err
    changed = [dict(r, id=f"x-{i}") for i, r in enumerate(rows)]  # other rows
    _write(tmp_path / "steps.jsonl", changed)
    assert main(cmd()) == 2
    assert "row 0 is not row 0" in capsys.readouterr().err and partial.read_bytes() == kept
    assert main(["prm", "score", "--model", prm_folder, "--data", data, "--resume"]) == 2  # no --out
    assert "--resume" in capsys.readouterr().err

    _write(tmp_path / "steps.jsonl", rows)
    copy = shutil.copytree(prm_folder, tmp_path / "copy")  # the same model elsewhere, with other file times
    for name in os.listdir(copy):
        os.utime(os.path.join(copy, name), ns=(1, 10**18))
    calls.clear()
    assert main(cmd(str(copy))) == 0
    assert "4 of 12 rows were scored" in capsys.readouterr().err and sum(calls) == 8 and not partial.exists()


# ------------------------------------------------------------------ the model's identity
def test_resume_identity_is_the_model_files_content_not_their_times_or_folder(prm_folder, tmp_path, monkeypatch):
    """--resume compared file modification times: a `touch` (a backup restored, a copy to a faster disk) refused
    a valid resume. Now sizes and hashes of the files' whole bytes (one changed byte of the weights is another model)."""
    from mmreward import score_cli

    def files(folder):
        return score_cli._model_identity(str(folder))["files"]

    copy = shutil.copytree(prm_folder, tmp_path / "copy")
    weights = os.path.join(copy, "model.safetensors")
    os.utime(weights, ns=(1, 10**18))
    assert files(copy) == files(prm_folder) and "model.safetensors" in files(copy)
    before = files(copy)
    data = bytearray(open(weights, "rb").read())
    for at in (-1, len(data) // 2):  # the last weight's last byte, one in the middle: retrained in place
        data[at] ^= 1
        open(weights, "wb").write(bytes(data))
        assert files(copy) != before
        data[at] ^= 1
        open(weights, "wb").write(bytes(data))
        assert files(copy) == before


# ------------------------------------------------------------------ mmreward score of a PRM with truncate=True
def test_mmreward_score_of_a_truncating_prm_tells_one_count_for_the_file(tmp_path, monkeypatch):
    """A PRM saved with truncate=True warned once per chunk ("truncated 1 of 4 inputs ... first: input 2", then
    "truncated 2 of 4 inputs ... first: input 1"), each told as if of the file; now one count naming the row."""
    from mmreward import score_cli

    monkeypatch.setattr(score_cli, "CHUNK_ROWS", 4)
    prm = _prm(tmp_path / "prm", truncate=True)
    data = _write(tmp_path / "steps.jsonl", [{k: r[k] for k in ("id", "problem", "steps")}
                                             for r in _steps(20, long=(6, 13, 14))])
    for progress in ("--no-progress", "--progress"):  # the bar's smaller calls are counted from their start too
        with pytest.warns(UserWarning) as caught:
            assert main(["score", "--model", prm, "--data", data, "--batch-size", "1", progress,
                         "--out", str(tmp_path / "o.jsonl")]) == 0
        told = _truncation(caught)
        assert len(told) == 1 and "truncated 3 of 20 solutions" in told[0], told
        assert f"first: {data}: row 6, steps" in told[0], told


# ------------------------------------------------------------------ generative judges
@pytest.fixture(scope="module")
def judge_folder(tmp_path_factory):
    """A tiny GenRM judge saved with batch_size=3."""
    from mmreward.text.generative import GenRM, GenRMConfig
    from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

    tok = word_tokenizer(["good bad fine poor q0 q1 correct ? Yes No"])
    folder = str(tmp_path_factory.mktemp("judge") / "genrm")
    GenRM(tiny_llama(len(tok), hidden=32, layers=1, heads=2), tok,
          GenRMConfig(question="correct ?", batch_size=3)).save_pretrained(folder)
    return folder


@pytest.fixture
def judge_calls(monkeypatch):
    """``(number of inputs, batch_size)`` of each GenRM._score call."""
    from mmreward.text.generative.genrm import GenRM

    seen, real = [], GenRM._score

    def counted(self, items, batch_size):
        seen.append((len(items), batch_size))
        return real(self, items, batch_size)

    monkeypatch.setattr(GenRM, "_score", counted)
    return seen


def _pairs(n):
    words = ["good", "bad", "fine", "poor"]
    return [{"prompt": f"q{i % 2}", "chosen": words[i % 4], "rejected": words[(i + 1) % 4],
             "subset": "alpacaeval-easy"} for i in range(n)]


def test_text_eval_of_a_judge_keeps_its_batch_size_and_shows_progress(judge_folder, tmp_path, judge_calls, capsys):
    """`text eval` replaced a judge's saved batch_size with its own default 16, and a judge showed no progress bar
    (RewardBench 2 ran silent for hours). Now the judge's own size unless --batch-size is given, and a bar that
    counts its inputs."""
    data = _write(tmp_path / "rb.jsonl", _pairs(5))
    out = tmp_path / "eval.json"
    cmd = ["text", "eval", "--model", judge_folder, "--benchmark", "rewardbench", "--data", data, "--json"]
    assert main([*cmd, "--progress", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert {b for _, b in judge_calls} == {3} and json.loads(out.read_text())["config"]["batch_size"] == 3
    assert "scoring" in err and "8/8" in err, err  # the distinct (prompt, response) inputs: 4 words x 2 prompts
    judge_calls.clear()
    assert main([*cmd, "--no-progress", "--batch-size", "5"]) == 0
    assert {b for _, b in judge_calls} == {5} and "scoring" not in capsys.readouterr().err


def test_scoring_a_judge_with_a_progress_bar_judges_as_without_one(judge_folder, tmp_path, judge_calls, capsys):
    """`mmreward score --progress` cut a judge's call into pieces of 16 batches for its bar: a sampling judge's seeds
    (and RewardAnything's name shuffles) count the inputs of a call, so the bar changed the verdicts. Now one call
    per chunk, the bar moved as the judge's prompts are read; `text score` keeps the judge's own batch size and
    reads the file once less (a judge has no encoding to check ahead)."""
    rows = [{"prompt": f"q{i % 2}", "response": ["good", "bad", "fine", "poor"][i % 4]} for i in range(60)]
    data = _write(tmp_path / "rows.jsonl", rows)
    got = {}
    for progress in ("--no-progress", "--progress"):
        judge_calls.clear()
        assert main(["score", "--model", judge_folder, "--data", data, "--batch-size", "1", "--json", progress]) == 0
        captured = capsys.readouterr()
        got[progress] = captured.out
        assert judge_calls == [(60, 1)], judge_calls
    assert got["--progress"] == got["--no-progress"] and "60/60" in captured.err

    import mmreward.text.cli as text_cli

    passes, real = [], text_cli.score_items

    def counted(rows, source):
        passes.append(len(rows))
        return real(rows, source)

    judge_calls.clear()
    text_cli.score_items = counted
    try:
        assert main(["text", "score", "--model", judge_folder, "--data", data, "--json", "--no-progress"]) == 0
    finally:
        text_cli.score_items = real
    assert capsys.readouterr().out == got["--no-progress"]
    assert judge_calls == [(60, 3)] and passes == [60, 60], (judge_calls, passes)  # its own size; check + score


def test_text_judge_shows_progress_without_changing_its_verdicts(judge_folder, tmp_path, capsys):
    data = _write(tmp_path / "pairs.jsonl", _pairs(4))
    cmd = ["text", "judge", "genrm", "--model", judge_folder, "--data", data, "--question", "correct ?"]
    assert main([*cmd, "--no-progress"]) == 0
    quiet = capsys.readouterr()
    assert main([*cmd, "--progress"]) == 0
    shown = capsys.readouterr()
    assert shown.out == quiet.out and "judging" not in quiet.err
    assert "judging" in shown.err and "8/8" in shown.err, shown.err  # 4 rows, both orders


def test_prm_score_and_eval_show_progress_on_request(prm_folder, tmp_path, capsys):
    """`prm score` and `prm eval` scored a large file without a progress bar (`mmreward score` shows one); now
    --progress (default: on a terminal) shows it, counting solutions, and the scores are the same."""
    data = _write(tmp_path / "steps.jsonl", _steps(10))
    for command in ("score", "eval"):
        cmd = ["prm", command, "--model", prm_folder, "--data", data, "--batch-size", "2"]
        assert main([*cmd, "--no-progress"]) == 0
        quiet = capsys.readouterr()
        assert main([*cmd, "--progress"]) == 0
        shown = capsys.readouterr()
        assert shown.out == quiet.out and "scoring" not in quiet.err
        assert "scoring" in shown.err and "10/10" in shown.err, shown.err
