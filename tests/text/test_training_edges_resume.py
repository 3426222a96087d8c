"""Resuming text trainers with other data, objectives or examples: refused, naming the difference (they
used to continue silently from weights trained on something else); PRM runs with nothing to learn."""
import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from test_text_train import keyword_pairs, quiet, tiny_rm  # noqa: E402

from mmreward.text import train_reward_model  # noqa: E402
from mmreward.text.prm.data import StepExample, read_step_examples  # noqa: E402
from mmreward.text.prm.model import ProcessRewardModel  # noqa: E402
from mmreward.text.prm.synthetic import char_tokenizer, make_dataset, tiny_llama  # noqa: E402
from mmreward.text.prm.train import PRMTrainConfig, train_prm  # noqa: E402


def test_reward_model_resume_with_other_pairs_or_loss_is_refused(tmp_path):
    data, out = keyword_pairs(16, seed=0), tmp_path / "run"
    train_reward_model(tiny_rm(), data, None, quiet(out, max_steps=2, batch_size=4))
    with pytest.raises(ValueError, match=r"other training data \(examples added, removed or changed: data\.pairs: saved 16, "
                                           r"now 40; data\.sha256.*rerun with the run's data"):
        train_reward_model(tiny_rm(), keyword_pairs(40, seed=3), None, quiet(out, max_steps=4, batch_size=4))
    edited = [dict(p) for p in data]
    edited[5]["chosen"] = edited[5]["rejected"] + " w1"  # same count, one pair changed
    with pytest.raises(ValueError, match=r"other training data \(examples added, removed or changed: data\.sha256: saved "
                                           r"'[0-9a-f]+', now '[0-9a-f]+'\)"):
        train_reward_model(tiny_rm(), edited, None, quiet(out, max_steps=4, batch_size=4))
    for change, named in (({"label_smoothing": 0.2}, "objective.label_smoothing: saved 0.0, now 0.2"),
                          ({"center_coef": 0.01}, "objective.center_coef: saved 0.0, now 0.01")):
        with pytest.raises(ValueError, match=f"other settings \\({named}\\)"):
            train_reward_model(tiny_rm(), data, None, quiet(out, max_steps=4, batch_size=4, **change))
    with pytest.raises(ValueError, match=r"objective\.loss: saved 'bt', now 'margin'"):
        train_reward_model(tiny_rm(), [dict(p, margin=1.0) for p in data], None,
                           quiet(out, max_steps=4, batch_size=4, loss="margin"))
    # the same pairs in another order of fields / the same file: continued
    hist = train_reward_model(tiny_rm(), [dict(reversed(list(p.items()))) for p in data], None,
                              quiet(out, max_steps=4, batch_size=4))
    assert [r["step"] for r in hist] == [1, 2, 3, 4]


def _prm():
    tok = char_tokenizer("step", max_value=5)
    torch.manual_seed(0)
    return ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, seed=0), tok, head="lm", max_length=64)


def _prm_cfg(out, **kw):
    base = dict(output_dir=str(out), max_steps=2, batch_size=8, lr=3e-3, progress=False, tensorboard=False,
                plot=False, log_every=0)
    base.update(kw)
    return PRMTrainConfig(**base)


def test_prm_resume_with_other_objective_layers_or_examples_is_refused(tmp_path):
    examples, out = read_step_examples(make_dataset(24, seed=1, max_value=5)), tmp_path / "prm"
    train_prm(_prm(), examples, _prm_cfg(out))
    soft = [StepExample(e.problem, e.steps, [0.3] * len(e.steps)) for e in examples]
    with pytest.raises(ValueError, match=r"other settings \(.*objective: saved 'bce', now 'mse'"):
        train_prm(_prm(), soft, _prm_cfg(out, max_steps=4, objective="mse"))
    model = _prm()
    with pytest.raises(ValueError, match=r"other settings \(trainable_layers: saved -1, now 1\)"):
        train_prm(model, examples, _prm_cfg(out, max_steps=4, trainable_layers=1))
    assert all(p.requires_grad for p in model.parameters())  # the refused run leaves nothing frozen
    with pytest.raises(ValueError, match=r"other training data \(examples added, removed or changed: data\.examples: saved 24, now 16"):
        train_prm(_prm(), examples[:16], _prm_cfg(out, max_steps=4))
    assert len(train_prm(_prm(), examples, _prm_cfg(out, max_steps=3))) == 3


def test_prm_examples_with_every_label_ignored_are_refused(tmp_path):
    """Every step label -100: the loss was 0 at every step and the run 'trained' without a word."""
    examples = read_step_examples(make_dataset(16, seed=1, max_value=5))
    ignored = [StepExample(e.problem, e.steps, [-100.0] * len(e.steps)) for e in examples]
    for objective in ("bce", "mse"):
        with pytest.raises(ValueError, match=f"every step label of the 16 training examples is -100 \\(ignored\\): "
                                             f"no step to train the {objective} objective on"):
            train_prm(_prm(), ignored, _prm_cfg(tmp_path / objective, objective=objective))
        assert not (tmp_path / objective).exists()
    ignored[3] = examples[3]  # one labelled example is enough
    assert len(train_prm(_prm(), ignored, _prm_cfg(tmp_path / "one"))) == 2


def test_reward_model_data_errors_name_the_argument_and_bad_batch_sizes_are_clear(tmp_path):
    """An empty or bad in-memory eval list said "no preference pairs in the given data" / "row 0: ..." without
    telling train from eval pairs; evaluate_pairs(batch_size=0) failed inside range()."""
    from mmreward.core.data import DataError
    from mmreward.text import evaluate_pairs

    data = keyword_pairs(8, seed=0)
    with pytest.raises(DataError, match="^eval_pairs: no preference pairs in the given data$"):
        train_reward_model(tiny_rm(), data, [], quiet(tmp_path / "a", max_steps=1, batch_size=4))
    with pytest.raises(DataError, match="^train_pairs: no preference pairs"):
        train_reward_model(tiny_rm(), [], data, quiet(tmp_path / "b", max_steps=1, batch_size=4))
    with pytest.raises(DataError, match=r"^eval_pairs: row 1: field 'margin' must be a finite number, got nan"):
        train_reward_model(tiny_rm(), data, [data[0], dict(data[1], margin=float("nan"))],
                           quiet(tmp_path / "c", max_steps=1, batch_size=4))
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            evaluate_pairs(tiny_rm(), data, batch_size=bad)
