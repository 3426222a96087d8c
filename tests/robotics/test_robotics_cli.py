"""`mmreward robotics …` commands (the same code path as the Python API)."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from mmreward import cli
from mmreward.robotics.cli import main
from mmreward.robotics.data.episodes import load_episode, read_manifest

from mmreward.robotics.envs.base import offscreen_render_problem  # noqa: E402

_missing = [m for m in ("mujoco", "metaworld", "gymnasium") if importlib.util.find_spec(m) is None]
_why = (f"robotics extra not installed (missing {', '.join(_missing)})" if _missing else offscreen_render_problem())
needs_sim = pytest.mark.skipif(_why is not None, reason=str(_why))


def test_robotics_is_a_top_level_command(capsys):
    assert cli.main(["--help"]) == 0
    assert "robotics" in capsys.readouterr().out
    assert cli.main(["robotics", "collect", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--tasks", "--episodes", "--policy", "--noise", "--size", "--camera", "--action-repeat", "--out",
                 "--seed", "--max-steps"):
        assert flag in out


@needs_sim
def test_collect_command_prints_summary_and_writes_episodes(tmp_path, capsys):
    out = tmp_path / "eps"
    code = main(["collect", "--tasks", "door-open-v3,drawer-open-v3", "--episodes", "1", "--policy", "noisy",
                 "--noise", "0.6", "--size", "32", "--action-repeat", "2", "--max-steps", "4", "--out", str(out),
                 "--seed", "7", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0
    assert "2 episodes" in text and "success rate" in text and "10 frames" in text and "frames/s" in text
    entries = read_manifest(str(out))
    assert [(e["task"], e["noise"], e["seed"], e["size"]) for e in entries] == [
        ("door-open-v3", 0.6, 7, [32, 32]), ("drawer-open-v3", 0.6, 7, [32, 32])]
    ep = load_episode(str(out / entries[1]["file"]))
    assert ep.frames.shape == (5, 32, 32, 3)

    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "2 episodes, 10 frames" in info and "noisy σ=0.6" in info


@needs_sim
def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["collect", "--tasks", "door-opne-v3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown Meta-World task 'door-opne-v3'" in err and "door-open-v3" in err
    assert main(["info", str(tmp_path / "none")]) == 2
    assert "no manifest.json" in capsys.readouterr().err


@needs_sim
def test_tasks_command(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "metaworld (50)" in out and "door-open-v3" in out and "adroit-door" in out


def test_import_videos_command(tmp_path, capsys):
    pytest.importorskip("cv2", reason="OpenCV (opencv-python) is not installed: video I/O needs it")
    from mmreward.robotics.data.video import write_frame_folder

    frames = np.random.default_rng(0).integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
    write_frame_folder(str(tmp_path / "demo_a"), frames)
    code = main(["import-videos", str(tmp_path / "demo_a"), "--task", "my-task", "--out", str(tmp_path / "out"),
                 "--size", "20", "--no-progress"])
    assert code == 0 and "1 episodes, unlabelled" in capsys.readouterr().out
    (entry,) = read_manifest(str(tmp_path / "out"))
    assert entry["task"] == "my-task" and np.array_equal(load_episode(str(tmp_path / "out" / entry["file"])).frames, frames)


def test_entry_point_runs_in_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mmreward.cli", "robotics", "info", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr


def test_import_videos_task_labels_never_leave_the_output_folder(tmp_path, capsys):
    """--task ../../x or a/b wrote the episode file outside --out; an empty label was accepted."""
    pytest.importorskip("cv2", reason="OpenCV (opencv-python) is not installed: video I/O needs it")
    import os

    from mmreward.robotics.data.video import write_frame_folder

    write_frame_folder(str(tmp_path / "demo_a"), np.zeros((3, 16, 16, 3), np.uint8))
    out = tmp_path / "deep" / "out"
    for label in ("../../x", "a/b"):
        assert main(["import-videos", str(tmp_path / "demo_a"), "--task", label, "--out", str(out), "--size", "16",
                     "--no-progress"]) == 0
    capsys.readouterr()
    entries = read_manifest(str(out))
    assert [e["task"] for e in entries] == ["../../x", "a/b"]  # the manifest keeps the labels as given
    for e in entries:
        assert os.path.dirname(e["file"]) == "" and (out / e["file"]).is_file()
    assert sorted(p.name for p in tmp_path.rglob("*.npz")) == sorted(e["file"] for e in entries)  # nothing elsewhere
    for label in ("", "  "):
        assert main(["import-videos", str(tmp_path / "demo_a"), "--task", label, "--out", str(tmp_path / "o2"),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "task must be a non-empty label" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o2").exists()
