"""DeepSeek-GRM / SPCT (voting, rule reward, meta-RM) and Critic-RM (filter, schedule, joint training)."""
import os
import random

import pytest
import torch

from mmreward.core.checkpoint import CheckpointError
from mmreward.text.generative.critic_rm import (
    CriticRM, CriticRMConfig, consistency_filter, critique_weight, sample_critiques,
)
from mmreward.text.generative.grm import (
    GRMConfig, GRMJudge, grm_messages, meta_rm_batch, meta_rm_loss, spct_rule_reward, vote,
)
from mmreward.text.generative.base import text_pairs
from mmreward.text.generative.heads import ScalarHeadLM
from mmreward.text.generative.runner import JudgeConfig, JudgeRunner
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer


GOOD, BAD = "good fine great nice".split(), "bad poor awful weak".split()
VOCAB = (" ".join(GOOD + BAD) + " q [Query] [Response 1] [End of Response 1] [Response 2] [End of Response 2] "
         "Final Scores : \\boxed{2, 8} 1 3 4 5 6 7 9 10 Score critique strong answer judge Critique the response")


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer([VOCAB])


# ------------------------------------------------------------------------------ GRM pure pieces
def test_vote_and_rule_reward_by_hand():
    v = vote([[7, 3], None, [2, 9], [6, 6]], 2)
    assert v.tolist() == [15.0, 18.0]
    assert vote([[7, 3], [2, 9]], 2, keep=[True, False]).tolist() == [7.0, 3.0]  # meta-RM filter
    assert vote([None, None], 3).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="2 scores for 3"):
        vote([[1, 2]], 3)
    assert spct_rule_reward([7, 3], best=0) == 1.0
    assert spct_rule_reward([7, 7], best=0) == -1.0  # a tie does not single out the best
    assert spct_rule_reward([2, 9, 4], best=1) == 1.0
    assert spct_rule_reward(None, best=0) == -1.0
    assert spct_rule_reward([6], label_score=6) == 1.0 and spct_rule_reward([5], label_score=6) == -1.0
    with pytest.raises(ValueError, match="best"):
        spct_rule_reward([1, 2], best=5)


def test_grm_judge_plumbing(tok):
    m = grm_messages("q", ["good", "bad"])
    assert "[Response 2]\nbad" in m[1]["content"] and "boxed" in m[0]["content"]
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2)
    j = GRMJudge(model, tok, GRMConfig(instructions="judge", num_samples=3, max_new_tokens=6))
    lists = j.judge_lists(["q", "q", "q"], [["good", "bad"], ["fine"], ["bad", "nice"]])
    assert [x.shape for x in lists] == [(2,), (1,), (2,)]
    assert [r[0].row for r in j.last_results] == [0, 1, 2] and all(len(r) == 3 for r in j.last_results)
    assert j.metrics()["n"] == 9
    with pytest.raises(ValueError, match="meta_rm"):
        GRMJudge(model, tok, GRMConfig(num_samples=4, k_meta=2))


