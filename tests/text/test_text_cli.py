import json
import random
import sys
import types

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from helpers import word_tokenizer  # noqa: E402

from mmreward.text import RewardModel  # noqa: E402
from mmreward.text.cli import main  # noqa: E402

KEYWORDS = [f"w{i}" for i in range(8)]


def save_tokenizer(folder):
    word_tokenizer(["say"] + KEYWORDS, model_max_length=32).save_pretrained(str(folder))


def write_pairs(path, n, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            k, a, other = rng.sample(KEYWORDS, 3)
            f.write(json.dumps({"prompt": f"say {k}", "chosen": f"{a} {k}", "rejected": f"{a} {other}"}) + "\n")


@pytest.mark.learning
def test_cli_train_then_score(tmp_path, capsys):
    save_tokenizer(tmp_path / "tok")
    (tmp_path / "bert.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": 16, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 4, "max_position_embeddings": 16, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0}))
    write_pairs(tmp_path / "train.jsonl", 512, 0)
    write_pairs(tmp_path / "test.jsonl", 100, 1)
    out = tmp_path / "run"
    rc = main(["train", "--data", str(tmp_path / "train.jsonl"), "--eval-data", str(tmp_path / "test.jsonl"),
               "--backbone-config", str(tmp_path / "bert.json"), "--tokenizer", str(tmp_path / "tok"),
               "--output-dir", str(out), "--max-steps", "160", "--batch-size", "16", "--lr", "2e-3",
               "--warmup-steps", "5", "--eval-every", "80", "--no-progress", "--no-tensorboard", "--no-plot",
               "--log-every", "0", "--max-grad-norm", "none", "--seed", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.split(": ", 1)[1])
    assert summary["step"] == 160 and summary["eval_accuracy"] >= 0.9, summary
    rm = RewardModel.from_pretrained(str(out))
    assert rm.config.num_hidden_layers == 1

    rows = [{"prompt": "say w1", "response": "w3 w1"}, {"prompt": "say w1", "response": "w3 w2"},
            {"prompt": "say w5", "chosen": "w0 w5", "rejected": "w0 w6"}, {"text": "say w2 w2"}]
    with open(tmp_path / "in.jsonl", "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    assert main(["score", "--model", str(out), "--data", str(tmp_path / "in.jsonl"), "--json"]) == 0
    scored = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = rm.score(["say w1", "say w1", "say w5", "say w5", None], ["w3 w1", "w3 w2", "w0 w5", "w0 w6", "say w2 w2"])
    assert scored[0]["prompt"] == "say w1" and scored[0]["score"] == pytest.approx(expected[0].item(), abs=1e-5)
    assert scored[2]["score_chosen"] == pytest.approx(expected[2].item(), abs=1e-5)
    assert scored[3]["score"] == pytest.approx(expected[4].item(), abs=1e-5)
    assert scored[0]["score"] > scored[1]["score"] and scored[2]["score_chosen"] > scored[2]["score_rejected"]
    assert main(["score", "--model", str(out), "--data", str(tmp_path / "in.jsonl")]) == 0
    table = capsys.readouterr().out
    assert "pairwise accuracy: 1.0000 over 1 pairs" in table and "say w1" in table

    # resuming the finished run is a no-op that keeps the same model
    before = rm.score(["say w1"], ["w3 w1"])
    assert main(["train", "--data", str(tmp_path / "train.jsonl"), "--init", str(out), "--output-dir", str(out),
                 "--max-steps", "160", "--batch-size", "16", "--lr", "2e-3", "--no-progress", "--no-tensorboard",
                 "--no-plot", "--log-every", "0"]) == 0
    torch.testing.assert_close(RewardModel.from_pretrained(str(out)).score(["say w1"], ["w3 w1"]), before)


def test_cli_errors_and_dispatch(tmp_path, capsys, monkeypatch):
    assert main([]) == 2 and "train" in capsys.readouterr().out
    assert main(["bogus"]) == 2 and "unknown command 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--data", "x.jsonl"])  # no model source
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match="row 0: needs 'response'"):
        main(["score", "--model", str(tmp_path), "--data", str(tmp_path / "bad.jsonl")])
    with pytest.raises(SystemExit):
        main(["train", "--data", "x", "--init", "y", "--autocast", "fp8", "--loss"])
    with pytest.raises(ValueError, match="autocast"):
        main(["train", "--data", str(tmp_path / "bad.jsonl"), "--init", "y", "--autocast", "fp8"])
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
