"""Training entry points on refused runs, tie-only batches and thresholds that are not numbers: a refused
run leaves the model untouched and evaluates nothing first; accuracy over no preferred pair is NaN, not 0;
NaN thresholds and undefined ProcessBench accuracies are named instead of silently deciding."""
import json
import math

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from test_text_cli import QUIET, bert_json, save_tokenizer, write_pairs  # noqa: E402
from test_text_train import keyword_pairs, quiet, tiny_rm  # noqa: E402

from mmreward.core.cli_config import run_cli  # noqa: E402
from mmreward.text import train_reward_model  # noqa: E402
from mmreward.text.cli import main as text_main  # noqa: E402


def _dropouts(model):
    return [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]


def test_a_refused_resume_leaves_the_model_untouched(tmp_path):
    out = tmp_path / "run"
    train_reward_model(tiny_rm(), keyword_pairs(16, seed=0), None, quiet(out, max_steps=2, batch_size=4))
    model = tiny_rm(dropout=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    max_length = model.config.max_length
    with pytest.raises(ValueError, match="other settings"):  # other data: refused
        train_reward_model(model, keyword_pairs(20, seed=3), None, quiet(out, max_steps=4, batch_size=4, max_length=9))
    assert model.config.max_length == max_length and model.config.max_length != 9
    assert _dropouts(model) and all(p == 0.1 for p in _dropouts(model))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # a run already past max_steps: refused before its snapshot is loaded into the model
    with pytest.raises(ValueError, match="already at step 2, past max_steps=1"):
        train_reward_model(model, keyword_pairs(16, seed=0), None, quiet(out, max_steps=1, batch_size=4))
    assert model.config.max_length == max_length and all(p == 0.1 for p in _dropouts(model))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # accepted: the settings apply
    train_reward_model(model, keyword_pairs(16, seed=0), None, quiet(tmp_path / "other", max_steps=1, batch_size=4,
                                                                     max_length=9))
    assert model.config.max_length == 9 and all(p == 0.0 for p in _dropouts(model))


def _cli_setup(tmp_path):
    save_tokenizer(tmp_path / "tok")
    write_pairs(tmp_path / "train.jsonl", 16, 0)
    write_pairs(tmp_path / "test.jsonl", 8, 1)
    return ["train", "--data", str(tmp_path / "train.jsonl"), "--eval-data", str(tmp_path / "test.jsonl"),
            "--backbone-config", bert_json(tmp_path / "bert.json"), "--tokenizer", str(tmp_path / "tok"),
            "--max-steps", "2", "--batch-size", "4", "--max-length", "12", *QUIET]


def test_cli_train_refuses_before_evaluating(tmp_path, capsys, monkeypatch):
    import mmreward.text.train as train_module

    args = _cli_setup(tmp_path)
    out = str(tmp_path / "run")
    assert text_main(args + ["--out", out]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-2])
    assert "eval_accuracy_before" in summary and "eval_accuracy" in summary
    calls = []
    real = train_module.evaluate_pairs
    monkeypatch.setattr(train_module, "evaluate_pairs", lambda *a, **k: calls.append(1) or real(*a, **k))
    write_pairs(tmp_path / "train.jsonl", 20, 5)  # other data: the run in `out` cannot be continued
    rc = run_cli("mmreward text", text_main, args + ["--out", out, "--max-steps", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and "other training data" in err and "Traceback" not in err
    assert calls == []  # refused before the held-out evaluation
    # the same data: the run continues (finished: nothing to train), without a "before" of a fresh model
    write_pairs(tmp_path / "train.jsonl", 16, 0)
    assert text_main(args + ["--out", out]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-2])
    assert calls == [] and "eval_accuracy_before" not in summary and summary["step"] == 2


def test_accuracy_of_tie_only_batches_is_nan_and_steps_count_non_tie_pairs(tmp_path):
    pairs = keyword_pairs(8, seed=0)
    ties = [dict(p, tie=True) for p in keyword_pairs(8, seed=1)]
    with pytest.warns(UserWarning, match="only tie pairs"):
        hist = train_reward_model(tiny_rm(), ties, None, quiet(tmp_path / "ties", max_steps=2, batch_size=4))
    assert all(math.isnan(r["accuracy"]) and math.isnan(r["reward_gap"]) for r in hist)
    assert all(math.isfinite(r["loss"]) for r in hist)
    # one micro-batch of ties, one of ordinary pairs accumulated into each step: the accuracy is that of the
    # ordinary pairs alone (it used to be averaged with the ties' 0)
    from mmreward.text.data import PairCollator, encode_pairs, load_preference_pairs
    from mmreward.text.train import RewardTrainConfig, pairwise_loss_fn

    rm = tiny_rm()
    loss_fn = pairwise_loss_fn(RewardTrainConfig(output_dir=str(tmp_path / "x")))
    collate = PairCollator(rm.pad_id)
    enc = encode_pairs(rm.encoder, load_preference_pairs(ties[:4] + pairs[:4]))
    _, m_ties = loss_fn(rm, collate(enc[:4]))
    _, m_pairs = loss_fn(rm, collate(enc[4:]))
    _, m_mixed = loss_fn(rm, collate(enc[2:6]))  # two ties, two ordinary pairs
    assert math.isnan(m_ties["accuracy"]) and m_ties["accuracy"].weight == 0
    assert m_pairs["accuracy"].weight == 4 and m_mixed["accuracy"].weight == 2
    r = rm.score_encoded([p.chosen for p in enc] + [p.rejected for p in enc])
    gap = (r[:8] - r[8:])
    assert m_mixed["accuracy"] == pytest.approx(float((gap[4:6] > 0).float().mean()))
    assert m_mixed["reward_gap"] == pytest.approx(float(gap[4:6].mean()), abs=1e-5)


def test_trainer_weighted_metrics(tmp_path):
    from mmreward.core.trainer import TrainConfig, Trainer, Weighted

    model = torch.nn.Linear(1, 1)
    values = iter([Weighted(1.0, 3), Weighted(0.0, 1), Weighted(0.5, 0), Weighted(float("nan"), 0)])

    def loss_fn(m, batch):
        return m(batch).pow(2).mean(), {"acc": next(values), "plain": 2.0}

    cfg = TrainConfig(output_dir=str(tmp_path / "w"), max_steps=2, batch_size=1, grad_accum_steps=2, progress=False,
                      tensorboard=False, plot=False, log_every=0)
    hist = Trainer(model, cfg, [torch.ones(1)] * 2, lambda xs: torch.stack(xs), loss_fn).fit()
    assert hist[0]["acc"] == pytest.approx(0.75) and hist[0]["plain"] == 2.0
    assert math.isnan(hist[1]["acc"])  # every weight 0: nothing measured
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        Weighted(1.0, -1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5, True, "1"])
def test_rrm_and_reference_filters_refuse_thresholds_that_are_not_finite_numbers(bad):
    from mmreward.text.recipes import CurationConfig, RRMConfig, filter_by_reference, rrm_dataset
    from mmreward.text.recipes.rrm import filter_augmented

    pairs = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)]
    calls = []

    def scorer(prompts, responses):
        calls.append(len(prompts))
        return torch.tensor([float(r.startswith("good")) for r in responses])

    with pytest.raises((ValueError, TypeError), match="RRMConfig.filter_threshold must be a"):
        rrm_dataset(pairs, RRMConfig(filter_threshold=bad), scorer=scorer)
    with pytest.raises((ValueError, TypeError), match="filter_augmented: threshold must be a"):
        filter_augmented(rrm_dataset(pairs), scorer, bad)
    if bad != -0.5:  # a negative reference threshold is a valid (lenient) one
        with pytest.raises((ValueError, TypeError), match="filter_by_reference: threshold must be a"):
            filter_by_reference(pairs, scorer, threshold=bad)
        with pytest.raises(ValueError, match="CurationConfig.reference_threshold"):
            CurationConfig(reference_threshold=bad)
    assert calls == []  # refused before anything is scored
    assert len(filter_by_reference(pairs, scorer, threshold=-0.5)) == 4
    assert len(rrm_dataset(pairs, RRMConfig(filter_threshold=0), scorer=scorer)) < len(rrm_dataset(pairs))


