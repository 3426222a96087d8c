"""Video scoring: mp4 / gif / frame folders, aggregates (mean / min / trend), plot, bad files."""
import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python) is not installed: video I/O needs it")

from mmreward.core.data import DataError
from mmreward.core.inputs import VideoPrompt
from mmreward.vision.video import (
    VideoReadError,
    aggregate,
    plot_video_score,
    read_frames,
    score_video,
    video_frames,
)


def reddening_frames(t=10, h=32, w=32):
    """Frames that get redder over time (smooth, so lossy mp4 keeps the trend)."""
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i, ..., 0] = 20 + 20 * i
        frames[i, ..., 1] = 60
        frames[i, ..., 2] = 60
    return frames


def redness(prompts, x):  # a known scorer: mean red minus mean green / blue
    assert len(prompts) == len(x)
    return x[:, 0].mean((1, 2)) - x[:, 1:].mean((1, 2, 3))


def write_mp4(path, frames, fps=8):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frames.shape[2], frames.shape[1]))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


def test_trend_mean_min_from_an_array():
    frames = reddening_frames()
    res = score_video(redness, "something red", frames)
    expected = (20 + 20 * np.arange(10) - 60) / 255
    np.testing.assert_allclose(res.scores, expected, atol=1e-5)
    assert res.trend == pytest.approx(20 / 255, rel=1e-4)
    assert res.mean == pytest.approx(expected.mean(), abs=1e-5) and res.min == pytest.approx(expected[0], abs=1e-5)
    stride = score_video(redness, "something red", frames, stride=3)
    assert stride.frame_indices == [0, 3, 6, 9] and stride.trend == pytest.approx(20 / 255, rel=1e-4)


@pytest.mark.parametrize("kind", ["mp4", "gif", "folder"])
def test_reads_mp4_gif_and_frame_folders(kind, tmp_path):
    from PIL import Image

    frames = reddening_frames()
    if kind == "mp4":
        path = tmp_path / "clip.mp4"
        write_mp4(path, frames)
    elif kind == "gif":
        path = tmp_path / "clip.gif"
        Image.fromarray(frames[0]).save(path, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                        duration=125, loop=0)
    else:
        path = tmp_path / "frames"
        path.mkdir()
        for i, f in enumerate(frames):  # f2 must sort before f10
            Image.fromarray(f).save(path / f"f{i}.png")
    back, fps = read_frames(str(path))
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 6  # mp4 / gif are lossy
    if kind != "folder":
        assert fps == pytest.approx(8, rel=0.05)
    res = score_video(redness, "red", str(path), max_frames=8)
    assert len(res.scores) == 8 and res.trend > 0.05
    if kind != "folder":
        assert res.trend_per_second == pytest.approx(res.trend * fps)


def test_a_reward_model_scores_videos_frame_by_frame(tmp_path):
    """score_video with an image reward model = its per-frame scores of the VideoPrompt, in every
    form the video can take."""
    from mmreward.vision import synthetic as S
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel

    torch.manual_seed(0)
    model = ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=8))
    frames = reddening_frames(t=6)
    res = score_video(model, "a red circle", frames, batch_size=4)
    parts = model.score_parts([VideoPrompt("a red circle", frames)])[0]
    np.testing.assert_allclose(res.scores, parts.numpy(), atol=1e-6)
    assert res.mean == pytest.approx(float(model.score([VideoPrompt("a red circle", frames)])), abs=1e-6)
    as_tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
    np.testing.assert_allclose(score_video(model, "a red circle", as_tensor).scores, res.scores, atol=1e-5)
    path = tmp_path / "clip.mp4"
    write_mp4(path, frames)
    from_file = model.score_parts([{"prompt": "a red circle", "video": str(path)}])[0]
    assert from_file.shape == (6,) and torch.allclose(from_file, parts, atol=0.05)
    with pytest.raises(TypeError, match="does not score images"):
        from mmreward.core.inputs import TextPair
        from mmreward.core.model import RewardScorer

        class TextOnly(RewardScorer):
            input_types = (TextPair,)

        score_video(TextOnly(), "a red circle", frames)


def test_video_frames_accepts_every_form_and_names_bad_ones():
    frames = reddening_frames(t=4)
    assert len(video_frames(frames, stride=2)[0]) == 2
    assert len(video_frames(list(frames), max_frames=3)[0]) == 3
    t = torch.rand(4, 3, 8, 8, requires_grad=True)
    got, fps = video_frames(t)
    assert fps is None and len(got) == 4 and got[0].requires_grad
    with pytest.raises(ValueError, match=r"input 2: a video tensor must be float \[T, 3, H, W\]"):
        video_frames(torch.zeros(4, 8, 8, 3), "input 2")
    with pytest.raises(TypeError, match="input 2: a video must be"):
        video_frames(42, "input 2")
    with pytest.raises(ValueError, match="has no frames"):
        video_frames(frames[:0])


