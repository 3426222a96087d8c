"""A robot-learning user's own data through the Diffusion Reward workflow (import -> train -> score)."""

import numpy as np
import pytest

pytest.importorskip("cv2", reason="OpenCV (opencv-python) is not installed: video I/O needs it")

from mmreward.core.data import DataError  # noqa: E402
from mmreward.robotics.collect import import_videos  # noqa: E402
from mmreward.robotics.data.episodes import EpisodeFileError, load_episode, read_manifest  # noqa: E402
from mmreward.robotics.data.video import resize_frame, write_video  # noqa: E402


def _frames(t=5, h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_import_videos_takes_the_npz_demos_of_a_mixed_folder(tmp_path):
    """A folder of mp4 and .npz demos imported only the videos, silently dropping the .npz ones (and an
    .npz named on its own was "neither a frame folder nor a video")."""
    src = tmp_path / "demos"
    write_video(str(src / "a.mp4"), _frames(seed=1))
    npz = _frames(t=6, seed=2)
    np.savez(src / "b.npz", frames=npz)
    out = tmp_path / "out"
    summary = import_videos([str(src)], str(out), task="my-task", size=16, progress=False)
    assert summary.episodes == 2
    files = [e["file"] for e in read_manifest(str(out))]
    assert files == ["my-task_demo_a.npz", "my-task_demo_b.npz"]
    ep = load_episode(str(out / files[1]))
    assert np.array_equal(ep.frames, np.stack([resize_frame(f, 16) for f in npz]))  # cropped + resized, exactly
    # on its own, with a stride
    summary = import_videos([str(src / "b.npz")], str(tmp_path / "o2"), task="t", size=16, stride=2, progress=False)
    assert summary.frames == 3


@pytest.mark.parametrize("frames, why", [(_frames().astype(np.float32) / 255, "float32"),
                                         (_frames().transpose(0, 3, 1, 2), r"uint8 \[5, 3, 24, 32\]")])
def test_import_videos_refuses_npz_frames_it_would_have_to_cast(tmp_path, frames, why):
    np.savez(tmp_path / "bad.npz", frames=frames)
    with pytest.raises(DataError, match=rf"bad.npz: 'frames' must be uint8 frames \[T, H, W, 3\].*{why}"):
        import_videos([str(tmp_path / "bad.npz")], str(tmp_path / "out"), task="t", size=16, progress=False)


def test_import_videos_never_imports_its_own_output(tmp_path):
    src = tmp_path / "demos"
    src.mkdir()
    np.savez(src / "a.npz", frames=_frames())
    with pytest.raises(ValueError, match="is one of the sources"):
        import_videos([str(src)], str(src), task="t", size=16, progress=False)
    out = src / "imported"  # the output folder inside the source folder: skipped on a rerun
    for _ in range(2):
        assert import_videos([str(src)], str(out), task="t", size=16, progress=False).episodes == 1
    assert [e["file"] for e in read_manifest(str(out))] == ["t_demo_a.npz"]


def test_an_animated_gif_is_read_with_all_its_frames(tmp_path):
    """OpenCV's VideoCapture read only the first frame of an animated GIF: an 8-frame demo was scored
    (and imported) as a 1-frame episode, without a word."""
    from PIL import Image

    from mmreward.robotics.data.video import read_video

    frames = np.zeros((8, 16, 16, 3), np.uint8)  # a white square moving right: exact in a GIF's palette
    for i in range(8):
        frames[i, 4:8, i:i + 4] = 255
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "demo.gif", save_all=True, append_images=images[1:])
    assert np.array_equal(read_video(str(tmp_path / "demo.gif")), frames)
    assert import_videos([str(tmp_path / "demo.gif")], str(tmp_path / "out"), task="t", size=16,
                         progress=False).frames == 8
    (tmp_path / "bad.gif").write_bytes(b"GIF89a not a gif")
    with pytest.raises(DataError, match="bad.gif: no frames could be decoded"):
        read_video(str(tmp_path / "bad.gif"))


