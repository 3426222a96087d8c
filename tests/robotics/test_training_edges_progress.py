"""Progress-ranker and VQ-Diffusion trainers: settings and data that used to be misread or fail late."""
import numpy as np
import pytest
import torch

from mmreward.robotics.reward.progress import ProgressConfig, train_progress
from mmreward.robotics.video.vq_diffusion import VQDiffusionConfig, train_video_model

TINY_RANKER = dict(image_size=16, channels=(4, 8), hidden_dim=8, batch_size=4, min_gap=2)
TINY_VIDEO = dict(num_codes=8, token_shape=(2, 3), num_steps=12, dim=16, depth=1, heads=2, context_dim=16)


def _episodes(n, T=12):
    out = []
    for _ in range(n):
        f = np.zeros((T, 16, 16, 3), np.uint8)
        for t in range(T):
            f[t, :, t:t + 3] = 255  # a bar moving right: later frames are further on
        out.append(f)
    return out


@pytest.mark.parametrize("bad", [-0.5, 1.0, 2.0, float("nan"), "0.1", True])
def test_progress_val_fraction_out_of_range_is_named(bad):
    """Before: -0.5 held out round(-1.5) = -2 → all but the last 2 of 3 episodes (order[:-2]) and trained
    on the rest; 1.0 read as "no training episode is longer than min_gap"; NaN failed in int()."""
    with pytest.raises(ValueError, match="val_fraction must be a number in \\[0, 1\\)"):
        train_progress(_episodes(3), ProgressConfig(**TINY_RANKER), None, steps=1, val_fraction=bad,
                       show_progress=False)


def test_progress_val_fraction_zero_trains_on_every_episode():
    _, metrics = train_progress(_episodes(3), ProgressConfig(**TINY_RANKER), None, steps=2, val_fraction=0.0,
                                show_progress=False, stop_at=2)
    assert (metrics["train_episodes"], metrics["val_episodes"]) == (3, 0)


def _windows(n=10):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 8, (n, 2, 6), generator=g), torch.randint(0, 8, (n, 6), generator=g)


@pytest.mark.parametrize("case, error", [
    ("high", r"target has token ids in \[8, 15\], outside \[0, 8\).*num_codes=8"),
    ("one bad row", r"history has token ids in \[0, 9\], outside \[0, 8\)"),
    ("empty", "holds no \\(history, target\\) window"),
    ("float", "target must be integer token ids"),
    ("short L", r"target must have shape \[10, 6\]"),
])
def test_video_training_data_is_checked_whole_before_the_run_folder(tmp_path, case, error):
    """Before: each batch was checked when drawn, so one bad window failed at whichever step first
    drew it (after the run folder was made), and no window at all read as a batch-size error."""
    hist, tgt = _windows()
    data = {"high": (hist, tgt + 8), "empty": (hist[:0], tgt[:0]), "float": (hist, tgt.float()),
            "short L": (hist, tgt[:, :4])}.get(case)
    if case == "one bad row":
        hist[7, 1, 3] = 9
        data = (hist, tgt)
    with pytest.raises((ValueError, TypeError), match=error):
        train_video_model(data, VQDiffusionConfig(**TINY_VIDEO), str(tmp_path / "run"), steps=2, batch_size=2,
                          progress_bar=False)
    assert not (tmp_path / "run").exists()


