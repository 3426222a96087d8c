"""A user taking Diffusion Reward to Meta-World tasks the shipped model never saw: task spellings
(CamelCase as Meta-World's classes name them), ``--tasks`` labels that select nothing among others
that do, ``train-rl --tasks``, import labels ``--tasks`` could never select again, and the quality
benchmark's held-out task options. Tests that resolve task ids need metaworld and skip without it."""
import importlib.util
import os

import numpy as np
import pytest
from helpers import load_script, one_line_error
from mmreward.robotics.cli import main
from mmreward.robotics.data.episodes import (
    Episode,
    episode_entry,
    read_manifest,
    save_episode,
    update_manifest,
)

needs_metaworld = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None,
                                     reason="metaworld not installed")


def write_folder(folder, tasks, steps=4, size=16, policy="expert"):
    entries = []
    for i, task in enumerate(tasks):
        rng = np.random.default_rng(i)
        ep = Episode(frames=rng.integers(0, 256, (steps + 1, size, size, 3), dtype=np.uint8),
                     actions=rng.uniform(-1, 1, (steps, 4)).astype(np.float32),
                     rewards=np.zeros(steps, np.float32), success=np.zeros(steps, bool))
        name = f"{task}_{policy}_{i}.npz"
        save_episode(os.path.join(folder, name), ep)
        entries.append(episode_entry(name, ep, task=task, policy=policy, noise=0.0, seed=i))
    update_manifest(str(folder), entries)


@needs_metaworld
@pytest.mark.parametrize("name, task", [
    ("DoorOpen", "door-open-v3"), ("DoorOpenV3", "door-open-v3"), ("DoorOpenV2", "door-open-v3"),
    ("PlateSlideBackSide", "plate-slide-back-side-v3"), ("metaworld/LeverPull", "lever-pull-v3"),
    ("ButtonPressTopdownWall", "button-press-topdown-wall-v3"),
])
def test_camel_case_task_names_resolve(name, task):
    # Meta-World's own class names (SawyerDoorOpenV3Policy) spell tasks this way: was "unknown Meta-World task"
    from mmreward.robotics.envs import resolve_task

    assert resolve_task(name) == task


@needs_metaworld
def test_camel_case_selects_stored_episodes(tmp_path):
    from mmreward.robotics.data.episodes import load_episode_folder

    write_folder(tmp_path, ["plate-slide-v3", "reach-v3"])
    assert [e["task"] for e, _ in load_episode_folder(str(tmp_path), tasks=["PlateSlide"])] == ["plate-slide-v3"]


def test_tasks_label_that_selects_nothing_is_refused_not_dropped(tmp_path, capsys):
    # `--tasks plate-slid,reach-v3` trained on reach-v3 alone, the misspelt label dropped without a word
    write_folder(tmp_path, ["plate-slide-v3", "reach-v3"])
    rc = main(["train-codec", "--data", str(tmp_path), "--tasks", "plate-slid,reach-v3", "--out",
               str(tmp_path / "run"), "--steps", "1", "--batch-size", "2", "--set", "channels=8,8",
               "--set", "num_codes=8", "--no-progress"])
    line = one_line_error(capsys)
    assert rc == 2 and "--tasks 'plate-slid' selects no episodes" in line and "plate-slide-v3, reach-v3" in line
    assert not os.path.exists(tmp_path / "run" / "model")


def test_score_tasks_label_that_selects_nothing_is_refused(tmp_path, capsys):
    write_folder(tmp_path, ["plate-slide-v3", "reach-v3"], size=64)
    rc = main(["score", str(tmp_path), "--tasks", "reach-v3,nope-v9"])
    line = one_line_error(capsys)
    assert rc == 2 and "--tasks 'nope-v9' selects no episodes" in line


@pytest.mark.parametrize("argv", [["train-rl", "--tasks", "reach-v3,push-v3", "--reward", "sparse"],
                                  ["train-expert", "--tasks", "reach-v3,push-v3"]])
def test_train_rl_tasks_spelling_and_several_tasks(tmp_path, capsys, argv):
    # `--tasks` (collect's spelling) was "unrecognized arguments"; several tasks were "unknown Meta-World task 'a,b'"
    rc = main(argv + ["--out", str(tmp_path / "rl")])
    line = one_line_error(capsys)
    assert rc == 2 and "names several tasks" in line and "--task reach-v3, then --task push-v3" in line
    assert not os.path.exists(tmp_path / "rl")


@needs_metaworld
def test_train_rl_task_with_trailing_comma_is_one_task():
    from mmreward.robotics.rl.workspace import parse_task

    assert parse_task("metaworld/reach,") == "reach-v3"


