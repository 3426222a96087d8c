"""Every figure the vision evaluators and the robotics reward-quality scripts report, against values
worked out by hand from the official definitions:

* VL-RewardBench (its cal.py): group accuracies, the overall accuracy over all items, the macro average
  over the three groups; an item is a key (id, query, answers) counted once; a tie is wrong;
* ImageReward's test ``acc`` (also HPSv2's): every pair of differently ranked images, equal human ranks
  left out, a score tie wrong; top-1 strict and only over sets with a best image to find;
* the VLM RM / VisualPRM held-out metrics (strict pairwise accuracy, BT loss, step macro-F1 as sklearn's);
* Spearman ρ with ties (scipy: Pearson of average ranks), ROC-AUC with ties (sklearn: ½ credit), and the
  paired bootstrap of select_progress_scale.

Scores come from stand-in models whose outputs are set by hand, so each expected number is exact."""
import importlib.util
import math
import os
import sys
import warnings

import numpy as np
import pytest
import torch

from mmreward.core.inputs import Conversation
from mmreward.vision.published.vl_rewardbench import VLRewardBenchItem, evaluate_vl_rewardbench, source_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --------------------------------------------------------------------------- VL-RewardBench
class FixedScores:
    """A Conversation scorer that returns preset scores (two per item: answer 0, answer 1)."""

    input_types = (Conversation,)

    def __init__(self, scores):
        self.scores = scores

    def score(self, convs, batch_size=8):
        return torch.tensor(self.scores, dtype=torch.float32)


def item(i, dataset_id, preferred=0, query="q"):
    return VLRewardBenchItem(dataset_id, query, (f"a{i}", f"b{i}"), preferred, "img.png", source_dataset(dataset_id))


def test_vl_rewardbench_overall_macro_and_ties_by_hand():
    """general: 4 items, 3 right + 1 tie (wrong) -> 75; hallucination: 1 wrong -> 0; reasoning: 1 of 2 -> 50.
    Overall 4/7 = 57.14 (items), macro (75 + 0 + 50) / 3 = 41.67 (groups)."""
    items = [item(0, "wildvision-battle-1"), item(1, "LRV-1", preferred=1), item(2, "wildvision-battle-2"),
             item(3, "wildvision-battle-3"),  # the tie
             item(4, "RLAIF-V-1"), item(5, "mathverse_1"), item(6, "mmmu_pro_test_x_1", preferred=1)]
    scores = [2, 1, 0, 1, 5, -5, 3, 3, 0, 1, 1, 0, 1, 0]
    s = evaluate_vl_rewardbench(FixedScores(scores), items)["summary"]
    assert (s["general"], s["hallucination"], s["reasoning"]) == (75.0, 0.0, 50.0)
    assert s["overall_accuracy"] == 57.14 and s["macro_average"] == 41.67
    assert s["n"] == 7 and s["n_ties"] == 1 and s["n_duplicates"] == 0
    assert s["datasets"] == {"vlfeedback": 100.0, "wildvision-battle": 66.67, "rlaif-v": 0.0, "reasoning_tasks": 50.0}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_vl_rewardbench_non_finite_score_is_an_error_naming_the_item(bad):
    """A NaN compared false both ways and the item was counted wrong without a word."""
    items = [item(0, "RLAIF-V-1"), item(1, "mathverse_2")]
    with pytest.raises(ValueError, match=r"non-finite score .*items\[1\] \(id 'mathverse_2'\)"):
        evaluate_vl_rewardbench(FixedScores([1.0, 0.0, bad, 0.0]), items)


def test_vl_rewardbench_wrong_score_count_is_an_error():
    """2N-2 scores used to make N-1 rows and zip dropped the last item from every figure."""
    items = [item(0, "RLAIF-V-1"), item(1, "mathverse_2")]
    with pytest.raises(ValueError, match="returned 2 scores for 2 VL-RewardBench items"):
        evaluate_vl_rewardbench(FixedScores([1.0, 0.0]), items)


