"""Progress ranker (robotics/reward/progress.py): it learns time order from synthetic videos whose
progress is exact, its statistics calibrate to the expert scale, it round-trips through
save / load, and it mixes into DiffusionReward."""
import json
import os

import numpy as np
import pytest
import torch

from mmreward.robotics.reward.progress import ProgressConfig, ProgressModel, pair_accuracy, train_progress

SIZE = 32


def sliding_square(start: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """A video [T, 32, 32, 3] of a bright 6×6 square moving right one pixel per frame from column
    ``start`` on a noisy background: progress is exactly the square's column."""
    frames = rng.integers(0, 40, (length, SIZE, SIZE, 3)).astype(np.uint8)
    row = int(rng.integers(4, SIZE - 10))
    for t in range(length):
        c = start + t
        frames[t, row:row + 6, c:c + 6] = 230
    return frames


def videos(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [sliding_square(int(rng.integers(0, 4)), 22, rng) for _ in range(n)]


SMALL = dict(image_size=SIZE, channels=(8, 16, 16), hidden_dim=32, min_gap=2, batch_size=32, lr=2e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("progress"))
    torch.manual_seed(0)
    model, metrics = train_progress(videos(12, 0), ProgressConfig(**SMALL), out, steps=150, show_progress=False)
    return model, metrics, out


def test_ranker_learns_time_order_on_held_out_videos(trained):
    model, metrics, _ = trained
    held_out = [torch.from_numpy(v) for v in videos(6, 99)]
    acc = pair_accuracy(model, held_out, min_gap=2)
    assert acc >= 0.9, (acc, metrics)
    assert metrics["val_pair_acc"] >= 0.85, metrics
    assert metrics["val_time_spearman"] >= 0.8, metrics
    # calibrated scale: first frames ≈ 0, last frames ≈ 1
    p = torch.stack([model.progress(v) for v in held_out])  # (6, T)
    assert abs(float(p[:, 0].mean())) < 0.25 and abs(float(p[:, -1].mean()) - 1) < 0.25, p[:, [0, -1]]
    z = torch.cat([model(v) for v in held_out])
    assert abs(float(z.mean())) < 0.5 and 0.5 < float(z.std()) < 1.5


def test_save_load_gives_identical_scores(trained):
    model, metrics, out = trained
    assert os.path.isfile(os.path.join(out, "model", "model.safetensors"))
    assert json.load(open(os.path.join(out, "metrics.json")))["steps"] == 150
    rows = open(os.path.join(out, "metrics.csv")).read().splitlines()
    assert rows[0] == "step,loss,pair_acc" and len(rows) == 1 + 150
    loaded = ProgressModel.from_pretrained(os.path.join(out, "model"))
    v = torch.from_numpy(videos(1, 5)[0])
    assert torch.equal(loaded(v), model(v))
    assert torch.equal(loaded.statistics, model.statistics)


def test_training_resumes_exactly(tmp_path):
    small = ProgressConfig(**{**SMALL, "batch_size": 8})
    full, full_metrics = train_progress(videos(4, 0), small, str(tmp_path / "a"), steps=6, show_progress=False)
    _, partial = train_progress(videos(4, 0), small, str(tmp_path / "b"), steps=6, stop_at=4, show_progress=False)
    assert partial["steps"] == 4 and "stat_mean" not in partial and not (tmp_path / "b" / "model").exists()
    resumed, metrics = train_progress(videos(4, 0), small, str(tmp_path / "b"), steps=6, show_progress=False)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    assert {k: v for k, v in metrics.items() if k != "seconds"} == {
        k: v for k, v in full_metrics.items() if k != "seconds"}
    model, _ = train_progress(videos(4, 0), small, steps=2, show_progress=False)  # no out_dir: nothing written
    assert model.statistics[2] > 0


def test_bad_input_errors():
    m = ProgressModel(ProgressConfig(**SMALL))
    with pytest.raises(TypeError, match="uint8"):
        m.raw_score(torch.zeros(3, SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="32x32"):
        m.raw_score(torch.zeros(3, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="fit_statistics"):
        m(torch.zeros(3, SIZE, SIZE, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="min_gap"):
        train_progress([np.zeros((2, SIZE, SIZE, 3), np.uint8)], ProgressConfig(**SMALL), steps=1, show_progress=False)
    with pytest.raises(ValueError, match="divisible"):
        ProgressConfig(image_size=30, channels=(8, 8)).validate()


def test_untrained_statistics_refuse_a_ranker_that_has_not_learned():
    m = ProgressModel(ProgressConfig(**SMALL))
    # every frame identical → last frames cannot score above first frames
    with pytest.raises(ValueError, match="not learned"):
        m.fit_statistics([np.zeros((5, SIZE, SIZE, 3), np.uint8)])


def test_one_frame_expert_episodes_are_named_not_blamed_on_the_ranker():
    m = ProgressModel(ProgressConfig(**SMALL))
    eps = [np.random.default_rng(k).integers(0, 256, (T, SIZE, SIZE, 3), dtype=np.uint8) for k, T in enumerate((4, 1))]
    with pytest.raises(ValueError, match="episode 1 has 1 frame: .*at least 2 frames"):
        m.fit_statistics(eps)
    assert int(m.statistics[2]) == 0  # nothing stored


def test_diffusion_reward_adds_the_progress_term_and_saves_it(trained, tmp_path):
    from test_diffusion_reward import make_reward

    ranker = trained[0]
    dr = make_reward(rnd=True, progress_scale=2.0)
    ep = torch.from_numpy(videos(1, 7)[0][:9])
    dr.fit_statistics([ep])
    dr.update_rnd(ep)
    base = dr(ep, success=torch.zeros(9))
    dr.set_progress(ranker)
    a = dr.config.expl_scale
    torch.testing.assert_close(dr(ep, success=torch.zeros(9)), base + (1 - a) * 2.0 * ranker(ep))
    dr.save_pretrained(str(tmp_path / "dr"))
    assert json.load(open(tmp_path / "dr" / "config.json"))["has_progress"] is True
    loaded = type(dr).from_pretrained(str(tmp_path / "dr"))
    assert torch.equal(loaded(ep, success=torch.zeros(9)), dr(ep, success=torch.zeros(9)))
    assert torch.equal(loaded.progress.statistics, ranker.statistics)
    with pytest.raises(ValueError, match="no expert statistics"):
        dr.set_progress(ProgressModel(ProgressConfig(**SMALL)))
    with pytest.raises(TypeError, match="ProgressModel"):
        dr.set_progress(object())
    with pytest.raises(ValueError, match="progress_scale"):
        type(dr.config)(progress_scale=float("nan")).validate()


def test_rl_sources_keep_the_paper_rule_unless_asked(trained, tmp_path):
    from test_diffusion_reward import make_reward

    from mmreward.robotics.rl.rewards import make_reward_source

    dr = make_reward(rnd=False, reward_type="relative_likelihood", entropy_estimator="x0_entropy")
    dr.fit_statistics([torch.from_numpy(videos(1, 3)[0])])
    dr.save_pretrained(str(tmp_path / "plain"))
    with pytest.raises(ValueError, match="train-progress"):
        make_reward_source("diffusion-progress", checkpoint=str(tmp_path / "plain"), size=SIZE)
    dr.set_progress(trained[0])
    dr.save_pretrained(str(tmp_path / "with"))
    src = make_reward_source("diffusion-progress", checkpoint=str(tmp_path / "with"), size=SIZE)
    assert src.model.progress is not None
    paper = make_reward_source("diffusion-relative", checkpoint=str(tmp_path / "with"), size=SIZE)
    assert paper.model.progress is None


def _square_folder(folder, seed, n=4, left=False):
    from mmreward.robotics.data.episodes import Episode, episode_entry, save_episode, update_manifest

    entries = []
    for i, frames in enumerate(leftward(n, seed) if left else videos(n, seed)):
        T = len(frames)
        ep = Episode(frames=frames, actions=np.zeros((T - 1, 4), np.float32), rewards=np.zeros(T - 1, np.float32),
                     success=np.zeros(T - 1, bool))
        save_episode(os.path.join(folder, f"e{i}.npz"), ep)
        entries.append(episode_entry(f"e{i}.npz", ep, task="square", policy="expert", noise=0.0, seed=i))
    update_manifest(folder, entries)
    return folder


def test_cli_train_progress_attaches_the_ranker(tmp_path, capsys):
    from test_pipeline_cli import QUIET, train_tiny

    from mmreward.robotics.cli import main

    a, b = _square_folder(str(tmp_path / "a"), 0), _square_folder(str(tmp_path / "b"), 1)
    _, video = train_tiny(a, tmp_path)
    capsys.readouterr()
    ranker = str(tmp_path / "ranker")
    assert main(["train-progress", "--data", f"{a},{b}", "--out", ranker, "--steps", "120", "--attach",
                 os.path.join(video, "reward"), "--progress-scale", "0.5", "--set", "channels=8,16,16",
                 "--set", "hidden_dim=32", "--set", "min_gap=2", "--set", "lr=0.002", *QUIET]) == 0
    out = capsys.readouterr().out
    assert "train-progress: 8 expert episodes" in out and "held-out pair accuracy" in out
    m = json.load(open(os.path.join(ranker, "metrics.json")))
    assert m["train_episodes"] + m["val_episodes"] == 8
    model = ProgressModel.from_pretrained(os.path.join(ranker, "model"))
    assert pair_accuracy(model, [torch.from_numpy(v) for v in videos(4, 50)], min_gap=2) >= 0.85
    ep = os.path.join(a, "e0.npz")
    assert main(["score", "--model", os.path.join(ranker, "reward"), ep, "--json", *QUIET]) == 0
    with_ranker = json.loads(capsys.readouterr().out)
    assert main(["score", "--model", os.path.join(ranker, "reward"), ep, "--json", "--no-ranker", *QUIET]) == 0
    without = json.loads(capsys.readouterr().out)
    assert with_ranker["progress_ranker"] and not without["progress_ranker"]
    frames = torch.from_numpy(videos(4, 0)[0])
    diff = np.array(with_ranker["episodes"][0]["rewards"]) - np.array(without["episodes"][0]["rewards"])
    np.testing.assert_allclose(diff, 0.5 * model(frames).numpy(), atol=1e-4)


def test_clip_bounds_the_sum_so_far_off_frames_cannot_profit_from_progress(trained):
    from test_diffusion_reward import make_reward

    ranker = trained[0]
    dr = make_reward(rnd=False, clip_min=-0.5)
    ep = torch.from_numpy(videos(1, 7)[0][:9])
    dr.fit_statistics([ep])
    dr.set_progress(ranker)
    z = dr.standardize(dr.raw_reward(ep)) + dr.config.progress_scale * ranker(ep)
    torch.testing.assert_close(dr(ep), z.clamp_min(-0.5))


# ----------------------------------------------------------------------------- goal-conditioned ranker
def leftward(n: int, seed: int) -> list[np.ndarray]:
    """The same videos played backwards: the square moves left, a task no training video shows."""
    return [v[::-1].copy() for v in videos(n, seed)]


@pytest.fixture(scope="module")
def goal_ranker(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("goal_progress"))
    torch.manual_seed(0)
    cfg = ProgressConfig(**SMALL, goal_conditioned=True)
    model, metrics = train_progress(videos(12, 0), cfg, out, steps=150, show_progress=False, groups=["right"] * 12)
    return model, metrics, out


def test_goal_conditioned_ranker_follows_the_goal_of_an_unseen_direction(goal_ranker):
    """Trained on rightward videos only; the last frames of two leftward demonstrations make it rank
    unseen leftward videos the right way round, where the unconditioned ranker ranks them backwards."""
    model, metrics, _ = goal_ranker
    assert metrics["val_pair_acc"] >= 0.85 and metrics["val_reversed_pair_acc"] >= 0.85, metrics
    demos_left, test_left = leftward(2, 50), [torch.from_numpy(v) for v in leftward(6, 99)]
    test_right = [torch.from_numpy(v) for v in videos(6, 99)]
    model.set_goal(torch.from_numpy(np.stack([d[-1] for d in demos_left])))
    assert pair_accuracy(model, test_left, min_gap=2) >= 0.9
    assert pair_accuracy(model, test_right, min_gap=2) <= 0.2  # the goal, not the scene, sets the direction
    model.set_goal(torch.from_numpy(np.stack([d[-1] for d in videos(2, 50)])))
    assert pair_accuracy(model, test_right, min_gap=2) >= 0.9
    torch.manual_seed(0)
    plain, _ = train_progress(videos(12, 0), ProgressConfig(**SMALL), steps=150, show_progress=False)
    assert pair_accuracy(plain, test_left, min_gap=2) <= 0.2


def test_goal_conditioned_ranker_scores_against_the_mean_of_its_goals_and_saves_no_goal(goal_ranker):
    model, _, out = goal_ranker
    v = torch.from_numpy(videos(1, 3)[0])
    g = torch.from_numpy(np.stack([w[-1] for w in videos(3, 4)]))
    per_goal = []
    for k in range(3):
        model.set_goal(g[k])  # one frame [H, W, 3] is one goal
        per_goal.append(model.raw_score(v))
    model.set_goal(g)
    torch.testing.assert_close(model.raw_score(v, batch_size=4), torch.stack(per_goal).mean(0), rtol=1e-5, atol=1e-5)
    loaded = ProgressModel.from_pretrained(os.path.join(out, "model"))
    assert loaded.config.goal_conditioned and "goal" not in model.state_dict()  # a run-time input
    with pytest.raises(RuntimeError, match="set_goal"):
        loaded(v)
    loaded.set_goal(g)
    assert torch.equal(loaded(v), model(v))
    model.set_goal(None)
    with pytest.raises(RuntimeError, match="set_goal"):
        model.raw_score(v)


def test_goal_conditioned_bad_input_errors(goal_ranker):
    model = goal_ranker[0]
    plain = ProgressModel(ProgressConfig(**SMALL))
    with pytest.raises(ValueError, match="goal-conditioned"):
        plain.set_goal(torch.zeros(1, SIZE, SIZE, 3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        model.set_goal(torch.zeros(1, SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="32x32"):
        model.set_goal(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="one goal set per episode"):
        model.fit_statistics(videos(2, 0), goals=[torch.zeros(1, SIZE, SIZE, 3, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="one goal frame per frame"):
        model.score_pixels(torch.zeros(2, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="groups"):
        train_progress(videos(3, 0), ProgressConfig(**SMALL, goal_conditioned=True), steps=1, show_progress=False,
                       groups=["a"])
    with pytest.raises(ValueError, match="reverse_prob"):
        ProgressConfig(reverse_prob=1.5).validate()


def test_cli_goal_conditioned_ranker_scores_an_unseen_direction_from_demonstrations(tmp_path, capsys):
    from test_pipeline_cli import QUIET

    from mmreward.robotics.cli import main

    a, b = _square_folder(str(tmp_path / "a"), 0), _square_folder(str(tmp_path / "b"), 1)
    demos, test = _square_folder(str(tmp_path / "demos"), 50, n=2, left=True), _square_folder(str(tmp_path / "t"), 99, left=True)
    ranker = str(tmp_path / "ranker")
    assert main(["train-progress", "--data", f"{a},{b}", "--out", ranker, "--steps", "150", "--set", "channels=8,16,16",
                 "--set", "hidden_dim=32", "--set", "min_gap=2", "--set", "lr=0.002", "--set", "goal_conditioned=true",
                 *QUIET]) == 0
    capsys.readouterr()
    model = os.path.join(ranker, "model")
    assert main(["score", "--model", model, test, "--goal", demos, "--json", *QUIET]) == 0
    captured = capsys.readouterr()
    assert "goal: the last frames of 2 episodes" in captured.err
    rho = [np.corrcoef(np.argsort(np.argsort(r["rewards"])), np.arange(len(r["rewards"])))[0, 1]
           for r in json.loads(captured.out)["episodes"]]
    assert min(rho) > 0.8, rho  # later frames of the leftward videos score higher: the goal set the direction
    assert main(["score", "--model", model, test, *QUIET]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give --goal" in err[0]
    plain = str(tmp_path / "plain")
    assert main(["train-progress", "--data", a, "--out", plain, "--steps", "2", "--set", "channels=8,16,16", *QUIET]) == 0
    capsys.readouterr()
    assert main(["score", "--model", os.path.join(plain, "model"), test, "--goal", demos, *QUIET]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scores against a goal" in err[0]


def _edit_statistics(folder, key, values):
    """A hand-edited saved folder: ``key`` of its model.safetensors replaced (no manifest to check against)."""
    from safetensors.torch import load_file, save_file

    w = load_file(os.path.join(folder, "model.safetensors"))
    w[key] = torch.tensor(values, dtype=torch.float64)
    save_file(w, os.path.join(folder, "model.safetensors"))
    if os.path.exists(os.path.join(folder, "manifest.json")):
        os.unlink(os.path.join(folder, "manifest.json"))


@pytest.mark.parametrize("values,named", [
    ([0.0, 0.0, 10, -1.0, 1.0], "std = 0.0"), ([0.0, -2.0, 10, -1.0, 1.0], "std = -2.0"),
    ([0.0, float("inf"), 10, -1.0, 1.0], "std = inf"), ([float("nan"), 1.0, 10, -1.0, 1.0], "mean = nan"),
    ([0.0, 1.0, -3, -1.0, 1.0], "frames = -3.0"), ([0.0, 1.0, 2.5, -1.0, 1.0], "frames = 2.5"),
    ([0.0, 1.0, 10, 1.0, 1.0], "last = 1.0 <= first = 1.0")])
def test_a_saved_rankers_statistics_are_checked_at_load(tmp_path, values, named):
    """Before: a std of 0 / inf / < 0, a negative frame count or first = last loaded silently and
    scored every frame inf, 0, with its sign flipped, or progress() -inf."""
    from mmreward.core.checkpoint import CheckpointError

    m = ProgressModel(ProgressConfig(**SMALL))
    m.statistics.copy_(torch.tensor([0.1, 2.0, 10, -1.0, 1.0], dtype=torch.float64))
    m.save_pretrained(str(tmp_path / "ok"))
    assert ProgressModel.from_pretrained(str(tmp_path / "ok")).statistics.tolist() == [0.1, 2.0, 10, -1.0, 1.0]
    _edit_statistics(str(tmp_path / "ok"), "statistics", values)
    with pytest.raises(CheckpointError, match=rf"model.safetensors: the ranker's 'statistics' .*{named}"):
        ProgressModel.from_pretrained(str(tmp_path / "ok"))
    # an unfitted ranker (frames 0) loads: its statistics are refused at use instead
    _edit_statistics(str(tmp_path / "ok"), "statistics", [0.0, 0.0, 0, 0.0, 0.0])
    assert int(ProgressModel.from_pretrained(str(tmp_path / "ok")).statistics[2]) == 0


def test_ranker_and_rnd_take_numpy_frames_and_lists_of_frames():
    """Before: ProgressModel(frames) / RND(frames) with a numpy array (what score and Episode take)
    raised 'takes uint8 frames (a torch.Tensor)'."""
    from mmreward.robotics.reward import RND, RNDConfig

    m = ProgressModel(ProgressConfig(**SMALL))
    m.statistics.copy_(torch.tensor([0.1, 2.0, 10, -1.0, 1.0], dtype=torch.float64))
    rnd = RND(RNDConfig(image_size=SIZE, channels=(4, 8, 8), feature_dim=16, hidden_dim=16))
    ep = videos(1, 3)[0][:5]
    for model in (m, rnd):
        want = model(torch.from_numpy(ep))
        assert torch.equal(model(ep), want) and torch.equal(model(list(ep)), want)
        with pytest.raises(TypeError, match=r"takes uint8 frames \[T, H, W, 3\], got torch.float32"):
            model(ep.astype(np.float32))
