"""What docs/diffusion_reward.md, docs/visual_rl.md and robotics/README.md promise, where running their
examples found the code short of it."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmreward.robotics.data.episodes import Episode, save_episode


def _episode(t: int, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(frames=rng.integers(0, 256, (t + 1, 8, 8, 3), dtype=np.uint8),
                   actions=np.zeros((t, 4), np.float32), rewards=np.zeros(t, np.float32),
                   success=np.zeros(t, bool), labelled=True)


def test_a_folder_of_plain_npz_sub_folders_is_scored_and_keyed_by_path(tmp_path):
    """docs/diffusion_reward.md: a folder without a manifest stands for its episode files and folders one
    level deep, episodes sharing a name keyed by their paths. Before: data/a/ep.npz, data/b/ep.npz (no
    manifests) failed with 'data/a holds no videos, frame folders or images'."""
    from mmreward.robotics.data.inputs import find_episodes

    for sub, seed in (("a", 0), ("b", 1)):
        (tmp_path / sub).mkdir()
        save_episode(str(tmp_path / sub / "ep.npz"), _episode(3, seed))
    found = find_episodes([str(tmp_path)], with_success=True)
    assert [os.path.relpath(s.path, tmp_path) for s in found] == [os.path.join("a", "ep.npz"), os.path.join("b", "ep.npz")]
    assert [s.name for s in found] == ["ep", "ep"] and all(s.input.success is not None for s in found)


def test_reward_callable_output_errors_name_the_callable_and_shape():
    """docs/visual_rl.md: ``reward=`` is any frames [T+1, H, W, 3] -> [T+1] or [T]. Before: a callable
    returning text failed with numpy's bare 'could not convert string to float', and one returning
    [T+1, 2] was flattened and reported as '2(T+1) values'."""
    from mmreward.robotics.rl.rewards import make_reward_source

    frames, env_r, succ = np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3), np.zeros(3, bool)
    with pytest.raises(TypeError, match=r"reward callable must return one number per frame \(4\) or per step \(3\), got str"):
        make_reward_source(lambda f: "abc")(frames, env_r, succ)
    with pytest.raises(ValueError, match=r"reward callable returned shape \[4, 2\] for an episode of 3 steps"):
        make_reward_source(lambda f: torch.zeros(len(f), 2))(frames, env_r, succ)
    # what stays accepted: [T+1], [T], [T, 1], lists, float64 / bfloat16 tensors
    for fn in (lambda f: np.arange(4.0), lambda f: [1, 2, 3], lambda f: np.arange(1.0, 4.0)[:, None],
               lambda f: torch.arange(4, dtype=torch.bfloat16)):
        assert make_reward_source(fn)(frames, env_r, succ).tolist() == [1, 2, 3]


def _render_problem():
    from mmreward.robotics.envs.base import offscreen_render_problem

    return offscreen_render_problem()


def test_an_env_left_open_exits_without_gl_tracebacks(tmp_path):
    """docs/diffusion_reward.md's Gymnasium example ends without env.close(). Before: at interpreter exit
    every rendered env printed two 'Exception ignored in ... __del__' tracebacks (mujoco's exit hook had
    already terminated the EGL display when the garbage collector freed the env's context)."""
    problem = _render_problem()
    if problem:
        pytest.skip(problem)
    code = ("from mmreward.robotics.envs import make_env\n"
            "env = make_env('door-open-v3', size=16)\n"
            "obs, frame = env.reset(seed=0)\n"
            "print(frame.shape)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.setdefault("MUJOCO_GL", "egl")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(16, 16, 3)"
    assert "Exception ignored" not in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_model_arguments_take_a_diffusion_reward_folder_for_its_parts(tmp_path):
    """docs/diffusion_reward.md: model arguments take a model folder, a run folder or a shipped name.
    Before: ``fit-stats --codec metaworld-64 --video metaworld-64`` (new statistics for the shipped
    model's codec and video model) failed: "no 'vqgan' model in .../metaworld-64 ...; found (diffusion_reward)"."""
    import json

    from mmreward.robotics.pretrained import model_folder

    def saved(folder, kind):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"model_type": kind}))

    saved(tmp_path / "run" / "reward", "diffusion_reward")
    for part, kind in (("codec", "vqgan"), ("video", "vq_diffusion"), ("progress", "progress_ranker")):
        saved(tmp_path / "run" / "reward" / part, kind)
    run, reward = str(tmp_path / "run"), str(tmp_path / "run" / "reward")
    assert model_folder(reward, ("vqgan",)) == os.path.join(reward, "codec")
    assert model_folder(run, ("vq_diffusion",)) == os.path.join(reward, "video")  # a train-video run folder
    assert model_folder(run, ("diffusion_reward",)) == reward
    assert model_folder(reward, ("diffusion_reward", "progress_ranker")) == reward  # the whole model first
    with pytest.raises(ValueError, match=r"^no 'rnd' model in .*/model or .*/reward; found .*\(diffusion_reward\)$"):
        model_folder(run, ("rnd",))
    shipped = model_folder("metaworld-64", ("vqgan",))
    assert os.path.basename(shipped) == "codec" and os.path.basename(os.path.dirname(shipped)) == "metaworld-64"


