"""A user who needs bit-reproducible runs: things that should not matter (how often the run evaluates, which
held-out data it evaluates on) must not change the trained weights."""
import json
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from mmreward.core.trainer import Trainer, TrainConfig


def _data(n=32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return [(x[i], x[i].sum().reshape(1)) for i in range(n)]


def _collate(examples):
    return {"x": torch.stack([e[0] for e in examples]), "y": torch.stack([e[1] for e in examples])}


def _loss(model, batch):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean(), {}


def _sampling_eval(model):
    """An eval_fn that draws from the global RNGs (sampled generations, a random subset of the held-out rows)."""
    x = torch.randn(4, 6)
    random.random()
    np.random.rand()
    return {"score": float(model(x).mean())}


def _run(folder, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.5), nn.Linear(16, 1))  # dropout: draws every step
    config = TrainConfig(output_dir=str(folder), max_steps=6, batch_size=4, lr=1e-2, progress=False,
                         tensorboard=False, plot=False, log_every=0, **kw)
    history = Trainer(model, config, _data(), _collate, _loss, eval_fn=_sampling_eval).fit()
    return model.state_dict(), [row["loss"] for row in history]


def test_eval_every_changes_no_step_even_when_the_eval_fn_draws_random_numbers(tmp_path):
    """Before: an eval_fn that drew from the global RNGs moved the dropout / data stream of every later step, so
    eval_every (documented as changing no step; a resume may change it) gave other weights."""
    rare, rare_losses = _run(tmp_path / "rare", eval_every=0)
    often, often_losses = _run(tmp_path / "often", eval_every=1)
    assert rare_losses == often_losses
    assert all(torch.equal(rare[k], often[k]) for k in rare)


def test_a_resume_with_another_eval_every_is_the_straight_run(tmp_path):
    straight, _ = _run(tmp_path / "straight", eval_every=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    base = dict(output_dir=str(tmp_path / "cont"), max_steps=6, batch_size=4, lr=1e-2, progress=False,
                tensorboard=False, plot=False, log_every=0)
    Trainer(model, TrainConfig(**base, eval_every=2), _data(), _collate, _loss, eval_fn=_sampling_eval).fit(stop_at=3)
    torch.manual_seed(123)  # a new process: whatever state it is in, the snapshot's RNGs are restored
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    Trainer(model, TrainConfig(**base, eval_every=1), _data(), _collate, _loss, eval_fn=_sampling_eval).fit()
    resumed = model.state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


# ------------------------------------------------------------------ vision train: the held-out data
def _png(path, seed):
    from PIL import Image

    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)


