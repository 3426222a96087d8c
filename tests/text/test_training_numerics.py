"""Training never silently learns from garbage: a diverged model (NaN / inf weights, or finite weights
that overflow in the forward) is never written as a snapshot or final model, a non-finite gradient is
not stepped on, and data that carries no signal or no float32 value is refused naming the row / field."""
import json
import os

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from test_text_train import keyword_pairs, quiet, tiny_rm  # noqa: E402

from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.trainer import TrainConfig, Trainer  # noqa: E402
from mmreward.text import train_reward_model  # noqa: E402


def _cfg(out, **kw):
    return TrainConfig(output_dir=str(out), batch_size=1, progress=False, tensorboard=False, plot=False, log_every=0,
                       **kw)


def _linear(weight):
    torch.manual_seed(0)
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(weight)
    return m


def test_a_model_that_diverges_is_not_saved_and_the_last_good_snapshot_is_kept(tmp_path):
    """Before: Adam at a huge constant lr left finite weights (w ~ 2e19) that overflow in the forward:
    the step's snapshot (and, on the last step, the final model/) were written, to be found only by the
    next step's loss check or never."""
    def loss_fn(m, x):  # Adam moves w by ~lr a step: -1e38 after step 1 (finite), -inf after step 2
        return (-2e19 * m(x)).mean(), {}

    def trainer(out, **kw):
        cfg = _cfg(out, max_steps=3, save_every=1, lr=1e19, min_lr_ratio=1.0, weight_decay=0.0, **kw)
        return Trainer(_linear(0.5), cfg,
                       [torch.ones(1)] * 4, lambda xs: torch.stack(xs), loss_fn, check_saves=True)

    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"diverged at step 2: its loss on step 2's last micro-batch is -inf"
                                                 r".*checkpoint-00000001, step 1\) holds the last good weights"):
        trainer(out).fit()
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint")) == ["checkpoint-00000001"]
    assert not (out / "model").exists()
    # the folder says it diverged (it said "rerun with --resume", which runs into the same numbers again)
    from mmreward.core.checkpoint import run_folder_problem

    problem = run_folder_problem(str(out))
    assert "diverged" in problem and "--overwrite" in problem and "--resume" not in problem, problem
    # resumed: the good step-1 snapshot is read back (finite weights) and the same step is refused again
    t = trainer(out, resume=True)
    assert t.start() and t.step == 1 and torch.isfinite(t.model.weight).all()
    with pytest.raises(FloatingPointError, match="diverged at step 2"):
        t.fit()
    assert (out / "diverged.json").exists()
    # started again (overwrite) with a sane lr: the mark goes with the old run
    cfg = _cfg(out, max_steps=2, save_every=1, lr=1e-3, overwrite=True)
    Trainer(_linear(0.5), cfg, [torch.ones(1)] * 4, lambda xs: torch.stack(xs), loss_fn, check_saves=True).fit()
    assert not (out / "diverged.json").exists() and "diverged" not in run_folder_problem(str(out))


def test_non_finite_parameters_are_never_saved_even_without_check_saves(tmp_path):
    def loss_fn(m, x):
        return m(x).pow(2).mean(), {}

    t = Trainer(_linear(0.5), _cfg(tmp_path / "run", max_steps=1), [torch.ones(1)] * 2, lambda xs: torch.stack(xs),
                loss_fn)
    real_step = t.optimizer.step

    def step(*a, **k):  # the weights turn NaN in a step whose loss and gradient were finite
        real_step(*a, **k)
        with torch.no_grad():
            t.model.weight.fill_(float("nan"))

    t.optimizer.step = step
    with pytest.raises(FloatingPointError, match="diverged at step 1: parameter 'weight' holds non-finite values"):
        t.fit()
    assert not any(p.startswith("checkpoint") for p in os.listdir(tmp_path / "run"))


def test_a_non_finite_gradient_of_a_finite_loss_is_not_stepped_on(tmp_path):
    """Before: sqrt at 0 (a finite loss, an inf gradient) wrote NaN into the weight and the run went on."""
    def loss_fn(m, x):
        y = m(x)
        return torch.sqrt(y - y.detach()).mean(), {}  # 0, with d/dy = inf

    model = _linear(0.5)
    with pytest.raises(FloatingPointError, match=r"non-finite gradient \(norm (inf|nan)\) at step 1 .*not taken"):
        Trainer(model, _cfg(tmp_path / "run", max_steps=2), [torch.ones(1)] * 2, lambda xs: torch.stack(xs),
                loss_fn).fit()
    assert model.weight.item() == 0.5


