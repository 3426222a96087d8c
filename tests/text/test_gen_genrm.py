"""GenRM: P(Yes) scoring, CoT voting, the SFT + λ·SFT loss, calibration, and a from-scratch learning test."""
import math
import random
import time

import pytest
import torch

from mmreward.core.inputs import TextPair
from mmreward.text.generative.genrm import GenRM, GenRMConfig, calibration, genrm_loss, verification_batch
from mmreward.text.generative.position import evaluate_pairs_with_judge
from mmreward.text.generative.sft import lm_loss, sft_batch
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer


def test_calibration_by_hand():
    p = torch.tensor([0.05, 0.15, 0.95, 0.85])
    y = torch.tensor([0.0, 1.0, 1.0, 1.0])
    c = calibration(p, y, bins=10)
    # bins: [0,.1) p=.05 y=0 | [.1,.2) p=.15 y=1 | [.8,.9) p=.85 y=1 | [.9,1] p=.95 y=1
    assert c["ece"] == pytest.approx((0.05 + 0.85 + 0.15 + 0.05) / 4)
    assert c["brier"] == pytest.approx((0.05 ** 2 + 0.85 ** 2 + 0.05 ** 2 + 0.15 ** 2) / 4)
    assert [b[2] for b in c["bins"]] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="labels"):
        calibration(p, y[:3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration(torch.tensor([1.5]), torch.tensor([1.0]))


def test_loss_is_verification_plus_lambda_solution():
    tok = word_tokenizer(["1 + 2 = 3 correct? Yes No 4"])
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2)
    g = GenRM(model, tok, GenRMConfig(question="correct?"))
    v = verification_batch(g, ["1 + 2 =", "1 + 2 ="], ["3", "4"], [True, False])
    s = sft_batch(tok, [[{"role": "user", "content": "1 + 2 ="}]], ["3"])
    # the verdict is the first target token after the question
    assert tok.decode([int(v["input_ids"][0][(v["labels"][0] != -100).nonzero()[0]])]) == "Yes"
    loss, m = genrm_loss(model, v, s, lam=0.5)
    want = lm_loss(model, v, reduction="none").mean() + 0.5 * lm_loss(model, s)
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    assert set(m) == {"loss_verify", "loss_solution"}
    loss0, m0 = genrm_loss(model, v, s, lam=0.0)
    assert set(m0) == {"loss_verify"} and float(loss0.detach()) == pytest.approx(m["loss_verify"], rel=1e-5)
    with pytest.raises(ValueError, match="got no inputs"):
        g.score([])
    with pytest.raises(ValueError, match="input 1: field 'response' must be a string or a list of messages, got 3"):
        g.score([TextPair("1 + 2 =", "3"), TextPair("1 + 2 =", 3)])
    with pytest.raises(TypeError, match="row 1: field 'response'"):
        verification_batch(g, ["1 + 2 =", "1 + 2 ="], ["3", 3], [True, False])


def test_cot_variant_shapes_and_vote():
    tok = word_tokenizer(["1 + 2 = 3 correct? Yes No verify"])
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2)
    g = GenRM(model, tok, GenRMConfig(question="correct?", cot_instruction="verify", num_rationales=3, max_new_tokens=4))
    out = g.score_cot(["1 + 2 =", "2 + 1 ="], ["3", "4"])
    assert out["p_yes"].shape == (2, 3) and len(out["rationales"]) == 2 and len(out["rationales"][0]) == 3
    assert torch.allclose(out["reward"], out["p_yes"].mean(1))
    assert torch.equal(out["majority"], (out["p_yes"] > 0.5).float().mean(1) > 0.5)
    assert 0.0 <= out["parse_rate"] <= 1.0
    assert torch.equal(g.score_cot(["1 + 2 ="], ["3"])["p_yes"], g.score_cot(["1 + 2 ="], ["3"])["p_yes"])  # seeded


def addition_task(seed=0):
    """Exact labels: (a, b, c) is correct iff a + b == c. 20 of the 100 problems are held out entirely
    from verification training (their verdicts must transfer from the solution SFT)."""
    rng = random.Random(seed)
    problems = [(a, b) for a in range(10) for b in range(10)]
    rng.shuffle(problems)
    held = set(problems[:20])
    items = [(a, b, c, a + b == c) for a, b in problems for c in range(19)]
    train = [t for t in items if t[:2] not in held]
    test_pos = [t for t in items if t[:2] in held and t[3]]
    test_neg = rng.sample([t for t in items if t[:2] in held and not t[3]], len(test_pos))
    return train, test_pos + test_neg


