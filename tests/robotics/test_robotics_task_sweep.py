"""Every task a user can name works or is refused clearly: task-name spellings and errors, a few
representative Meta-World / Adroit tasks collected end to end, cameras shared by several tasks, and
the Gymnasium wrapper's seeds (needs mujoco + metaworld + gymnasium-robotics)."""
import importlib.util
import json

import numpy as np
import pytest

from mmreward.robotics.envs.base import offscreen_render_problem

_missing = [m for m in ("mujoco", "metaworld", "gymnasium", "gymnasium_robotics") if importlib.util.find_spec(m) is None]
_why = (f"robotics extra not installed (missing {', '.join(_missing)})" if _missing else offscreen_render_problem())
pytestmark = pytest.mark.skipif(_why is not None, reason=str(_why))

from mmreward.robotics.collect import collect_episodes, run_episode  # noqa: E402
from mmreward.robotics.envs import UnknownTaskError, resolve_task, suite_of  # noqa: E402


@pytest.mark.parametrize("name, task", [
    ("Door-Open-V3", "door-open-v3"), (" door-open-v3\n", "door-open-v3"), ("door_open", "door-open-v3"),
    ("metaworld/door-open", "door-open-v3"), ("Meta-World/peg-insert-side-v2", "peg-insert-side-v3"),
    ("adroit/door", "adroit-door"), ("Adroit-Door", "adroit-door"), ("adroit_pen", "adroit-pen"),
    ("AdroitHandRelocate-v1", "adroit-relocate"), (" adroit/Hammer ", "adroit-hammer"),
])
def test_task_spellings_resolve(name, task):
    assert resolve_task(name) == task


@pytest.mark.parametrize("name, error, message", [
    ("door-opne-v3", UnknownTaskError, r"unknown Meta-World task 'door-opne-v3'; close matches: door-open-v3"),
    ("", UnknownTaskError, r"task id '' is empty: give one such as door-open-v3"),
    ("   ", UnknownTaskError, r"task id '   ' is empty"),
    ("adroit/", UnknownTaskError, r"task id 'adroit/' is empty"),
    # an Adroit task named without its suite: the suggestion was nothing at all
    ("pen", UnknownTaskError, r"unknown Meta-World task 'pen'; close matches: adroit-pen"),
    ("relocate", UnknownTaskError, r"close matches: adroit-relocate"),
    ("adroit-dor", UnknownTaskError, r"unknown Adroit task 'adroit-dor'; close matches: adroit-door"),
    ("AdroitHandDoor-v0", UnknownTaskError, r"close matches: AdroitHandDoor-v1"),  # shown as Gymnasium spells it
    ("metaworld/adroit-door", UnknownTaskError, r"'adroit-door' is an Adroit task, not a Meta-World one"),
    (None, TypeError, r"task must be a task id string .* got NoneType None"),
    (3, TypeError, r"got int 3"),
])
def test_bad_task_names_give_one_clear_error(name, error, message):
    with pytest.raises(error, match=message):
        resolve_task(name)


def test_suite_prefix_picks_the_suite():
    assert suite_of("adroit/door") == "adroit" and suite_of("metaworld/door-open-v3") == "metaworld"
    assert suite_of("AdroitHandDoor-v1") == "adroit" and suite_of("door-open") == "metaworld"