def test_reward_model_with_a_huge_lr_leaves_no_nan_model(tmp_path):
    """Before: lr=1e6 for two steps saved model/ whose every score was NaN, and train_reward_model returned."""
    import mmreward

    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="diverged at step 2"):
        train_reward_model(tiny_rm(), keyword_pairs(8, 0), config=quiet(out, max_steps=2, batch_size=2, lr=1e6))
    assert not (out / "model").exists() and not any(p.startswith("checkpoint") for p in os.listdir(out))
    # named, not opened as a NaN scorer, and not sent to --resume (which would run into the same numbers)
    with pytest.raises(Exception, match=r"diverged \(the model diverged at step 2: its loss on step 2's last "
                                        r"micro-batch is nan\): it has no model.*--overwrite"):
        mmreward.load(str(out))


def test_pairs_whose_chosen_and_rejected_are_the_same_tokens_everywhere_are_refused(tmp_path):
    """Before: a warning, then a run whose loss stayed log 2 at every step (zero gradient) saved a model."""
    pairs = keyword_pairs(8, 0)
    same = [dict(p, rejected=p["chosen"]) for p in pairs]
    with pytest.raises(DataError, match="in all 8 pairs the chosen and rejected inputs are the same tokens"):
        train_reward_model(tiny_rm(), same, config=quiet(tmp_path / "a", max_steps=2, batch_size=2))
    assert not (tmp_path / "a").exists()
    # equal only after truncation: the two replies differ past max_length (prompt_first cuts the prompt
    # first, then the reply's end)
    cut = [dict(p, chosen=p["chosen"] + " w1 w1 w1", rejected=p["chosen"] + " w1 w1 w2") for p in pairs]
    with pytest.raises(DataError, match="max_length=6"):
        train_reward_model(tiny_rm(), cut, config=quiet(tmp_path / "b", max_steps=2, batch_size=2, max_length=6))
    # one such pair among others: trained, with the counted warning
    with pytest.warns(UserWarning, match="1 of 8 pairs"):
        train_reward_model(tiny_rm(), same[:1] + pairs[1:], config=quiet(tmp_path / "c", max_steps=1, batch_size=2))


@pytest.mark.parametrize("margin", [1e39, -1e300])
def test_a_margin_beyond_float32_is_refused_naming_the_row(margin):
    """Before: a finite float64 margin of 1e39 became inf in the float32 batch: a NaN loss at step 1."""
    from mmreward.text import load_preference_pairs

    rows = keyword_pairs(3, 0)
    rows[2]["margin"] = margin
    with pytest.raises(DataError, match=r"row 2: field 'margin' is .*beyond the float32 range"):
        load_preference_pairs(rows)


def _tiny_prm(max_length=64):
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("step", max_value=5)
    return ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=1, seed=0), tok, head="lm",
                                            max_length=max_length)


def _prm_cfg(out, **kw):
    from mmreward.text.prm.train import PRMTrainConfig

    return PRMTrainConfig(output_dir=str(out), max_steps=2, batch_size=2, progress=False, tensorboard=False, plot=False,
                          log_every=0, **kw)


def test_ppm_pairs_that_are_all_the_same_text_are_refused(tmp_path):
    from mmreward.text.prm.data import read_pair_examples
    from mmreward.text.prm.train import train_prm

    pairs = read_pair_examples([{"prompt": "1 +3", "prefix": ["1+3=4"], "chosen": "4-4=0", "rejected": "4-4=0"}] * 4)
    with pytest.raises(DataError, match="in all 4 PPM pairs the chosen and rejected steps are the same text"):
        train_prm(_tiny_prm(), pairs, _prm_cfg(tmp_path / "run", objective="ppm"))
    assert not (tmp_path / "run").exists()


