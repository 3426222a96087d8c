"""DrQ-v2 pieces: schedule, augmentation, noise, replay n-step sampling, and a learning test on a
pixel task with exact rewards."""
import numpy as np
import pytest
import torch

from mmreward.core.checkpoint import load_state, save_state
from mmreward.robotics.rl.drqv2 import DrQV2Agent, DrQV2Config, clipped_noise_action, random_shift, schedule
from mmreward.robotics.rl.replay import EpisodeRecord, ReplayBuffer, stack_frames


def test_schedule():
    assert schedule("0.2", 123) == pytest.approx(0.2)
    assert schedule("linear(1.0,0.1,100)", 0) == pytest.approx(1.0)
    assert schedule("linear(1.0,0.1,100)", 50) == pytest.approx(0.55)
    assert schedule("linear(1.0,0.1,100)", 1000) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule("cosine(1,2)", 0)
    with pytest.raises(ValueError, match="unknown schedule"):
        DrQV2Agent((3, 32, 32), 2, DrQV2Config(stddev_schedule="exp(1)"))


@pytest.mark.parametrize("field, value, message", [
    ("hidden_dim", 0, "hidden_dim must be >= 1, got 0"), ("feature_dim", -2, "feature_dim must be >= 1, got -2"),
    ("lr", 0.0, "lr must be a finite number > 0, got 0.0"), ("lr", float("nan"), "lr must be a finite number > 0"),
    ("discount", 1.5, r"discount must be in \[0, 1\], got 1.5"), ("stddev_clip", -0.1, "stddev_clip must be >= 0"),
    ("num_expl_steps", -1, "num_expl_steps must be >= 0, got -1"), ("augment_pad", -4, "augment_pad must be >= 0"),
    ("critic_target_tau", 0.0, r"critic_target_tau must be in \(0, 1\]"),
])
def test_agent_config_errors_name_the_field_and_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        DrQV2Config(**{field: value}).validate()
    DrQV2Config().validate()


def test_random_shift_is_an_integer_crop_of_the_padded_image():
    x = torch.arange(2 * 3 * 9 * 11, dtype=torch.float32).reshape(2, 3, 9, 11)
    g = torch.Generator().manual_seed(0)
    out = random_shift(x, 4, g)
    off = torch.randint(0, 9, (2, 2), generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="replicate")
    for b in range(2):
        dy, dx = off[b].tolist()
        torch.testing.assert_close(out[b], padded[b, :, dy:dy + 9, dx:dx + 11])
    assert random_shift(x, 0) is x


def test_clipped_noise_stays_in_range_and_passes_gradient():
    mu = torch.zeros(1000, 3, requires_grad=True)
    a = clipped_noise_action(mu, std=5.0, clip=0.3)
    assert a.abs().max() <= 0.3 + 1e-6
    a.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    b = clipped_noise_action(torch.full((100, 2), 0.99), std=1.0, clip=None)
    assert b.abs().max() < 1.0


def test_act_explores_uniformly_then_follows_schedule():
    agent = DrQV2Agent((3, 32, 32), 2, DrQV2Config(hidden_dim=32, num_expl_steps=10, stddev_schedule="0.0"))
    obs = np.zeros((3, 32, 32), np.uint8)
    mean = agent.act(obs, 100, eval_mode=True)
    torch.testing.assert_close(agent.act(obs, 100, eval_mode=False), mean)  # std 0 after exploration
    early = torch.stack([agent.act(obs, 0, eval_mode=False) for _ in range(200)])
    assert early.min() < -0.8 and early.max() > 0.8  # uniform in [-1, 1]
    with pytest.raises(ValueError, match="observation shape"):
        agent.act(np.zeros((3, 16, 16), np.uint8), 0, eval_mode=True)


