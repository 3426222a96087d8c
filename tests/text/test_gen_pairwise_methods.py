"""GRAM (A/B-token judge, label-smoothed pairwise loss, order averaging) and RM-R1 (prompts, reward)."""
import pytest
import torch

from mmreward.ops import pairwise_loss
from mmreward.text.generative.gram import GRAM, GRAMConfig, gram_stage2_loss, stage1_batch
from mmreward.text.generative.rm_r1 import RMR1Config, RMR1Judge, chain_of_rubrics_messages, rm_r1_reward
from mmreward.text.generative.sft import lm_loss
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer


WORDS = "good bad fine poor great awful nice weak solid broken clear vague".split()
GOOD, BAD = WORDS[0::2], WORDS[1::2]


def pref_data(n, seed):
    """Exact preference: the response made of 'good' words beats the one made of 'bad' words."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        pick = lambda pool: " ".join(pool[int(i)] for i in torch.randint(0, len(pool), (3,), generator=g))  # noqa: E731
        rows.append((f"q{int(torch.randint(0, 5, (1,), generator=g))}", pick(GOOD), pick(BAD)))
    return rows


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer([" ".join(WORDS) + " q0 q1 q2 q3 q4 Question : [A] [B] Which response is better ? Answer A or B ."])


def test_stage2_loss_is_the_smoothed_pairwise_op(tok):
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2)
    gram = GRAM(model, tok, GRAMConfig(label_smoothing=0.2))
    p, c, r = ["q0", "q1"], ["good fine", "nice"], ["bad", "weak poor"]
    loss, m = gram_stage2_loss(gram, p, c, r, [True, False])
    z1 = gram.logits(p[:1], c[:1], r[:1])[0]  # chosen shown as A: z_c = z_A
    z2 = gram.logits(p[1:], r[1:], c[1:])[0]  # chosen shown as B: z_c = z_B
    want = pairwise_loss(torch.stack([z1[0], z2[1]]), torch.stack([z1[1], z2[0]]), label_smoothing=0.2)
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-4)
    with pytest.raises(ValueError, match="chosen_first"):
        gram_stage2_loss(gram, p, c, r, [True])
    s1 = stage1_batch(tok, ["q0"], ["good"], ["bad"])
    target = tok.decode([t for t in s1["labels"][0].tolist() if t != -100], skip_special_tokens=True)
    assert target.replace(" ", "") == "[A]good[B]bad"
    assert float(lm_loss(model, s1).detach()) > 0


def test_gram_stage2_learns_and_is_order_consistent(tok):
    torch.manual_seed(0)
    model = tiny_llama(len(tok), hidden=48, layers=2, heads=4, seed=3)
    gram = GRAM(model, tok, GRAMConfig(label_smoothing=0.1, batch_size=32))
    train, test = pref_data(256, 0), pref_data(40, 1)
    p_t, c_t, r_t = map(list, zip(*test))
    before = gram.score_pair(p_t, c_t, r_t)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(60):
        batch = train[(step * 16) % 256:(step * 16) % 256 + 16]
        p, c, r = map(list, zip(*batch))
        loss, _ = gram_stage2_loss(gram, p, c, r, [i % 2 == 0 for i in range(len(p))])  # both orders
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = gram.score_pair(p_t, c_t, r_t)
    acc = float((after["p"] > 0.5).double().mean())
    print(f"GRAM stage 2: held-out acc {float((before['p'] > 0.5).double().mean()):.2f} -> {acc:.2f}, "
          f"swap consistency {before['consistency']:.2f} -> {after['consistency']:.2f}")
    assert acc >= 0.95 and after["consistency"] >= 0.9
    assert torch.allclose(after["p"], 0.5 * (after["p_ab"].double() + 1 - after["p_ba"].double()))


def test_rm_r1_prompt_reward_and_judge_plumbing(tok):
    m = chain_of_rubrics_messages("q?", "ans a", "ans b")
    assert m[0]["role"] == "system" and "<rubric>" in m[0]["content"] and "<solution>" in m[0]["content"]
    assert "Chatbot A's Response]\nans a" in m[1]["content"] and "Chatbot B's Response]\nans b" in m[1]["content"]
    assert rm_r1_reward("<type>Chat</type><eval>..</eval><answer>[[A]]</answer>", "A") == 1.0
    assert rm_r1_reward("<answer>[[B]]</answer>", "A") == -1.0
    assert rm_r1_reward("I cannot decide", "A") == -1.0
    with pytest.raises(ValueError, match="label"):
        rm_r1_reward("[[A]]", "C")
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2)
    j = RMR1Judge(model, tok, RMR1Config(system_prompt="Which response is better ?", max_new_tokens=5))
    p = j.judge(["q0", "q1"], ["good", "fine"], ["bad", "poor"])
    assert p.shape == (2,) and all(v in (0.0, 0.5, 1.0) for v in p.tolist())
    m = j.metrics()
    assert m["n"] == 2 and (p == 0.5).sum() >= m["n"] - m["n_parsed"]  # no verdict → ½


def test_rm_r1_forced_verdict_fills_only_unparsed_rows(tok):
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2)
    j = RMR1Judge(model, tok, RMR1Config(system_prompt="Which response is better ?", max_new_tokens=4,
                                         forced_verdict=True))
    p = j.judge(["q0", "q1", "q2"], ["good", "fine", "nice"], ["bad", "poor", "weak"])
    parsed = torch.tensor([any(r.ok for r in row) for row in j.last_results])
    assert torch.equal(j.last_forced, ~parsed) and j.last_forced.any()
    assert torch.equal(p[parsed], j.last_strict[parsed]) and (j.last_strict[~parsed] == 0.5).all()
    assert ((p[~parsed] > 0) & (p[~parsed] < 1)).all()  # a probability read from the A/B logits


def test_gram_stage1_pair_sft_reduces_held_out_loss(tok):
    torch.manual_seed(0)
    model = tiny_llama(len(tok), hidden=48, layers=2, heads=4, seed=4)
    train, test = pref_data(128, 2), pref_data(32, 3)
    held = stage1_batch(tok, *map(list, zip(*test)))
    with torch.no_grad():
        before = float(lm_loss(model, held))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(30):
        loss = lm_loss(model, stage1_batch(tok, *map(list, zip(*train[(step * 16) % 128:(step * 16) % 128 + 16]))))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(lm_loss(model, held))
    print(f"GRAM stage 1: held-out pair-SFT loss {before:.3f} -> {after:.3f}")
    # the good/bad words are random (entropy log 6 ≈ 1.79 / word at best), so the loss cannot reach 0
    assert after < 0.6 * before


def _pair_rows(rows):
    return [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows]


def test_train_gram_both_stages_on_the_core_trainer(tok, tmp_path):
    """Stage 1 (pair SFT) then stage 2 (the A / B judge) through train_gram: the stage-1 loss falls and
    the judge learns the exact preference in both orders."""
    from mmreward.core.trainer import TrainConfig
    from mmreward.text.generative.gram import evaluate_gram, train_gram

    torch.manual_seed(0)
    gram = GRAM(tiny_llama(len(tok), hidden=48, layers=2, heads=4, seed=3), tok,
                GRAMConfig(label_smoothing=0.1, batch_size=32))
    train, test = _pair_rows(pref_data(256, 0)), _pair_rows(pref_data(40, 1))
    quiet = dict(batch_size=16, lr=3e-3, progress=False, log_every=0, tensorboard=False, plot=False)
    before = evaluate_gram(gram, test)
    h1 = train_gram(gram, train, TrainConfig(output_dir=str(tmp_path / "s1"), max_steps=30, **quiet), stage=1,
                    eval_rows=test)
    h2 = train_gram(gram, train, TrainConfig(output_dir=str(tmp_path / "s2"), max_steps=60, **quiet), stage=2,
                    eval_rows=test)
    print(f"train_gram: stage-1 loss {before['stage1_loss']:.3f} -> {h1[-1]['eval_stage1_loss']:.3f}; "
          f"judge accuracy {before['accuracy']:.2f} -> {h2[-1]['eval_accuracy']:.2f}, "
          f"consistency {h2[-1]['eval_consistency']:.2f}")
    assert h1[-1]["eval_stage1_loss"] < 0.6 * before["stage1_loss"]
    assert h2[-1]["eval_accuracy"] >= 0.95 and h2[-1]["eval_consistency"] >= 0.9
    assert (tmp_path / "s2" / "metrics.csv").exists()
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        train_gram(gram, train, TrainConfig(output_dir=str(tmp_path / "x"), max_steps=1, **quiet), stage=3)
    with pytest.raises(ValueError, match="row 0: needs str 'prompt', 'chosen' and 'rejected'"):
        train_gram(gram, [{"prompt": "q0", "chosen": "good"}], TrainConfig(output_dir=str(tmp_path / "x"), **quiet))


def test_train_gram_cli_stage1_then_stage2_learns_and_saves(tok, tmp_path, capsys):
    """`mmreward text train-gram`: stage 1 into a folder, stage 2 from that folder, through JSONL files."""
    import json

    import mmreward
    from mmreward.cli import main as mmreward_main
    from mmreward.text.generative.gram import evaluate_gram

    tiny_llama(len(tok), hidden=48, layers=2, heads=4, seed=3).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    test = _pair_rows(pref_data(40, 1))
    for name, rows in (("train", _pair_rows(pref_data(256, 0))), ("test", test)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--data", str(tmp_path / "train.jsonl"), "--eval-data", str(tmp_path / "test.jsonl"), "--batch-size", "16",
              "--lr", "3e-3", "--label-smoothing", "0.1", "--no-progress", "--no-tensorboard", "--no-plot",
              "--log-every", "0"]

    def summary():
        return json.loads([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")][-1])

    assert mmreward_main(["text", "train-gram", "--model", str(tmp_path / "base"), "--stage", "1", "--max-steps", "30",
                          "--output-dir", str(tmp_path / "s1"), *common]) == 0
    s1 = summary()
    assert s1["eval_stage1_loss"] < 0.6 * s1["eval_stage1_loss_before"], s1
    assert mmreward_main(["text", "train-gram", "--model", str(tmp_path / "s1" / "model"), "--stage", "2",
                          "--max-steps", "60", "--output-dir", str(tmp_path / "s2"), *common]) == 0
    s2 = summary()
    with capsys.disabled():  # the figures, outside the captured CLI output
        print(f"train-gram CLI: stage-1 loss {s1['eval_stage1_loss_before']:.3f} -> {s1['eval_stage1_loss']:.3f}; "
              f"judge accuracy {s2['eval_accuracy_before']:.2f} -> {s2['eval_accuracy']:.2f}")
    assert s2["eval_accuracy"] >= 0.95 and s2["eval_consistency"] >= 0.9, s2
    saved = mmreward.load(tmp_path / "s2" / "model")
    assert isinstance(saved, GRAM) and saved.config.label_smoothing == 0.1
    assert evaluate_gram(saved, test)["accuracy"] == pytest.approx(s2["eval_accuracy"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q0", "chosen": "good"}) + "\n")
    assert mmreward_main(["text", "train-gram", "--model", str(tmp_path / "base"), "--data", str(bad),
                          "--output-dir", str(tmp_path / "bad_run"), "--no-progress"]) == 2
    assert "row 0 needs 'prompt', 'chosen', 'rejected'" in capsys.readouterr().err