def test_processbench_without_one_side_is_nan_with_a_note():
    from mmreward.text.prm.eval import processbench_f1, processbench_report, processbench_sweep

    only_correct = processbench_f1([-1, 2, -1], [-1, -1, -1])
    assert only_correct["acc_correct"] == pytest.approx(2 / 3) and math.isnan(only_correct["acc_error"])
    assert math.isnan(only_correct["f1"]) and "no erroneous samples" in only_correct["note"]
    only_errors = processbench_f1([1, 0], [1, 2])
    assert only_errors["acc_error"] == 0.5 and math.isnan(only_errors["acc_correct"]) and math.isnan(only_errors["f1"])
    assert "no correct samples" in only_errors["note"]
    assert "note" not in processbench_f1([1, -1], [1, -1]) and processbench_f1([0, 1], [1, -1])["f1"] == 0.0
    scores = [torch.tensor([0.9, 0.2]), torch.tensor([0.8, 0.7]), torch.tensor([0.1, 0.9])]
    with pytest.warns(UserWarning, match="no best threshold"):
        sw = processbench_sweep(scores, [-1, -1, -1], [0.3, 0.5])
    assert sw["best_threshold"] is None and sw["best"] is None
    with pytest.warns(UserWarning, match=r"F1 undefined \(NaN\) for subset\(s\) 'b'"):
        rep = processbench_report(scores, [1, -1, -1], ["a", "a", "b"], 0.5)
    assert rep["average_f1"] == rep["subsets"]["a"]["f1"] == 1.0 and math.isnan(rep["subsets"]["b"]["f1"])


