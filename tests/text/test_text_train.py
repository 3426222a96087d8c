import random
import time

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from helpers import word_tokenizer as _word_tokenizer  # noqa: E402
from transformers import BertConfig  # noqa: E402

from mmreward.ops import pairwise_loss  # noqa: E402
from mmreward.text import RewardModel, RewardTrainConfig, evaluate_pairs, load_preference_pairs, train_reward_model  # noqa: E402
from mmreward.text.data import PairCollator  # noqa: E402
from mmreward.text.train import pairwise_loss_fn  # noqa: E402

KEYWORDS = [f"w{i}" for i in range(16)]


def word_tokenizer():
    return _word_tokenizer(["say"] + KEYWORDS, model_max_length=32)


def keyword_pairs(n, seed):
    """Prompt "say k"; chosen = three words containing k, rejected = the same with k replaced (exact labels)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k, a, b, other = rng.sample(KEYWORDS, 4)
        pos = rng.randrange(3)
        chosen, rejected = [a, b], [a, b]
        chosen.insert(pos, k)
        rejected.insert(pos, other)
        out.append({"prompt": f"say {k}", "chosen": " ".join(chosen), "rejected": " ".join(rejected)})
    return out


def tiny_rm(dropout=0.0):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=32, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return RewardModel.from_backbone(cfg, tokenizer=word_tokenizer())


def quiet(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), progress=False, tensorboard=False, plot=False, log_every=0)
    base.update(kw)
    return RewardTrainConfig(**base)


@pytest.mark.learning
def test_reward_model_learns_keyword_preference(tmp_path):
    rm = tiny_rm()
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
    rm.save_pretrained(str(tmp_path / "model"))
    again = RewardModel.from_pretrained(str(tmp_path / "model"))
    assert evaluate_pairs(again, held_out)["accuracy"] == pytest.approx(evals[-1])


def test_one_concatenated_forward_matches_the_op_on_separate_forwards():
    rm = tiny_rm().eval()
    rows = keyword_pairs(6, seed=3)
    rows[0]["margin"], rows[2]["margin"], rows[4]["tie"] = 0.5, 1.5, True
    pairs = load_preference_pairs(rows)
    calls = []
    rm.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    cfg = quiet("unused", loss="margin", label_smoothing=0.1, center_coef=0.01)
    loss, metrics = pairwise_loss_fn(cfg)(rm, PairCollator(rm.tokenizer)(pairs))
    assert calls == [12]  # one forward over chosen + rejected
    r_c = rm.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    r_r = rm.score([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    tie = torch.tensor([False] * 4 + [True, False])
    expected = pairwise_loss(r_c, r_r, margin=torch.tensor([0.5, 0, 1.5, 0, 0, 0]), label_smoothing=0.1,
                             center_coef=0.01, tie=tie)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)
    assert metrics["accuracy"] == pytest.approx(((r_c > r_r) & ~tie).sum().item() / 5)
    loss.backward()
    assert rm.head.weight.grad is not None and rm.backbone.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_fused_head_matches_plain_head():
    rows = keyword_pairs(6, seed=4)
    rows[1]["margin"], rows[3]["tie"] = 1.0, True
    pairs = load_preference_pairs(rows)
    results = []
    for fused in (False, True):
        rm = tiny_rm().eval()
        cfg = quiet("unused", loss="margin", label_smoothing=0.1, center_coef=0.01, fused_head=fused)
        loss, metrics = pairwise_loss_fn(cfg)(rm, PairCollator(rm.tokenizer)(pairs))
        loss.backward()
        results.append((loss.detach(), metrics, {k: p.grad.clone() for k, p in rm.named_parameters() if p.grad is not None}))
    (l0, m0, g0), (l1, m1, g1) = results
    torch.testing.assert_close(l1, l0, atol=1e-6, rtol=1e-5)
    assert m1["accuracy"] == m0["accuracy"] and m1["reward_gap"] == pytest.approx(m0["reward_gap"], abs=1e-5)
    assert g0.keys() == g1.keys() and "head.bias" in g1
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-6, rtol=1e-4, msg=k)


def test_bf16_autocast_and_resume(tmp_path):
    data = keyword_pairs(64, seed=0)
    hist = train_reward_model(tiny_rm(), data, None, quiet(tmp_path / "bf16", max_steps=3, batch_size=8, autocast="bf16"))
    assert len(hist) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in hist)
    # exact resume through the text trainer (dropout on): 6 steps == 3 + crash + 3
    full = tiny_rm(dropout=0.1)
    train_reward_model(full, data, None, quiet(tmp_path / "a", max_steps=6, batch_size=8, lr=1e-3, save_every=3))
    part = tiny_rm(dropout=0.1)
    cfg = quiet(tmp_path / "b", max_steps=6, batch_size=8, lr=1e-3, save_every=3)
    from mmreward.core.trainer import Trainer

    calls = {"n": 0}
    real = pairwise_loss_fn(cfg)

    def crash_at_step_5(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(model, batch)

    with pytest.raises(KeyboardInterrupt):
        Trainer(part, cfg, load_preference_pairs(data), PairCollator(part.tokenizer), crash_at_step_5).fit()
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
    with pytest.raises(ValueError, match="row 1: missing field 'rejected'"):
        train_reward_model(rm, [keyword_pairs(1, 0)[0], {"prompt": "say w1", "chosen": "w1"}], None, quiet(tmp_path))
    with pytest.raises(TypeError, match="RewardTrainConfig"):
        train_reward_model(rm, keyword_pairs(8, 0), None, object())
