"""Edge cases of the ranked-set trainer: tied sets (valid data, no pair) and all-tie training data."""
import json
import math

import pytest
import torch

from mmreward.core.data import DataError
from mmreward.core.trainer import TrainConfig
from mmreward.vision import synthetic as S
from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel
from mmreward.vision.train import ImageRewardTrainConfig, RankedExample, make_collate, ranked_loss, train_image_reward


def quiet(output_dir, **kw):
    return TrainConfig(output_dir=str(output_dir), progress=False, tensorboard=False, plot=False, log_every=0, **kw)


def _write(tmp_path, tie_rows):
    path = S.write_jsonl(S.ranked_sets(3, seed=0), str(tmp_path / "data"))
    rows = [json.loads(line) for line in open(path)]
    for i in tie_rows:
        rows[i]["ranks"] = [0] * len(rows[i]["ranks"])
    out = tmp_path / "data" / "edited.jsonl"  # beside the images its rows name
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(out)


@pytest.mark.parametrize("loss", ["listwise", "pairwise"])
def test_training_data_of_only_ties_is_refused_before_the_run_starts(tmp_path, loss):
    """Before: listwise "trained" on a zero loss, logged accuracy 0.0 and saved an untrained scorer;
    pairwise failed at the first step after the run folder was made."""
    data = _write(tmp_path, [0, 1, 2])
    with pytest.raises(DataError, match="edited.jsonl.*no set ranks two images differently"):
        train_image_reward(ImageRewardTrainConfig(data=data, loss=loss, embed_dim=8, normalize_on=0),
                           quiet(tmp_path / "run", max_steps=2, batch_size=1))
    assert not (tmp_path / "run").exists()


def test_a_batch_of_tied_sets_is_a_zero_loss_with_undefined_accuracy(tmp_path):
    """Before: pairwise raised mid-run on a batch whose sets are all ties (valid data); listwise
    logged accuracy 0.0 for it."""
    data = _write(tmp_path, [0])
    _, history = train_image_reward(ImageRewardTrainConfig(data=data, loss="pairwise", embed_dim=8, normalize_on=0),
                                    quiet(tmp_path / "run", max_steps=3, batch_size=1))
    assert len(history) == 3 and all(math.isfinite(h["loss"]) for h in history)
    assert sum(math.isnan(h["accuracy"]) for h in history) == 1  # the tied set, one per epoch of 3
    torch.manual_seed(0)
    model = ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=8))
    s = S.ranked_sets(1, seed=0)[0]
    batch = make_collate(model)([RankedExample(s.prompt, s.images, s.ranks * 0)])
    for loss in ("listwise", "pairwise"):
        value, metrics = ranked_loss(loss)(model, batch)
        assert float(value.detach()) == 0.0 and value.requires_grad and math.isnan(metrics["accuracy"])


@pytest.mark.parametrize("change, named", [(dict(loss="pairwise"), "objective.loss"),
                                           (dict(embed_dim=16), "embed_dim"),
                                           (dict(data_seed=3), "data.synthetic.data_seed")])
def test_resuming_with_another_objective_scorer_or_data_is_refused(tmp_path, change, named):
    """Before: another --loss or --data_seed silently continued the old run's weights (a changed
    --embed-dim failed with a state-dict size-mismatch dump)."""
    base = dict(n_train=8, n_eval=4, embed_dim=8, normalize_on=0)
    train_image_reward(ImageRewardTrainConfig(**base), quiet(tmp_path, max_steps=2, batch_size=4))
    with pytest.raises(ValueError, match=f"other (settings|training data).*{named}"):
        train_image_reward(ImageRewardTrainConfig(**{**base, **change}), quiet(tmp_path, max_steps=4, batch_size=4))
    # the same settings continue it
    _, history = train_image_reward(ImageRewardTrainConfig(**base), quiet(tmp_path, max_steps=3, batch_size=4))
    assert [h["step"] for h in history] == [1, 2, 3]


def test_resuming_with_an_edited_data_file_is_refused(tmp_path):
    data = _write(tmp_path, [])
    cfg = ImageRewardTrainConfig(data=data, embed_dim=8, normalize_on=0)
    train_image_reward(cfg, quiet(tmp_path / "run", max_steps=1, batch_size=1))
    rows = open(data).read().splitlines()
    open(data, "w").write("\n".join(rows[:2]) + "\n")  # one set dropped
    with pytest.raises(ValueError, match="other training data .*data.file_sha256"):
        train_image_reward(cfg, quiet(tmp_path / "run", max_steps=2, batch_size=1))


def test_identical_training_images_still_leave_a_saved_model(tmp_path):
    """Before: every training image the same (and one prompt) trained to the end, then the score
    normalisation raised "raw scores are all equal" and no model/ was written."""
    import os

    import numpy as np
    from PIL import Image

    import mmreward
    from mmreward.core.inputs import ImagePrompt

    img = np.full((32, 32, 3), 120, np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    row = json.dumps({"prompt": "a red circle", "images": ["a.png", "a.png"], "ranks": [0, 1]})
    (tmp_path / "rows.jsonl").write_text(row + "\n" + row + "\n")
    with pytest.warns(UserWarning, match="score normalisation skipped"):
        train_image_reward(ImageRewardTrainConfig(data=str(tmp_path / "rows.jsonl"), embed_dim=8, normalize_on=4),
                           quiet(tmp_path / "run", max_steps=2, batch_size=1))
    assert os.path.isfile(tmp_path / "run" / "model" / "config.json")
    scores = mmreward.load(str(tmp_path / "run")).score([ImagePrompt("a red circle", img)])
    assert torch.isfinite(scores).all()


def test_normalize_on_one_is_refused_before_training():
    """Before: accepted, then fit_normalization refused one image after the whole training."""
    with pytest.raises(ValueError, match="normalize_on must be 0 .* or >= 2"):
        ImageRewardTrainConfig(normalize_on=1)
    assert ImageRewardTrainConfig(normalize_on=0).normalize_on == 0
