"""VisualPRM: step format and label positions, learning on exact step labels, Monte-Carlo labels,
response scores / Best-of-N, macro-F1, LM-head initialisation, save / load and errors."""
import numpy as np
import pytest
import torch

import mmreward
from mmreward.core.checkpoint import CheckpointError
from mmreward.core.data import DataError
from mmreward.core.inputs import VisualSteps
from mmreward.core.trainer import TrainConfig
from mmreward.vision import synthetic as S
from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
from mmreward.vision.visual_prm import (
    LabelledSteps,
    VisualPRM,
    VisualPRMConfig,
    as_labelled,
    evaluate_visual_prm,
    mc_step_labels,
    monte_carlo_labels,
    reduce_step_scores,
    step_macro_f1,
    train_visual_prm,
)
from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel, train_vlm_reward


def quiet(tmp, **kw):
    return TrainConfig(output_dir=str(tmp), batch_size=8, warmup_steps=5, progress=False, log_every=0,
                       tensorboard=False, plot=False, resume=False, **kw)


@pytest.fixture(scope="module")
def proc():
    return tiny_processor(S.COLOUR_WORDS)


def new_prm(proc, **kw):
    torch.manual_seed(0)
    return VisualPRM(VisualPRMConfig(**kw), tiny_qwen2vl_config(proc), proc)


def inputs(rows):
    return [VisualSteps(r["question"], r["steps"], r["images"]) for r in rows]


@pytest.fixture(scope="module")
def trained(proc, tmp_path_factory):
    """VisualPRM starts from a pretrained VLM. Here the "pretraining" is 100 pairwise steps of the
    scalar RM on the colour task (a from-scratch 2-layer model plateaus for hundreds of BCE steps
    before it finds the image × claim interaction); the PRM then fine-tunes that backbone at a low
    LR (3e-3 wipes the pretrained features out; 5e-4 learns on each of seeds 0–3)."""
    torch.manual_seed(0)
    rm = VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc)
    train_vlm_reward(rm, S.colour_preference_rows(256, seed=0), quiet(tmp_path_factory.mktemp("rm"), max_steps=100, lr=3e-3))
    torch.manual_seed(0)
    prm = VisualPRM(VisualPRMConfig(), rm.backbone, proc)
    held_out = S.colour_step_rows(64, seed=1)
    before = evaluate_visual_prm(prm, held_out)
    hist = train_visual_prm(prm, S.colour_step_rows(512, seed=0), quiet(tmp_path_factory.mktemp("prm"), max_steps=150, lr=5e-4),
                            eval_rows=held_out)
    return prm, before, evaluate_visual_prm(prm, held_out), hist


def test_training_reduces_step_loss_and_raises_macro_f1(trained):
    """Each step claims a colour; it is good iff that is the image's dominant colour (exact labels)."""
    _, before, after, hist = trained
    # seed 0: loss 0.696 → 0.551, macro-F1 0.46 → 0.67 (seeds 1–3: drops ≥ 0.13, F1 ≥ 0.64)
    assert after["step_loss"] < before["step_loss"] - 0.1, (before, after)
    assert after["macro_f1"] >= 0.6 and after["macro_f1"] > before["macro_f1"] + 0.1, (before, after)
    assert hist[-1]["eval_macro_f1"] == pytest.approx(after["macro_f1"])


def test_step_format_and_label_positions(proc):
    prm = new_prm(proc)
    item = VisualSteps("what colour", ["it is red", "so it is blue"], [S.colour_image("red", np.random.default_rng(0))])
    enc = prm.encode([item], [[1.0, 0.25]])
    toks = proc.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    text = " ".join(toks)
    # image + question + first step in the first user turn, one step per later user turn, "+" / "-" answers
    assert text.startswith("<|im_start|> user <|vision_start|> <|image_pad|>")
    assert "what colour it is red <|im_end|> <|im_start|> assistant + <|im_end|>" in text
    assert "<|im_start|> user so it is blue <|im_end|> <|im_start|> assistant + <|im_end|>" in text  # mc 0.25 > 0: "+"
    pos = enc["step_index"][:, 1].tolist()
    assert [toks[p] for p in pos] == ["assistant", "assistant"]  # the position that predicts the label
    assert [toks[p + 1] for p in pos] == ["+", "+"]
    assert enc["step_labels"].tolist() == [1.0, 0.25] and enc["n_steps"].tolist() == [2]
    hard = VisualPRM(VisualPRMConfig(hard_labels=True), prm.backbone, proc)
    loss_soft, _ = prm(**enc)
    loss_hard, p = hard(**enc)
    y = torch.tensor([1.0, 1.0])  # hard label = mc > 0
    assert loss_hard.item() == pytest.approx(torch.nn.functional.binary_cross_entropy(p, y).item(), rel=1e-4)
    assert loss_soft.item() != pytest.approx(loss_hard.item())