def test_cli_task_errors_are_one_line_exit_2(tmp_path, capsys):
    from mmreward.robotics.cli import main

    for tasks, message in (("pen", "unknown Meta-World task 'pen'; close matches: adroit-pen"),
                           ("door-opne-v3", "close matches: door-open-v3")):
        assert main(["collect", "--tasks", tasks, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    # an Adroit task without a shipped expert: one line naming the tasks whose expert ships
    assert main(["collect", "--tasks", "adroit-pen", "--policy", "expert", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no expert ships for adroit-pen (shipped: adroit-door, adroit-hammer)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_camera_some_tasks_lack_is_refused_before_any_episode(tmp_path, monkeypatch):
    """--camera corner with a Meta-World and an Adroit task collected every Meta-World episode and then
    failed on the Adroit task; now it is refused before any environment starts."""
    import mmreward.robotics.envs as envs

    monkeypatch.setattr(envs, "make_env", lambda *a, **k: pytest.fail("an environment started"))
    for tasks, camera, lacking in ((["door-open-v3", "adroit-door"], "corner", "adroit-door"),
                                   (["adroit-door", "door-open-v3"], "vil_camera", "door-open-v3"),
                                   (["adroit-pen", "adroit-hammer"], "view_1", "adroit-hammer")):
        with pytest.raises(ValueError, match=f"--camera '{camera}' does not exist in {lacking} .its cameras: "):
            collect_episodes(tasks, str(tmp_path / "o"), episodes=1, policy="random", camera=camera, progress=False)
    assert not (tmp_path / "o").exists()


def test_expert_policy_without_an_expert_is_a_clear_error():
    """run_episode(policy='expert') on an Adroit env raised NotImplementedError from inside the rollout."""
    class NoExpert:
        suite, task, has_expert = "adroit", "adroit-pen", False

    with pytest.raises(ValueError, match="no scripted expert ships for adroit task adroit-pen: pass expert="):
        run_episode(NoExpert(), policy="expert", noise=0.0, seed=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown policy 'experts'"):
        run_episode(NoExpert(), policy="experts", noise=0.0, seed=0, rng=np.random.default_rng(0))


def test_representative_tasks_collect_reproducibly(tmp_path):
    """A Meta-World task whose scripted policy is named unlike its id (peg-insert-side), one named with a
    suite prefix, and an Adroit task: expert / random episodes, file names and manifest entries;
    the same seed gives the same files."""
    for out in ("a", "b"):
        collect_episodes("peg-insert-side-v3", str(tmp_path / out), episodes=1, policy="expert", size=16,
                         max_steps=2, seed=3, progress=False)
    collect_episodes(["metaworld/bin-picking", "adroit/relocate"], str(tmp_path / "a"), episodes=1, policy="random",
                     size=16, max_steps=2, seed=3, progress=False)
    entries = json.loads((tmp_path / "a" / "manifest.json").read_text())["episodes"]
    got = sorted((e["task"], e["suite"], e["policy"], e["file"], e["camera"], e["frames"]) for e in entries)
    assert got == [
        ("adroit-relocate", "adroit", "random", "adroit-relocate_random_seed3_0000.npz", "vil_camera", 3),
        ("bin-picking-v3", "metaworld", "random", "bin-picking-v3_random_seed3_0000.npz", "corner", 3),
        ("peg-insert-side-v3", "metaworld", "expert", "peg-insert-side-v3_expert_seed3_0000.npz", "corner", 3),
    ]
    name = "peg-insert-side-v3_expert_seed3_0000.npz"
    a, b = np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name)
    assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["actions"], b["actions"])
    assert np.abs(a["actions"]).max() > 0  # the scripted expert acted


def test_an_empty_camera_name_is_refused_not_replaced_by_the_default():
    from mmreward.robotics.envs import make_env

    with pytest.raises(ValueError, match="unknown camera '' for adroit task adroit-door: choose from fixed, vil_camera"):
        make_env("adroit-door", camera="", size=16)


def test_wrapper_base_seed_reproduces_a_collected_scene(tmp_path):
    """reset(seed=s) was documented as the scene of `collect --seed s`, but a Meta-World scene also depends
    on the seed the environment is built with: base_seed gives collect's --seed."""
    from mmreward.robotics.wrappers import PixelGymEnv, env_id

    collect_episodes(["reach-v3"], str(tmp_path), episodes=2, policy="random", size=16, max_steps=1, seed=5,
                     progress=False)
    first = np.load(tmp_path / "reach-v3_random_seed5_0001.npz")["frames"][0]  # episode 1: reset seed 6
    env = PixelGymEnv("reach", size=16, max_steps=1, base_seed=5)
    try:
        obs, info = env.reset(seed=6)
    finally:
        env.close()
    assert info["seed"] == 6 and np.array_equal(obs, first)
    with pytest.raises(ValueError, match="base_seed must be an integer >= 0"):
        PixelGymEnv("reach-v3", base_seed=-1)
    assert env_id("adroit/door") == "mmreward/Adroit-door" and env_id("Door-Open") == "mmreward/MetaWorld-door-open-v3"


@pytest.mark.parametrize("size, error, message", [
    ("64", TypeError, r"frame size must be an integer or \(height, width\) integers, got str '64'"),  # was 6x4 frames
    (64.0, TypeError, r"got float 64.0"), (True, TypeError, r"got bool True"), ((64,), TypeError, r"got tuple \(64,\)"),
    ((0, 8), ValueError, r"frame size must be positive"),
])
def test_bad_frame_sizes_are_refused_before_the_simulator_starts(size, error, message, tmp_path):
    from mmreward.robotics.envs import make_env

    with pytest.raises(error, match=message):
        make_env("adroit-door", size=size)
    with pytest.raises(error, match=message):
        collect_episodes("adroit-door", str(tmp_path / "o"), episodes=1, policy="random", size=size, progress=False)
    assert not (tmp_path / "o").exists()


def test_non_square_frames_render_on_both_suites():
    from mmreward.robotics.envs import make_env

    for task, camera in (("adroit-pen", "view_1"), ("door-open-v3", "topview")):
        with make_env(task, size=(24, 40), camera=camera, max_steps=1) as env:
            assert env.reset(seed=0)[1].shape == (24, 40, 3)


@pytest.mark.parametrize("options, error, message", [
    (dict(seed=1.5), TypeError, r"seed must be an integer, got float 1.5"),  # was run as seed 1, recorded as 1.5
    (dict(seed=True), TypeError, r"seed must be an integer, got bool True"),
    (dict(seed=2 ** 40), ValueError, r"seed must be in \[0, 2\*\*32 - 1\], got 1099511627776"),
    (dict(episodes="2"), TypeError, r"episodes must be an integer, got str '2'"),
    (dict(action_repeat=1.5), TypeError, r"action_repeat must be an integer, got float 1.5"),  # was truncated to 1
    (dict(max_steps=2.0), TypeError, r"max_steps must be an integer, got float 2.0"),
])
def test_collect_integer_options_are_checked_before_any_work(options, error, message, tmp_path, monkeypatch):
    import mmreward.robotics.envs as envs

    monkeypatch.setattr(envs, "make_env", lambda *a, **k: pytest.fail("an environment started"))
    kw = {**dict(episodes=1, policy="random", progress=False), **options}
    with pytest.raises(error, match=message):
        collect_episodes("reach-v3", str(tmp_path / "o"), **kw)
    assert not (tmp_path / "o").exists()


def test_env_seeds_and_options_are_integers():
    from mmreward.robotics.envs import make_env

    with pytest.raises(TypeError, match="action_repeat must be an integer, got float 2.5"):
        make_env("adroit-door", action_repeat=2.5)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*32 - 1\], got -3"):
        make_env("adroit-door", seed=-3)
    with make_env("adroit-door", size=8, max_steps=1) as env:
        for seed, error, message in ((-1, ValueError, "seed must be >= 0, got -1"),  # was gymnasium's own Error
                                     (1.5, TypeError, "seed must be an integer, got float 1.5"),  # was reset(1)
                                     ("3", TypeError, "seed must be an integer, got str '3'")):
            with pytest.raises(error, match=message):
                env.reset(seed)
        assert env.reset(np.int64(2 ** 40))[1].shape == (8, 8, 3)  # Gymnasium's reset takes any seed >= 0