def test_import_label_with_comma_is_refused(tmp_path):
    from mmreward.robotics.collect import import_videos

    np.savez(tmp_path / "demo.npz", frames=np.zeros((3, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="'pick,place' contains a comma, which --tasks uses"):
        import_videos([str(tmp_path / "demo.npz")], str(tmp_path / "out"), task="pick,place", size=16, progress=False)
    assert not os.path.exists(tmp_path / "out")


def test_import_label_blanks_are_stripped_so_tasks_selects_it(tmp_path):
    from mmreward.robotics.collect import import_videos
    from mmreward.robotics.data.episodes import load_episode_folder

    np.savez(tmp_path / "demo.npz", frames=np.zeros((3, 16, 16, 3), np.uint8))
    import_videos([str(tmp_path / "demo.npz")], str(tmp_path / "out"), task=" pick cup ", size=16, progress=False)
    assert [e["task"] for e in read_manifest(str(tmp_path / "out"))] == ["pick cup"]
    assert len(load_episode_folder(str(tmp_path / "out"), tasks=["pick cup"], policies=["demo"])) == 1


@needs_metaworld
@pytest.mark.parametrize("argv, message", [
    (["--heldout-tasks", "nope-v3"], "--heldout-tasks: unknown Meta-World task 'nope-v3'"),
    (["--train-tasks", "reach,reach-v3"], "--train-tasks: reach-v3 is listed twice"),
    (["--train-tasks", "reach", "--heldout-tasks", "Reach"], "reach-v3 is also in --train-tasks"),
    (["--train-tasks", ""], "--train-tasks is empty"),
    (["--eval-episodes", "0"], "--eval-episodes must be >= 1, got 0"),
    (["--expert-model", "adroit/door=x", "--train-tasks", "reach"], "adroit-door is in neither"),
    # --pretrained was first read after every episode had been collected
    (["--pretrained", "no-such-model"], "--pretrained 'no-such-model': model folder 'no-such-model' does not exist"),
    (["--pretrained", "metaworld-64", "--size", "48"], "takes 64x64 frames, but --size is 48: use --size 64"),
    # the collection workers' environments cut the episodes at the limit without a word
    (["--train-tasks", "reach", "--max-steps", "300"], "--max-steps 300 is longer than reach-v3 allows: 250 agent"),
])
def test_quality_benchmark_checks_task_options_before_collecting(tmp_path, capsys, argv, message):
    mod = load_script("benchmarks/bench_diffusion_reward_quality.py")
    with pytest.raises(SystemExit) as exc:
        mod.main(argv + ["--work", str(tmp_path / "w")])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "w")


@needs_metaworld
def test_quality_benchmark_canonicalises_task_spellings():
    import argparse

    mod = load_script("benchmarks/bench_diffusion_reward_quality.py")
    args = argparse.Namespace(train_tasks="DoorOpen,reach", heldout_tasks="lever_pull", expert_model="",
                              train_episodes=1, eval_episodes=1, max_steps=1, size=64, action_repeat=1,
                              workers=1, threads=1, pretrained="metaworld-64")
    mod.check_args(argparse.ArgumentParser(), args)
    assert (args.train_tasks, args.heldout_tasks) == (["door-open-v3", "reach-v3"], ["lever-pull-v3"])
    # the shipped name, as --model takes it; the report names it as given, not as this machine's path
    assert os.path.isfile(os.path.join(args.pretrained_folder, "manifest.json"))
    assert args.pretrained == "metaworld-64"


@pytest.mark.parametrize("command", ["eval-rl", "eval-expert"])
def test_eval_help_shows_a_single_percent_sign(command, capsys):
    # argparse formats a description with % only when it holds %(prog): "95%% Wilson interval" was shown as typed
    assert main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "95% Wilson" in out and "%%" not in out


@needs_metaworld
def test_collect_max_steps_past_the_time_limit_is_refused_not_cut(tmp_path):
    # --max-steps 300 at action repeat 2 stored 250-step episodes without a word (train-rl refuses the same)
    from mmreward.robotics.collect import collect_episodes

    with pytest.raises(ValueError, match=r"--max-steps 300 is longer than reach-v3 allows: 250 agent steps "
                                         r"\(500 environment steps at --action-repeat 2\)"):
        collect_episodes(["reach-v3"], str(tmp_path / "out"), episodes=1, policy="random", size=16,
                         action_repeat=2, max_steps=300, progress=False)
    assert not os.path.exists(tmp_path / "out" / "manifest.json")


def test_tasks_select_across_several_data_folders(tmp_path, capsys):
    # `--data mw,mine --tasks plate-slide-v3` was refused because `mine` alone had no plate-slide-v3 episodes
    write_folder(tmp_path / "mw", ["plate-slide-v3", "reach-v3"])
    write_folder(tmp_path / "mine", ["pick cup"], policy="demo")
    data = f"{tmp_path / 'mw'},{tmp_path / 'mine'}"
    base = ["train-codec", "--data", data, "--steps", "1", "--batch-size", "2", "--set", "channels=8,8",
            "--set", "num_codes=8", "--no-progress"]
    assert main(base + ["--tasks", "plate-slide-v3", "--out", str(tmp_path / "a")]) == 0
    assert "1 episodes" in capsys.readouterr().out
    # a task that is there, but not with the --policies asked for, is named as a policy problem
    assert main(base + ["--tasks", "reach-v3,pick cup", "--policies", "demo", "--out", str(tmp_path / "b")]) == 2
    line = one_line_error(capsys)
    assert "--tasks 'reach-v3' selects no episodes with --policies demo" in line and "add its episodes' policy" in line


@needs_metaworld
def test_scripted_experts_cut_before_success_are_named(tmp_path):
    # train-rl --episode-steps 10 on a new task fitted statistics and took goal frames from experts stopped
    # mid-task, without a word
    from mmreward.robotics.rl.rewards import _expert_frames

    with pytest.warns(UserWarning, match=r"1 of 1 scripted expert episodes of handle-press-v3 did not succeed within "
                                         r"3 agent steps"):
        frames = _expert_frames("handle-press-v3", None, size=16, action_repeat=2, episodes=1, max_steps=3)
    assert len(frames) == 1 and frames[0].shape == (4, 16, 16, 3)


@pytest.mark.parametrize("layout", ["two inputs", "a folder of episode folders"])
def test_score_tasks_select_across_episode_folders(tmp_path, capsys, layout):
    # `score mw mine --tasks plate-slide-v3` was refused because `mine` alone had none; `score data --tasks ...`
    # on a folder of episode folders was "no input is one" (the docs: a folder stands for its episode folders)
    write_folder(tmp_path / "data" / "mw", ["plate-slide-v3", "reach-v3"], steps=2)
    write_folder(tmp_path / "data" / "mine", ["pick cup"], steps=2, policy="demo")
    inputs = ([str(tmp_path / "data" / "mw"), str(tmp_path / "data" / "mine")] if layout == "two inputs"
              else [str(tmp_path / "data")])
    assert main(["score", *inputs, "--tasks", "plate-slide-v3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "plate-slide-v3_expert_0" in out and "reach-v3" not in out and "pick cup" not in out
    assert main(["score", *inputs, "--tasks", "nope-v9", "--no-progress"]) == 2
    assert "nope-v9" in one_line_error(capsys)


def train_codec_argv(data, out):
    return ["train-codec", "--data", data, "--out", str(out), "--steps", "1", "--batch-size", "2", "--set",
            "channels=8,8", "--set", "num_codes=8", "--no-progress"]


@pytest.mark.parametrize("tasks", [[], ["--tasks", "reach-v3"]])
def test_data_folder_that_policies_leave_empty_is_refused_not_dropped(tmp_path, capsys, tasks):
    # `--data data/mw,data/noisy` (noisy collected with --policy noisy; default --policies expert,demo) trained
    # on data/mw alone without a word; only a folder holding none of the --tasks labels may add nothing
    write_folder(tmp_path / "mw", ["reach-v3"])
    write_folder(tmp_path / "noisy", ["reach-v3"], policy="noisy")
    rc = main(train_codec_argv(f"{tmp_path / 'mw'},{tmp_path / 'noisy'}", tmp_path / "run") + tasks)
    line = one_line_error(capsys)
    assert rc == 2 and f"no episodes in {tmp_path / 'noisy'} match" in line and "--policies all" in line
    assert not os.path.exists(tmp_path / "run" / "model")


def test_score_input_that_policies_leave_empty_is_refused_not_dropped(tmp_path):
    from mmreward.robotics.data.inputs import find_episodes

    from mmreward.core.data import DataError

    write_folder(tmp_path / "mw", ["reach-v3"])
    write_folder(tmp_path / "noisy", ["reach-v3"], policy="noisy")
    with pytest.raises(DataError, match=f"no episodes in {tmp_path / 'noisy'} match"):
        find_episodes([str(tmp_path / "mw"), str(tmp_path / "noisy")], policies=["expert"])
    # a folder with none of the --tasks labels still adds nothing
    write_folder(tmp_path / "mine", ["pick cup"], policy="demo")
    found = find_episodes([str(tmp_path / "mw"), str(tmp_path / "mine")], tasks=["reach-v3"], policies=["expert"])
    assert [s.meta["task"] for s in found] == ["reach-v3"]


@needs_metaworld
def test_task_label_selects_its_spelling_and_its_canonical_id(tmp_path):
    # PickPlace episodes imported as typed, then pick-place-v3 ones since CamelCase resolves: --tasks PickPlace
    # selected the old ones alone
    from mmreward.robotics.data.episodes import load_episode_folder

    write_folder(tmp_path, ["PickPlace", "pick-place-v3", "reach-v3"])
    assert sorted(e["task"] for e, _ in load_episode_folder(str(tmp_path), tasks=["PickPlace"])) == [
        "PickPlace", "pick-place-v3"]


def test_match_tasks_resolves_only_when_a_stored_task_id_could_be_meant(monkeypatch):
    # resolve_task imports metaworld / gymnasium (seconds) and sets MUJOCO_GL: free-form labels never need it
    from mmreward.robotics import envs
    from mmreward.robotics.data.episodes import match_tasks

    calls = []
    monkeypatch.setattr(envs, "resolve_task", lambda t: calls.append(t) or "door-open-v3")
    assert match_tasks(["pick up"], {"pick cup", "stack"}) == set()
    assert match_tasks(["reach-v3"], {"reach-v3"}) == {"reach-v3"}
    assert match_tasks(["reach-v3"], {"reach-v3", "door-open-v3"}) == {"reach-v3"}  # a stored id is itself
    assert calls == []
    assert match_tasks(["DoorOpen"], {"door-open-v3", "pick cup"}) == {"door-open-v3"} and calls == ["DoorOpen"]


def test_misspelt_task_label_is_refused_before_frames_are_loaded(tmp_path, capsys, monkeypatch):
    # the label check ran after every selected episode had been read
    from mmreward.robotics.data import episodes

    loaded = []
    real = episodes.load_episode
    monkeypatch.setattr(episodes, "load_episode", lambda path: loaded.append(path) or real(path))
    write_folder(tmp_path, ["reach-v3", "pick cup"])
    rc = main(train_codec_argv(str(tmp_path), tmp_path / "run") + ["--tasks", "reach-v3,pick cop"])
    assert rc == 2 and "--tasks 'pick cop' selects no episodes" in one_line_error(capsys)
    assert loaded == []


def test_score_names_inputs_scored_unfiltered(tmp_path, capsys):
    # a loose .npz next to episode folders is scored whole whatever --tasks says: now said
    write_folder(tmp_path / "data" / "mw", ["plate-slide-v3", "reach-v3"], steps=2)
    np.savez(tmp_path / "data" / "clip.npz", frames=np.zeros((3, 16, 16, 3), np.uint8))
    assert main(["score", str(tmp_path / "data"), "--tasks", "reach-v3", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "clip" in out and "plate-slide-v3" not in out
    assert "--tasks: 1 of 2 inputs are not in an episode folder" in err and "scored whole, unfiltered" in err
    assert main(["score", str(tmp_path / "data" / "mw"), "--tasks", "reach-v3", "--no-progress"]) == 0
    assert "unfiltered" not in capsys.readouterr().err


@needs_metaworld
def test_collect_checks_every_task_limit_before_collecting(tmp_path):
    # --max-steps past adroit-door's 200-step limit was refused after reach-v3's episodes had been written
    from mmreward.robotics.collect import collect_episodes

    pytest.importorskip("gymnasium_robotics")
    with pytest.raises(ValueError, match=r"--max-steps 300 is longer than adroit-door allows: 200 agent steps"):
        collect_episodes(["reach-v3", "adroit-door"], str(tmp_path / "out"), episodes=1, policy="random", size=16,
                         action_repeat=1, max_steps=300, progress=False)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("steps, advice", [(3, True), (250, False)])
def test_expert_warning_advises_more_steps_only_below_the_limit(monkeypatch, steps, advice):
    # at the task's limit more --episode-steps cannot be given: the warning said to anyway
    from mmreward.robotics import collect, envs
    from mmreward.robotics.rl.rewards import _expert_frames

    class Env:
        has_expert, max_env_steps, action_repeat = True, 500, 2

        def __init__(self, max_steps):
            self.max_steps = 250 if max_steps is None else max_steps

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    failed = Episode(frames=np.zeros((2, 16, 16, 3), np.uint8), actions=np.zeros((1, 4), np.float32),
                     rewards=np.zeros(1, np.float32), success=np.zeros(1, bool))
    monkeypatch.setattr(envs, "make_env", lambda task, max_steps=None, **kw: Env(max_steps))
    monkeypatch.setattr(collect, "run_episode", lambda env, **kw: failed)
    with pytest.warns(UserWarning, match="did not succeed") as record:
        _expert_frames("soccer-v3", None, size=16, action_repeat=2, episodes=1, max_steps=steps)
    assert ("give more --episode-steps" in str(record[0].message)) == advice