def test_prm_examples_past_max_length_are_named_before_training_and_cut_labels_counted(tmp_path):
    """Before: an example whose first step did not fit max_length failed mid-run, at the batch that drew
    it, as "input 0" (its place in the micro-batch); labelled steps cut by truncation went unreported."""
    from mmreward.text.prm.data import read_step_examples
    from mmreward.text.prm.synthetic import make_dataset
    from mmreward.text.prm.train import train_prm

    rows = make_dataset(8, seed=1, max_value=5)
    rows[5]["prompt"] = "1 +3 " * 40
    with pytest.raises(DataError, match="train example 5: not even the first step fits max_length=64"):
        train_prm(_tiny_prm(), read_step_examples(rows), _prm_cfg(tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    with pytest.warns(UserWarning, match=r"\d+ of the \d+ labelled training steps .* past max_length=20 tokens"):
        train_prm(_tiny_prm(max_length=20), read_step_examples(rows[:5]), _prm_cfg(tmp_path / "b"))


def test_image_ranks_beyond_int64_and_self_pairs_are_named(tmp_path):
    """Before: a rank of 10**30 raised a bare OverflowError from numpy; sets ranking one image file
    against itself trained on nothing without a word."""
    from mmreward.vision.train import RankedExample, read_ranked_sets, warn_self_pairs

    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    row = {"prompt": "a red circle", "images": ["a.png", "b.png"], "ranks": [0, 10 ** 30]}
    (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="row 0: field 'ranks' must be 2 integers"):
        read_ranked_sets(str(tmp_path / "rows.jsonl"))
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    with pytest.warns(UserWarning, match="all 3 ranked pairs .* compare an image file with itself"):
        warn_self_pairs([RankedExample("p", [a, a], [0, 1]), RankedExample("q", [b, b, b], [0, 0, 1])], "rows.jsonl")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_self_pairs([RankedExample("p", [a, a], [0, 1]), RankedExample("q", [a, b], [0, 1])], "rows.jsonl")


def test_cli_reports_a_diverged_run_as_one_line_user_error(tmp_path, capsys):
    from test_text_cli import QUIET, bert_json, save_tokenizer, write_pairs

    from mmreward.core.cli_config import run_cli
    from mmreward.text.cli import main as text_main

    save_tokenizer(tmp_path / "tok")
    write_pairs(tmp_path / "train.jsonl", 8, 0)
    rc = run_cli("mmreward text", text_main, [
        "train", "--data", str(tmp_path / "train.jsonl"), "--backbone-config", bert_json(tmp_path / "bert.json"),
        "--tokenizer", str(tmp_path / "tok"), "--max-steps", "2", "--batch-size", "4", "--max-length", "12",
        "--lr", "1e6", "--out", str(tmp_path / "run"), *QUIET])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "unexpected" not in err and len(err.strip().splitlines()) == 1
    assert "at step 2" in err and not (tmp_path / "run" / "model").exists()


def test_under_ddp_a_non_finite_loss_stops_its_rank_at_once_naming_it(tmp_path, monkeypatch):
    """The rank with the non-finite loss raises before its backward, naming the rank (torchrun then ends the
    others); the trainer adds no collective of its own to the step (a 2-rank world simulated in one process)."""
    import torch.distributed as dist

    calls = []
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: calls.append(t))

    def loss_fn(m, x):
        return m(x).pow(2).mean() * float("nan"), {}

    model = _linear(0.5)
    t = Trainer(model, _cfg(tmp_path / "run", max_steps=2), [torch.ones(1)] * 4, lambda xs: torch.stack(xs), loss_fn)
    t.start()
    t.world_size = 2  # rank 0 of two, decided as one process
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at step 1, micro-batch 0, rank 0"):
        t.fit()
    assert calls == [] and model.weight.item() == 0.5


def test_an_optimizer_step_that_overflows_is_a_divergence(tmp_path):
    """lr 1e38 made AdamW raise "value cannot be converted to type float without overflow": an unexpected error
    (exit 1) instead of the divergence it is."""
    def loss_fn(m, x):
        return m(x).pow(2).mean(), {}

    t = Trainer(_linear(0.5), _cfg(tmp_path / "run", max_steps=2, lr=1e38), [torch.ones(1)] * 2,
                lambda xs: torch.stack(xs), loss_fn)
    with pytest.raises(FloatingPointError, match=r"optimizer step 1 overflowed at lr 1e\+38.*lower the learning rate"):
        t.fit()
    assert not (tmp_path / "run" / "model").exists()
    assert (tmp_path / "run" / "diverged.json").exists()