def test_scores_reductions_and_best_of_n(trained):
    prm, *_ = trained
    rows = S.colour_step_rows(6, seed=4)
    per = prm.score_parts(inputs(rows))
    assert [p.numel() for p in per] == [len(r["steps"]) for r in rows]
    assert all(((p > 0) & (p < 1)).all() for p in per)
    for red, fn in (("mean", torch.mean), ("min", torch.min), ("max", torch.max)):
        assert torch.allclose(reduce_step_scores(per, red), torch.stack([fn(p) for p in per]), atol=1e-6)
    # score = the config's reduction of the step scores; JSON rows (labels ignored) give the same
    assert torch.allclose(prm.score(inputs(rows)), torch.stack([p.mean() for p in per]), atol=1e-6)
    assert torch.allclose(prm.score(rows), prm.score(inputs(rows)), atol=1e-6)
    prm_min = VisualPRM(VisualPRMConfig(reduce="min"), prm.backbone, prm.processor)
    prm_min.load_state_dict(prm.state_dict())
    assert torch.allclose(prm_min.score(inputs(rows)), torch.stack([p.min() for p in per]), atol=1e-6)
    # scores do not depend on the label placeholders or the batch they were computed in
    alone = prm.score_parts(inputs(rows[2:3]))[0]
    assert torch.allclose(alone, per[2], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(prm.score_parts(inputs(rows), batch_size=1), per))
    cands = [[f"look at the image so it is {c}"] for c in S.COLOURS]
    best, scores = prm.best_of_n(rows[0]["images"], rows[0]["question"], cands)
    assert best == int(scores.argmax()) and scores.shape == (4,)


def test_best_of_n_picks_the_right_colour_after_training(trained):
    prm, *_ = trained
    rows = S.colour_step_rows(24, seed=9)
    hits = 0
    for r in rows:
        truth = next(s.split()[-1] for s, y in zip(r["steps"], r["labels"]) if y == 1.0) if 1.0 in r["labels"] else None
        if truth is None:
            continue
        best, _ = prm.best_of_n(r["images"], r["question"], [[f"look at the image so it is {c}"] for c in S.COLOURS])
        hits += list(S.COLOURS)[best] == truth
    assert hits >= 7  # chance: a quarter of the rows with a good step (about 4 of 17)


def test_monte_carlo_labels_by_hand():
    soft, hard = mc_step_labels([[1, 1, 0, 0], [0, 0, 0, 1], [False] * 4])
    assert soft == [0.5, 0.25, 0.0] and hard == [1, 1, 0]

    def rollout(question, prefix, n):  # a step containing "wrong" derails every continuation
        return ["4"] * n if not any("wrong" in s for s in prefix) else ["4"] + ["5"] * (n - 1)

    soft, hard = monte_carlo_labels("2+2?", ["two plus two", "wrong turn", "so 4"], rollout, lambda a: a == "4", n_rollouts=4)
    assert soft == [1.0, 0.25, 0.25] and hard == [1, 1, 1]
    with pytest.raises(ValueError, match="step 1: no rollouts"):
        mc_step_labels([[1], []])
    with pytest.raises(ValueError, match="returned 1 answers for step 0, expected 4"):
        monte_carlo_labels("q", ["s"], lambda q, p, n: ["4"], lambda a: True, n_rollouts=4)