def test_vl_rewardbench_repeated_item_counts_once_as_cal_py():
    """cal.py keys an item by id + query + sorted answers: the same row twice is one item. A row with the
    same id but another query (the release has 18 such ids) is another item."""
    items = [item(0, "RLAIF-V-1"), item(0, "RLAIF-V-1"), item(0, "RLAIF-V-1", query="other"),
             item(1, "mathverse_2"), item(2, "wildvision-battle-3")]
    scores = [1, 0, 1, 0, 0, 1, 1, 0, 1, 0]
    with pytest.warns(UserWarning, match="1 item.* repeat an earlier item"):
        r = evaluate_vl_rewardbench(FixedScores(scores), items)
    s = r["summary"]
    assert s["n"] == 4 and s["n_duplicates"] == 1 and s["hallucination"] == 50.0 and s["overall_accuracy"] == 75.0
    assert r["items"][1]["duplicate"] is True and len(r["items"]) == 5


def test_vl_rewardbench_macro_over_missing_group_is_flagged():
    items = [item(0, "RLAIF-V-1"), item(1, "mathverse_2", preferred=1)]
    with pytest.warns(UserWarning, match=r"no items of group\(s\) \['general'\]"):
        s = evaluate_vl_rewardbench(FixedScores([1, 0, 1, 0]), items)["summary"]
    assert s["macro_groups"] == ["hallucination", "reasoning"] and s["macro_average"] == 50.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = evaluate_vl_rewardbench(FixedScores([1, 0] * 3), items + [item(2, "wildvision-battle-1")])["summary"]
    assert full["macro_groups"] == ["general", "hallucination", "reasoning"]


# --------------------------------------------------------------------------- ImageReward ranked sets
@pytest.fixture(scope="module")
def image_model():
    from mmreward.vision.train import ImageRewardTrainConfig, build_model

    torch.manual_seed(0)
    return build_model(ImageRewardTrainConfig(data="synthetic", embed_dim=8), ["a red circle"])


def ranked(ranks):
    from mmreward.vision.train import RankedExample

    return RankedExample("a red circle", np.zeros((len(ranks), 16, 16, 3), np.uint8), np.asarray(ranks))


def with_scores(model, scores, monkeypatch):
    """The model's forward returns ``scores`` (B × K, row-major; padded slots included)."""
    monkeypatch.setattr(model, "forward", lambda prompts, pixels: torch.tensor(scores, dtype=torch.float32))
    return model


def test_image_reward_accuracies_as_imagereward_acc(image_model, monkeypatch):
    """Set A ranks 0,1,2 scored 3,2,1: 3 of 3 pairs, top-1 right. Set B ranks 0,0,1 scored 1,2,2: the pair of
    equal rank is left out, 1 < 2 and the tie 2 = 2 are wrong (0 of 2); top-1: a best image ties a worse one
    -> wrong (argmax used to pick the first of the tied and give it). Set C ranks 1,1: no pair, no best image
    (it used to add a free top-1 hit). Set D ranks 1,0 scored 5,5: a tie, wrong. Pairwise 3 / 6, top-1 1 / 3
    (was 3 / 4). Padded slots (NaN here) are ignored."""
    from mmreward.vision.train import evaluate_image_reward

    nan = float("nan")
    sets = [ranked([0, 1, 2]), ranked([0, 0, 1]), ranked([1, 1]), ranked([1, 0])]
    scores = [3, 2, 1, 1, 2, 2, 0, 5, nan, 5, 5, nan]
    got = evaluate_image_reward(with_scores(image_model, scores, monkeypatch), sets, batch_size=4)
    assert got == {"pairwise_accuracy": 0.5, "top1_accuracy": pytest.approx(1 / 3)}