def test_tasks_filter_selects_a_free_form_label_with_spaces(tmp_path, capsys):
    """import-videos keeps a label such as "pick cup" as given, but --tasks split it at the space into
    'pick' and 'cup': those episodes could not be selected (score / train-* --tasks)."""
    import json

    from mmreward.robotics.cli import main

    src = tmp_path / "demos"
    src.mkdir()
    np.savez(src / "a.npz", frames=_frames(t=2, h=64, w=64))
    out = tmp_path / "data"
    import_videos([str(src)], str(out), task="pick cup", size=64, progress=False)
    import_videos([str(src)], str(out), task="other", size=64, progress=False)
    assert main(["score", str(out), "--tasks", "pick cup", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in result["episodes"]] == ["pick-cup_demo_a"]


def test_refused_frames_say_how_to_convert_them():
    """Float, channels-first and single-frame inputs were refused with only "must be uint8 [T, H, W, 3]"."""
    import torch

    from mmreward.robotics.data.inputs import as_frames
    from mmreward.robotics.training import episodes_from

    frames = _frames(t=3, h=16, w=16)
    with pytest.raises(DataError, match=r"float32 \[3, 16, 16, 3\]; convert float images first: \(x \* 255\)"):
        as_frames(frames.astype(np.float32) / 255, "input 0: field 'frames'", 16)
    with pytest.raises(DataError, match=r"channels-first \[T, 3, H, W\]\? make them channels-last"):
        as_frames(frames.transpose(0, 3, 1, 2), "input 0: field 'frames'", 16)
    with pytest.raises(DataError, match=r"one frame \[H, W, 3\]\? pass x\[None\]"):
        as_frames(frames[0], "input 0: field 'frames'", 16)
    with pytest.raises(TypeError, match="convert float images first"):  # the trainers' input
        episodes_from([torch.from_numpy(frames).float()])
    with pytest.raises(ValueError, match="make them channels-last"):
        episodes_from([frames.transpose(0, 3, 1, 2)])


def test_training_on_a_folder_of_raw_demos_says_how_to_import_them(tmp_path, capsys):
    """train-* --data on the user's folder of mp4 / npz demos said only "no manifest.json in demos (not an
    episode folder?)", and the same for a path that does not exist."""
    from mmreward.robotics.cli import main

    src = tmp_path / "demos"
    src.mkdir()
    np.savez(src / "a.npz", frames=_frames(t=2, h=16, w=16))
    assert main(["train-codec", "--data", str(src), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert f"no manifest.json in {src}" in err and f"import-videos {src} --task <label>" in err
    assert not (tmp_path / "run").exists()
    assert main(["train-codec", "--data", str(tmp_path / "typo"), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    assert f"{tmp_path / 'typo'} does not exist" in capsys.readouterr().err


def test_stop_at_before_the_step_a_resumed_run_reached_is_reported_as_it_is(tmp_path, capsys):
    """A finished run resumed with --stop-at below its end printed "stopped at step 2 of 4 ... run again with
    --resume", its model saved all along; a run at step 4 of 6 given --stop-at 2 claimed to stop at 2."""
    import os

    from mmreward.robotics.cli import main

    src = tmp_path / "demos"
    src.mkdir()
    np.savez(src / "a.npz", frames=_frames(t=4, h=16, w=16))
    data = tmp_path / "data"
    import_videos([str(src)], str(data), task="t", size=16, progress=False)
    run = tmp_path / "codec"
    base = ["train-codec", "--data", str(data), "--out", str(run), "--batch-size", "2", "--set", "channels=4,4,4,4",
            "--set", "num_codes=8", "--eval-frames", "2", "--no-progress", "--log-every", "0"]
    assert main(base + ["--steps", "4"]) == 0
    capsys.readouterr()
    assert main(base + ["--steps", "4", "--resume", "--stop-at", "2"]) == 0
    out = capsys.readouterr().out
    assert "stopped at step" not in out and "saved" in out and os.path.isdir(run / "model")
    assert main(base + ["--steps", "6", "--overwrite", "--stop-at", "4"]) == 0
    assert "stopped at step 4 of 6:" in capsys.readouterr().out
    assert main(base + ["--steps", "6", "--resume", "--stop-at", "2"]) == 0
    assert "stopped at step 4 of 6 (--stop-at 2 is before the step the run had reached" in capsys.readouterr().out


def test_train_codec_on_non_square_frames_names_their_size(tmp_path, capsys):
    from mmreward.robotics.cli import main

    src = tmp_path / "demos"
    src.mkdir()
    np.savez(src / "a.npz", frames=_frames(t=2, h=16, w=24))
    import_videos([str(src)], str(tmp_path / "data"), task="t", size=(16, 24), progress=False)
    assert main(["train-codec", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--steps", "1",
                 "--no-progress"]) == 2
    assert "--data episodes have 16x24 frames, but the codec takes square frames" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_or_model_folder_given_as_data_is_named_as_such(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "train_config.json").write_text("{}")
    (run / "model" / "config.json").write_text("{}")
    for folder in (run, run / "model"):
        with pytest.raises(EpisodeFileError, match="is a model or training-run folder, not an episode folder") as e:
            read_manifest(str(folder))
        assert "import-videos" not in str(e.value)


def test_import_videos_refuses_files_of_its_own_output_folder(tmp_path):
    out = tmp_path / "mine"
    src = tmp_path / "demos"
    src.mkdir()
    np.savez(src / "a.npz", frames=_frames())
    assert import_videos([str(src / "a.npz")], str(out), task="t", size=16, progress=False).episodes == 1
    # a shell glob of the output folder's files (mine/*.npz --out mine) would import them again as new episodes
    with pytest.raises(ValueError, match="is inside --out"):
        import_videos([str(src / "a.npz"), str(out / "t_demo_a.npz")], str(out), task="t", size=16, progress=False)
    assert [e["file"] for e in read_manifest(str(out))] == ["t_demo_a.npz"]
