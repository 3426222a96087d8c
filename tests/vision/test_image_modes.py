"""Unusual-but-valid images: every PIL mode a real file opens in (RGBA / LA with transparency, palette
with transparency, 1-bit, grey, CMYK JPEG, 16-bit PNG) scored exactly as the official code of each
published family prepares it — ImageReward resizes the image as opened and converts to RGB after,
qwen-vl-utils pastes RGBA over white — and clear errors for URLs, data: URIs and folders."""
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from published_fixtures import PROMPTS, TOLERANCE, reference  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.inputs import Conversation, ImagePrompt  # noqa: E402
from mmreward.vision.images import ImageLoadError, load_image, to_tensor  # noqa: E402


def write_mode_images(folder: str) -> dict:
    """One file per mode, with structure and transparent regions whose hidden colours are not black."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(3)
    h, w = 45, 67
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], -1)
    rgb = (rgb + rng.integers(-40, 41, rgb.shape)).clip(0, 255).astype(np.uint8)
    alpha = np.full((h, w), 255, np.uint8)
    alpha[:, :25] = 0  # fully transparent, hidden colours kept
    alpha[:, 25:40] = 128
    images = {
        "rgba": Image.fromarray(np.dstack([rgb, alpha])),
        "la": Image.fromarray(np.dstack([rgb[..., 0], alpha])),
        "palette": Image.fromarray(rgb).quantize(32),
        "bilevel": Image.fromarray(rgb[..., 0] > 120),
        "grey": Image.fromarray(rgb[..., 1]),
    }
    paths = {}
    for name, im in images.items():
        paths[name] = os.path.join(folder, f"{name}.png")
        im.save(paths[name], **({"transparency": 0} if name == "palette" else {}))
    paths["cmyk"] = os.path.join(folder, "cmyk.jpg")
    Image.fromarray(rgb).convert("CMYK").save(paths["cmyk"], quality=95)
    return paths


@pytest.fixture(scope="module")
def mode_images(tmp_path_factory):
    return write_mode_images(str(tmp_path_factory.mktemp("modes")))


def test_imagereward_matches_official_on_every_mode(mode_images, tmp_path):
    """Official ImageReward runs Resize + CenterCrop on the PIL image as opened (palette / 1-bit resized
    nearest, RGBA / LA with premultiplied alpha) and converts to RGB after: converting first differed
    by up to 230/255 per pixel on RGBA, LA, palette and 1-bit files."""
    folder = str(tmp_path / "ImageReward")
    paths = list(mode_images.values())
    ref = reference("imagereward", folder, image_size=32, images=paths, prompts=PROMPTS)
    model = mmreward.load(folder)
    for p, want in zip(PROMPTS, ref["scores"]):
        got = model.score([ImagePrompt(p, x) for x in paths])
        assert (got - torch.tensor(want)).abs().max() <= TOLERANCE, (p, got, want)
        # a PIL image as opened scores as its file does
        from PIL import Image

        opened = [Image.open(x) for x in paths]
        assert torch.equal(model.score([ImagePrompt(p, x) for x in opened]), got)


def test_qwen_vl_pastes_rgba_over_white(mode_images, tmp_path):
    """qwen-vl-utils' to_rgb pastes an RGBA image over white (transparent pixels become white, not the
    colours hidden under them): pixels and rewards equal the model card's on RGBA / LA / palette files."""
    folder = str(tmp_path / "Skywork-VL-Reward-qwen2_vl")
    convs = [[{"role": "user", "content": [{"type": "image", "image": mode_images[k]},
                                           {"type": "text", "text": "What colour is the square?"}]},
              {"role": "assistant", "content": "The answer is red."}] for k in ("rgba", "la", "palette")]
    ref = reference("qwen_vl", folder, flavour="qwen2_vl", conversations=convs)
    rm = mmreward.load(folder)
    got = rm.score([Conversation(c) for c in convs])
    assert (got - torch.tensor(ref["rewards"])).abs().max() <= TOLERANCE, (got, ref["rewards"])
    for conv, enc in zip(convs, ref["encoded"]):
        ours = rm.encode([Conversation(conv)])
        assert float(ours["pixel_values"].double().sum()) == pytest.approx(enc["pixel_values_sum"], rel=1e-6)


def test_rgba_background_is_explicit(mode_images):
    """Without a background the alpha is dropped (PIL / transformers); with one, RGBA is composited."""
    from PIL import Image

    im = Image.open(mode_images["rgba"])
    hidden = np.asarray(im)[:, :25, :3]
    assert np.array_equal(np.asarray(load_image(mode_images["rgba"]))[:, :25], hidden)
    assert (np.asarray(load_image(mode_images["rgba"], background=(255, 255, 255)))[:, :25] == 255).all()


