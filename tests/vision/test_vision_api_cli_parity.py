"""The Python evaluators that `mmreward vision eval` runs take the same rows and refuse the same bad
input with one clear error (never an AttributeError / tensor-shape error / 0 / 0 from inside a batch)."""
import json

import numpy as np
import pytest
import torch

from mmreward.core.data import DataError
from mmreward.vision import synthetic as S
from mmreward.vision.train import RankedExample, evaluate_image_reward, read_ranked_sets


@pytest.fixture(scope="module")
def image_model():
    from mmreward.vision.train import build_model, ImageRewardTrainConfig

    torch.manual_seed(0)
    return build_model(ImageRewardTrainConfig(data="synthetic", embed_dim=8), ["a red circle"])


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    return S.write_jsonl(S.ranked_sets(3, seed=9), str(tmp_path_factory.mktemp("held")))


def test_evaluate_image_reward_takes_rows_as_the_cli_reads_them(image_model, held):
    sets = read_ranked_sets(held)
    rows = [dict(prompt=e.prompt, images=list(e.images), ranks=e.ranks.tolist()) for e in sets]
    assert evaluate_image_reward(image_model, rows, 2) == evaluate_image_reward(image_model, sets, 16)


@pytest.mark.parametrize("bad, error, names", [
    ("rows.jsonl", TypeError, "must be a list of RankedExample"),
    ([{"prompt": "a", "images": ["x.png", "y.png"]}], DataError, "examples[0]: missing field 'ranks'"),
    ("short ranks", DataError, "examples[0]: field 'ranks' must be"),
    ("no prompt", DataError, "examples[0]: field 'prompt' must be a non-empty string"),
    ("bool ranks", DataError, "field 'ranks'"),
])
def test_evaluate_image_reward_names_a_bad_set(image_model, held, bad, error, names):
    e = read_ranked_sets(held)[0]
    bad = {"short ranks": [RankedExample(e.prompt, e.images, np.array([0, 1]))],
           "no prompt": [RankedExample(None, e.images, e.ranks)],
           "bool ranks": [RankedExample(e.prompt, e.images, [True] * len(e.images))]}.get(bad, bad) \
        if isinstance(bad, str) and bad != "rows.jsonl" else bad
    with pytest.raises(error) as info:
        evaluate_image_reward(image_model, bad, 4)
    assert names in str(info.value)


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


@pytest.mark.parametrize("which", ["rm", "prm"])
def test_vlm_evaluators_refuse_a_path_one_row_or_an_empty_iterator(vlm_models, which):
    from mmreward.vision.visual_prm import evaluate_visual_prm
    from mmreward.vision.vlm_rm import evaluate_vlm_reward

    model, evaluate = (vlm_models[0], evaluate_vlm_reward) if which == "rm" else (vlm_models[1], evaluate_visual_prm)
    rows = S.colour_preference_rows(2, seed=1) if which == "rm" else S.colour_step_rows(2, seed=1)
    assert evaluate(model, iter(rows), 2) == evaluate(model, rows, 2)  # any iterable of rows
    for bad in ("rows.jsonl", rows[0]):  # was "row 0: expected a JSON object, got str" (its characters / keys)
        with pytest.raises(TypeError, match="eval rows must be a list of"):
            evaluate(model, bad, 2)
    with pytest.raises(ValueError, match="eval rows: no .* rows"):  # was a ZeroDivisionError
        evaluate(model, iter([]), 2)


def test_cli_eval_matches_python(image_model, held, tmp_path, capsys):
    from mmreward.cli import main as mmreward_main

    image_model.save_pretrained(str(tmp_path / "model"))
    assert mmreward_main(["vision", "eval", "--model", str(tmp_path / "model"), "--data", held,
                          "--batch-size", "2"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = evaluate_image_reward(image_model, read_ranked_sets(held), 2)
    assert {k: v for k, v in got.items() if k != "model_type"} == want  # the same numbers, not rounded
