"""Meta-World / Adroit pixel environments and episode collection (needs mujoco + metaworld)."""
import importlib.util
import os

import numpy as np
import pytest

from mmreward.robotics.envs.base import offscreen_render_problem

_missing = [m for m in ("mujoco", "metaworld", "gymnasium") if importlib.util.find_spec(m) is None]
_why = (f"robotics extra not installed (missing {', '.join(_missing)})" if _missing else offscreen_render_problem())
pytestmark = pytest.mark.skipif(_why is not None, reason=str(_why))

from mmreward.robotics.collect import collect_episodes, run_episode, _policy_rng  # noqa: E402
from mmreward.robotics.data.episodes import EpisodeDataset, load_episode, read_manifest  # noqa: E402

TASK = "door-open-v3"
SHORT = 30


@pytest.fixture(scope="module")
def door_env():
    from mmreward.robotics.envs import make_env

    env = make_env(TASK, size=64, action_repeat=2, seed=0, max_steps=SHORT)
    yield env
    env.close()


@pytest.fixture(scope="module")
def expert_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("expert")
    summary = collect_episodes([TASK], str(out), episodes=2, policy="expert", max_steps=SHORT, seed=0, progress=False)
    return out, summary


def test_collect_writes_episodes_and_manifest(expert_dir):
    out, summary = expert_dir
    assert summary.episodes == 2 and summary.frames == 2 * (SHORT + 1) and summary.seconds > 0
    entries = read_manifest(str(out))
    assert sorted(os.listdir(out)) == sorted([e["file"] for e in entries] + ["manifest.json"])
    for i, e in enumerate(entries):
        assert e["file"] == f"{TASK}_expert_seed0_{i:04d}.npz"
        assert (e["task"], e["suite"], e["policy"], e["noise"], e["seed"], e["camera"]) == (
            TASK, "metaworld", "expert", 0.0, i, "corner")
        assert (e["size"], e["action_repeat"], e["length"], e["frames"], e["flip"]) == ([64, 64], 2, SHORT, SHORT + 1, "rot180")
        ep = load_episode(str(out / e["file"]))
        assert e["success"] == ep.succeeded and e["return"] == pytest.approx(float(ep.rewards.sum()), rel=1e-5)
        assert ep.frames.shape == (SHORT + 1, 64, 64, 3) and ep.frames.dtype == np.uint8
        assert ep.actions.shape == (SHORT, 4) and ep.actions.dtype == np.float32
        assert ep.rewards.shape == (SHORT,) and ep.success.shape == (SHORT,) and ep.success.dtype == bool
        assert ep.frames.std() > 10  # a real picture, not a blank buffer
        assert np.abs(np.diff(ep.frames.astype(np.int16), axis=0)).mean() > 0.1  # the arm moves
    a, b = (load_episode(str(out / e["file"])) for e in entries)
    assert not np.array_equal(a.frames[0], b.frames[0])  # seeds 0 and 1: different object placements


def test_reload_equals_a_fresh_run_and_same_seed_is_deterministic(expert_dir, door_env, tmp_path):
    out, _ = expert_dir
    saved = load_episode(str(out / f"{TASK}_expert_seed0_0001.npz"))
    fresh = run_episode(door_env, policy="expert", noise=0.0, seed=1, rng=_policy_rng(0, 1, TASK))
    for key in ("frames", "actions", "rewards", "success"):
        assert np.array_equal(getattr(saved, key), getattr(fresh, key)), key
    collect_episodes(TASK, str(tmp_path), episodes=1, policy="expert", max_steps=SHORT, seed=0, progress=False)
    again = load_episode(str(tmp_path / f"{TASK}_expert_seed0_0000.npz"))
    first = load_episode(str(out / f"{TASK}_expert_seed0_0000.npz"))
    assert np.array_equal(again.frames, first.frames) and np.array_equal(again.actions, first.actions)