@pytest.mark.parametrize("path, message", [
    ("https://example.com/cat.png", "is a URL; images are read from local files only"),
    ("HTTP://EXAMPLE.COM/cat.png", "is a URL"),
    ("s3://bucket/cat.png", "is a URL"),
])
def test_remote_images_are_refused_clearly(path, message):
    with pytest.raises(ImageLoadError, match=message) as err:
        to_tensor(path, "input 2")
    assert str(err.value).startswith("input 2: ")


def test_a_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageLoadError, match="is a folder, not an image file"):
        to_tensor(str(tmp_path), "input 0")


def test_an_animated_file_gives_its_first_frame(tmp_path):
    from PIL import Image

    a, b = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    path = str(tmp_path / "anim.webp")
    Image.fromarray(a).save(path, save_all=True, append_images=[Image.fromarray(b)], duration=50, lossless=True)
    assert np.array_equal(np.asarray(load_image(path)), a)


def test_out_of_range_float_images_get_the_right_hint():
    with pytest.raises(ValueError, match=r"input 1: image has values in \[-1, 1\].*\(x \+ 1\) / 2"):
        to_tensor(torch.linspace(-1, 1, 3 * 4 * 4).view(3, 4, 4), "input 1")
    with pytest.raises(ValueError, match=r"\[0, 255\].*divide 0-255 images by 255"):
        to_tensor(np.linspace(0, 255, 4 * 4 * 3).reshape(4, 4, 3), "input 1")


def test_vl_rewardbench_parquet_images_keep_their_alpha(mode_images, tmp_path):
    """The parquet release's image bytes were made RGB when read (alpha dropped), so a Qwen-VL model
    could not paste an RGBA image over white as it does the same image given by path (data.jsonl)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from mmreward.vision.images import to_pil
    from mmreward.vision.published.qwen_vl import WHITE
    from mmreward.vision.published.vl_rewardbench import read_vl_rewardbench

    row = {"id": "RLAIF-V-14", "query": "What is in the image?", "response": ["a", "bb"], "human_ranking": [0, 1]}
    with open(mode_images["rgba"], "rb") as f:
        image = {"bytes": f.read(), "path": "rgba.png"}
    path = str(tmp_path / "test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist([{**row, "image": image}]), path)
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text(json.dumps({**row, "image_path": mode_images["rgba"]}) + "\n")
    from_bytes, from_file = read_vl_rewardbench(path)[0].image, read_vl_rewardbench(str(jsonl))[0].image
    want = np.asarray(to_pil(from_file, "file", WHITE))
    assert (want[:, :25] == 255).all()
    assert np.array_equal(np.asarray(to_pil(from_bytes, "bytes", WHITE)), want)


def test_file_paths_and_data_uris_are_read_as_qwen_vl_utils_reads_them(mode_images):
    """Qwen's message format (which the Skywork-VL loader takes) gives images as ``file://`` paths and
    base64 ``data:image`` URIs; both read the file's pixels (they were 'does not exist')."""
    import base64

    want = np.asarray(load_image(mode_images["palette"]))
    assert np.array_equal(np.asarray(load_image("file://" + mode_images["palette"])), want)
    with open(mode_images["palette"], "rb") as f:
        uri = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    assert np.array_equal(np.asarray(load_image(uri)), want)
    assert torch.equal(to_tensor(uri), to_tensor(mode_images["palette"]))
    with pytest.raises(ImageLoadError, match="input 1: image data: URI .* holds invalid base64"):
        to_tensor("data:image/png;base64,@@@not-base64", "input 1")
    with pytest.raises(ImageLoadError, match="does not hold a readable image"):
        to_tensor("data:image/png;base64," + base64.b64encode(b"not a png").decode(), "input 1")
    with pytest.raises(ImageLoadError, match="not base64 image data"):
        to_tensor("data:text/plain,hello", "input 1")


def test_qwen_messages_take_file_and_data_uri_images(mode_images):
    """A Skywork-style reward model scores a conversation whose image is a file:// path or a data: URI
    as it scores the plain path."""
    import base64

    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.vlm_data import check_image_files

    with open(mode_images["grey"], "rb") as f:
        uri = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    check_image_files([uri, "file://" + mode_images["grey"]], "row 0")  # training rows accept them too
    with pytest.raises(Exception, match="row 0: field 'images': image 0: image file '/nope.png' does not exist"):
        check_image_files(["file:///nope.png"], "row 0")
    from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel
    from mmreward.vision import synthetic as S

    torch.manual_seed(0)
    proc = tiny_processor(S.COLOUR_WORDS)
    rm = VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc)
    conv = [{"role": "user", "content": "what colour"}, {"role": "assistant", "content": "red"}]
    got = rm.score([Conversation(conv, [x]) for x in (mode_images["grey"], "file://" + mode_images["grey"], uri)])
    assert torch.allclose(got, got[:1].expand(3), atol=1e-6), got