def _mixed_folder(folder, rows, size=32):
    from mmreward.robotics.data.episodes import episode_entry, update_manifest

    rng = np.random.default_rng(0)
    entries = []
    for i, (task, policy, t) in enumerate(rows):
        ep = Episode(frames=rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8), actions=np.zeros((t - 1, 2)),
                     rewards=np.zeros(t - 1), success=np.zeros(t - 1, bool))
        save_episode(os.path.join(folder, f"ep{i}.npz"), ep)
        entries.append(episode_entry(f"ep{i}.npz", ep, task=task, policy=policy))
    update_manifest(folder, entries)


def test_rl_expert_data_uses_expert_episodes_and_the_tasks_own_goals(tmp_path):
    """docs/visual_rl.md: statistics and goal frames come from the *expert* episodes of --expert-data.
    Before: noisy / random episodes collected into the same folder (robotics/README.md's collect
    examples do that) were fitted on as experts, and --goal-scale took other tasks' last frames as the
    goals of a task the folder does not hold."""
    from mmreward.robotics.rl.rewards import make_reward_source
    from test_diffusion_reward import make_reward

    dr = make_reward(rnd=False)  # entropy mode, no statistics: diffusion-relative fits them on the experts
    dr.save_pretrained(str(tmp_path / "dr"))
    data = str(tmp_path / "mixed")
    _mixed_folder(data, [("door-open-v3", "expert", 6), ("door-open-v3", "random", 9), ("door-open-v3", "noisy", 8),
                         ("drawer-open-v3", "expert", 5)])
    kw = dict(checkpoint=str(tmp_path / "dr"), size=32, expert_data=data)
    src = make_reward_source("diffusion-relative", task="door-open-v3", **kw)
    assert int(src.model.statistics[2]) == 6  # the task's expert episode only
    other = make_reward_source("diffusion-relative", task="button-press-v3", **kw)
    assert int(other.model.statistics[2]) == 6 + 5  # no episode of the task: every expert episode
    with pytest.raises(ValueError, match=r"holds no expert episodes of button-press-v3 \(its expert tasks: "
                                         r"door-open-v3, drawer-open-v3\): the goal distance needs"):
        make_reward_source("diffusion-relative", task="button-press-v3", goal_scale=1.0, **kw)
    only_random = str(tmp_path / "random")
    _mixed_folder(only_random, [("door-open-v3", "random", 6)])
    # named as --expert-data (was load_episode_folder's message, which offered train-rl's missing --policies)
    with pytest.raises(ValueError, match=r"--expert-data .*random holds no expert episodes \(policy expert / demo; "
                                         r"its episodes' policies: random\)") as e:
        make_reward_source("diffusion-relative", task="door-open-v3", **{**kw, "expert_data": only_random})
    assert "--policies" not in str(e.value)


def test_score_cli_takes_the_motion_scale_like_the_other_terms(tmp_path, capsys):
    """docs/diffusion_reward.md: the motion deficit applies to the shipped model without a refit, like the
    displacement and consistency terms that ``score`` sets by flag. Before: ``score`` had --goal-scale,
    --displacement-scale and --consistency-scale but no --motion-scale (argparse error, exit 2)."""
    import json

    from mmreward.robotics.cli import main
    from test_diffusion_reward import frames, make_reward

    dr = make_reward(rnd=False, noise=False)
    dr.statistics.copy_(torch.tensor([-100.0, 5.0, 10.0], dtype=torch.float64))
    model = str(tmp_path / "model")
    dr.save_pretrained(model)  # no motion statistics
    ep = frames(5, 2).numpy()
    np.savez(tmp_path / "ep.npz", frames=ep)
    run = ["score", "--model", model, str(tmp_path / "ep.npz"), "--json", "--no-progress", "--threads", "1"]
    capsys.readouterr()
    assert main([*run, "--motion-scale", "2"]) == 2
    assert "this model has no motion statistics" in capsys.readouterr().err
    dr.motion_statistics.copy_(torch.tensor([0.5, 100.0], dtype=torch.float64))
    dr.save_pretrained(model)  # replaces the folder
    assert main([*run, "--motion-scale", "2"]) == 0
    got = json.loads(capsys.readouterr().out)["episodes"][0]["rewards"]
    dr.config.motion_scale = 2.0
    assert got == dr(torch.from_numpy(ep)).tolist()
    dr.config.motion_scale = 0.0
    assert got != dr(torch.from_numpy(ep)).tolist()  # the term moved the rewards


@pytest.mark.parametrize("out", ["", "   "])
def test_rl_and_expert_runs_refuse_an_empty_output_folder(out):
    """docs/visual_rl.md / docs/adroit.md: ``--overwrite`` removes the old run in ``--out`` first. Before:
    ``out=""`` was the current folder, so ``overwrite=True`` removed its train.csv, tb/, eval/, replay/ (and
    for train-expert model/ and final_model/) — files of whatever project the user ran it in."""
    from mmreward.robotics.rl import ExpertConfig, RLConfig

    with pytest.raises(ValueError, match=r"^out must name the run's output folder"):
        RLConfig(out=out, overwrite=True).validate()
    with pytest.raises(ValueError, match=r"^out must name the run's output folder"):
        ExpertConfig(out=out, overwrite=True).validate()
    ExpertConfig(out=None).validate()  # None: the default runs/expert-<task>