def test_noisy_and_random_policies(door_env, tmp_path):
    low, high = door_env.action_space.low, door_env.action_space.high
    expert = run_episode(door_env, policy="expert", noise=0.0, seed=5, rng=_policy_rng(0, 5, TASK))
    zero = run_episode(door_env, policy="noisy", noise=0.0, seed=5, rng=_policy_rng(0, 5, TASK))
    assert np.array_equal(expert.actions, zero.actions) and np.array_equal(expert.frames, zero.frames)
    noisy = run_episode(door_env, policy="noisy", noise=1.0, seed=5, rng=_policy_rng(0, 5, TASK))
    assert np.array_equal(noisy.frames[0], expert.frames[0])  # same start, different behaviour
    assert not np.allclose(noisy.actions, expert.actions)
    assert (noisy.actions >= low).all() and (noisy.actions <= high).all()
    assert np.isclose(np.abs(noisy.actions), 1.0).mean() > 0.05  # σ=1 noise hits the clip bounds

    summary = collect_episodes([TASK], str(tmp_path), episodes=1, policy="random", max_steps=10, seed=3,
                               progress=False)
    (entry,) = read_manifest(str(tmp_path))
    assert entry["policy"] == "random" and entry["file"] == f"{TASK}_random_seed3_0000.npz"
    ep = load_episode(str(tmp_path / entry["file"]))
    assert summary.frames == 11 and ep.actions.shape == (10, 4)
    assert (ep.actions >= low).all() and (ep.actions <= high).all() and ep.actions.std() > 0.3

    collect_episodes([TASK], str(tmp_path), episodes=1, policy="noisy", noise=0.3, max_steps=5, seed=3, progress=False)
    files = {e["file"]: e for e in read_manifest(str(tmp_path))}  # manifest keeps both runs
    assert files[f"{TASK}_noisy0.3_seed3_0000.npz"]["noise"] == 0.3 and len(files) == 2


def _row_in_frame(env, point):
    """Image row of a world point in the frame `env` returns (projected with the camera's pose)."""
    data, model = env.env.unwrapped.data, env.env.unwrapped.model
    cid = env._camera_id
    rot = data.cam_xmat[cid].reshape(3, 3)
    c = rot.T @ (np.asarray(point) - data.cam_xpos[cid])  # camera frame: x right, y up, looks along -z
    h = env.size[0]
    f = 0.5 * h / np.tan(np.deg2rad(model.cam_fovy[cid]) / 2)
    row = h / 2 - f * c[1] / -c[2]  # row in the renderer's (top-down) image
    return h - 1 - row if env.flip in ("rot180", "vertical") else row


def test_frames_are_upright(door_env):
    from mmreward.robotics.envs import make_env

    door_env.reset(seed=0)
    assert door_env.flip == "rot180"  # corner cameras are mounted upside down
    raw = door_env.raw_render()
    assert np.array_equal(door_env.render(), raw[::-1, ::-1])
    hand = door_env.env.unwrapped.tcp_center
    assert _row_in_frame(door_env, hand + [0, 0, 0.2]) < _row_in_frame(door_env, hand) - 2  # up is up
    with make_env(TASK, size=(24, 32), camera="topview", max_steps=2) as top:
        _, frame = top.reset(seed=0)
        assert top.flip == "none" and frame.shape == (24, 32, 3)  # (height, width)
        assert np.array_equal(top.render(), top.raw_render())
    with make_env(TASK, size=32, flip="vertical", max_steps=2) as mirrored:
        _, frame = mirrored.reset(seed=0)
        assert np.array_equal(frame, mirrored.raw_render()[::-1])


def test_bad_camera_and_unknown_task_errors(tmp_path):
    from mmreward.robotics.envs import UnknownTaskError, make_env, resolve_task

    assert resolve_task("door-open") == "door-open-v3" and resolve_task("door_open_v2") == "door-open-v3"
    with pytest.raises(UnknownTaskError, match="door-opne-v3.*close matches: door-open-v3"):
        resolve_task("door-opne-v3")
    with pytest.raises(UnknownTaskError, match="drawer-open-v3"):
        collect_episodes(["drawer-open-v3", "drawr-open"], str(tmp_path / "x"), episodes=1, progress=False)
    assert not (tmp_path / "x").exists()  # failed before any work
    with pytest.raises(ValueError, match="unknown camera 'cornr'.*corner"):
        make_env(TASK, camera="cornr")
    with pytest.raises(ValueError, match="only applies to --policy noisy"):
        collect_episodes(TASK, str(tmp_path), policy="expert", noise=0.3)


def test_dataset_over_collected_episodes(expert_dir):
    out, _ = expert_dir
    ds = EpisodeDataset(str(out), n_history=2, tasks=[TASK], policies=["expert"])
    assert len(ds) == 2 * (SHORT + 1 - 2)
    item = ds[len(ds) - 1]
    assert item["frames"].shape == (3, 64, 64, 3) and item["episode"] == 1 and item["task"] == TASK


