"""docs/vision.md's claims about ``score`` inputs, checked as written."""
import numpy as np
import pytest
import torch

from mmreward.vision import ImagePrompt, VideoPrompt
from mmreward.vision import synthetic as S
from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=16)).eval()


def test_a_frame_list_of_two_sizes_is_named_with_both(model, tmp_path):
    """docs/vision.md: "the frames of one video share one size (a frame of another size is named with
    both sizes)". A list of frames of two sizes used to be scored, each frame resized on its own."""
    from PIL import Image

    a, b = np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"input 1 frame 2 is 9x8 pixels, frame 0 8x8"):
        model.score_parts([ImagePrompt("red", a), VideoPrompt("red", [a, a, b])])
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"input 0 frame 1 is 9x8 pixels, frame 0 8x8"):
        model.score([VideoPrompt("red", [str(tmp_path / "a.png"), str(tmp_path / "b.png")])])
    with pytest.raises(ValueError, match=r"frame 1 is 8x9 pixels"):
        model.score([VideoPrompt("red", [torch.rand(3, 8, 8), torch.rand(3, 8, 9)])])
    from mmreward.vision import ImageLoadError

    with pytest.raises(ImageLoadError, match=r"^input 0 frame 1: image file '.*nope.png' does not exist$"):
        model.score([VideoPrompt("red", [str(tmp_path / "a.png"), str(tmp_path / "nope.png")])])
    # frames of one size, in any accepted form, still score; a list equals the same frames as an array
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 100, 200)]
    mixed = [frames[0], Image.fromarray(frames[1]), str(tmp_path / "a.png")]
    assert len(model.score_parts([VideoPrompt("red", mixed)])[0]) == 3
    torch.testing.assert_close(model.score_parts([VideoPrompt("red", frames)])[0],
                               model.score_parts([VideoPrompt("red", np.stack(frames))])[0])


@pytest.mark.parametrize("overrides, words", [
    ({"head_hidden": (0,)}, "head_hidden must be a list of layer widths"),
    ({"head_hidden": 64}, "head_hidden must be a list of layer widths"),
    ({"head_dropout": (1.5, 0.0)}, "head_dropout must be a list of dropout probabilities in"),
    ({"head_dropout": (float("nan"),)}, "head_dropout must be a list of dropout probabilities in"),
    ({"head_hidden": (8,), "head_dropout": (0.1, 0.1)}, "head_dropout has 2 values but head_hidden only 1"),
])
def test_bad_head_settings_are_named(overrides, words):
    """docs/vision.md: "`head_hidden` / `head_dropout` change it". A bool / None dropout used to fail
    with "object of type 'bool' has no len()"; a width of 0 built an empty layer; a probability of
    1.5 failed inside torch."""
    cfg = ConvTextConfig(vocab=S.vocabulary(), embed_dim=16)
    with pytest.raises(ValueError, match=words):
        ImageRewardModel.from_backbone(cfg, **overrides)
    for off in (None, False, ()):  # no dropout at all
        m = ImageRewardModel.from_backbone(cfg, head_hidden=(8, 4), head_dropout=off)
        assert not any(isinstance(x, torch.nn.Dropout) for x in m.head) and m.config.head_dropout == ()
    m = ImageRewardModel.from_backbone(cfg, head_hidden=[8, 4], head_dropout=[0.3])  # fewer: after the first only
    assert [type(x).__name__ for x in m.head] == ["Linear", "Dropout", "Linear", "Linear"]


def test_from_backbone_names_a_missing_folder_and_a_model_that_is_not_a_dual_encoder(tmp_path):
    """docs/vision.md: a backbone is a dual encoder's config or a local folder; "Nothing is
    downloaded". A missing folder used to reach the hub client ("Repo id must be in the form ...",
    or a download of a hub id); a config of a text-only model an AttributeError on vision_config."""
    pytest.importorskip("transformers")
    from transformers import LlamaConfig

    from mmreward.vision.testing import word_tokenizer

    for path, words in ((tmp_path / "nope", "does not exist"), ("openai/clip-vit-base-patch32", "does not exist"),
                        (tmp_path, "has no config.json")):
        with pytest.raises(FileNotFoundError, match=f"backbone folder .* {words}: give a local transformers model"):
            ImageRewardModel.from_backbone(str(path))
    llama = LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(TypeError, match="LlamaModel is not a dual encoder"):
        ImageRewardModel.from_backbone(llama, tokenizer=word_tokenizer(["a"]))
