"""The RL learning benchmark's report path: redraw (``--plot-only``) from finished runs' eval CSVs,
including runs kept in other folders (``--also LABEL=FOLDER``), and reject a pair it cannot read."""
import json
import os

import pytest
from helpers import load_script


def _bench():
    return load_script("benchmarks/bench_rl_learning.py")


def _write_eval(folder, rows):
    os.makedirs(os.path.join(folder, "eval"))
    with open(os.path.join(folder, "eval", "eval.csv"), "w") as f:
        f.write("step,episode,success_rate,episode_return,eval_seconds\n")
        for step, succ, ret in rows:
            f.write(f"{step},0,{succ},{ret},1.0\n")


def test_plot_only_reports_runs_from_other_folders(tmp_path):
    pytest.importorskip("matplotlib")
    b = _bench()
    _write_eval(tmp_path / "out" / "sparse", [(0, 0.0, 44.0), (5000, 0.4, 91.0)])
    _write_eval(tmp_path / "other" / "run", [(0, 0.0, 44.0), (5000, 0.0, 15.5), (10000, 0.2, 30.0)])
    out_json = tmp_path / "r.json"
    assert b.main(["--plot-only", "--rewards", "sparse", "--out", str(tmp_path / "out"), "--json", str(out_json),
                   "--also", f"dr a=0 clip -2={tmp_path / 'other' / 'run'}"]) == 0
    res = json.loads(out_json.read_text())
    assert res["runs"]["sparse"]["success_rate"] == [0.0, 0.4]
    assert res["runs"]["dr a=0 clip -2"]["frames"] == [0, 5000, 10000]
    assert res["runs"]["dr a=0 clip -2"]["episode_return"] == [44.0, 15.5, 30.0]
    assert os.path.isfile(res["plot"])


def test_also_rejects_a_folder_without_eval_csv(tmp_path):
    b = _bench()
    _write_eval(tmp_path / "out" / "sparse", [(0, 0.0, 44.0)])
    with pytest.raises(SystemExit):
        b.main(["--plot-only", "--rewards", "sparse", "--out", str(tmp_path / "out"),
                "--json", str(tmp_path / "r.json"), "--also", f"x={tmp_path / 'missing'}"])


def test_schedule_frames_keeps_the_noise_horizon_when_a_run_is_continued():
    import types

    b = _bench()
    args = types.SimpleNamespace(task="metaworld/button-press-v3", seed=1, frames=40000, eval_every=5000,
                                 eval_episodes=5, threads=2, device="cpu", paper=False, checkpoint=None,
                                 episode_steps=100, expl_scale=None, reward_clip=None, schedule_frames=None,
                                 success_scale=None)
    cmd = b.run_cmd(args, "sparse", "out")
    assert "--success-scale" not in cmd
    assert cmd[cmd.index("--stddev-schedule") + 1] == "linear(1.0,0.1,16000)"  # 80 % of 20k agent steps
    args.schedule_frames = 30000  # continuing a 30k-frame run: its schedule, not a new one
    cmd = b.run_cmd(args, "sparse", "out")
    assert cmd[cmd.index("--stddev-schedule") + 1] == "linear(1.0,0.1,12000)"
    assert cmd[cmd.index("--num-train-frames") + 1] == "40000"
    args.success_scale = 10.0
    cmd = b.run_cmd(args, "diffusion-progress", "out")
    assert cmd[cmd.index("--success-scale") + 1] == "10.0" and "--reward-shaping" not in cmd
    args.shaping = "potential"
    cmd = b.run_cmd(args, "diffusion-progress", "out")
    assert cmd[cmd.index("--reward-shaping") + 1] == "potential"
    assert "--motion-scale" not in cmd
    args.motion_scale = 4.0
    cmd = b.run_cmd(args, "diffusion-progress", "out")
    assert cmd[cmd.index("--motion-scale") + 1] == "4.0"
    # the learned rewards' flags go to learned sources only (train-rl refuses shaping for sparse)
    args.checkpoint, args.expl_scale, args.reward_clip = "adroit-64", 0.0, -8.0
    learned, sparse = b.run_cmd(args, "diffusion-progress", "out"), b.run_cmd(args, "sparse", "out")
    for flag in ("--model", "--expl-scale", "--clip-min", "--success-scale", "--reward-shaping", "--motion-scale"):
        assert flag in learned and flag not in sparse
    assert sparse[sparse.index("--episode-steps") + 1] == "100"


def test_video_sheet_lays_out_every_nth_frame_per_row():
    pytest.importorskip("PIL")
    import numpy as np

    vs = load_script("benchmarks/video_sheet.py")
    a = np.zeros((21, 8, 6, 3), np.uint8)
    a[10] = 255  # the second kept frame is white
    img = vs.sheet([("a", a), ("b", a[:11])], every=10, scale=2, label_width=20)
    assert img.shape == (2 * 8 * 2, 20 + 3 * 6 * 2, 3)
    assert img[0:16, 20 + 12:20 + 24].min() == 255 and img[0:16, 20:32].max() == 0
    assert img[16:, 20 + 24:].min() == 255  # row b has two frames: the rest stays white canvas
    with pytest.raises(ValueError, match="frames of"):
        vs.sheet([("a", a), ("c", np.zeros((3, 4, 4, 3), np.uint8))], every=1)
