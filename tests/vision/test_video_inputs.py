"""Unusual-but-valid videos and frames: in-memory frames of different sizes are named, not a torch
stack error; animated PNG / WebP / GIF decode to their exact frames."""
import numpy as np
import pytest
import torch

pytest.importorskip("cv2", reason="OpenCV (opencv-python) is not installed: video I/O needs it")

from mmreward.vision.video import read_frames, score_video  # noqa: E402


def mean_pixel(prompts, x):
    return x.mean((1, 2, 3))


@pytest.mark.parametrize("batch_size", [1, 16])
def test_frames_of_different_sizes_are_named(batch_size):
    """A list of frames whose sizes differ used to fail inside torch.stack ("stack expects each tensor
    to be equal size"); it names the frame, as a frame folder does."""
    frames = [np.zeros((8, 10, 3), np.uint8), np.zeros((8, 10, 3), np.uint8), np.zeros((6, 10, 3), np.uint8)]
    with pytest.raises(ValueError, match=r"video frame 2 is 6x10 pixels, frame 0 8x10"):
        score_video(mean_pixel, "red", frames, batch_size=batch_size)
    with pytest.raises(ValueError, match=r"video frame 4 is 6x10"):  # indices of the source with a stride
        score_video(mean_pixel, "red", frames[:2] * 2 + frames[2:], stride=2, batch_size=batch_size)
    same = [torch.full((3, 8, 10), v) for v in (0.0, 0.5, 1.0)]
    assert score_video(mean_pixel, "red", same, batch_size=batch_size).scores == pytest.approx([0.0, 0.5, 1.0])


@pytest.mark.parametrize("ext", ["png", "webp", "gif"])
def test_animated_files_decode_to_their_frames(ext, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (12, 14, 3), dtype=np.uint8) for _ in range(4)]
    pil = [Image.fromarray(f) for f in frames]
    if ext == "gif":
        pil = [p.quantize(256) for p in pil]
        frames = [np.asarray(p.convert("RGB")) for p in pil]
    path = str(tmp_path / f"anim.{ext}")
    pil[0].save(path, save_all=True, append_images=pil[1:], duration=100, **({"lossless": True} if ext == "webp" else {}))
    got, fps = read_frames(path)
    assert fps == pytest.approx(10.0)
    assert np.array_equal(got, np.stack(frames))
    got, _ = read_frames(path, stride=2, max_frames=1)
    assert np.array_equal(got, np.stack(frames[:1]))


def test_qwen_vl_refusals_name_the_image_or_video(tmp_path):
    """A one-frame video file (Qwen-VL samples at least two frames) and an image wider than 200:1 are
    refused as the official pipeline refuses them, naming which video / image."""
    import cv2

    from mmreward.vision.published.qwen_vl import QwenVisionConfig, image_patches, read_video

    cfg = QwenVisionConfig(min_pixels=56 * 56, max_pixels=28 * 28 * 20)
    path = str(tmp_path / "one.mp4")
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 4, (32, 32))
    vw.write(np.zeros((32, 32, 3), np.uint8))
    vw.release()
    with pytest.raises(ValueError, match=r"^input 1 video 0: a video needs at least 2 frames, got 1"):
        read_video(path, cfg, "input 1 video 0")
    with pytest.raises(ValueError, match=r"^input 0 image 2: image aspect ratio must be below 200"):
        image_patches(np.zeros((1, 300, 3), np.uint8), cfg, "input 0 image 2")


def test_a_video_url_is_refused_clearly():
    from mmreward.vision.video import VideoReadError

    with pytest.raises(VideoReadError, match="is a URL; videos are read from local files"):
        score_video(mean_pixel, "red", "https://example.com/clip.mp4")


def test_a_frame_folder_skips_hidden_files(tmp_path):
    """macOS writes ``._name`` metadata beside each file it copies to other file systems; a frame
    folder holding them failed ("cannot read image '._f1.png'")."""
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(tmp_path / f"f{i + 1}.png")
        (tmp_path / f"._f{i + 1}.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "sub.png").mkdir()
    frames, fps = read_frames(str(tmp_path))
    assert fps is None and frames[:, 0, 0, 0].tolist() == [0, 40, 80]


def test_an_oversized_image_header_is_named(tmp_path):
    """A (corrupt) still image whose header declares more pixels than PIL's limit raised PIL's
    DecompressionBombError from read_frames; it is a VideoReadError / ImageLoadError naming the file."""
    import struct

    from mmreward.core.data import DataError
    from mmreward.vision.images import to_tensor

    path = tmp_path / "huge.bmp"  # a 20000 x 20000 24-bit BMP header and no pixel data
    header = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 20000, 20000, 1, 24, 0, 0,
                                                                        2835, 2835, 0, 0)
    path.write_bytes(header)
    for read in (read_frames, to_tensor):
        with pytest.raises(DataError, match="huge.bmp"):
            read(str(path))


def test_qwen_vl_video_frames_of_different_sizes_are_named():
    """A list of frames of different sizes failed in np.stack ("all input arrays must have the same shape")."""
    from mmreward.vision.published.qwen_vl import QwenVisionConfig, read_video

    frames = [np.zeros((28, 28, 3), np.uint8), np.zeros((56, 28, 3), np.uint8)]
    with pytest.raises(ValueError, match=r"^input 0 video 1 frame 1 is 56x28 pixels, frame 0 28x28"):
        read_video(frames, QwenVisionConfig(), "input 0 video 1")


def test_a_video_path_under_home_is_read(tmp_path, monkeypatch):
    """"~/clip/" was "video '~/clip' does not exist", although images, data files and model folders given so
    are the home folder's."""
    from PIL import Image

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "clip").mkdir()
    for i in range(2):
        Image.fromarray(np.full((4, 4, 3), 50 * i, np.uint8)).save(tmp_path / "clip" / f"{i}.png")
    frames, _ = read_frames("~/clip")
    assert frames[:, 0, 0, 0].tolist() == [0, 50]