def test_image_reward_nan_score_is_an_error_naming_the_set(image_model, monkeypatch):
    from mmreward.vision.train import evaluate_image_reward

    model = with_scores(image_model, [3, 2, 1, float("nan")], monkeypatch)
    with pytest.raises(ValueError, match="image 1 of ranked set 1 .* nan"):
        evaluate_image_reward(model, [ranked([0, 1]), ranked([0, 1])], batch_size=2)


# --------------------------------------------------------------------------- VLM RM / VisualPRM
@pytest.fixture(scope="module")
def vlm_models():
    from mmreward.vision.synthetic import COLOUR_WORDS
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.visual_prm import VisualPRM, VisualPRMConfig
    from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel

    torch.manual_seed(0)
    proc = tiny_processor(COLOUR_WORDS)
    return (VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc),
            VisualPRM(VisualPRMConfig(), tiny_qwen2vl_config(proc), proc))


def queue(outputs):
    outs = [torch.tensor(o, dtype=torch.float32) for o in outputs]
    return lambda **batch: outs.pop(0)


def test_vlm_reward_accuracy_and_loss_by_hand(vlm_models, monkeypatch):
    """Pairs (chosen, rejected) = (1, 0) right, (2, 2) a tie: wrong, (3, 4) wrong -> 1/3; BT loss = mean of
    log(1 + e^-(c - r)) = (log(1 + e^-1) + log 2 + log(1 + e)) / 3, in chunks of 2 and 1 pairs."""
    from mmreward.vision import synthetic as S
    from mmreward.vision.vlm_rm import evaluate_vlm_reward

    rm = vlm_models[0]
    monkeypatch.setattr(rm, "forward", queue([[1, 2, 0, 2], [3, 4]]))
    got = evaluate_vlm_reward(rm, S.colour_preference_rows(3, seed=1), batch_size=2)
    want = (math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.e)) / 3
    assert got["accuracy"] == pytest.approx(1 / 3) and got["loss"] == pytest.approx(want, rel=1e-5)


def test_vlm_reward_nan_score_is_an_error_naming_the_row(vlm_models, monkeypatch):
    """A NaN made the whole batch's accuracy NaN (or, compared, counted the pair wrong)."""
    from mmreward.vision import synthetic as S
    from mmreward.vision.vlm_rm import evaluate_vlm_reward

    rm = vlm_models[0]
    monkeypatch.setattr(rm, "forward", queue([[1, 2, 0, float("nan")]]))
    with pytest.raises(ValueError, match="eval rows: row 1: .*rejected conversation nan"):
        evaluate_vlm_reward(rm, S.colour_preference_rows(2, seed=1), batch_size=2)


def step_rows():
    from mmreward.vision import synthetic as S

    rows = S.colour_step_rows(8, seed=1)
    three = next(r for r in rows if len(r["steps"]) == 3)
    two = next(r for r in rows if len(r["steps"]) == 2)
    return [{**three, "labels": [1.0, 0.0, 1.0]}, {**two, "labels": [0.5, 0.0]}]


def test_visual_prm_step_metrics_as_sklearn(vlm_models, monkeypatch):
    """P(+) 0.9 0.6 0.5 | 0.2 0.1 at threshold 0.5 -> predicted good T T T | F F; labels good (> 0) T F T | T F.
    Accuracy 3/5; good-class F1 = 2·2/(3+3) = 2/3, bad-class F1 = 2·1/(2+2) = 1/2; macro-F1 7/12."""
    from mmreward.vision.visual_prm import evaluate_visual_prm

    prm = vlm_models[1]
    outs = [(torch.tensor(0.25), torch.tensor([0.9, 0.6, 0.5, 0.2, 0.1]))]
    monkeypatch.setattr(prm, "forward", lambda **batch: outs.pop(0))
    got = evaluate_visual_prm(prm, step_rows(), batch_size=2)
    assert got["step_accuracy"] == pytest.approx(0.6) and got["macro_f1"] == pytest.approx(7 / 12)
    assert got["step_loss"] == pytest.approx(0.25)