def test_plot_is_written(tmp_path):
    res = aggregate("a prompt", np.array([0.1, 0.3, 0.2, 0.5]), np.arange(4), fps=4.0)
    out = plot_video_score(res, str(tmp_path / "score.png"))
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_videos_give_clear_errors(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    with pytest.raises(VideoReadError, match="broken.mp4"):
        read_frames(str(bad))
    assert issubclass(VideoReadError, DataError)  # the CLI reports it as a user error (exit 2)
    with pytest.raises(VideoReadError, match="does not exist"):
        read_frames(str(tmp_path / "missing.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="no image files"):
        read_frames(str(tmp_path / "empty"))
    gif = tmp_path / "bad.gif"
    gif.write_bytes(b"GIF89a garbage")
    with pytest.raises(VideoReadError, match="bad.gif"):
        read_frames(str(gif))
    with pytest.raises(ValueError, match="uint8"):
        score_video(redness, "red", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="prompt"):
        score_video(redness, "", reddening_frames())


def tiny_scorer():
    from mmreward.vision import synthetic as S
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel

    torch.manual_seed(0)
    return ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=8))


def test_out_of_range_sampling_options_are_named_not_sliced(tmp_path, capsys):
    """0 / -1 / 1.5 as max_frames, stride or batch_size are refused by name: sliced, -1 dropped the
    last frame of an array, and a file read as "empty or corrupt"."""
    frames = reddening_frames(t=4)
    path = tmp_path / "clip.mp4"
    write_mp4(path, frames)
    for video in (frames, str(path)):
        for bad in (0, -1, 1.5):
            with pytest.raises(ValueError, match=f"max_frames must be an integer >= 1 .*, got {bad}$"):
                score_video(redness, "red", video, max_frames=bad)
            with pytest.raises(ValueError, match=f"stride must be an integer >= 1, got {bad}$"):
                score_video(redness, "red", video, stride=bad)
            with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {bad}$"):
                score_video(redness, "red", video, batch_size=bad)
        with pytest.raises(ValueError, match="max_frames must be an integer >= 1"):
            video_frames(video, max_frames=-1)
    with pytest.raises(ValueError, match="max_frames must be an integer >= 1"):
        read_frames(str(path), max_frames=0)
    from mmreward.cli import main

    # refused before the model loads: the model folder does not even exist
    for flag, value in (("--max-frames", "0"), ("--stride", "-1"), ("--batch-size", "0")):
        assert main(["score-video", "--model", str(tmp_path / "no_model"), "--prompt", "red", str(path),
                     flag, value]) == 2
        err = capsys.readouterr().err
        name = flag[2:].replace("-", "_")
        assert len(err.strip().splitlines()) == 1 and f"{name} must be an integer >= 1" in err, err


def test_video_files_are_decoded_while_scored_not_all_at_once(tmp_path):
    """score_video and a model's score_parts of a video file hold about one batch of frames, not the
    whole decoded video (here ~9 MB)."""
    import tracemalloc

    t, side = 100, 176
    ramp = np.linspace(0, 200, side)[None, :, None]
    frames = np.stack([np.broadcast_to(np.clip(ramp + i, 0, 255), (side, side, 3)) for i in range(t)]).astype(np.uint8)
    path = tmp_path / "long.mp4"
    write_mp4(path, frames, fps=25)
    model = tiny_scorer()
    runs = {"score_video": lambda: score_video(redness, "red", str(path), batch_size=8).scores,
            "score_parts": lambda: model.score_parts([VideoPrompt("a red circle", str(path))], batch_size=8)[0]}
    for name, run in runs.items():
        tracemalloc.start()
        try:
            scores = run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(scores) == t
        assert peak < frames.nbytes / 3, f"{name}: peak {peak} bytes for a {frames.nbytes}-byte video"


def test_a_truncated_video_warns_that_frames_are_missing(tmp_path):
    frames = np.repeat(np.arange(0, 240, 6, dtype=np.uint8)[:, None, None, None], 32 * 32 * 3).reshape(40, 32, 32, 3)
    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")  # the whole file reads without a warning
        assert len(read_frames(str(path))[0]) == 40
        assert len(read_frames(str(path), max_frames=5)[0]) == 5  # stopping early is not truncation
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"cut.avi: decoded (\d+) of the 40 frames its header declares") as record:
        got, _ = read_frames(str(cut))
    assert 0 < len(got) < 39 and f"decoded {len(got)} of" in str(record[0].message)


def test_a_still_image_is_one_frame_without_a_frame_rate(tmp_path):
    from PIL import Image

    frames = reddening_frames(t=5)
    Image.fromarray(frames[2]).save(tmp_path / "still.png")
    got, fps = read_frames(str(tmp_path / "still.png"))
    assert got.shape == (1, 32, 32, 3) and fps is None
    res = score_video(redness, "red", str(tmp_path / "still.png"))
    assert len(res.scores) == 1 and res.fps is None and res.trend_per_second is None
    animated = tmp_path / "anim.png"  # an animated PNG is a video: every frame is read
    Image.fromarray(frames[0]).save(animated, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                    duration=100)
    assert len(read_frames(str(animated))[0]) == 5


def test_a_bad_video_among_inputs_names_the_input(tmp_path):
    model = tiny_scorer()
    path = tmp_path / "ok.mp4"
    write_mp4(path, reddening_frames(t=3))
    with pytest.raises(VideoReadError, match=r"input 1: video '.*gone.mp4' does not exist"):
        model.score([VideoPrompt("red", str(path)), VideoPrompt("red", str(tmp_path / "gone.mp4"))])
    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 20)
    with pytest.raises(VideoReadError, match=r"input 2: .*bad.mp4"):
        model.score([VideoPrompt("red", str(path)), VideoPrompt("red", reddening_frames(t=2)),
                     VideoPrompt("red", str(tmp_path / "bad.mp4"))])


def test_the_pixel_scorer_of_a_model_wants_one_prompt_per_image():
    from mmreward.vision.scoring import as_pixel_scorer

    score = as_pixel_scorer(tiny_scorer())
    images = torch.rand(2, 3, 16, 16)
    assert score(["red", "blue"], images).shape == (2,)
    with pytest.raises(ValueError, match="give one prompt per image: 2 images, got 1 prompts"):
        score(["red"], images)
    with pytest.raises(ValueError, match="give one prompt per image: 2 images, got a str"):
        score("ab", images)
