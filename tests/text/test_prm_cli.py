"""`mmreward prm train | score | eval | search` end to end on a tiny model, the HF step policy, and
import lightness."""
import json
import os
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.text.prm.cli import main  # noqa: E402


def test_import_is_light():
    code = ("import sys, mmreward.text.prm, mmreward.text.prm.synthetic, mmreward.text.prm.labels, "
            "mmreward.text.prm.eval; print(any(m.startswith('transformers') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_train_score_eval_search(tmp_path, capsys):
    from mmreward.text.prm.synthetic import make_dataset

    run = str(tmp_path / "run")
    rc = main(["train", "--synthetic", "400", "--max-value", "5", "--tiny-tokenizer", "step", "--output-dir", run,
               "--max-steps", "40", "--batch-size", "32", "--lr", "3e-3", "--no-progress", "--no-tensorboard",
               "--no-plot", "--log-every", "0", "--max-length", "64"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["final_processbench_f1"] > 0.7 and os.path.exists(os.path.join(run, "model", "model.safetensors"))
    model = os.path.join(run, "model")
    assert main(["score", "--model", model, "--problem", "3 +2 -1", "--step", "3+2=5", "--step", "5-1=3"]) == 0
    scores = json.loads(capsys.readouterr().out)["step_scores"]
    assert scores[0] > 0.5 > scores[1]  # right step, wrong step
    data = tmp_path / "ev.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_dataset(40, seed=9, max_value=5)))
    assert main(["eval", "--model", model, "--data", str(data), "--sweep"]) == 0
    assert "best_threshold" in json.loads(capsys.readouterr().out)
    export = str(tmp_path / "st.jsonl")
    assert main(["search", "--model", model, "--synthetic", "10", "--max-value", "5", "--budget-steps", "12",
                 "--export", export]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 <= res["mcts_success"] <= 1 and res["exported_records"] > 0
    from mmreward.text.prm.data import read_step_examples

    assert read_step_examples(export)  # the exported traces train with objective=mse
    assert main(["eval", "--model", model, "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


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
