"""VLM RM / VisualPRM training refuses a row past the backbone's context before step 1 (not when its batch
comes up, possibly hours into a run), naming the row, the side / steps and the lengths: Python API and CLI."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.trainer import TrainConfig  # noqa: E402
from mmreward.vision import synthetic as S  # noqa: E402
from mmreward.vision import visual_prm as P  # noqa: E402
from mmreward.vision import vlm_rm as M  # noqa: E402
from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config  # noqa: E402

CONTEXT = 100


@pytest.fixture(scope="module")
def proc():
    return tiny_processor(S.COLOUR_WORDS)


def short_context(proc):
    cfg = tiny_qwen2vl_config(proc)
    cfg.text_config.max_position_embeddings = CONTEXT
    return cfg


def tcfg(out, **kw):
    return TrainConfig(output_dir=str(out), batch_size=2, max_steps=1, progress=False, log_every=0,
                       tensorboard=False, plot=False, **kw)


@pytest.fixture
def steps_taken(monkeypatch):
    """Counts the training / eval forwards (none may run before a bad row is refused)."""
    calls = []
    for mod, name in ((M, "pairwise_loss_fn"), (P, "step_loss_fn")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda m, b, real=real: (calls.append(1), real(m, b))[1])
    return calls


def test_vlm_rm_refuses_a_long_training_or_eval_row_before_step_1(proc, tmp_path, steps_taken):
    torch.manual_seed(0)
    rm = M.VLMRewardModel(M.VLMRewardConfig(), short_context(proc), proc)
    rows = S.colour_preference_rows(40, seed=0)
    long_rows = [dict(r) for r in rows]
    long_rows[37] = dict(rows[37], conversations_rejected=[*rows[37]["conversations_rejected"][:-1],
                                                           {"role": "assistant", "content": "red " * 100}])
    # one step of 2 rows out of 40: row 37's batch never comes up, so only an up-front check names it
    with pytest.raises(DataError, match=r"^rows: row 37 \(rejected\): \d+ tokens \(4 of them image / video tokens\) "
                                        rf"exceed the model's context of {CONTEXT} tokens"):
        M.train_vlm_reward(rm, long_rows, tcfg(tmp_path / "a"))
    assert steps_taken == [] and not (tmp_path / "a" / "checkpoint-1").exists()
    # a long held-out row: refused before the first step too, not at the evaluation after it
    with pytest.raises(DataError, match=r"^eval rows: row 37 \(rejected\): \d+ tokens"):
        M.train_vlm_reward(rm, rows, tcfg(tmp_path / "b"), eval_rows=long_rows)
    assert steps_taken == []
    # rows that fit train as before
    history = M.train_vlm_reward(rm, rows, tcfg(tmp_path / "c"), eval_rows=rows[:4])
    assert len(history) == 1 and steps_taken


def test_visual_prm_refuses_a_long_row_naming_the_steps_past_the_context(proc, tmp_path, steps_taken):
    torch.manual_seed(0)
    prm = P.VisualPRM(P.VisualPRMConfig(), short_context(proc), proc)
    rows = S.colour_step_rows(40, seed=0)
    rows[33] = dict(rows[33], steps=["red"] * 15, labels=[1.0] * 15)
    with pytest.raises(DataError, match=r"^rows: row 33: \d+ tokens \(4 of them image / video tokens\) exceed the "
                                        rf"model's context of {CONTEXT} tokens .*\(steps \d+\.\.14 of its 15, counted "
                                        r"from 0, lie past it\)"):
        P.train_visual_prm(prm, rows, tcfg(tmp_path / "a"))
    assert steps_taken == [] and not (tmp_path / "a" / "checkpoint-1").exists()
    with pytest.raises(DataError, match=r"^eval rows: row 33: \d+ tokens"):
        P.train_visual_prm(prm, rows[:4], tcfg(tmp_path / "b"), eval_rows=rows)
    assert steps_taken == []


def test_upfront_check_reuses_checked_rows_and_is_cheap(proc):
    rm = M.VLMRewardModel(M.VLMRewardConfig(), short_context(proc), proc)
    pairs = M.as_pairs(S.colour_preference_rows(16, seed=1))
    built = []
    collate = M.PreferenceCollator(rm)
    rm.check_rows_fit(pairs, lambda chunk: (built.append(len(chunk)), collate(chunk))[1], 4)
    assert built == [4, 4, 4, 4]
    rm.check_rows_fit(pairs, lambda chunk: (built.append(len(chunk)), collate(chunk))[1], 4)
    assert built == [4, 4, 4, 4]  # already checked for this model and processor: not encoded again
    other = M.VLMRewardModel(M.VLMRewardConfig(), short_context(proc), proc)
    other.check_rows_fit(pairs, lambda chunk: (built.append(len(chunk)), collate(chunk))[1], 16)
    assert built == [4, 4, 4, 4, 16]  # another model: checked again


def test_cli_refuses_a_long_row_before_any_step_or_evaluation(proc, tmp_path, capsys, monkeypatch):
    from mmreward.cli import main as mmreward_main
    from mmreward.vision import vlm_cli

    monkeypatch.setattr(vlm_cli, "_backbone", lambda spec: (short_context(proc), proc))
    evaluated = []
    real_eval = M.evaluate_vlm_reward
    monkeypatch.setattr(M, "evaluate_vlm_reward", lambda *a, **k: (evaluated.append(1), real_eval(*a, **k))[1])
    assert mmreward_main(["vision", "colour-data", "--out", str(tmp_path / "d"), "--n", "24", "--seed", "0"]) == 0
    capsys.readouterr()
    path = tmp_path / "d" / "rows.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[21])
    row["conversations_chosen"][-1]["content"] = "blue " * 100
    lines[21] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    argv = ["vision", "train-vlm-rm", "--data", str(path), "--eval-data", str(path), "--out", str(tmp_path / "o"),
            "--max-steps", "1", "--batch-size", "2", "--no-progress", "--no-tensorboard", "--no-plot",
            "--log-every", "0"]
    assert mmreward_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "rows.jsonl: row 21 (chosen):" in err and f"context of {CONTEXT} tokens" in err, err
    assert evaluated == [] and not (tmp_path / "o" / "model").exists()


def test_scoring_still_refuses_long_inputs(proc):
    from mmreward.core.inputs import Conversation, VisualSteps

    img = np.zeros((56, 56, 3), np.uint8)
    rm = M.VLMRewardModel(M.VLMRewardConfig(), short_context(proc), proc)
    long = Conversation([{"role": "user", "content": "red " * 120}, {"role": "assistant", "content": "red"}], [img])
    with pytest.raises(DataError, match=rf"input 0: \d+ tokens .* context of {CONTEXT} tokens"):
        rm.score([long])
    prm = P.VisualPRM(P.VisualPRMConfig(), short_context(proc), proc)
    with pytest.raises(DataError, match=rf"input 1: \d+ tokens .* context of {CONTEXT} tokens"):
        prm.score([VisualSteps("red", ["red"], [img]), VisualSteps("red", ["red"] * 15, [img])])