def test_tiny_genrm_learns_addition_verification():
    torch.manual_seed(0)
    train, test = addition_task()
    tok = word_tokenizer([" ".join(str(i) for i in range(19)) + " + = correct? Yes No"])
    model = tiny_llama(len(tok), hidden=64, layers=2, heads=4, seed=0)
    g = GenRM(model, tok, GenRMConfig(question="correct?", batch_size=64))
    pos, neg = [t for t in train if t[3]], [t for t in train if not t[3]]
    rows = pos + neg
    V = verification_batch(g, [f"{a} + {b} =" for a, b, *_ in rows], [str(c) for _, _, c, _ in rows], [t[3] for t in rows])
    # λ·SFT on correct solutions of all 100 problems (GenRM trains the verifier to also solve)
    S = sft_batch(tok, [[{"role": "user", "content": f"{a} + {b} ="}] for a in range(10) for b in range(10)],
                  [str(a + b) for a in range(10) for b in range(10)])
    take = lambda B, i: {k: v[i] for k, v in B.items()}  # noqa: E731

    def accuracy():
        p = g.score([TextPair(f"{a} + {b} =", str(c)) for a, b, c, _ in test])
        y = torch.tensor([float(t[3]) for t in test])
        return float(((p > 0.5).float() == y).float().mean()), p, y

    acc0, _, _ = accuracy()
    steps, lr = 900, 3e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    for step in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        # balanced verification batch: 16 correct + 16 wrong answers
        idx = torch.cat([torch.randint(0, len(pos), (16,), generator=gen),
                         len(pos) + torch.randint(0, len(neg), (16,), generator=gen)])
        loss, _ = genrm_loss(model, take(V, idx), take(S, torch.randint(0, 100, (32,), generator=gen)), lam=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    secs = time.time() - t0
    acc, p, y = accuracy()
    cal = calibration(p, y)
    print(f"GenRM addition: held-out acc {acc0:.3f} -> {acc:.3f} in {secs:.1f}s; ECE {cal['ece']:.3f} "
          f"Brier {cal['brier']:.3f} bins {[(round(b[0], 1), b[2], round(b[3], 2), round(b[4], 2)) for b in cal['bins']]}")
    assert acc0 < 0.75
    assert acc >= 0.9
    assert cal["ece"] < 0.2
    # the same verifier as a pairwise judge, both orders: the correct answer to a held-out problem vs
    # each of its 18 wrong answers (360 pairs), and the hardest subset, off by one (20 pairs; one
    # pair is 5 points there, so its bar is lower: 17/20 with transformers 5.24, chance is 10/20)
    rows = [{"prompt": f"{a} + {b} =", "chosen": str(a + b), "rejected": str(c)}
            for a, b, _, ok in test if ok for c in range(19) if c != a + b]
    res = evaluate_pairs_with_judge(g.judge, rows)
    hard = evaluate_pairs_with_judge(g.judge, [r for r in rows if int(r["rejected"]) == int(r["chosen"]) + 1])
    print(f"GenRM as pairwise judge: accuracy {res['accuracy']:.3f} ({len(rows)} pairs; off by one "
          f"{hard['accuracy']:.3f}), swap consistency {res['consistency']:.3f}")
    assert res["accuracy"] >= 0.9 and res["consistency"] == 1.0  # pointwise scores cannot depend on order
    assert hard["accuracy"] >= 0.75


def _rows(items):
    return [{"prompt": f"{a} + {b} =", "response": str(c), "correct": ok} for a, b, c, ok in items]


def test_train_genrm_with_the_core_trainer_learns_and_resumes(tmp_path):
    """The same exact task through train_genrm (core Trainer: balanced classes, λ·SFT on the solutions of
    all 100 problems, CSV, snapshots): held-out verdict accuracy must reach the plain loop's bar."""
    from mmreward.core.trainer import TrainConfig
    from mmreward.text.generative.genrm import evaluate_genrm, train_genrm

    torch.manual_seed(0)
    train, test = addition_task()
    tok = word_tokenizer([" ".join(str(i) for i in range(19)) + " + = correct? Yes No"])
    model = tiny_llama(len(tok), hidden=64, layers=2, heads=4, seed=0)
    g = GenRM(model, tok, GenRMConfig(question="correct?", batch_size=64))
    sols = [{"prompt": f"{a} + {b} =", "response": str(a + b)} for a in range(10) for b in range(10)]
    cfg = dict(output_dir=str(tmp_path / "genrm"), batch_size=32, lr=3e-3, max_steps=600, progress=False, log_every=0,
               tensorboard=False, plot=False, eval_every=0)
    before = evaluate_genrm(g, _rows(test))
    t0 = time.time()
    hist = train_genrm(g, _rows(train), TrainConfig(**cfg), eval_rows=_rows(test), solutions=sols)
    after = evaluate_genrm(g, _rows(test))
    print(f"train_genrm: held-out accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, "
          f"ECE {after['ece']:.3f}, {time.time() - t0:.1f}s")
    assert before["accuracy"] < 0.75
    assert after["accuracy"] >= 0.9 and after["ece"] < 0.2, after
    assert hist[-1]["eval_accuracy"] == pytest.approx(after["accuracy"])
    assert {"loss_verify", "loss_solution"} <= set(hist[-1])
    assert (tmp_path / "genrm" / "metrics.csv").exists()
    # asking for more steps continues from the snapshot instead of starting again
    more = train_genrm(g, _rows(train), TrainConfig(**{**cfg, "max_steps": 602}), solutions=sols)
    assert [h["step"] for h in more[-2:]] == [601, 602] and len(more) == 602


def test_train_genrm_rejects_bad_rows(tmp_path):
    from mmreward.core.trainer import TrainConfig
    from mmreward.text.generative.genrm import train_genrm

    tok = word_tokenizer(["1 + 2 = 3 correct? Yes No"])
    g = GenRM(tiny_llama(len(tok), hidden=16, layers=1, heads=2), tok, GenRMConfig(question="correct?"))
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=1, progress=False, tensorboard=False, plot=False)
    with pytest.raises(ValueError, match="row 0: needs 'prompt', 'response' and 'correct'"):
        train_genrm(g, [{"prompt": "1 + 2 =", "response": "3"}], cfg)
    with pytest.raises(ValueError, match="'correct' must be true / false"):
        train_genrm(g, [{"prompt": "1 + 2 =", "response": "3", "correct": "yes"}], cfg)
    with pytest.raises(ValueError, match="no solution to learn"):
        train_genrm(g, [{"prompt": "1 + 2 =", "response": "4", "correct": False}], cfg)
    with pytest.raises(ValueError, match="no rows"):
        train_genrm(g, [], cfg)
    with pytest.raises(ValueError, match="solutions row 0: needs str 'prompt' and 'response'"):
        train_genrm(g, [{"prompt": "1 + 2 =", "response": "3", "correct": True}], cfg, solutions=[{"answer": "3"}])


