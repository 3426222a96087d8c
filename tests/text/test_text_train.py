import random
import time

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from helpers import word_tokenizer as _word_tokenizer  # noqa: E402
from transformers import BertConfig  # noqa: E402

import mmreward.text.train as text_train  # noqa: E402
from mmreward.ops import pairwise_loss  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402
from mmreward.text import RewardModel, RewardTrainConfig, evaluate_pairs, load_preference_pairs, train_reward_model  # noqa: E402
from mmreward.text.data import PairCollator, encode_pairs  # noqa: E402
from mmreward.text.train import LengthGroupedTrainer, pairwise_loss_fn  # noqa: E402

KEYWORDS = [f"w{i}" for i in range(16)]


def word_tokenizer():
    return _word_tokenizer(["say"] + KEYWORDS, model_max_length=32)


def keyword_pairs(n, seed, extra_words=0):
    """Prompt "say k"; chosen = three words containing k, rejected = the same with k replaced (exact labels);
    ``extra_words``: up to that many filler words on both, so the pairs differ in length."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k, a, b, other = rng.sample(KEYWORDS, 4)
        pos = rng.randrange(3)
        chosen, rejected = [a, b], [a, b]
        chosen.insert(pos, k)
        rejected.insert(pos, other)
        filler = [a] * rng.randrange(extra_words + 1)
        out.append({"prompt": f"say {k}", "chosen": " ".join(chosen + filler), "rejected": " ".join(rejected + filler)})
    return out


def tiny_rm(dropout=0.0, pooling="last", seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=32, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return RewardModel.from_backbone(cfg, tokenizer=word_tokenizer(), pooling=pooling)


def quiet(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), progress=False, tensorboard=False, plot=False, log_every=0)
    base.update(kw)
    return RewardTrainConfig(**base)


@pytest.mark.learning
def test_reward_model_learns_keyword_preference(tmp_path):
    # [CLS] reading: this from-scratch 2-layer BERT reaches 0.905 / 0.97 / 1.0 held-out at step 250 with
    # data-order seeds 0 / 1 / 2 (mean pooling 0.855 / 0.98 / 0.94, last token 0.865 / 0.995 / 0.99)
    rm = tiny_rm(pooling="first")
    held_out = keyword_pairs(200, seed=1)
    before = evaluate_pairs(rm, held_out)["accuracy"]
    t0 = time.time()
    hist = train_reward_model(rm, keyword_pairs(2000, seed=0), held_out,
                              quiet(tmp_path, max_steps=250, batch_size=16, lr=1e-3, warmup_steps=10, eval_every=50))
    elapsed = time.time() - t0
    evals = [r["eval_accuracy"] for r in hist if "eval_accuracy" in r]
    print(f"keyword task: held-out accuracy {before:.3f} -> {evals} in {elapsed:.1f}s")
    assert len(evals) == 5 and evals[-1] >= 0.9, evals
    assert before < 0.7
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"] and hist[-1]["accuracy"] > 0.8
    assert (tmp_path / "metrics.csv").exists()
    again = RewardModel.from_pretrained(str(tmp_path))  # the run's model/
    assert evaluate_pairs(again, held_out)["accuracy"] == pytest.approx(evals[-1])


def test_one_concatenated_forward_matches_the_op_on_separate_forwards():
    rm = tiny_rm().eval()
    rows = keyword_pairs(6, seed=3)
    rows[0]["margin"], rows[2]["margin"], rows[4]["tie"] = 0.5, 1.5, True
    pairs = encode_pairs(rm.encoder, load_preference_pairs(rows))
    calls = []
    rm.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    cfg = quiet("unused", loss="margin", label_smoothing=0.1, center_coef=0.01)
    loss, metrics = pairwise_loss_fn(cfg)(rm, PairCollator(rm.pad_id)(pairs))
    assert calls == [12]  # one forward over chosen + rejected
    r_c = rm.score([TextPair(r["prompt"], r["chosen"]) for r in rows])
    r_r = rm.score([TextPair(r["prompt"], r["rejected"]) for r in rows])
    tie = torch.tensor([False] * 4 + [True, False])
    expected = pairwise_loss(r_c, r_r, margin=torch.tensor([0.5, 0, 1.5, 0, 0, 0]), label_smoothing=0.1,
                             center_coef=0.01, tie=tie)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)
    assert metrics["accuracy"] == pytest.approx(((r_c > r_r) & ~tie).sum().item() / 5)
    loss.backward()
    assert rm.head.weight.grad is not None and rm.backbone.embeddings.word_embeddings.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_fused_head_matches_plain_head(pooling):
    rows = keyword_pairs(6, seed=4)
    rows[1]["margin"], rows[3]["tie"] = 1.0, True
    results = []
    for fused in (False, True):
        rm = tiny_rm(pooling=pooling).eval()
        pairs = encode_pairs(rm.encoder, load_preference_pairs(rows))
        cfg = quiet("unused", loss="margin", label_smoothing=0.1, center_coef=0.01, fused_head=fused)
        loss, metrics = pairwise_loss_fn(cfg)(rm, PairCollator(rm.pad_id)(pairs))
        loss.backward()
        results.append((loss.detach(), metrics, {k: p.grad.clone() for k, p in rm.named_parameters() if p.grad is not None}))
    (l0, m0, g0), (l1, m1, g1) = results
    torch.testing.assert_close(l1, l0, atol=1e-6, rtol=1e-5)
    assert m1["accuracy"] == m0["accuracy"] and m1["reward_gap"] == pytest.approx(m0["reward_gap"], abs=1e-5)
    assert g0.keys() == g1.keys() and "head.bias" in g1
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-6, rtol=1e-4, msg=k)


def _trainer(rm, data, cfg, rank=0, world=1):
    """A LengthGroupedTrainer seen from ``rank`` of ``world`` processes (its data order only)."""
    t = LengthGroupedTrainer(rm, cfg, data, PairCollator(rm.pad_id), pairwise_loss_fn(cfg))
    t.rank, t.world_size = rank, world
    return t


def test_length_grouped_batches(tmp_path):
    rm = tiny_rm()
    data = encode_pairs(rm.encoder, load_preference_pairs(keyword_pairs(203, seed=5, extra_words=12)))
    lengths = [len(p) for p in data]
    B = 8

    def batches(order):
        return [order[k:k + B] for k in range(0, len(order), B)]

    one = _trainer(rm, data, quiet(tmp_path, batch_size=2 * B, seed=3))._epoch_order(0)
    grouped = batches(_trainer(rm, data, quiet(tmp_path, batch_size=B, seed=3))._epoch_order(0))
    assert len(grouped) == 203 // B and all(len(b) == B for b in grouped)
    assert len({i for b in grouped for i in b}) == len(grouped) * B  # no pair twice in an epoch
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in grouped) / len(grouped)
    shuffled = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    random_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches(shuffled)) / len(grouped)
    assert spread <= 1.0 < random_spread, (spread, random_spread)  # far less padding than random batches
    assert max(lengths[i] for i in grouped[0]) == max(lengths)  # the longest batch first
    assert grouped != batches(_trainer(rm, data, quiet(tmp_path, batch_size=B, seed=3))._epoch_order(1))  # a new epoch
    # two processes x B: every global batch holds the same pairs as one process x 2B
    ranks = [batches(_trainer(rm, data, quiet(tmp_path, batch_size=B, seed=3), r, 2)._epoch_order(0)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) // (2 * B)
    assert [sorted(a + b) for a, b in zip(*ranks)] == [sorted(one[k:k + 2 * B]) for k in range(0, len(one), 2 * B)]


def test_epochs_set_the_number_of_steps(tmp_path):
    data = keyword_pairs(70, seed=0)
    hist = train_reward_model(tiny_rm(), data, None, quiet(tmp_path, epochs=2, batch_size=8, grad_accum_steps=2))
    assert len(hist) == 8  # 70 // 8 = 8 micro-batches per epoch, 2 per step, 2 epochs
    with pytest.raises(ValueError, match="epochs"):
        RewardTrainConfig(epochs=0)


def test_dropout_is_off_while_training_unless_asked(tmp_path):
    def dropout_ps(rm):
        return {m.p for m in rm.modules() if isinstance(m, torch.nn.Dropout)}

    data = keyword_pairs(32, seed=0)
    kept = tiny_rm(dropout=0.3)
    train_reward_model(kept, data, None, quiet(tmp_path / "on", max_steps=2, batch_size=8, disable_dropout=False))
    assert dropout_ps(kept) == {0.3}
    rm = tiny_rm(dropout=0.3)
    train_reward_model(rm, data, None, quiet(tmp_path / "off", max_steps=2, batch_size=8))
    assert dropout_ps(rm) == {0.0}
    # so a training forward is the scoring forward (attention dropout included)
    batch = PairCollator(rm.pad_id)(encode_pairs(rm.encoder, load_preference_pairs(data))[:8])
    args = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    train_scores = rm.train()(*args)
    torch.testing.assert_close(train_scores, rm.eval()(*args))


def test_bf16_autocast_and_resume(tmp_path, monkeypatch):
    data = keyword_pairs(64, seed=0, extra_words=4)
    hist = train_reward_model(tiny_rm(), data, None, quiet(tmp_path / "bf16", max_steps=3, batch_size=8, autocast="bf16"))
    assert len(hist) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in hist)
    # exact resume through the text trainer (dropout on, length-grouped batches): 6 steps == 3 + crash + 3
    full = tiny_rm(dropout=0.1)
    train_reward_model(full, data, None, quiet(tmp_path / "a", max_steps=6, batch_size=8, lr=1e-3, save_every=3))
    cfg = quiet(tmp_path / "b", max_steps=6, batch_size=8, lr=1e-3, save_every=3)
    real = pairwise_loss_fn

    def crashing(config):
        loss_fn, calls = real(config), {"n": 0}

        def crash_at_step_5(model, batch):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
            return loss_fn(model, batch)

        return crash_at_step_5

    monkeypatch.setattr(text_train, "pairwise_loss_fn", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_reward_model(tiny_rm(dropout=0.1), data, None, cfg)
    monkeypatch.setattr(text_train, "pairwise_loss_fn", real)
    resumed = tiny_rm(dropout=0.1)
    train_reward_model(resumed, data, None, cfg)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_config_and_data_errors(tmp_path):
    with pytest.raises(ValueError, match="loss"):
        RewardTrainConfig(loss="hinge")
    with pytest.raises(ValueError, match="label_smoothing"):
        RewardTrainConfig(label_smoothing=1.0)
    with pytest.raises(ValueError, match="max_length"):
        RewardTrainConfig(max_length=1)
    rm = tiny_rm()
    with pytest.raises(ValueError, match="no training pair has a 'margin'"):
        train_reward_model(rm, keyword_pairs(32, 0), None, quiet(tmp_path, loss="margin", max_steps=1))
    partly = keyword_pairs(4, 0)
    partly[0]["margin"] = 1.0
    with pytest.warns(UserWarning, match=r"3 of 4 training pairs have no 'margin' field \(first: pair 1\)"):
        train_reward_model(rm, partly, None, quiet(tmp_path / "partly", loss="margin", max_steps=1, batch_size=4))
    with pytest.raises(ValueError, match="row 1: missing field 'rejected'"):
        train_reward_model(rm, [keyword_pairs(1, 0)[0], {"prompt": "say w1", "chosen": "w1"}], None, quiet(tmp_path))
    with pytest.raises(ValueError, match="row 0: field 'chosen' is null"):
        train_reward_model(rm, [{"prompt": "say w1", "chosen": None, "rejected": "w2"}], None, quiet(tmp_path))
    with pytest.raises(ValueError, match="only tie pairs"):
        train_reward_model(rm, keyword_pairs(8, 0), [{"prompt": "p", "chosen": "a", "rejected": "b", "tie": True}],
                           quiet(tmp_path))
    with pytest.raises(TypeError, match="RewardTrainConfig"):
        train_reward_model(rm, keyword_pairs(8, 0), None, object())


def test_a_run_resumed_with_other_inputs_is_refused(tmp_path):
    """The model's input settings (max_length, pooling, ...) and group_by_length are part of the run's
    fingerprint: resuming, or re-running a finished run, with others would go on training on other
    tokens or re-save the finished model with them."""
    import dataclasses
    import json

    data, out, rm = keyword_pairs(8, seed=0), tmp_path / "run", tiny_rm()
    train_reward_model(rm, data, None, quiet(out, max_steps=1, batch_size=4, max_length=16))
    for pooling, change, named in (("last", {"max_length": 12}, "max_length"), ("first", {}, "pooling"),
                                   ("last", {"group_by_length": False}, "group_by_length")):
        rm.config = dataclasses.replace(rm.config, pooling=pooling)
        with pytest.raises(ValueError, match=f"other settings \\(.*{named}"):
            train_reward_model(rm, data, None, quiet(out, max_steps=1, batch_size=4, **{"max_length": 16, **change}))
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["config"]["max_length"] == 16 and saved["config"]["pooling"] == "last"
    train_reward_model(rm, data, None, quiet(out, max_steps=1, batch_size=4, max_length=16))  # the same: accepted


def test_resuming_over_a_damaged_metrics_log_names_it(tmp_path):
    """A metrics.csv with bytes that are not UTF-8 used to fail with the codec's message, naming no file."""
    from mmreward.core.folders import CheckpointError

    data, out, rm = keyword_pairs(8, seed=0), tmp_path / "run", tiny_rm()
    train_reward_model(rm, data, None, quiet(out, max_steps=1, batch_size=4, save_every=1))
    log = out / "metrics.csv"
    damaged = log.read_bytes() + b"2,\xff\n"
    log.write_bytes(damaged)
    offset = len(damaged) - 2
    with pytest.raises(CheckpointError, match=f"^{log} is damaged \\(byte b'\\\\xff' at offset {offset} is not UTF-8\\): "
                                              "repair or move the file away to resume the run$"):
        train_reward_model(rm, data, None, quiet(out, max_steps=2, batch_size=4, save_every=1))
    assert log.read_bytes() == damaged  # kept as it was