def test_scripted_expert_solves_door_open():
    """Behaviour check: a full-length expert episode opens the door."""
    from mmreward.robotics.envs import make_env

    with make_env(TASK, size=64, action_repeat=2, seed=0) as env:
        assert env.max_steps == 250
        ep = run_episode(env, policy="expert", noise=0.0, seed=0, rng=_policy_rng(0, 0, TASK))
    assert ep.length == 250 and ep.succeeded
    assert np.flatnonzero(ep.success)[0] < 100  # opened early in the episode
    # Meta-World's success is "door angle near the goal": the expert keeps pushing past it, so the
    # flag does not stay on, but the shaped reward stays at its maximum (10 per env step).
    assert ep.rewards[-10:].mean() > 15 > ep.rewards[:10].mean()


adroit_missing = importlib.util.find_spec("gymnasium_robotics") is None


@pytest.mark.skipif(adroit_missing, reason="gymnasium-robotics is not installed: Adroit tasks need it")
def test_adroit_random_episode_same_format(tmp_path):
    summary = collect_episodes(["adroit-door"], str(tmp_path), episodes=1, policy="random", max_steps=5,
                               action_repeat=2, seed=0, progress=False)
    (entry,) = read_manifest(str(tmp_path))
    ep = load_episode(str(tmp_path / entry["file"]))
    assert summary.frames == 6 and ep.frames.shape == (6, 64, 64, 3) and ep.actions.shape == (5, 28)
    assert entry["suite"] == "adroit" and entry["camera"] == "vil_camera" and entry["flip"] == "none"
    assert ep.frames.std() > 10
    with pytest.raises(ValueError, match="no expert ships for adroit-pen"):
        collect_episodes(["AdroitHandPen-v1"], str(tmp_path), episodes=1, policy="expert", progress=False)


def _frames(env, n: int, seed: int = 0) -> list:
    _, f = env.reset(seed=seed)
    return [f] + [env.step(env.hold_action()).frame for _ in range(n)]


def test_envs_render_their_own_frames_beside_other_envs():
    """Gymnasium's offscreen viewers render into the current GL context: several envs in one process,
    one of them closed or garbage-collected, must still each render their own scene."""
    import gc

    from mmreward.robotics.envs import make_env

    tasks = ("door-open-v3", "drawer-open-v3")
    solo = {}
    for t in tasks:
        with make_env(t, size=32, max_steps=4) as env:
            solo[t] = _frames(env, 3)
    a, b = (make_env(t, size=32, max_steps=4) for t in tasks)
    fa, fb = a.reset(seed=0)[1], b.reset(seed=0)[1]  # b's context is the current one now
    assert np.array_equal(fa, solo[tasks[0]][0]) and np.array_equal(fb, solo[tasks[1]][0])
    assert np.array_equal(a.step(a.hold_action()).frame, solo[tasks[0]][1])
    unwrapped = a.env.unwrapped  # a reference that outlives close(): its GL objects go when it is collected
    a.close()
    assert np.array_equal(b.step(b.hold_action()).frame, solo[tasks[1]][1])
    c = make_env(tasks[0], size=32, max_steps=4)
    c.reset(seed=0)
    del unwrapped
    gc.collect()
    assert np.array_equal(b.step(b.hold_action()).frame, solo[tasks[1]][2])
    assert np.array_equal(c.step(c.hold_action()).frame, solo[tasks[0]][1])
    b.close()
    c.close()


@pytest.mark.skipif(adroit_missing, reason="gymnasium-robotics is not installed: Adroit tasks need it")
def test_adroit_hold_action_keeps_the_pose():
    from mmreward.robotics.envs import make_env

    with make_env("adroit-door", size=32, action_repeat=2, max_steps=20) as env:
        u = env.env.unwrapped
        servo = u.model.jnt_qposadr[u.model.actuator_trnid[:, 0]]  # the actuated joints' qpos entries
        drift = {}
        for name in ("hold", "zeros"):
            env.reset(seed=0)
            q0 = u.data.qpos[servo].copy()
            for _ in range(20):
                env.step(env.hold_action() if name == "hold" else np.zeros(env.action_dim, np.float32))
            drift[name] = float(np.abs(u.data.qpos[servo] - q0).mean())
        # zero actions send every servo to the middle of its range; holding leaves the hand near its pose
        assert drift["hold"] < 0.5 * drift["zeros"], drift


def test_a_task_listed_twice_is_refused_before_any_work(tmp_path, monkeypatch):
    """door-open,door-open-v3 collected the same task twice: the second run overwrote the first's files."""
    import mmreward.robotics.envs as envs

    monkeypatch.setattr(envs, "make_env", lambda *a, **k: pytest.fail("an environment started"))
    with pytest.raises(ValueError, match="task door-open-v3 is listed twice .as 'door-open' and 'door-open-v3'."):
        collect_episodes("door-open,door-open-v3", str(tmp_path / "x"), episodes=1, progress=False)
    assert not (tmp_path / "x").exists()
