"""What docs/prm.md shows about the command line holds: every command takes the shared flag names it
lists where they apply — `prm eval --out` writes the metrics it prints."""
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.text.prm.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def prm_folder(tmp_path_factory):
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("step")
    folder = str(tmp_path_factory.mktemp("prm") / "model")
    ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=16, layers=1, heads=2), tok, head="lm",
                                     max_length=64).save_pretrained(folder)
    return folder


@pytest.fixture
def data(tmp_path):
    from mmreward.text.prm.synthetic import make_dataset

    rows = [{"id": f"gsm8k-{i}", "problem": r["prompt"], "steps": r["completions"], "label": r["first_error"]}
            for i, r in enumerate(make_dataset(8, seed=3, max_value=5))]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_eval_out_writes_the_printed_metrics(prm_folder, data, tmp_path, capsys):
    out = str(tmp_path / "metrics.json")
    assert main(["eval", "--model", prm_folder, "--data", data, "--threshold", "0.5", "--sweep", "--out", out]) == 0
    printed = json.loads(capsys.readouterr().out)
    with open(out) as f:
        written = json.load(f)
    assert written == printed and "processbench" in written and "best_threshold" in written


def test_eval_out_is_checked_before_the_work(prm_folder, data, tmp_path, capsys):
    before = open(data).read()
    assert main(["eval", "--model", prm_folder, "--data", data, "--out", data]) == 2
    assert "--out" in capsys.readouterr().err and open(data).read() == before  # the data is not replaced
    assert main(["eval", "--model", prm_folder, "--data", data, "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_eval_on_unlabelled_rows_is_an_error_not_an_empty_result(prm_folder, tmp_path, capsys):
    """Rows without labels are solutions to score (docs/prm.md, ProcessBench): `eval` printed `{}` with
    exit 0 and `evaluate_prm` returned {} — an evaluation that reads as if it had run."""
    import mmreward
    from mmreward.core.data import DataError
    from mmreward.text.prm import evaluate_prm, read_step_examples

    path = tmp_path / "unlabelled.jsonl"
    path.write_text("".join(json.dumps({"id": f"math-{i}", "problem": "3 +4", "steps": ["3+4=7"]}) + "\n"
                            for i in range(3)))
    assert main(["eval", "--model", prm_folder, "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert "none of the 3 examples carries a label" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(DataError, match="nothing to evaluate"):
        evaluate_prm(mmreward.load(prm_folder), read_step_examples(str(path)))
    assert main(["score", "--model", prm_folder, "--data", str(path)]) == 0  # what such rows are for
    from mmreward.text.prm import PRMTrainConfig, train_prm
    from mmreward.text.prm.synthetic import make_dataset

    out = tmp_path / "run"
    with pytest.raises(DataError, match="eval_examples: none of the 3 examples"):  # before any training step
        train_prm(mmreward.load(prm_folder), read_step_examples(make_dataset(4, max_value=5)),
                  PRMTrainConfig(output_dir=str(out), max_steps=1, batch_size=2), read_step_examples(str(path)))
    assert not out.exists()


def test_score_and_eval_take_dtype(prm_folder, data, tmp_path, capsys):
    """`--dtype bf16` for a published 7B PRM as `mmreward score` has it: the same verdicts within bf16 rounding."""
    assert main(["score", "--model", prm_folder, "--data", data]) == 0
    full = [r for r in map(json.loads, capsys.readouterr().out.splitlines()) if "id" in r]  # + a ProcessBench line
    assert main(["score", "--model", prm_folder, "--data", data, "--dtype", "bf16"]) == 0
    low = [r for r in map(json.loads, capsys.readouterr().out.splitlines()) if "id" in r]
    assert len(low) == len(full) == 8
    for a, b in zip(full, low):
        assert b["score"] == pytest.approx(a["score"], abs=0.02)
    assert main(["eval", "--model", prm_folder, "--data", data, "--dtype", "bf16"]) == 0
    assert "processbench" in json.loads(capsys.readouterr().out)
    assert main(["score", "--model", prm_folder, "--data", data, "--dtype", "int8"]) == 2
    assert "dtype" in capsys.readouterr().err