def test_prm_eval_cli_on_correct_samples_only_prints_valid_json(tmp_path, capsys):
    from mmreward.text.prm.cli import main as prm_main
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, make_dataset, tiny_llama

    tok = char_tokenizer("step", max_value=5)
    torch.manual_seed(0)
    ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=1, seed=0), tok, head="lm",
                                     max_length=64).save_pretrained(str(tmp_path / "prm"))
    rows = [r for r in make_dataset(12, seed=3, max_value=5) if r["first_error"] < 0]
    data = tmp_path / "ok.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    with pytest.warns(UserWarning, match="undefined"):
        assert prm_main(["eval", "--model", str(tmp_path / "prm"), "--data", str(data), "--sweep"]) == 0
    out = json.loads(capsys.readouterr().out)  # NaN would not be JSON: printed as null
    assert out["processbench_f1"] is None and out["acc_error"] is None and 0 <= out["acc_correct"] <= 1
    assert out["best_threshold"] is None and out["processbench"]["average_f1"] is None
    assert "no erroneous samples" in out["processbench"]["subsets"]["all"]["note"]


@pytest.mark.parametrize("field,bad", [("lr", float("nan")), ("lr", 0.0), ("temperature", float("inf")),
                                       ("top_p", 1.5), ("top_p", float("nan")), ("top_k", -1), ("seed", -2)])
def test_raft_config_refuses_values_that_would_fail_after_sampling(field, bad):
    # lr used to be checked only by the first fine-tuning: after sampling and scoring, with raft.csv started,
    # so the output folder then refused the corrected run
    from mmreward.text.recipes import RaftConfig

    with pytest.raises(ValueError, match=f"RaftConfig.{field} must be"):
        RaftConfig(**{field: bad})


def test_evaluate_pairs_refuses_non_finite_rewards():
    from mmreward.text.train import evaluate_pairs

    rm = tiny_rm()
    with torch.no_grad():
        rm.head.bias.fill_(float("nan"))  # used to give accuracy 0.0 (NaN > NaN is false) and no word
    with pytest.raises(ValueError, match=r"pair 0 \(chosen\) has a non-finite reward \(nan\)"):
        evaluate_pairs(rm, keyword_pairs(4, seed=0))


def test_prm_cache_frozen_run_is_refused_before_the_cache_is_built(tmp_path, monkeypatch):
    import mmreward.text.prm.train as prm_train
    from mmreward.text.prm.data import read_step_examples
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, make_dataset, tiny_llama

    def prm():
        tok = char_tokenizer("step", max_value=5)
        torch.manual_seed(0)
        return ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, seed=0), tok, head="lm",
                                                max_length=64)

    built = []
    real = prm_train.CachedPrefixCollator
    monkeypatch.setattr(prm_train, "CachedPrefixCollator", lambda *a, **k: built.append(1) or real(*a, **k))
    cfg = dict(max_steps=1, batch_size=4, progress=False, tensorboard=False, plot=False, log_every=0,
               trainable_layers=1, cache_frozen=True)
    out = str(tmp_path / "prm")
    prm_train.train_prm(prm(), read_step_examples(make_dataset(8, seed=1, max_value=5)),
                        prm_train.PRMTrainConfig(output_dir=out, **cfg))
    assert built == [1]
    model = prm()
    with pytest.raises(ValueError, match="other training data"):
        prm_train.train_prm(model, read_step_examples(make_dataset(12, seed=2, max_value=5)),
                            prm_train.PRMTrainConfig(output_dir=out, **dict(cfg, max_steps=2)))
    assert built == [1]  # refused before the frozen blocks ran over every example
    assert all(p.requires_grad for p in model.parameters())


def test_too_few_pairs_for_a_batch_or_an_accumulated_step_are_named(tmp_path):
    model = tiny_rm(dropout=0.1)
    with pytest.raises(ValueError, match=r"train_pairs holds 1 pair\(s\): fewer than batch_size \(2\)"):
        train_reward_model(model, keyword_pairs(1, 0), None, quiet(tmp_path / "a", max_steps=1, batch_size=2))
    assert all(p == 0.1 for p in _dropouts(model))  # refused: untouched
    with pytest.warns(UserWarning, match=r"grad_accum_steps \(8\) is more than the 2 micro-batch\(es\) of 2 pairs in "
                                         r"one pass over the 4 training pairs: each optimizer step goes over them 4 times"):
        hist = train_reward_model(tiny_rm(), keyword_pairs(4, 0), None,
                                  quiet(tmp_path / "b", max_steps=1, batch_size=2, grad_accum_steps=8))
    assert len(hist) == 1
