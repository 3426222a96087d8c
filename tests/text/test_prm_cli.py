"""`mmreward prm train | score | eval | search` end to end on a tiny model: shared flag names, seeded
bit-identical training, the ProcessBench table from `score`, one-line errors; the HF step policy and
import lightness."""
import json
import os
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.text.prm.cli import main  # noqa: E402

TRAIN = ["--synthetic", "400", "--max-value", "5", "--tiny-tokenizer", "step", "--max-steps", "40", "--batch-size", "32",
         "--lr", "3e-3", "--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0", "--max-length", "64"]


def test_import_is_light():
    code = ("import sys, mmreward.text.prm, mmreward.text.prm.synthetic, mmreward.text.prm.labels, "
            "mmreward.text.prm.eval, mmreward.text.prm.published, mmreward.text.prm.cli; "
            "print(any(m.startswith('transformers') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prm_cli") / "run")
    assert main(["train", *TRAIN, "--out", out, "--seed", "0"]) == 0
    return out


def test_cli_train_score_eval_search(run, tmp_path, capsys):
    from mmreward.text.prm.synthetic import make_dataset

    capsys.readouterr()
    main(["eval", "--model", run, "--data", _write(tmp_path / "ev.jsonl", make_dataset(40, seed=9, max_value=5)), "--sweep"])
    ev = json.loads(capsys.readouterr().out)
    assert ev["processbench_f1"] > 0.7 and "best_threshold" in ev and os.path.isfile(os.path.join(run, "model", "config.json"))
    # --model takes the run folder (its model/) and scores one solution given on the command line
    assert main(["score", "--model", run, "--problem", "3 +2 -1", "--step", "3+2=5", "--step", "5-1=3"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["step_scores"][0] > 0.5 > row["step_scores"][1] and row["score"] == min(row["step_scores"])
    assert main(["score", "--model", run, "--problem", "3 +2 -1", "--step", "3+2=5", "--aggregation", "last"]) == 0
    assert json.loads(capsys.readouterr().out)["score"] > 0.5
    export = str(tmp_path / "st.jsonl")
    assert main(["search", "--model", run, "--synthetic", "10", "--max-value", "5", "--budget-steps", "12",
                 "--out", export, "--seed", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 <= res["mcts_success"] <= 1 and res["exported_records"] > 0
    from mmreward.text.prm.data import read_step_examples

    assert read_step_examples(export)  # the exported traces train with objective=mse


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_score_reports_processbench_per_subset(run, tmp_path, capsys):
    """Rows in the released ProcessBench layout: `score` writes one row per solution (with its id) and
    prints the official table, equal to the Python API's."""
    import mmreward
    from mmreward.text.prm.eval import processbench_report
    from mmreward.text.prm.synthetic import make_dataset

    rows = [{"id": f"{'gsm8k' if i % 2 else 'math'}-{i}", "generator": "synthetic", "problem": r["prompt"],
             "steps": r["completions"], "final_answer_correct": r["first_error"] < 0, "label": r["first_error"]}
            for i, r in enumerate(make_dataset(60, seed=11, max_value=5))]
    data, out = _write(tmp_path / "processbench.jsonl", rows), str(tmp_path / "scores.jsonl")
    capsys.readouterr()
    assert main(["score", "--model", run, "--data", data, "--out", out, "--threshold", "0.5", "--batch-size", "7"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == f"wrote 60 rows to {out}"
    report = json.loads(printed[1])["processbench"]
    scored = [json.loads(x) for x in open(out)]
    assert [s["id"] for s in scored] == [r["id"] for r in rows]
    prm = mmreward.load(run)
    parts = prm.score_parts([{"problem": r["problem"], "steps": r["steps"]} for r in rows])
    ref = processbench_report(parts, [r["label"] for r in rows], [r["id"].split("-")[0] for r in rows], 0.5)
    assert report["subsets"].keys() == {"gsm8k", "math"}
    assert report["average_f1"] == pytest.approx(ref["average_f1"]) and report["average_f1"] > 0.6
    assert scored[3]["step_scores"] == pytest.approx(parts[3].tolist(), abs=1e-6)


def test_train_with_the_same_seed_is_bit_identical(tmp_path):
    """A Hugging Face backbone folder + a new value head: the head's initial weights, the data order and
    dropout all come from --seed, so two runs give the same bytes (and another seed other weights)."""
    from safetensors.torch import load_file

    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("step", max_value=5)
    backbone = str(tmp_path / "hf-backbone")
    tiny_llama(tok, hidden=32, layers=1, heads=2).save_pretrained(backbone)
    tok.save_pretrained(backbone)

    def weights(name, seed):
        out = str(tmp_path / name)
        assert main(["train", "--synthetic", "64", *TRAIN[2:], "--max-steps", "3", "--batch-size", "8", "--head", "value",
                     "--backbone", backbone, "--out", out, "--seed", str(seed)]) == 0
        return load_file(os.path.join(out, "model", "model.safetensors"))

    a, b, c = weights("a", 0), weights("b", 0), weights("c", 1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["value_weight"], c["value_weight"])


def test_train_continues_a_saved_prm(run, tmp_path, capsys):
    """--model: fine-tune a saved (or published) PRM; its config stays as saved."""
    import mmreward
    from safetensors.torch import load_file

    out = str(tmp_path / "ft")
    assert main(["train", "--model", run, *TRAIN, "--max-steps", "3", "--out", out]) == 0
    before, after = load_file(os.path.join(run, "model", "model.safetensors")), load_file(os.path.join(out, "model", "model.safetensors"))
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert mmreward.load(out).config == mmreward.load(run).config


def test_model_flags_that_train_would_ignore_are_refused(run, tmp_path, capsys):
    """--model keeps the saved config: --aggregation mean or --max-length 32 were silently ignored."""
    from mmreward.cli import main as mmreward_main

    for extra, words in ((["--aggregation", "mean"], "--aggregation mean would be ignored"),
                         (["--max-length", "32"], "--max-length 32 would be ignored"),
                         (["--backbone", "gpt2"], "--backbone gpt2 and --model")):
        argv = ["prm", "train", "--model", run, *TRAIN, *extra, "--max-steps", "1", "--out", str(tmp_path / "x")]
        assert mmreward_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "x").exists()


def test_user_errors_are_one_line_with_exit_2(run, tmp_path, capsys):
    from mmreward.cli import main as mmreward_main

    cases = [
        (["eval", "--model", run, "--data", str(tmp_path / "missing.jsonl")], "does not exist"),
        (["score", "--model", str(tmp_path / "nope"), "--problem", "3", "--step", "3=3"], "does not exist"),
        (["score", "--model", run, "--problem", "3", "--step", "3=3", "--device", "cuda:7"], "cuda:7"),
        (["score", "--model", run, "--problem", "3 +1", "--step", "3+1=4" * 40], "input 0: problem \\+ 1 steps are"),
        (["score", "--model", run], "pass --data FILE or --problem"),
        (["train", *TRAIN, "--out", str(tmp_path / "r"), "--lr", "-1"], "lr must be"),
        (["score", "--model", run, "--data", _write(tmp_path / "bad.jsonl", [{"problem": "p", "steps": ["a"], "label": 4}])],
         "row 0: label 4"),
        (["train", "--synthetic", "-1", "--out", str(tmp_path / "r2")], "--synthetic must be >= 0"),
        (["search", "--model", run, "--synthetic", "0"], "n_problems must be an integer >= 1, got 0"),
        (["search", "--model", run, "--num-steps", "0"], "num_steps must be an integer >= 1, got 0"),
        (["search", "--model", run, "--max-children", "0"], "max_children must be >= 1, got 0"),
        (["search", "--model", run, "--max-iterations", "0"], "max_iterations must be >= 1, got 0"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert mmreward_main(["prm", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("mmreward prm"), err
        assert __import__("re").search(message, err), (message, err)
    capsys.readouterr()
    # --truncate scores what fits instead (the rest: null)
    assert main(["score", "--model", run, "--problem", "3 +1", "--step", "3+1=4", "--step", "4+1=5" * 80, "--truncate"]) == 0
    assert json.loads(capsys.readouterr().out)["step_scores"][1] is None


def test_hf_step_policy_generates_one_step():
    from mmreward.text.prm.search import HFStepPolicy
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("char")
    lm = tiny_llama(tok, hidden=32, layers=1, heads=2)
    pol = HFStepPolicy(lm, tok, max_new_tokens=8, temperature=1.0, seed=0)
    steps = [pol("3 +4", ["3+4=7"]) for _ in range(3)]
    assert all(isinstance(s, str) and "\n" not in s and len(s) <= 8 for s in steps)
    greedy = HFStepPolicy(lm, tok, max_new_tokens=8, temperature=0.0)
    assert greedy("3 +4", []) == greedy("3 +4", [])
    assert tok.decode(tok.encode("3+4=7 ки", add_special_tokens=False)) == "3+4=7 ки"


def test_a_nan_threshold_fails_before_any_score_is_written(run, tmp_path, capsys):
    """`prm score --threshold nan` printed / wrote every score, then exited 2; a non-finite threshold is
    now refused at parse time, for `prm eval` too."""
    from mmreward.text.prm.synthetic import make_dataset

    data, out = _write(tmp_path / "rows.jsonl", make_dataset(4, seed=3, max_value=5)), tmp_path / "scores.jsonl"
    for argv in (["score", "--model", run, "--data", data, "--out", str(out), "--threshold", "nan"],
                 ["score", "--model", run, "--data", data, "--threshold", "nan"],
                 ["eval", "--model", run, "--data", data, "--threshold", "inf"]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        printed, err = capsys.readouterr()
        assert printed == "" and not out.exists(), argv
        assert len(err.strip().splitlines()) == 1 and "argument --threshold: must be a finite number" in err, err