def test_visual_prm_nan_step_score_is_an_error_naming_row_and_step(vlm_models, monkeypatch):
    """A NaN P(+) failed the threshold: counted as a "bad" prediction without a word."""
    from mmreward.vision.visual_prm import evaluate_visual_prm

    prm = vlm_models[1]
    outs = [(torch.tensor(0.25), torch.tensor([0.9, 0.6, 0.5, float("nan"), 0.1]))]
    monkeypatch.setattr(prm, "forward", lambda **batch: outs.pop(0))
    with pytest.raises(ValueError, match=r"eval rows: row 1: .*step 0 .*nan"):
        evaluate_visual_prm(prm, step_rows(), batch_size=2)


# --------------------------------------------------------------------------- robotics quality metrics
def _bench():
    spec = importlib.util.spec_from_file_location("bench_dr_quality_official", os.path.join(
        ROOT, "benchmarks", "bench_diffusion_reward_quality.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spearman_and_auc_with_ties_as_scipy_and_sklearn():
    b = _bench()
    # x ranks 1, 2.5, 2.5, 4; y ranks 1, 3, 2, 4: Σdxdy = 4.5, Σdx² = 4.5, Σdy² = 5 -> ρ = 4.5/√22.5 = √0.9
    assert b.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9), abs=1e-12)
    # positives 0.8, 0.5; negatives 0.5, 0.2, 0.5: 3 + (½ + 1 + ½) = 5 of 6 pairs
    assert b.roc_auc([0.8, 0.5, 0.5, 0.2, 0.5], [True, True, False, False, False]) == pytest.approx(5 / 6)
    assert b.roc_auc([float("inf"), 0.0], [True, False]) == 1.0  # ±inf ranks fine


@pytest.mark.parametrize("fn", ["spearman", "roc_auc"])
def test_rank_metrics_refuse_nan_and_unpaired_input(fn):
    """A NaN score was ranked above every number (a NaN episode passed for the best one)."""
    b = _bench()
    f = getattr(b, fn)
    second = [True, False, True] if fn == "roc_auc" else [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="NaN"):
        f([0.1, float("nan"), 0.3], second)
    with pytest.raises(ValueError, match="pair up"):
        f([0.1, 0.2], second)


def _select():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import select_progress_scale as sel
    finally:
        sys.path.pop(0)
    return sel


def _episodes(all_succeed: bool):
    eps = []
    for noise in (0.0, 0.3, 0.6, 1.0):
        for i in range(3):
            eps.append({"task": "a-v3", "policy": "noisy", "noise": noise, "success": all_succeed or i == 0,
                        "m": -noise + 0.01 * i, "base": -noise - 0.01 * i})
    for i in range(3):
        eps.append({"task": "a-v3", "policy": "random", "noise": 0.0, "success": False, "m": -5.0, "base": -5.0})
    return eps


def test_bootstrap_reports_undefined_resamples_and_skips_at_zero():
    """Every episode succeeds: the success AUC is undefined in every resample (np.quantile of nothing used
    to raise IndexError); --bootstrap 0 used to crash the same way instead of skipping."""
    sel = _select()
    out = sel.bootstrap_diff(_episodes(True), "m", "base", ["a-v3"], 5, 0)
    assert out["success_auc_mean"]["n_defined"] == 0 and math.isnan(out["success_auc_mean"]["low"])
    assert out["expert_vs_random_auc_mean"]["n_defined"] == 5
    # m and base both put every expert above every random episode: the difference is exactly 0
    assert out["expert_vs_random_auc_mean"]["low"] == out["expert_vs_random_auc_mean"]["high"] == 0.0
    assert out["expert_vs_random_auc_mean"]["p_equal"] == 1.0
    assert sel.bootstrap_diff(_episodes(False), "m", "base", ["a-v3"], 0, 0) == {}
    with pytest.raises(ValueError, match="integer >= 0"):
        sel.bootstrap_diff(_episodes(False), "m", "base", ["a-v3"], -1, 0)