def test_macro_f1_by_hand():
    pred = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    gold = torch.tensor([1, 0, 0, 0, 1], dtype=torch.bool)
    # good class: tp 2, 3 predicted, 2 true → F1 0.8; bad class: tp 2, 2 predicted, 3 true → 0.8
    assert step_macro_f1(pred, gold) == pytest.approx(0.8)
    assert step_macro_f1(gold, gold) == 1.0
    with pytest.raises(ValueError, match="equal non-empty"):
        step_macro_f1(pred, gold[:3])


def test_label_head_initialised_from_lm_head_rows(proc, tmp_path):
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(2)
    full = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(proc))
    prm = VisualPRM(VisualPRMConfig(), full, proc)
    plus, minus = proc.tokenizer.convert_tokens_to_ids(["+", "-"])
    assert torch.equal(prm.w_good.data, full.lm_head.weight[plus].detach())
    assert torch.equal(prm.w_bad.data, full.lm_head.weight[minus].detach())
    full.save_pretrained(str(tmp_path / "vlm"))
    from_folder = VisualPRM(VisualPRMConfig(), str(tmp_path / "vlm"), proc)
    assert torch.equal(from_folder.w_good.data, prm.w_good.data)
    assert not hasattr(from_folder.backbone, "lm_head")
    emb = from_folder.backbone.language_model.embed_tokens.weight
    assert torch.equal(emb, full.model.language_model.embed_tokens.weight)


def test_save_load_roundtrip(trained, tmp_path):
    prm, *_ = trained
    items = inputs(S.colour_step_rows(3, seed=6))
    prm.save_pretrained(str(tmp_path / "prm"))
    again = mmreward.load(str(tmp_path / "prm"))
    assert type(again) is VisualPRM
    for a, b in zip(again.score_parts(items), prm.score_parts(items)):
        assert torch.allclose(a, b, atol=1e-6)
    (tmp_path / "prm" / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        VisualPRM.from_pretrained(str(tmp_path / "prm"))
    prm.save_pretrained(str(tmp_path / "p2"))
    with pytest.raises(CheckpointError, match="not 'vlm_reward'"):
        VLMRewardModel.from_pretrained(str(tmp_path / "p2"))


def test_bad_inputs_raise_clear_errors(proc):
    prm = new_prm(proc)
    row = S.colour_step_rows(1, seed=0)[0]
    with pytest.raises(DataError, match="input 0: field 'steps' must be a non-empty list"):
        prm.score([VisualSteps(row["question"], [], row["images"])])
    with pytest.raises(DataError, match="input 1: field 'question' is null"):
        prm.score([VisualSteps(row["question"], row["steps"], row["images"]), VisualSteps(None, row["steps"], [])])
    with pytest.raises(DataError, match="rows: row 0: field 'labels' must be a list with one value per step"):
        as_labelled([dict(row, labels=[1.0] * (len(row["steps"]) + 1))])
    with pytest.raises(DataError, match=r"rows: row 1: field 'labels' must hold numbers in \[0, 1\]"):
        as_labelled([row, dict(row, labels=[float("nan")] * len(row["steps"]))])
    with pytest.raises(DataError, match="rows: row 0: missing field 'question'"):
        as_labelled([{k: v for k, v in row.items() if k != "question"}])
    with pytest.raises(ValueError, match="no step rows"):
        train_visual_prm(prm, [], quiet("unused", max_steps=1))
    with pytest.raises(ValueError, match="label token 'what colour' must be one token"):
        VisualPRM(VisualPRMConfig(good_token="what colour"), prm.backbone, proc).score(inputs([row]))
    with pytest.raises(ValueError, match="reduce must be one of"):
        VisualPRMConfig(reduce="median")
    with pytest.raises(ValueError, match="reduce must be one of"):
        reduce_step_scores([torch.ones(2)], "median")
    with pytest.raises(ValueError, match="no candidates"):
        prm.best_of_n(row["images"], row["question"], [])
    with pytest.raises(ValueError, match="no step rows"):
        evaluate_visual_prm(prm, [])
    assert LabelledSteps.from_record(row).labels == row["labels"]