def test_robotics_trainers_refuse_to_continue_with_other_settings_or_data(tmp_path):
    """Before: another lr was silently replaced by the snapshot's optimizer state, other data or min_gap
    went on from the old weights, and another model size failed with a state-dict size-mismatch dump."""
    from mmreward.robotics.codec.vqgan import VQGANConfig, train_vqgan

    hist, tgt = _windows()
    cfg, kw = VQDiffusionConfig(**TINY_VIDEO), dict(steps=3, batch_size=4, progress_bar=False)
    train_video_model((hist, tgt), cfg, str(tmp_path / "v"), stop_at=2, **kw)
    for change, named in [(dict(lr=1e-2), "train.lr: saved 0.00045, now 0.01"),
                          (dict(config=VQDiffusionConfig(**{**TINY_VIDEO, "num_steps": 20})), "model.num_steps"),
                          (dict(data=(hist, (tgt + 1) % 8)), "data.sha256")]:
        args = {**kw, **change}
        with pytest.raises(ValueError, match=f"other (settings|training data).*{named}"):
            train_video_model(args.pop("data", (hist, tgt)), args.pop("config", cfg), str(tmp_path / "v"), **args)
    # the same settings continue (log / snapshot intervals and the length may change)
    train_video_model((hist, tgt), cfg, str(tmp_path / "v"), log_every=1, ckpt_every=1, **{**kw, "steps": 4})

    ranker = ProgressConfig(**TINY_RANKER)
    train_progress(_episodes(3), ranker, str(tmp_path / "p"), steps=3, stop_at=2, show_progress=False)
    for eps, config, named in [(_episodes(3), ProgressConfig(**{**TINY_RANKER, "min_gap": 4}), "model.min_gap"),
                               (_episodes(4), ranker, r"other training data \(examples added, removed or changed: "
                                                                 r"data.items: saved 3, now 4")]:
        with pytest.raises(ValueError, match=f"other (settings|training data).*{named}"):
            train_progress(eps, config, str(tmp_path / "p"), steps=3, show_progress=False)
    _, metrics = train_progress(_episodes(3), ranker, str(tmp_path / "p"), steps=3, show_progress=False, stop_at=3)
    assert metrics["steps"] == 3

    frames = torch.randint(0, 255, (6, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    codec = dict(image_size=32, channels=(8, 8, 16), latent_dim=8, num_codes=16)
    train_vqgan(frames, VQGANConfig(**codec), str(tmp_path / "c"), steps=2, stop_at=1, batch_size=4, progress_bar=False)
    with pytest.raises(ValueError, match="other settings.*model.num_codes: saved 16, now 32"):
        train_vqgan(frames, VQGANConfig(**{**codec, "num_codes": 32}), str(tmp_path / "c"), steps=2, batch_size=4,
                    progress_bar=False)
    train_vqgan(frames, VQGANConfig(**codec), str(tmp_path / "c"), steps=2, batch_size=4, progress_bar=False)


def test_data_digest_covers_every_tensor_kind():
    from mmreward.robotics.training import data_digest

    parts = [torch.tensor(3), torch.zeros(0), torch.ones(2, 3, dtype=torch.bfloat16), torch.tensor([True])]
    assert data_digest(parts) == data_digest([p.clone() for p in parts])
    assert data_digest(parts)["items"] == 4
    assert data_digest([torch.tensor(3)]) != data_digest([torch.tensor(4)])
    assert data_digest([torch.zeros(2, 3)]) != data_digest([torch.zeros(3, 2)])  # the shape counts


@pytest.mark.parametrize("field,value,named", [
    ("lr", 0.0, "lr must be a finite number > 0"), ("lr", -1e-3, "lr must be a finite number >= 0"),
    ("weight_decay", -1.0, "weight_decay"), ("hidden_dim", 0, "hidden_dim must be an integer >= 1"),
    ("min_gap", 2.5, "min_gap must be an integer"), ("channels", (8, 0), "channels must be a non-empty list"),
    ("goal_conditioned", "yes", "goal_conditioned must be true or false")])
def test_progress_config_fields_are_checked(field, value, named):
    """Before: lr 0 / negative trained nothing or against the ranking without a word, hidden_dim 0 failed
    inside nn.Linear, min_gap 2.5 was used as a float gap."""
    from mmreward.robotics.reward.progress import ProgressConfig, ProgressModel

    with pytest.raises(ValueError, match=f"ProgressConfig.{named}"):
        ProgressModel(ProgressConfig(**{field: value}))


@pytest.mark.parametrize("kw", [dict(seed=-1), dict(log_every=-1), dict(steps=2.5)])
def test_progress_training_counts_are_named(kw):
    """Before: seed -1 failed in numpy with "expected non-negative integer", log_every -1 went unchecked."""
    (name, value), = kw.items()
    with pytest.raises(ValueError, match=f"train_progress: {name} must be an integer >= ., got {value!r}"):
        train_progress(_episodes(3), ProgressConfig(**TINY_RANKER), None, show_progress=False, **{"steps": 1, **kw})
