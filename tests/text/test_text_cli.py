import json
import random
import sys
import types

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from helpers import word_tokenizer  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import mmreward  # noqa: E402
from mmreward.cli import main as mmreward_main  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402
from mmreward.text.cli import main  # noqa: E402

KEYWORDS = [f"w{i}" for i in range(8)]
QUIET = ["--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0"]


def save_tokenizer(folder):
    word_tokenizer(["say"] + KEYWORDS, model_max_length=32).save_pretrained(str(folder))


def write_pairs(path, n, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            k, a, other = rng.sample(KEYWORDS, 3)
            f.write(json.dumps({"prompt": f"say {k}", "chosen": f"{a} {k}", "rejected": f"{a} {other}"}) + "\n")


def bert_json(path, dropout=0.0):
    path.write_text(json.dumps({
        "model_type": "bert", "vocab_size": 16, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 4, "max_position_embeddings": 16, "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout}))
    return str(path)


@pytest.mark.learning
def test_cli_train_then_score(tmp_path, capsys):
    save_tokenizer(tmp_path / "tok")
    write_pairs(tmp_path / "train.jsonl", 512, 0)
    write_pairs(tmp_path / "test.jsonl", 100, 1)
    out = tmp_path / "run"
    rc = main(["train", "--data", str(tmp_path / "train.jsonl"), "--eval-data", str(tmp_path / "test.jsonl"),
               "--backbone-config", bert_json(tmp_path / "bert.json"), "--tokenizer", str(tmp_path / "tok"),
               "--out", str(out), "--epochs", "5", "--batch-size", "16", "--lr", "2e-3", "--max-length", "12",
               "--warmup-steps", "5", "--eval-every", "80", "--max-grad-norm", "none", "--seed", "0", *QUIET])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-2])
    assert lines[-1] == f"model: {out / 'model'}"
    assert summary["step"] == 160 and summary["eval_accuracy_before"] < 0.7 and summary["eval_accuracy"] >= 0.9, summary
    rm = mmreward.load(str(out))  # a run folder opens its model/
    assert rm.backbone.config.num_hidden_layers == 1 and rm.config.max_length == 12

    rows = [{"prompt": "say w1", "response": "w3 w1"}, {"prompt": "say w1", "response": "w3 w2"},
            {"prompt": "say w5", "chosen": "w0 w5", "rejected": "w0 w6"}, {"text": "say w2 w2"}]
    with open(tmp_path / "in.jsonl", "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    assert main(["score", "--model", str(out), "--data", str(tmp_path / "in.jsonl"), "--json", "--no-progress"]) == 0
    scored = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = rm.score([TextPair(p, r) for p, r in [("say w1", "w3 w1"), ("say w1", "w3 w2"), ("say w5", "w0 w5"),
                                                      ("say w5", "w0 w6"), (None, "say w2 w2")]])
    assert scored[0]["prompt"] == "say w1" and scored[0]["score"] == pytest.approx(expected[0].item(), abs=1e-5)
    assert scored[2]["score_chosen"] == pytest.approx(expected[2].item(), abs=1e-5)
    assert scored[3]["score"] == pytest.approx(expected[4].item(), abs=1e-5)
    assert scored[2]["score_rejected"] == pytest.approx(expected[3].item(), abs=1e-5)
    assert main(["score", "--model", str(out / "model"), "--data", str(tmp_path / "in.jsonl")]) == 0
    table = capsys.readouterr().out
    right = float(expected[2] > expected[3])
    assert f"pairwise accuracy: {right:.4f} over 1 pairs" in table and "say w1" in table


def test_same_seed_same_run(tmp_path, capsys):
    """The new head is drawn after seeding: two runs with one seed are bit-identical, another seed differs."""
    save_tokenizer(tmp_path / "tok")
    write_pairs(tmp_path / "train.jsonl", 32, 0)
    common = ["train", "--data", str(tmp_path / "train.jsonl"), "--backbone-config", bert_json(tmp_path / "b.json", 0.1),
              "--tokenizer", str(tmp_path / "tok"), "--max-steps", "2", "--batch-size", "8", *QUIET]
    weights = []
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert main([*common, "--out", str(tmp_path / name), "--seed", seed]) == 0
        weights.append(load_file(str(tmp_path / name / "model" / "model.safetensors")))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(weights[0]["head.weight"], weights[2]["head.weight"])


def one_line_error(capsys, argv):
    rc = mmreward_main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "ok.jsonl").write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    err = one_line_error(capsys, ["text", "score", "--model", str(tmp_path / "nope"), "--data", str(tmp_path / "ok.jsonl")])
    assert "does not exist" in err and "nope" in err
    err = one_line_error(capsys, ["text", "score", "--model", str(tmp_path), "--data", str(tmp_path / "missing.jsonl")])
    assert "missing.jsonl" in err
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "p", "response": "r"}\n{"prompt": "caf\xe9", "response": "r"}\n')
    err = one_line_error(capsys, ["text", "score", "--model", str(tmp_path), "--data", str(tmp_path / "latin1.jsonl")])
    assert "latin1.jsonl: line 2 is not UTF-8" in err
    (tmp_path / "null.jsonl").write_text(json.dumps({"prompt": "p", "chosen": None, "rejected": "r"}) + "\n")
    err = one_line_error(capsys, ["text", "score", "--model", str(tmp_path), "--data", str(tmp_path / "null.jsonl")])
    assert "null.jsonl: row 0: field 'chosen' is null" in err
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "p"}) + "\n")
    err = one_line_error(capsys, ["text", "score", "--model", str(tmp_path), "--data", str(tmp_path / "bad.jsonl")])
    assert "bad.jsonl: row 0: needs 'response'" in err
    if not torch.cuda.is_available():
        err = one_line_error(capsys, ["text", "score", "--model", str(tmp_path), "--data", str(tmp_path / "ok.jsonl"),
                                      "--device", "cuda"])
        assert "device 'cuda' requested" in err
    err = one_line_error(capsys, ["text", "train", "--data", str(tmp_path / "null.jsonl"), "--model", str(tmp_path)])
    assert "row 0: field 'chosen' is null" in err
    err = one_line_error(capsys, ["text", "train", "--data", "x.jsonl"])
    assert "give one of --model" in err
    err = one_line_error(capsys, ["text", "train", "--data", "x", "--model", "y", "--autocast", "fp8"])
    assert "autocast" in err