def _episode(T, h=8, a=2, reward=None, seed=0):
    rng = np.random.default_rng(seed)
    frames = np.zeros((T + 1, h, h, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(T + 1)  # frame id readable from the pixels
    r = np.arange(T, dtype=np.float32) if reward is None else reward
    return EpisodeRecord(frames=frames, actions=rng.uniform(-1, 1, (T, a)).astype(np.float32), rewards=r,
                         env_rewards=np.zeros(T, np.float32), success=np.zeros(T, bool))


def test_replay_nstep_targets_and_stacks():
    rb = ReplayBuffer(1000, frame_stack=3, nstep=3, discount=0.5, seed=0)
    rb.add(_episode(10))
    batch = rb.sample(64)
    assert batch["obs"].shape == (64, 9, 8, 8) and batch["obs"].dtype == torch.uint8
    t = batch["obs"][:, 6, 0, 0].long()  # newest frame of the stack = step t
    assert int(t.max()) <= 10 - 3
    # frames t-2, t-1, t (clamped at 0) and next stack ending at t+3
    torch.testing.assert_close(batch["obs"][:, 0, 0, 0].long(), (t - 2).clamp(min=0))
    torch.testing.assert_close(batch["next_obs"][:, 6, 0, 0].long(), t + 3)
    expected = t.float() + 0.5 * (t + 1).float() + 0.25 * (t + 2).float()  # rewards r_t = t
    torch.testing.assert_close(batch["reward"], expected)
    torch.testing.assert_close(batch["discount"], torch.full((64,), 0.125))


def test_replay_capacity_memory_and_errors(tmp_path):
    rb = ReplayBuffer(25, nstep=3)
    with pytest.raises(RuntimeError, match="no episode"):
        rb.sample(4)
    for s in range(4):
        rb.add(_episode(10, seed=s))
    assert len(rb) == 20 and len(rb.episodes) == 2  # oldest dropped
    assert rb.nbytes() == sum(e.nbytes() for e in rb.episodes) > 2 * 11 * 8 * 8 * 3
    bad = _episode(5)
    bad.rewards[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rb.add(bad)
    with pytest.raises(ValueError, match="frames must be uint8"):
        rb.add(EpisodeRecord(np.zeros((5, 8, 8, 3), np.float32), np.zeros((4, 2), np.float32), np.zeros(4, np.float32),
                             np.zeros(4, np.float32), np.zeros(4, bool)))
    shared = _episode(6, seed=9)
    shared.rewards = shared.env_rewards  # what a reward source returning the env's array gives
    rb.add(shared)
    assert not np.shares_memory(rb.episodes[-1].rewards, rb.episodes[-1].env_rewards)
    st = rb.state()
    rb2 = ReplayBuffer(25, nstep=3)
    rb2.load(st)
    torch.testing.assert_close(rb.sample(8), rb2.sample(8))
    save_state(str(tmp_path / "snap"), st)  # a snapshot of it saves and loads
    rb3 = ReplayBuffer(25, nstep=3)
    rb3.load(load_state(str(tmp_path / "snap")))
    rb2.rng = np.random.default_rng(0)
    rb3.rng = np.random.default_rng(0)
    torch.testing.assert_close(rb2.sample(8), rb3.sample(8))
    arr = np.arange(5, dtype=np.float32)  # the checkpoint layer itself copes with aliased arrays too
    save_state(str(tmp_path / "alias"), {"a": arr, "b": arr, "c": arr[1:]})
    back = load_state(str(tmp_path / "alias"))
    assert np.array_equal(np.asarray(back["b"]), arr) and np.array_equal(np.asarray(back["c"]), arr[1:])
    assert stack_frames(_episode(3).frames, 0, 2).shape == (6, 8, 8)


def test_replay_store_writes_each_episode_once_and_snapshots_only_serials(tmp_path):
    store = tmp_path / "replay"
    rb = ReplayBuffer(25, nstep=3, store_dir=str(store), seed=3)
    eps = [_episode(10, seed=s, reward=np.full(10, s, np.float32)) for s in range(4)]
    for e in eps:
        rb.add(e)
    assert (rb.first_serial, rb.next_serial, len(rb.episodes)) == (2, 4, 2)  # two oldest evicted
    assert sorted(p.name for p in store.iterdir()) == [f"episode_{i:07d}.npz" for i in range(4)]
    st = rb.state()
    save_state(str(tmp_path / "snap"), st)
    assert (tmp_path / "snap.safetensors").stat().st_size < 1000  # no frames in the snapshot
    assert rb.prune_store() == 2 and sorted(p.name for p in store.iterdir()) == [
        "episode_0000002.npz", "episode_0000003.npz"]
    # the files are ordinary episode files (env rewards as rewards) with the training rewards beside
    from mmreward.robotics.data.episodes import load_episode

    ep = load_episode(str(store / "episode_0000003.npz"))
    assert np.array_equal(ep.frames, eps[3].frames) and ep.labelled
    rb2 = ReplayBuffer(25, nstep=3, store_dir=str(store))
    rb2.load(load_state(str(tmp_path / "snap")))
    assert (rb2.first_serial, rb2.next_serial, len(rb2)) == (2, 4, 20)
    for a, b in zip(rb.episodes, rb2.episodes):
        for k in ("frames", "actions", "rewards", "env_rewards", "success"):
            assert np.array_equal(getattr(a, k), getattr(b, k)), k
    torch.testing.assert_close(rb.sample(16), rb2.sample(16))  # same data and rng state
    rb2.add(_episode(10, seed=7))  # continues the serials after a resume
    assert (store / "episode_0000004.npz").exists() and rb2.first_serial == 3
    # an episode written after the snapshot (a crash before the next one) is pruned when not live
    rb3 = ReplayBuffer(25, nstep=3, store_dir=str(store))
    rb3.load(load_state(str(tmp_path / "snap")))
    assert rb3.prune_store() == 1 and not (store / "episode_0000004.npz").exists()
    # damaged store: clear errors, nothing half-loaded silently
    from mmreward.core.checkpoint import CheckpointError

    (store / "episode_0000003.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="episode_0000003.npz"):
        ReplayBuffer(25, nstep=3, store_dir=str(store)).load(st)
    (store / "episode_0000002.npz").unlink()
    with pytest.raises(CheckpointError, match="missing episode file .*episode_0000002"):
        ReplayBuffer(25, nstep=3, store_dir=str(store)).load(st)
    with pytest.raises(CheckpointError, match="store_dir"):
        ReplayBuffer(25, nstep=3).load(st)
    # a snapshot that carries its episodes (no store) migrates into a store on load
    inline = ReplayBuffer(25, nstep=3)
    inline.add(eps[0])
    migrated = ReplayBuffer(25, nstep=3, store_dir=str(tmp_path / "new"))
    migrated.load(inline.state())
    assert (tmp_path / "new" / "episode_0000000.npz").exists() and migrated.next_serial == 1


def _target_frames(targets, size=16):
    """A bright column at x = target position (targets in [-1, 1]) on a dark image."""
    frames = np.zeros((len(targets), size, size, 3), np.uint8)
    cols = np.round((np.asarray(targets) + 1) / 2 * (size - 1)).astype(int)
    frames[np.arange(len(targets)), :, cols, :] = 255
    return frames


@pytest.mark.learning
def test_drqv2_learns_a_pixel_task_with_exact_rewards():
    """Contextual bandit from pixels: the frame shows a target x ∈ [-1, 1]; reward −(a − x)²
    (γ = 0, n = 1 so Q is the reward). After training, the deterministic action tracks the target."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = DrQV2Config(hidden_dim=64, feature_dim=32, lr=1e-3, stddev_schedule="0.3", discount=0.0, augment_pad=0)
    agent = DrQV2Agent((3, 16, 16), 1, cfg)
    rb = ReplayBuffer(10_000, nstep=1, discount=0.0, seed=0)
    for _ in range(40):  # episodes of random actions; step t observes frame t
        x = rng.uniform(-1, 1, 26)
        a = rng.uniform(-1, 1, (25, 1)).astype(np.float32)
        rb.add(EpisodeRecord(frames=_target_frames(x), actions=a, rewards=(-(a[:, 0] - x[:25]) ** 2).astype(np.float32),
                             env_rewards=np.zeros(25, np.float32), success=np.zeros(25, bool)))
    test_x = np.linspace(-0.9, 0.9, 19)
    test_obs = torch.from_numpy(_target_frames(test_x)).permute(0, 3, 1, 2)

    def error():
        acts = torch.stack([agent.act(o, 10**6, eval_mode=True) for o in test_obs])[:, 0].numpy()
        return float(np.abs(acts - test_x).mean())

    before = error()
    for step in range(400):
        m = agent.update(rb.sample(64), step)
    after = error()
    assert np.isfinite(m["critic_loss"]) and m["critic_loss"] < 0.05
    assert after < 0.15 < before, (before, after)


@pytest.mark.parametrize("spec", ["nan", "-1", "inf", "linear(1,nan,100)", "linear(1,-0.1,100)", "linear(inf,0.1,100)",
                                  "linear(1,0.1,inf)"])
def test_a_schedule_of_nan_or_negative_stds_is_refused(spec, tmp_path, capsys):
    from mmreward.robotics.cli import main

    with pytest.raises(ValueError, match="stddev_schedule must give finite stds >= 0"):
        DrQV2Config(stddev_schedule=spec).validate()
    # the command refuses it before any environment starts
    assert main(["train-rl", "--out", str(tmp_path / "rl"), "--stddev-schedule", spec]) == 2
    err = capsys.readouterr().err
    assert "stddev_schedule must give finite stds >= 0" in err and len(err.strip().splitlines()) == 1, err
    DrQV2Config(stddev_schedule="linear(1.0,0,100)").validate()  # zero noise at the end is a choice


def test_frames_too_small_for_the_encoder_are_a_clear_error(tmp_path, capsys):
    from mmreward.robotics.cli import main
    from mmreward.robotics.rl.drqv2 import Encoder

    # torch's own error was "Kernel size can't be greater than actual input size"
    with pytest.raises(ValueError, match="frames of 14x14 pixels are too small for DrQ-v2's encoder: size must be >= 15"):
        Encoder((3, 14, 14))
    assert Encoder((3, 15, 15)).repr_dim == 32  # the smallest that fits: one pixel left
    assert main(["train-rl", "--out", str(tmp_path / "rl"), "--size", "7"]) == 2
    err = capsys.readouterr().err
    assert "size must be >= 15 (DrQ-v2's encoder), got 7" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("field, value", [("hidden_dim", 32.5), ("feature_dim", "16"), ("augment_pad", 2.5),
                                          ("num_expl_steps", True)])
def test_agent_config_sizes_must_be_integers(field, value):
    """Before: hidden_dim 32.5 passed validate and failed inside nn.Linear naming no field."""
    with pytest.raises(ValueError, match=f"{field} must be an integer, got {value!r}"):
        DrQV2Config(**{field: value}).validate()
