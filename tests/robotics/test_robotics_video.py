"""Videos and frame folders -> episode frames; import into an episode folder."""

import importlib.util

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python) is not installed: video I/O needs it")

from mmreward.robotics.collect import import_videos  # noqa: E402
from mmreward.robotics.data.episodes import EpisodeDataset, load_episode, read_manifest  # noqa: E402
from mmreward.robotics.data.video import (  # noqa: E402
    VideoError,
    load_frames,
    resize_frame,
    write_frame_folder,
    write_video,
)


def smooth_frames(t=6, h=48, w=64):
    """Smooth colour gradients that move over time (survive lossy mp4 coding well)."""
    y, x = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(t):
        r = (x * 255 / (w - 1) + i * 10) % 256
        g = y * 255 / (h - 1)
        b = np.full_like(r, 40 * i % 256)
        frames.append(np.stack([r, g, b], -1))
    return np.asarray(frames, dtype=np.uint8)


def test_frame_folder_roundtrip_is_exact_and_natural_sorted(tmp_path):
    frames = smooth_frames(t=12)
    folder = tmp_path / "frames"
    folder.mkdir()
    # names that sort wrongly as plain strings: f2 must come before f10
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"f{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("ignored")
    back = load_frames(str(folder))
    assert back.dtype == np.uint8 and np.array_equal(back, frames)
    assert np.array_equal(load_frames(str(folder), stride=3), frames[::3])


def test_mp4_roundtrip_close_and_resized(tmp_path):
    frames = smooth_frames()
    path = tmp_path / "clip.mp4"
    write_video(str(path), frames, fps=10)
    back = load_frames(str(path))
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames).mean() < 8  # lossy codec, same picture
    # channel order: red ramps along x, green along y
    assert back[0, :, -1, 0].mean() > back[0, :, 0, 0].mean() + 100
    small = load_frames(str(path), size=32)
    assert small.shape == (6, 32, 32, 3)
    ref = np.stack([resize_frame(f, 32) for f in frames])
    assert np.abs(small.astype(int) - ref).mean() < 8


def test_resize_center_crops_to_aspect():
    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:, 20:60] = 255  # the centre square is white, the sides black
    out = resize_frame(frame, 10)
    assert out.shape == (10, 10, 3) and out.min() == 255


def test_gif_is_read(tmp_path):
    frames = smooth_frames(t=4, h=16, w=16)
    path = str(tmp_path / "clip.gif")
    if not cv2.imwriteanimation(path, _animation(frames)):
        pytest.skip("this OpenCV build cannot write GIF")
    back = load_frames(path)
    assert back.shape == frames.shape  # GIF palette quantises colours: compare shape + rough content
    assert np.abs(back.astype(int) - frames).mean() < 20


def _animation(frames):
    anim = cv2.Animation()
    anim.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
    anim.durations = [100] * len(frames)
    return anim