def test_dispatch(capsys, monkeypatch):
    assert main([]) == 2 and "train" in capsys.readouterr().out
    assert main(["bogus"]) == 2 and "unknown command 'bogus'" in capsys.readouterr().err
    # eval / merge are delegated lazily; a missing module is a clear error, not a traceback
    import mmreward.text.cli as cli

    monkeypatch.setitem(cli.COMMANDS, "merge", ("WARM", ("mmreward.text.no_such_module", "merge_main")))
    assert main(["merge", "a", "b"]) == 2
    assert "mmreward.text.no_such_module is not available" in capsys.readouterr().err
    calls = []
    fake = types.ModuleType("fake_eval_cli")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fake_eval_cli", fake)
    monkeypatch.setitem(cli.COMMANDS, "eval", ("eval", ("fake_eval_cli", "main")))
    assert main(["eval", "--x", "1"]) == 0 and calls == [["--x", "1"]]


def test_train_from_an_unfinished_run_folder_says_so(tmp_path, capsys):
    """``--model`` naming a run killed before its model/ was written used to fail with transformers'
    "Unrecognized model ... Should have a `model_type` key" (the folder has no config.json at all)."""
    save_tokenizer(tmp_path / "tok")
    write_pairs(tmp_path / "train.jsonl", 16, 0)
    common = ["text", "train", "--data", str(tmp_path / "train.jsonl"), "--batch-size", "8", "--max-steps", "1", *QUIET]
    run = tmp_path / "run"
    assert mmreward_main([*common, "--backbone-config", bert_json(tmp_path / "b.json"), "--tokenizer",
                          str(tmp_path / "tok"), "--out", str(run)]) == 0
    capsys.readouterr()
    import shutil

    shutil.rmtree(run / "model")  # as a run killed before its end leaves it
    err = one_line_error(capsys, [*common, "--model", str(run), "--out", str(tmp_path / "next")])
    assert f"--model {run} is a training run folder without a final model/ (the run did not finish)" in err
    assert not (tmp_path / "next").exists()


def test_train_out_into_the_model_folder_or_a_file_is_refused_before_loading(tmp_path, capsys):
    """``--out`` equal to the ``--model`` folder would mix the run's snapshots and logs into the model it
    starts from; a file as ``--out`` could never hold a run. Both are refused before any data or model loads."""
    save_tokenizer(tmp_path / "tok")
    write_pairs(tmp_path / "train.jsonl", 16, 0)
    common = ["text", "train", "--data", str(tmp_path / "train.jsonl"), "--max-steps", "1", "--batch-size", "4", *QUIET]
    assert mmreward_main([*common, "--backbone-config", bert_json(tmp_path / "b.json"), "--tokenizer",
                          str(tmp_path / "tok"), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    model = tmp_path / "run" / "model"
    before = sorted(p.name for p in model.iterdir())
    for model_arg in (model, tmp_path / "run"):
        err = one_line_error(capsys, [*common, "--model", str(model_arg), "--out", str(model)])
        assert "is the --model folder" in err
    assert sorted(p.name for p in model.iterdir()) == before
    (tmp_path / "file").write_text("x")
    err = one_line_error(capsys, [*common, "--model", str(model), "--out", str(tmp_path / "file")])
    assert "is a file, not a folder" in err
