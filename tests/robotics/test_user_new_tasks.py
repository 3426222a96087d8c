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
    assert os.path.isfile(os.path.join(args.pretrained, "manifest.json"))  # the shipped name, as --model takes it


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
