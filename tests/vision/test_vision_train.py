"""Listwise / pairwise training of the image scorer on the core Trainer; it must learn."""
import json
import time

import pytest
import torch

import mmreward
from mmreward.core.data import DataError
from mmreward.core.device import DeviceError
from mmreward.core.inputs import ImagePrompt
from mmreward.core.trainer import TrainConfig
from mmreward.vision import synthetic as S
from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel
from mmreward.vision.train import (
    ImageRewardTrainConfig,
    RankedExample,
    evaluate_image_reward,
    make_collate,
    ranked_loss,
    read_ranked_sets,
    train_image_reward,
)


def quiet(output_dir, **kw):
    return TrainConfig(output_dir=str(output_dir), progress=False, tensorboard=False, plot=False, log_every=0, **kw)


def small_model(seed=0):
    torch.manual_seed(seed)
    return ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=16))


def test_collate_pads_short_sets_and_losses_ignore_padding():
    model = small_model()
    sets = S.ranked_sets(2, set_size=4, seed=0)
    examples = [RankedExample(sets[0].prompt, sets[0].images, sets[0].ranks),
                RankedExample(sets[1].prompt, sets[1].images[:2], sets[1].ranks[:2])]
    batch = make_collate(model)(examples)
    assert batch["pixel_values"].shape == (8, 3, 32, 32) and len(batch["prompts"]) == 8
    assert batch["ranks"][1, 2:].tolist() == [-1, -1]
    for loss in ("listwise", "pairwise"):
        value, metrics = ranked_loss(loss)(model, batch)
        assert value.dim() == 0 and torch.isfinite(value) and 0 <= metrics["accuracy"] <= 1
    # listwise == pairwise over the same pairs (both are mean −log σ(r_better − r_worse))
    model.eval()
    torch.testing.assert_close(ranked_loss("listwise")(model, batch)[0], ranked_loss("pairwise")(model, batch)[0])


def test_read_ranked_sets_names_the_file_row_and_field(tmp_path):
    good = S.write_jsonl(S.ranked_sets(2, seed=0), str(tmp_path))
    rows = read_ranked_sets(good)
    assert len(rows) == 2 and len(rows[0].images) == 4
    with open(good) as f:
        lines = f.read().splitlines()
    cases = {
        "{not json": "line 2 .*not valid JSON",
        json.dumps({"prompt": "", "images": ["a", "b"], "ranks": [0, 1]}): "row 1: field 'prompt'",
        json.dumps({"prompt": "x", "images": ["images/00000_0.png"], "ranks": [0]}): "row 1: field 'images'.* >= 2 paths",
        json.dumps({"prompt": "x", "images": json.loads(lines[0])["images"], "ranks": [0, 1]}):
            "row 1: field 'ranks' must be 4 integers",
        json.dumps({"prompt": "x", "images": ["nope.png", "nope2.png"], "ranks": [0, 1]}): "row 1: .*does not exist",
    }
    for bad, match in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(lines[0] + "\n" + bad + "\n")
        with pytest.raises(DataError, match=f"bad.jsonl.*{match}"):
            read_ranked_sets(str(path))


def test_pairwise_mode_trains_resumes_and_saves(tmp_path):
    cfg = ImageRewardTrainConfig(n_train=64, n_eval=16, embed_dim=16, loss="pairwise", normalize_on=32)
    model, history = train_image_reward(cfg, quiet(tmp_path / "run", max_steps=6, batch_size=8, lr=3e-3, save_every=3))
    assert len(history) == 6 and "eval_pairwise_accuracy" in history[-1]
    loaded = mmreward.load(str(tmp_path / "run"))  # a run folder: its model/
    x = [ImagePrompt("a red circle on the left", img) for img in torch.rand(2, 3, 32, 32)]
    torch.testing.assert_close(loaded.score(x), model.score(x))
    # resume: asking for more steps continues from the snapshot instead of starting over
    _, more = train_image_reward(cfg, quiet(tmp_path / "run", max_steps=8, batch_size=8, lr=3e-3))
    assert [r["step"] for r in more] == list(range(1, 9))
    assert [r["loss"] for r in more[:6]] == [r["loss"] for r in history]


@pytest.mark.learning
def test_scorer_from_scratch_reaches_95_percent_held_out_pairwise_accuracy(tmp_path):
    t0 = time.time()
    # 400 steps x 16 fresh sets (6400 sets, each seen once), conv backbone, listwise loss, no head dropout
    cfg = ImageRewardTrainConfig(n_train=6400, n_eval=200, embed_dim=32, head_dropout=False, normalize_on=0)
    _, history = train_image_reward(cfg, quiet(tmp_path / "run", max_steps=400, batch_size=16, lr=4e-3,
                                                     warmup_steps=20))
    acc = history[-1]["eval_pairwise_accuracy"]
    print(f"held-out pairwise accuracy {acc:.3f}, top-1 {history[-1]['eval_top1_accuracy']:.3f}, "
          f"{time.time() - t0:.1f} s")
    assert acc >= 0.95
    # an untrained scorer is at chance on the same held-out sets
    held = [RankedExample(s.prompt, s.images, s.ranks) for s in S.ranked_sets(200, 4, 32, seed=1)]
    assert evaluate_image_reward(small_model(), held)["pairwise_accuracy"] < 0.7


def test_same_seed_same_model_and_bad_device_is_refused(tmp_path):
    cfg = ImageRewardTrainConfig(n_train=16, n_eval=4, embed_dim=8, normalize_on=8)
    a, _ = train_image_reward(cfg, quiet(tmp_path / "a", max_steps=2, batch_size=4, seed=3))
    b, _ = train_image_reward(cfg, quiet(tmp_path / "b", max_steps=2, batch_size=4, seed=3))
    c, _ = train_image_reward(cfg, quiet(tmp_path / "c", max_steps=2, batch_size=4, seed=4))
    sa, sb, sc = (m.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    bad = ImageRewardTrainConfig(n_train=16, device="cuda:7" if torch.cuda.is_available() else "cuda")
    with pytest.raises(DeviceError, match="cuda"):
        train_image_reward(bad, quiet(tmp_path / "d", max_steps=1, batch_size=4))


def test_configs_given_the_other_way_round_are_named(tmp_path):
    cfg, tc = ImageRewardTrainConfig(n_train=16), quiet(tmp_path / "run", max_steps=1, batch_size=4)
    with pytest.raises(TypeError, match="cfg must be an ImageRewardTrainConfig, got TrainConfig"):
        train_image_reward(tc, cfg)
    with pytest.raises(TypeError, match="train_cfg must be a TrainConfig, got dict"):
        train_image_reward(cfg, {"max_steps": 1})
    assert not (tmp_path / "run").exists()