def test_train_genrm_cli_learns_and_saves_a_loadable_model(tmp_path, capsys):
    """`mmreward text train-genrm` on JSONL files and a local model folder (the path a user takes)."""
    import json

    from mmreward.cli import main as mmreward_main

    train, test = addition_task()
    tok = word_tokenizer([" ".join(str(i) for i in range(19)) + " + = correct? Yes No"])
    tiny_llama(len(tok), hidden=64, layers=2, heads=4, seed=0).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    for name, rows in (("train", _rows(train)), ("test", _rows(test))):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "sols.jsonl").write_text("".join(json.dumps({"prompt": f"{a} + {b} =", "response": str(a + b)}) + "\n"
                                                 for a in range(10) for b in range(10)))
    rc = mmreward_main(["text", "train-genrm", "--model", str(tmp_path / "base"), "--data", str(tmp_path / "train.jsonl"),
                        "--eval-data", str(tmp_path / "test.jsonl"), "--solutions", str(tmp_path / "sols.jsonl"),
                        "--question", "correct?", "--output-dir", str(tmp_path / "run"), "--batch-size", "32",
                        "--lr", "3e-3", "--max-steps", "600", "--no-progress", "--no-tensorboard", "--no-plot",
                        "--log-every", "0"])
    assert rc == 0
    s = json.loads([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")][-1])
    assert s["eval_accuracy_before"] < 0.75 and s["eval_accuracy"] >= 0.9, s
    import mmreward
    from mmreward.text.generative.genrm import evaluate_genrm

    g = mmreward.load(tmp_path / "run" / "model")  # the saved verifier, its question included
    assert isinstance(g, GenRM) and g.config.question == "correct?"
    assert evaluate_genrm(g, _rows(test))["accuracy"] == pytest.approx(s["eval_accuracy"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "1 + 2 =", "response": "3"}) + "\n")
    assert mmreward_main(["text", "train-genrm", "--model", str(tmp_path / "base"), "--data", str(bad),
                          "--output-dir", str(tmp_path / "bad_run"), "--no-progress"]) == 2
    assert "needs 'prompt', 'response' and 'correct'" in capsys.readouterr().err


def test_score_cot_k_is_checked_not_replaced_by_the_default():
    tok = word_tokenizer(["1 2 3 + = correct? Yes No"])
    g = GenRM(tiny_llama(len(tok), hidden=16, layers=1, heads=2), tok,
              GenRMConfig(question="correct?", num_rationales=2, max_new_tokens=2))
    assert g.score_cot(["1 + 2 ="], ["3"], k=1)["p_yes"].shape == (1, 1)
    for bad in (0, -1, 1.5, True):  # k=0 silently used num_rationales
        with pytest.raises(ValueError, match=f"k \\(rationales per input\\) must be an integer >= 1, got {bad!r}"):
            g.score_cot(["1 + 2 ="], ["3"], k=bad)
    # temperature 0: the error names GenRM's own field, not the runner's JudgeConfig; plain scoring needs none
    greedy = GenRM(g.model, tok, GenRMConfig(question="correct?", num_rationales=1, temperature=0.0, max_new_tokens=2))
    assert greedy.score([TextPair("1 + 2 =", "3")]).shape == (1,)
    for k in (None, 1, 2):
        with pytest.raises(ValueError, match=r"GenRMConfig\.temperature must be > 0 for score_cot .* got 0\.0"):
            greedy.score_cot(["1 + 2 ="], ["3"], k=k)
