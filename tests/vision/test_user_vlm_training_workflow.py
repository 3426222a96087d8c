"""A multimodal RLHF user's VLM reward-model / VisualPRM workflow: LLaVA / InternVL-style rows that mark
the image with ``<image>`` in the question (one per image: removed from the text, the image goes at the
start of the first user turn; a count that does not match the row's images is refused naming the row)."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from mmreward.cli import main as mmreward_main  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.inputs import Conversation  # noqa: E402
from mmreward.vision import synthetic as S  # noqa: E402
from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config  # noqa: E402
from mmreward.vision.visual_prm import VisualPRM, VisualPRMConfig, VisualSteps  # noqa: E402
from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel, as_pairs  # noqa: E402

RED = np.full((56, 56, 3), (255, 0, 0), np.uint8)


@pytest.fixture(scope="module")
def proc():
    return tiny_processor(S.COLOUR_WORDS)


@pytest.fixture(scope="module")
def rm(proc):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc).eval()


def conv(question, images):
    return Conversation([{"role": "user", "content": question}, {"role": "assistant", "content": "red"}], images)


def test_llava_image_placeholder_is_the_image_not_text(rm):
    # "<image>\n" marks where the image is: the same model input as the image at the start of the turn
    plain = rm.score([conv("what colour is the image", [RED])])
    marked = rm.score([conv("<image>\nwhat colour is the image", [RED])])
    torch.testing.assert_close(marked, plain)
    sharegpt = Conversation([{"from": "human", "value": "<image>\nwhat colour is the image"},
                             {"from": "gpt", "value": "red"}], [RED])
    torch.testing.assert_close(rm.score([sharegpt]), plain)


@pytest.mark.parametrize("question, images", [("<image>\n<image>\nwhat colour", [RED]),   # 2 marks, 1 image
                                              ("<image>\nwhat colour", []),               # image missing
                                              ("<image>\nwhat colour", [RED, RED])])      # 1 mark, 2 images
def test_placeholder_count_not_matching_the_images_is_refused(rm, question, images):
    with pytest.raises(DataError, match=r"input 0.*'<image>' placeholder.*row gives \d image"):
        rm.score([conv(question, images)])
    row = {"images": images, "question": question, "chosen": "red", "rejected": "blue"}
    with pytest.raises(DataError, match=r"rows\.jsonl: row 0.*placeholder"):
        as_pairs([row], "rows.jsonl")


def test_visual_prm_reads_internvl_style_questions(proc):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        prm = VisualPRM(VisualPRMConfig(), tiny_qwen2vl_config(proc), proc).eval()
    steps = ["look at the image", "so it is red"]
    plain = prm.score_parts([VisualSteps("what colour is the image", steps, [RED])])[0]
    marked = prm.score_parts([VisualSteps("<image>\nwhat colour is the image", steps, [RED])])[0]
    torch.testing.assert_close(marked, plain)
    with pytest.raises(DataError, match="placeholder"):
        prm.score_parts([VisualSteps("<image>\n<image>\nwhat colour", steps, [RED])])


def test_cli_refuses_a_mismatched_row_before_training(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(RED).save(tmp_path / "red.png")
    rows = [{"image": "red.png", "question": "what colour is the image", "chosen": "red", "rejected": "blue"},
            {"image": "red.png", "question": "<image> <image> what colour", "chosen": "red", "rejected": "blue"}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = mmreward_main(["vision", "train-vlm-rm", "--data", str(tmp_path / "rows.jsonl"), "--backbone", "tiny",
                        "--out", str(tmp_path / "run"), "--max-steps", "1", "--no-progress", "--no-tensorboard",
                        "--no-plot"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "rows.jsonl: row 1" in err and "2 '<image>' placeholder(s)" in err, err
    assert not (tmp_path / "run" / "model").exists()


def test_best_of_n_names_the_bad_candidate(proc):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        prm = VisualPRM(VisualPRMConfig(), tiny_qwen2vl_config(proc), proc).eval()
    with pytest.raises(ValueError, match=r"best_of_n: candidate 1 has no steps"):
        prm.best_of_n([RED], "what colour", [["it is red"], []])
    with pytest.raises(TypeError, match=r"best_of_n: candidate 1 step 1 must be a string"):
        prm.best_of_n([RED], "what colour", [["it is red"], ["look", 3]])
    # tuples of steps work, and the scores are the per-candidate means of score_parts
    idx, scores = prm.best_of_n([RED], "what colour", [("look", "it is red"), ["it is blue"]])
    parts = prm.score_parts([VisualSteps("what colour", ["look", "it is red"], [RED]),
                             VisualSteps("what colour", ["it is blue"], [RED])])
    torch.testing.assert_close(scores, torch.stack([p.mean() for p in parts]))
    assert idx == int(scores.argmax())


def test_trl_style_image_placeholder_parts_are_the_rows_images():
    """TRL / transformers VLM rows: ``[{"type": "image"}, {"type": "text", ...}]`` in the user turn and the pictures
    in ``images``: read as the row's images (the same messages as the plain question); a count that does not
    match the images is refused, and a part that carries its own image is still named."""
    from mmreward.core.data import DataError
    from mmreward.vision.vlm_data import to_messages

    plain = to_messages([{"role": "user", "content": "What colour?"}, {"role": "assistant", "content": "Red."}], 1, "row 0")
    parts = to_messages([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
                         {"role": "assistant", "content": [{"type": "text", "text": "Red."}]}], 1, "row 0")
    assert parts == plain
    with pytest.raises(DataError, match="2 '<image>' placeholder"):
        to_messages([{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                   {"type": "text", "text": "q"}]}], 1, "row 0")
    with pytest.raises(DataError, match="content part 0 is an image part"):
        to_messages([{"role": "user", "content": [{"type": "image", "image": "a.png"},
                                                   {"type": "text", "text": "q"}]}], 1, "row 0")


def test_an_image_placeholder_part_outside_a_user_turn_is_refused():
    from mmreward.core.data import DataError
    from mmreward.vision.vlm_data import to_messages

    with pytest.raises(DataError, match="turn 1: a {'type': 'image'} placeholder in a assistant turn"):
        to_messages([{"role": "user", "content": "q"},
                     {"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": "A"}]}], 0, "row 0")