def test_corrupt_video_reports_once(tmp_path):
    """FFmpeg's own decoder log ("moov atom not found") stays off stderr: the VideoError says it once. In a
    fresh process: OpenCV fixes FFmpeg's log level at its first capture or writer, so a test that wrote a
    video with cv2 before would decide it here."""
    import subprocess
    import sys

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00garbage" * 200)
    code = f"""
import pytest
from mmreward.robotics.data.video import VideoError, load_frames
from mmreward.vision.video import VideoReadError, read_frames
with pytest.raises(VideoError, match="broken.mp4"):
    load_frames({str(bad)!r})
with pytest.raises(VideoReadError, match="broken.mp4"):
    read_frames({str(bad)!r})
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_corrupt_and_missing_sources_name_the_path(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00garbage" * 200)
    with pytest.raises(VideoError, match="broken.mp4"):
        load_frames(str(bad))
    with pytest.raises(VideoError, match="missing .*nothing.mp4"):
        load_frames(str(tmp_path / "nothing.mp4"))
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "000.png").write_bytes(b"not a png")
    with pytest.raises(VideoError, match="000.png"):
        load_frames(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="empty"):
        load_frames(str(tmp_path / "empty"))
    (tmp_path / "clip.txt").write_text("x")
    with pytest.raises(VideoError, match="neither a frame folder nor a video"):
        load_frames(str(tmp_path / "clip.txt"))


def test_import_videos_into_episode_folder(tmp_path):
    src = tmp_path / "demos"
    frames = smooth_frames(t=7)
    write_video(str(src / "episode_000.mp4"), frames)
    write_frame_folder(str(src / "episode_001"), frames[:5])
    out = tmp_path / "out"
    summary = import_videos([str(src)], str(out), task="adroit-door", size=16, progress=False)
    assert summary.episodes == 2 and summary.frames == 7 + 5 and not summary.labelled
    entries = read_manifest(str(out))
    assert [e["file"] for e in entries] == ["adroit-door_demo_episode_000.npz", "adroit-door_demo_episode_001.npz"]
    assert entries[1]["labelled"] is False and entries[1]["success"] is None and entries[1]["policy"] == "demo"
    ep = load_episode(str(out / entries[1]["file"]))
    assert ep.frames.shape == (5, 16, 16, 3) and ep.actions.shape == (4, 0) and np.isnan(ep.rewards).all()
    assert np.array_equal(ep.frames, np.stack([resize_frame(f, 16) for f in frames[:5]]))
    ds = EpisodeDataset(str(out), n_history=3, policies=["demo"])
    assert len(ds) == (7 - 3) + (5 - 3) and ds[0]["frames"].shape == (4, 16, 16, 3)


def test_episodes_of_another_frame_size_do_not_join_a_folder(tmp_path, monkeypatch):
    """Collecting or importing into a folder of another frame size silently mixed sizes."""
    src = tmp_path / "demo"
    write_frame_folder(str(src), smooth_frames(t=3, h=16, w=16))
    out = tmp_path / "out"
    import_videos([str(src)], str(out), task="t", size=16, progress=False)
    with pytest.raises(ValueError, match=f"{out} holds episodes of 16x16 frames; these would be 24x24: use --size 16"):
        import_videos([str(src)], str(out), task="t", size=24, progress=False)
    assert len(read_manifest(str(out))) == 1
    import_videos([str(src)], str(out), task="u", size=16, progress=False)  # the same size joins
    assert len(read_manifest(str(out))) == 2
    if importlib.util.find_spec("metaworld") is not None:  # collect checks the folder before any environment
        import mmreward.robotics.envs as envs
        from mmreward.robotics.collect import collect_episodes

        monkeypatch.setattr(envs, "make_env", lambda *a, **k: pytest.fail("an environment started"))
        with pytest.raises(ValueError, match="holds episodes of 16x16 frames; these would be 64x64"):
            collect_episodes("door-open-v3", str(out), episodes=1, size=64, progress=False)


@pytest.mark.parametrize("stride", [0, 2.5, "2", True])
def test_a_stride_that_is_not_a_positive_integer_is_named_before_any_work(tmp_path, stride):
    """Before: stride 2.5 / "2" failed deep in list slicing ("slice indices must be integers"), stride 0
    of read_video / read_frame_folder with "slice step cannot be zero", True read as 1; import_videos
    made its output folder first."""
    from mmreward.robotics.data.video import read_frame_folder

    write_frame_folder(str(tmp_path / "clip"), smooth_frames(4))
    for read in (lambda: load_frames(str(tmp_path / "clip"), stride=stride),
                 lambda: read_frame_folder(str(tmp_path / "clip"), stride=stride),
                 lambda: import_videos([str(tmp_path / "clip")], str(tmp_path / "out"), task="t", stride=stride,
                                       progress=False)):
        with pytest.raises(ValueError, match=f"stride must be an integer >= 1.*got {stride!r}"):
            read()
    assert not (tmp_path / "out").exists()


def test_an_import_of_another_source_of_the_same_name_keeps_the_earlier_episode(tmp_path):
    """a/ep then b/ep into one folder (or two names that are both "-" once made ASCII) replaced the first
    episode's file and manifest entry; the same source imported again still replaces its own episode. One
    folder given as a string (not a list) was read character by character."""
    for name, t in (("a", 3), ("b", 4), ("猫", 5), ("犬", 6)):
        write_frame_folder(str(tmp_path / name / ("ep" if name in "ab" else name)), smooth_frames(t=t, h=16, w=16))
    out = str(tmp_path / "out")
    for name in ("a", "b", "猫", "犬", "a"):
        import_videos(str(tmp_path / name), out, task="t", size=16, progress=False)
    entries = read_manifest(out)
    assert [e["file"] for e in entries] == ["t_demo_ep.npz", "t_demo_ep-2.npz", "t_demo_-.npz", "t_demo_--2.npz"]
    assert [load_episode(f"{out}/{e['file']}").frames.shape[0] for e in entries] == [3, 4, 5, 6]


def test_grayscale_and_rgba_npz_demos_are_refused_saying_how_to_convert(tmp_path):
    """import-videos refused grayscale / RGBA ``.npz`` frames without the conversion the docs promise."""
    from mmreward.core.data import DataError

    rgb = smooth_frames(t=3, h=16, w=16)
    for name, frames, hint in (("gray", rgb[..., 0], r"np.repeat\(x\[\.\.\., None\], 3"),
                               ("rgba", np.concatenate([rgb, rgb[..., :1]], -1), r"x\[\.\.\., :3\]")):
        np.savez(tmp_path / f"{name}.npz", frames=frames)
        with pytest.raises(DataError, match=f"{name}.npz: 'frames' must be uint8 .*{hint}"):
            import_videos([str(tmp_path / f"{name}.npz")], str(tmp_path / "out"), task="t", size=16, progress=False)