def judgements(n, seed):
    """(messages, judgement text, correct): Response 1 is always the 'good' one (exact label: the judgement's
    verdict is right iff it scores Response 1 strictly higher); scores are two distinct integers in 2..9."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        resp = [" ".join(rng.choices(GOOD, k=2)), " ".join(rng.choices(BAD, k=2))]
        s = rng.sample(range(2, 10), 2)
        rows.append((grm_messages("q", resp, "judge"), f"Final Scores : \\boxed{{{s[0]}, {s[1]}}}", float(s[0] > s[1])))
    return rows


def test_meta_rm_training_reduces_held_out_loss(tok, tmp_path):
    torch.manual_seed(0)
    meta = ScalarHeadLM(tiny_llama(len(tok), hidden=48, layers=2, heads=4, seed=1))
    train, test = judgements(256, 0), judgements(64, 1)

    def batch(rows):
        return meta_rm_batch(tok, [r[0] for r in rows], [r[1] for r in rows]), torch.tensor([r[2] for r in rows])

    tb, ty = batch(test)
    with torch.no_grad():
        before, _ = meta_rm_loss(meta, tb, ty)
    opt = torch.optim.AdamW(meta.parameters(), lr=3e-3)
    for step in range(100):
        b, y = batch(train[(step * 32) % 256:(step * 32) % 256 + 32])
        loss, _ = meta_rm_loss(meta, b, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after, m = meta_rm_loss(meta, tb, ty)
        ref = torch.nn.functional.binary_cross_entropy_with_logits(meta(tb["input_ids"], tb["attention_mask"]), ty)
    print(f"meta-RM held-out BCE {float(before):.3f} -> {float(after):.3f}, accuracy {m['accuracy']:.2f}")
    assert float(after) == pytest.approx(float(ref), rel=1e-4)  # the fused op is plain BCE on the head logit
    assert float(after) < 0.7 * float(before) and m["accuracy"] >= 0.8
    # top-k_meta filtering keeps the judgements the meta-RM trusts
    j = GRMJudge(meta.backbone, tok, GRMConfig(num_samples=4, k_meta=2, max_new_tokens=4), meta_rm=meta)
    keep = j._meta_keep(test[0][0], ["Final Scores : \\boxed{2, 8}", "Final Scores : \\boxed{8, 2}"] * 2)
    assert sum(keep) == 2
    meta.save_pretrained(str(tmp_path / "meta"))
    again = ScalarHeadLM.from_pretrained(str(tmp_path / "meta"))
    with torch.no_grad():
        ids, mask = tb["input_ids"], tb["attention_mask"]
        assert torch.allclose(again(ids, mask), meta(ids, mask), atol=1e-5)
    with open(os.path.join(tmp_path, "meta", "head", "model.safetensors"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises((CheckpointError, ValueError)):
        ScalarHeadLM.from_pretrained(str(tmp_path / "meta"))


# ------------------------------------------------------------------------------ Critic-RM
def test_filter_and_schedule_by_hand():
    # chosen critiques [8, 3, None], rejected [2, 6]: mean chosen 5.5, mean rejected 4
    assert consistency_filter([8, 3, None], [2, 6]) == ([0], [0])
    assert consistency_filter([None], [2]) == ([], [])
    assert consistency_filter([1, 2], [8, 9]) == ([], [])  # nothing consistent → pair dropped
    assert critique_weight(0, 11) == pytest.approx(0.9) and critique_weight(10, 11) == pytest.approx(0.1)
    assert critique_weight(5, 11, start=1.0, end=0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        critique_weight(0, 0)


def critic_rows(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c, r = " ".join(rng.choices(GOOD, k=2)), " ".join(rng.choices(BAD, k=2))
        out.append(("q", c, r, f"strong answer Score : {rng.choice([7, 8, 9])}", f"weak answer Score : {rng.choice([2, 3, 4])}"))
    return out


def test_critic_rm_joint_training_reduces_held_out_loss(tok):
    torch.manual_seed(0)
    crm = CriticRM(ScalarHeadLM(tiny_llama(len(tok), hidden=48, layers=2, heads=4, seed=2)), tok,
                   CriticRMConfig(request="Critique the response", num_critiques=2, max_new_tokens=5))
    train, test = critic_rows(192, 0), critic_rows(48, 1)

    def batches(rows):
        p, c, r, cc, cr = map(list, zip(*rows))
        return crm.batch(p, c, cc), crm.batch(p, r, cr)

    tc, tr = batches(test)
    total = 60
    with torch.no_grad():
        before, mb = crm.loss(tc, tr, step=total - 1, total_steps=total)
    opt = torch.optim.AdamW(crm.model.parameters(), lr=3e-3)
    lams = []
    for step in range(total):
        bc, br = batches(train[(step * 16) % 192:(step * 16) % 192 + 16])
        loss, m = crm.loss(bc, br, step=step, total_steps=total)
        lams.append(m["lambda"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after, ma = crm.loss(tc, tr, step=total - 1, total_steps=total)
    print(f"Critic-RM held-out joint loss {float(before):.3f} -> {float(after):.3f} "
          f"(critique LM {mb['loss_critique']:.2f} -> {ma['loss_critique']:.2f}, BT {mb['loss_bt']:.3f} -> "
          f"{ma['loss_bt']:.3f}), pair accuracy {ma['accuracy']:.2f}")
    assert lams[0] == pytest.approx(0.9) and lams[-1] == pytest.approx(0.1) and lams == sorted(lams, reverse=True)
    assert float(after) < 0.5 * float(before)
    assert ma["loss_critique"] < mb["loss_critique"] and ma["loss_bt"] < mb["loss_bt"] and ma["accuracy"] >= 0.9
    p, c, r, cc, cr = map(list, zip(*test[:8]))
    assert (crm.reward(p, c, cc) > crm.reward(p, r, cr)).float().mean() >= 0.9
    sc = crm.score(text_pairs(p[:2], c[:2]))  # generates its own (greedy) critiques first
    assert sc.shape == (2,) and torch.isfinite(sc).all()
    crit = sample_critiques(JudgeRunner(crm.model.backbone, tok, JudgeConfig(max_new_tokens=6, num_samples=2, do_sample=True)),
                            p[:2], c[:2], "Critique the response")
    assert len(crit) == 2 and all(len(row) == 2 for row in crit)
    with pytest.raises(TypeError, match="ScalarHeadLM"):
        CriticRM(crm.model.backbone, tok)


def _critique_dicts(rows):
    keys = ("prompt", "chosen", "rejected", "critique_chosen", "critique_rejected")
    return [dict(zip(keys, r)) for r in rows]


def test_train_critic_rm_on_the_core_trainer(tok, tmp_path):
    """Step 3 through train_critic_rm: λ(t) follows the Trainer's optimizer step 0.9 → 0.1, the held-out
    joint loss halves and the reward head ranks the held-out pairs."""
    from mmreward.core.trainer import TrainConfig
    from mmreward.text.generative.critic_rm import evaluate_critic_rm, train_critic_rm

    torch.manual_seed(0)
    crm = CriticRM(ScalarHeadLM(tiny_llama(len(tok), hidden=48, layers=2, heads=4, seed=2)), tok,
                   CriticRMConfig(request="Critique the response", num_critiques=2, max_new_tokens=5))
    train, test = _critique_dicts(critic_rows(192, 0)), _critique_dicts(critic_rows(48, 1))
    before = evaluate_critic_rm(crm, test)
    hist = train_critic_rm(crm, train, TrainConfig(output_dir=str(tmp_path), batch_size=16, lr=3e-3, max_steps=60,
                                                   progress=False, log_every=0, tensorboard=False, plot=False),
                           eval_rows=test)
    after = evaluate_critic_rm(crm, test)
    lams = [h["lambda"] for h in hist]
    print(f"train_critic_rm: held-out joint loss {before['loss']:.3f} -> {after['loss']:.3f}, "
          f"pair accuracy {before['accuracy']:.2f} -> {after['accuracy']:.2f}")
    assert lams[0] == pytest.approx(0.9) and lams[-1] == pytest.approx(0.1) and lams == sorted(lams, reverse=True)
    assert after["loss"] < 0.5 * before["loss"] and after["accuracy"] >= 0.9, (before, after)
    assert hist[-1]["eval_accuracy"] == pytest.approx(after["accuracy"])
    with pytest.raises(ValueError, match="row 0: needs str"):
        train_critic_rm(crm, [{"prompt": "q"}], TrainConfig(output_dir=str(tmp_path / "x"), max_steps=1))


def test_build_critique_rows_filters_and_pairs(tok, monkeypatch):
    import mmreward.text.generative.critic_rm as C

    crm = CriticRM(ScalarHeadLM(tiny_llama(len(tok), hidden=16, layers=1, heads=2)), tok, CriticRMConfig(num_critiques=3))
    scripted = {  # response -> its sampled critiques (text, parsed score)
        "good fine": [("c8", 8.0), ("c3", 3.0), ("junk", None)], "bad poor": [("r2", 2.0), ("r6", 6.0), ("r1", 1.0)],
        "nice": [("n1", 1.0), ("n2", 2.0), ("n3", 3.0)], "weak": [("w9", 9.0), ("w8", 8.0), ("w7", 7.0)],
    }
    monkeypatch.setattr(C, "sample_critiques", lambda runner, p, responses, request: [scripted[r] for r in responses])
    rows, stats = C.build_critique_rows(crm, [{"prompt": "q", "chosen": "good fine", "rejected": "bad poor"},
                                              {"prompt": "q", "chosen": "nice", "rejected": "weak"}])
    # pair 1: chosen mean 5.5, rejected mean 3 → keep chosen [c8], rejected [r2, r1] → 2 rows (c8 reused)
    # pair 2: every chosen score is below the rejected mean → dropped
    assert [(r["critique_chosen"], r["critique_rejected"]) for r in rows] == [("c8", "r2"), ("c8", "r1")]
    assert stats == {"pairs": 2, "pairs_dropped": 1, "rows": 2, "parse_rate": pytest.approx(11 / 12)}
    with pytest.raises(ValueError, match="pair 0 needs"):
        C.build_critique_rows(crm, [{"prompt": "q"}])


def test_train_meta_rm_on_the_core_trainer(tok, tmp_path):
    from mmreward.core.trainer import TrainConfig
    from mmreward.text.generative.grm import train_meta_rm

    torch.manual_seed(0)
    meta = ScalarHeadLM(tiny_llama(len(tok), hidden=48, layers=2, heads=4, seed=1))
    as_dicts = lambda rows: [{"messages": m, "judgement": j, "correct": c} for m, j, c in rows]  # noqa: E731
    train, test = as_dicts(judgements(256, 0)), as_dicts(judgements(64, 1))
    cfg = TrainConfig(output_dir=str(tmp_path), batch_size=32, lr=3e-3, max_steps=100, progress=False, log_every=0,
                      tensorboard=False, plot=False, eval_every=100)
    with torch.no_grad():
        before, _ = meta_rm_loss(meta, meta_rm_batch(tok, [r["messages"] for r in test], [r["judgement"] for r in test]),
                                 torch.tensor([r["correct"] for r in test]))
    hist = train_meta_rm(meta, tok, train, cfg, eval_rows=test)
    print(f"train_meta_rm: held-out BCE {float(before):.3f} -> {hist[-1]['eval_loss']:.3f}, "
          f"accuracy {hist[-1]['eval_accuracy']:.2f}")
    assert hist[-1]["eval_loss"] < 0.7 * float(before) and hist[-1]["eval_accuracy"] >= 0.8
    with pytest.raises(ValueError, match="row 0: needs 'messages'"):
        train_meta_rm(meta, tok, [{"messages": [], "judgement": "x", "correct": 2.0}], cfg)


def test_train_critic_rm_cli_learns_saves_and_explains_an_empty_filter(tok, tmp_path, capsys):
    """`mmreward text train-critic-rm` on rows with critiques (a causal-LM folder gets a new head), the saved
    ScalarHeadLM reloads with the same held-out figures, and pairs whose sampled critiques never parse
    stop with a clear error instead of training on nothing."""
    import json

    from mmreward.cli import main as mmreward_main
    from mmreward.text.generative.critic_rm import evaluate_critic_rm

    tiny_llama(len(tok), hidden=48, layers=2, heads=4, seed=2).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    test = _critique_dicts(critic_rows(48, 1))
    for name, rows in (("train", _critique_dicts(critic_rows(192, 0))), ("test", test)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = mmreward_main(["text", "train-critic-rm", "--model", str(tmp_path / "base"), "--data", str(tmp_path / "train.jsonl"),
                        "--eval-data", str(tmp_path / "test.jsonl"), "--request", "Critique the response",
                        "--output-dir", str(tmp_path / "run"), "--batch-size", "16", "--lr", "3e-3", "--max-steps", "60",
                        "--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0"])
    assert rc == 0
    s = json.loads([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")][-1])
    with capsys.disabled():  # the figures, outside the captured CLI output
        print(f"train-critic-rm CLI: held-out joint loss {s['eval_loss_before']:.3f} -> {s['eval_loss']:.3f}, "
              f"pair accuracy {s['eval_accuracy_before']:.2f} -> {s['eval_accuracy']:.2f}")
    assert s["eval_loss"] < 0.5 * s["eval_loss_before"] and s["eval_accuracy"] >= 0.9, s
    import mmreward

    saved = mmreward.load(tmp_path / "run" / "model")  # the Critic-RM: backbone, tokenizer, head and config
    assert isinstance(saved, CriticRM) and saved.config.request == "Critique the response"
    assert evaluate_critic_rm(saved, test)["accuracy"] == pytest.approx(s["eval_accuracy"], abs=1e-4)
    # the saved folder is what `text judge critic_rm` reads: it writes its own (greedy) critiques and ranks
    (tmp_path / "pairs_test.jsonl").write_text("".join(
        json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) + "\n" for r in test[:16]))
    assert mmreward_main(["text", "judge", "critic_rm", "--model", str(tmp_path / "run" / "model"), "--data",
                          str(tmp_path / "pairs_test.jsonl"), "--request", "Critique the response",
                          "--max-new-tokens", "6", "--out", str(tmp_path / "verdicts.json")]) == 0
    capsys.readouterr()
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    assert verdicts["method"] == "critic_rm" and len(verdicts["p_chosen_first"]) == 16
    assert verdicts["accuracy"] >= 0.9, verdicts
    # plain pairs: critiques are sampled from the untrained model, none ends with a parsable score
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"prompt": "q", "chosen": c, "rejected": r}) + "\n"
                                                  for c, r in (("good fine", "bad poor"), ("nice", "weak"))))
    rc = mmreward_main(["text", "train-critic-rm", "--model", str(tmp_path / "base"), "--data", str(tmp_path / "pairs.jsonl"),
                        "--num-critiques", "2", "--max-new-tokens", "4", "--output-dir", str(tmp_path / "run2"),
                        "--max-steps", "1", "--no-progress", "--no-tensorboard", "--no-plot"])
    out = capsys.readouterr()
    assert rc == 2 and "no pair kept a consistent critique" in out.err, out
    assert not (tmp_path / "run2" / "model").exists()


def test_build_meta_rm_rows_labels_by_verdict_and_alternates_position(tok):
    from mmreward.text.generative.grm import build_meta_rm_rows
    from mmreward.text.generative.runner import JudgeResult

    j = GRMJudge(tiny_llama(len(tok), hidden=16, layers=1, heads=2), tok, GRMConfig(instructions="judge", num_samples=3))
    scripted = {  # first response shown -> its 3 sampled judgements
        "good fine": ["Final Scores: \\boxed{8, 2}", "Final Scores: \\boxed{3, 3}", "junk"],   # chosen first
        "weak": ["Final Scores: \\boxed{8, 2}", "Final Scores: \\boxed{1, 9}", "Final Scores: \\boxed{2, 7}"],  # chosen 2nd
    }

    def fake_run(msgs, parse, batch_size=None):
        out = []
        for i, m in enumerate(msgs):
            first = m[1]["content"].split("[Response 1]\n")[1].split("\n")[0]
            out.append([JudgeResult(i, s, t, parse(t).value, parse(t).reason) for s, t in enumerate(scripted[first])])
        return out

    j.runner.run = fake_run
    rows, counts = build_meta_rm_rows(j, [{"prompt": "q", "chosen": "good fine", "rejected": "bad poor"},
                                          {"prompt": "q", "chosen": "nice", "rejected": "weak"}])
    # pair 0: 8 > 2 right, a tie is wrong, unparsable is wrong; pair 1 shows the chosen response second
    assert [r["correct"] for r in rows] == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert rows[3]["messages"] == grm_messages("q", ["weak", "nice"], "judge") and rows[4]["judgement"].endswith("{1, 9}")
    assert counts == {"pairs": 2, "rows": 6, "parse_rate": pytest.approx(5 / 6), "correct_rate": pytest.approx(0.5)}
    with pytest.raises(ValueError, match="pair 0 needs"):
        build_meta_rm_rows(j, [{"prompt": "q", "chosen": "x"}])


def test_train_meta_rm_cli_learns_and_the_grm_judge_reads_it(tok, tmp_path, capsys):
    """`mmreward text train-meta-rm` on labelled judgements (exact labels: right iff Response 1, the good one,
    scores higher) learns; the saved folder reloads with the same held-out figures and is what
    `text judge grm --meta-rm` takes; a judge whose judgements never parse stops with a clear error."""
    import json

    from mmreward.cli import main as mmreward_main
    from mmreward.text.generative.cli import load_meta_rm
    from mmreward.text.generative.grm import evaluate_meta_rm

    tiny_llama(len(tok), hidden=48, layers=2, heads=4, seed=1).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    as_dicts = lambda rows: [{"messages": m, "judgement": j, "correct": c} for m, j, c in rows]  # noqa: E731
    test = as_dicts(judgements(64, 1))
    for name, rows in (("train", as_dicts(judgements(256, 0))), ("test", test)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0"]
    rc = mmreward_main(["text", "train-meta-rm", "--model", str(tmp_path / "base"), "--data", str(tmp_path / "train.jsonl"),
                        "--eval-data", str(tmp_path / "test.jsonl"), "--output-dir", str(tmp_path / "run"),
                        "--batch-size", "32", "--lr", "3e-3", "--max-steps", "100", "--eval-every", "100", *common])
    assert rc == 0
    s = json.loads([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")][-1])
    with capsys.disabled():
        print(f"train-meta-rm CLI: held-out BCE {s['eval_loss_before']:.3f} -> {s['eval_loss']:.3f}, "
              f"accuracy {s['eval_accuracy_before']:.2f} -> {s['eval_accuracy']:.2f}")
    assert s["eval_loss"] < 0.7 * s["eval_loss_before"] and s["eval_accuracy"] >= 0.8, s
    folder = str(tmp_path / "run" / "model")
    assert evaluate_meta_rm(load_meta_rm(folder, tok), tok, test)["accuracy"] == pytest.approx(s["eval_accuracy"], abs=1e-4)
    with pytest.raises(ValueError, match="another tokenizer"):
        load_meta_rm(folder, word_tokenizer(["some other words"]))
    # the GRM judge with the meta-RM: 2 samples per pair, the better one by meta score votes
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"prompt": "q", "chosen": c, "rejected": r}) + "\n"
                                                  for c, r in (("good fine", "bad poor"), ("nice", "weak"))))
    judge = ["text", "judge", "grm", "--model", str(tmp_path / "base"), "--data", str(tmp_path / "pairs.jsonl"),
             "--num-samples", "2", "--k-meta", "1", "--max-new-tokens", "6"]
    assert mmreward_main([*judge, "--meta-rm", folder, "--out", str(tmp_path / "v.json")]) == 0
    assert len(json.loads((tmp_path / "v.json").read_text())["p_chosen_first"]) == 2
    capsys.readouterr()
    assert mmreward_main([*judge, "--meta-rm", str(tmp_path)]) == 2
    assert "not a meta-RM folder" in capsys.readouterr().err
    # plain pairs judged by the untrained base: nothing parses, so every label would be 0
    rc = mmreward_main(["text", "train-meta-rm", "--model", str(tmp_path / "base"), "--data", str(tmp_path / "pairs.jsonl"),
                        "--num-samples", "2", "--max-new-tokens", "4", "--output-dir", str(tmp_path / "run2"),
                        "--max-steps", "1", *common])
    out = capsys.readouterr()
    assert rc == 2 and "every sampled judgement was wrong" in out.err, out
    assert not (tmp_path / "run2" / "model").exists()


def test_grm_score_with_a_meta_rm_is_the_mean_of_the_kept_samples(tok, monkeypatch):
    from mmreward.core.inputs import TextPair

    model = tiny_llama(len(tok), hidden=16, layers=1, heads=2)
    j = GRMJudge(model, tok, GRMConfig(instructions="judge", num_samples=4, k_meta=2, max_new_tokens=4),
                 meta_rm=ScalarHeadLM(model))
    # every sample scores 8: the two kept sum to 16, so the mean is 8 (it was 16 / 4 parsed = 4)
    monkeypatch.setattr(j.runner, "generate", lambda prompts, batch_size=None: [["\\boxed{8}"] * 4 for _ in prompts])
    assert j.score([TextPair("q", "good"), TextPair("q", "bad")]).tolist() == [8.0, 8.0]
    assert [sum(row) for row in j.last_kept] == [2, 2]
    # an unparsed sample never counts, even among the meta-RM's top two: the mean is over the parsed kept ones
    samples = ["junk", "\\boxed{6}", "\\boxed{6}", "\\boxed{6}"]
    monkeypatch.setattr(j.runner, "generate", lambda prompts, batch_size=None: [samples for _ in prompts])
    assert j.score([TextPair("q", "good")]).tolist() == [6.0]
    assert not j.last_kept[0][0] and 1 <= sum(j.last_kept[0]) <= 2
    # without a meta-RM every parsed sample counts
    plain = GRMJudge(model, tok, GRMConfig(instructions="judge", num_samples=4, max_new_tokens=4))
    mixed = ["junk", "\\boxed{2}", "\\boxed{6}", "\\boxed{7}"]
    monkeypatch.setattr(plain.runner, "generate", lambda prompts, batch_size=None: [mixed for _ in prompts])
    assert plain.score([TextPair("q", "good")]).tolist() == [5.0]
    assert plain.last_kept == [[False, True, True, True]]