def _ranked(folder, name, prompts, n):
    rows, seed = [], {"train": 0, "evalA": 100, "evalB": 200}[name]
    for i in range(n):
        images = []
        for k in range(3):
            rel = f"{name}{i}_{k}.png"
            _png(folder / rel, seed + 3 * i + k)
            images.append(rel)
        rows.append({"prompt": prompts[i % len(prompts)], "images": images, "ranks": [0, 1, 2]})
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_vision_train_weights_do_not_depend_on_the_held_out_prompts(tmp_path):
    """Before: the conv / clip-tiny vocabulary was built from the training AND held-out prompts, so evaluating
    on a held-out file with other words gave a larger embedding table, other initial weights (the RNG draws
    after it shift) and another trained scorer from the same command and seed."""
    pytest.importorskip("PIL")
    from mmreward.cli import main

    train = _ranked(tmp_path, "train", ["a red cat", "a blue dog"], 8)
    same_words = _ranked(tmp_path, "evalA", ["a red cat"], 2)
    new_words = _ranked(tmp_path, "evalB", ["zebra xylophone quokka"], 2)
    common = ["vision", "train", "--data", train, "--embed-dim", "8", "--image-size", "8", "--max-steps", "2",
              "--batch-size", "4", "--lr", "1e-3", "--seed", "0", "--no-progress", "--no-tensorboard", "--no-plot",
              "--log-every", "0"]
    assert main([*common, "--eval-data", same_words, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--eval-data", new_words, "--out", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "model" / "model.safetensors").read_bytes()
    b = (tmp_path / "b" / "model" / "model.safetensors").read_bytes()
    assert a == b
    with open(tmp_path / "a" / "metrics.csv") as fa, open(tmp_path / "b" / "metrics.csv") as fb:
        assert [r.split(",")[:2] for r in fa] == [r.split(",")[:2] for r in fb]  # the same losses step by step



def test_vision_train_resume_refuses_images_regenerated_under_the_same_names(tmp_path, capsys):
    """Before: the run's data digest was the data file's bytes only, so a resume after the images it names
    were regenerated (same file names) went on silently on other training data; a moved copy still resumes."""
    pytest.importorskip("PIL")
    import shutil

    from mmreward.cli import main

    data = tmp_path / "data"
    data.mkdir()
    _ranked(data, "train", ["a red cat"], 4)
    common = ["vision", "train", "--embed-dim", "8", "--image-size", "8", "--batch-size", "4", "--seed", "0",
              "--no-progress", "--no-tensorboard", "--no-plot", "--log-every", "0", "--out", str(tmp_path / "run")]
    assert main([*common, "--data", str(data / "train.jsonl"), "--max-steps", "1"]) == 0
    shutil.move(str(data), str(tmp_path / "moved"))  # the same files elsewhere: the same data
    assert main([*common, "--data", str(tmp_path / "moved" / "train.jsonl"), "--max-steps", "2"]) == 0
    _png(tmp_path / "moved" / "train0_0.png", 999)  # one image regenerated: other data
    capsys.readouterr()
    assert main([*common, "--data", str(tmp_path / "moved" / "train.jsonl"), "--max-steps", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.images_sha256" in err, err


# ------------------------------------------------------------------ train-rl: num_seed_frames on resume
def test_train_rl_resume_refuses_num_seed_frames_that_move_the_first_update(tmp_path, monkeypatch):
    """Before: a resume with another num_seed_frames was taken silently; when the run had not passed the new
    value, the agent stopped (or started) updating where the straight run did not: other weights, no word."""
    import mmreward.robotics.envs as envs
    from mmreward.robotics.rl import DrQV2Config, RLConfig, train_rl

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(__file__)), "robotics"))
    from test_user_visual_rl import _StubEnv  # a pixel env without MuJoCo

    monkeypatch.setattr(envs, "make_env", _StubEnv)
    agent = DrQV2Config(hidden_dim=8, feature_dim=4, num_expl_steps=0)

    def config(**kw):
        base = dict(task="metaworld/door-open-v3", reward="sparse", out=str(tmp_path / "rl"), num_seed_frames=0,
                    eval_every_frames=0, num_eval_episodes=1, episode_steps=4, batch_size=4, nstep=1,
                    save_video=False, tensorboard=False, quiet=True, size=16)
        return RLConfig(**{**base, **kw})

    assert train_rl(config(num_train_frames=16), agent)["frames"] == 16  # 8-frame episodes
    with pytest.raises(ValueError, match=r"num_seed_frames: saved 0, now 20; the run is at frame 16"):
        train_rl(config(num_train_frames=24, num_seed_frames=20), agent)
    # a value the run is already past changes no update still to come: accepted
    assert train_rl(config(num_train_frames=24, num_seed_frames=8), agent)["frames"] == 24


def test_a_resume_with_another_cpu_thread_count_says_it_is_not_bit_for_bit(tmp_path):
    """Before: a run resumed on a machine with another core count (torch uses every core by default) silently
    went on with other float rounding, so its weights differed from the straight run's in the last bits."""
    import warnings

    base = dict(output_dir=str(tmp_path / "run"), max_steps=4, batch_size=4, lr=1e-2, progress=False,
                tensorboard=False, plot=False, log_every=0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model = nn.Sequential(nn.Linear(6, 16), nn.Linear(16, 1))
        Trainer(model, TrainConfig(**base), _data(), _collate, _loss).fit(stop_at=2)
        with warnings.catch_warnings():  # the same thread count: continued without a word
            warnings.simplefilter("error")
            Trainer(model, TrainConfig(**base), _data(), _collate, _loss).fit(stop_at=3)
        torch.set_num_threads(2)
        with pytest.warns(UserWarning, match=r"resumes at step 3 with 2 CPU threads, its steps so far ran with 1"):
            Trainer(model, TrainConfig(**base), _data(), _collate, _loss).fit()
    finally:
        torch.set_num_threads(before)
