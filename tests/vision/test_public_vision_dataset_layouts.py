"""Rows in the published layouts of public image / VLM reward datasets (Pick-a-Pic v2, HPDv2, ImageReward's
train.json, ImageRewardDB, RLAIF-V / MM-RLHF, VLFeedback) are read as their authors mean them, or refused
with one error naming the fields to give."""
import base64
import io
import json
import warnings

import pytest
import torch
from PIL import Image

from mmreward.core.data import DataError
from mmreward.vision.images import to_pil, to_tensor
from mmreward.vision.train import as_ranked_sets, read_ranked_sets
from mmreward.vision.vlm_data import published_pair_row

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def png(colour: str) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (8, 8), COLOURS[colour]).save(b, "PNG")
    return b.getvalue()


def colour_of(image) -> tuple:
    return tuple(int(v) for v in (to_tensor(image)[:, 0, 0] * 255).round())


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def test_pickapic_v2_rows_labels_ties_and_unlabelled_rows(tmp_path):
    """caption, jpg_0 / jpg_1 (binary columns), label_0 / label_1 (1 = preferred, 0.5 each = tie), has_label."""
    rows = [dict(caption="a red cube", jpg_0=png("red"), jpg_1=png("blue"), label_0=1.0, label_1=0.0, has_label=True),
            dict(caption="a blue cube", jpg_0=png("red"), jpg_1=png("blue"), label_0=0.0, label_1=1.0, has_label=True),
            dict(caption="a cube", jpg_0=png("red"), jpg_1=png("green"), label_0=0.5, label_1=0.5, has_label=True),
            dict(caption="no vote", jpg_0=png("red"), jpg_1=png("green"), label_0=0.0, label_1=0.0, has_label=False)]
    path = write_parquet(tmp_path / "train-00000-of-00001.parquet", rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sets = read_ranked_sets(path)
    assert [e.prompt for e in sets] == ["a red cube", "a blue cube", "a cube"]
    assert [e.ranks.tolist() for e in sets] == [[0, 1], [1, 0], [0, 0]]  # the 0.5 / 0.5 tie forms no pair
    assert [colour_of(im) for im in sets[0].images] == [COLOURS["red"], COLOURS["blue"]]
    assert any("1 Pick-a-Pic row(s) with has_label false" in str(w.message) for w in caught)


def test_pickapic_bad_label_is_named(tmp_path):
    path = write_parquet(tmp_path / "p.parquet", [dict(caption="c", jpg_0=png("red"), jpg_1=png("blue"),
                                                       label_0=0.7, label_1=0.3)])
    with pytest.raises(DataError, match=r"row 0: Pick-a-Pic labels \(label_0, label_1\).*\(0.7, 0.3\)"):
        read_ranked_sets(path)


def test_hpdv2_train_and_test_json(tmp_path):
    """HPSv2's train.json: human_preference 1 = preferred; test.json: rank, lower = better."""
    for c in COLOURS:
        Image.new("RGB", (8, 8), COLOURS[c]).save(tmp_path / f"{c}.png")
    train = tmp_path / "train.json"
    train.write_text(json.dumps([{"prompt": "blue", "image_path": ["red.png", "blue.png"], "human_preference": [0, 1]}]))
    (e,) = read_ranked_sets(str(train))
    assert e.ranks.tolist() == [1, 0] and colour_of(e.images[1]) == COLOURS["blue"]
    test = tmp_path / "test.json"
    test.write_text(json.dumps([{"prompt": "g", "image_path": ["red.png", "green.png", "blue.png"], "rank": [2, 0, 1]}]))
    (e,) = read_ranked_sets(str(test))
    assert e.ranks.tolist() == [2, 0, 1] and colour_of(e.images[1]) == COLOURS["green"]


def test_hpdv2_hub_parquet_image_lists(tmp_path):
    """The hub parquet: image is a list of datasets Image values {"bytes", "path"}; image_path names files
    that are not here."""
    rows = [{"prompt": "p", "image": [{"bytes": png("red"), "path": "a.jpg"}, {"bytes": png("green"), "path": "b.jpg"}],
             "image_path": ["a.jpg", "b.jpg"], "human_preference": [1, 0], "rank": []}]
    (e,) = read_ranked_sets(write_parquet(tmp_path / "test.parquet", rows))
    assert e.ranks.tolist() == [0, 1] and colour_of(e.images[0]) == COLOURS["red"]


def test_imagereward_train_json_generations_ranking(tmp_path):
    for c in COLOURS:
        Image.new("RGB", (8, 8), COLOURS[c]).save(tmp_path / f"{c}.png")
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"prompt": "p", "generations": ["red.png", "blue.png", "green.png"],
                                 "ranking": [3, 1, 1]}]))
    (e,) = read_ranked_sets(str(path))
    assert e.ranks.tolist() == [3, 1, 1]


def test_imagerewarddb_per_image_rows_are_grouped_by_prompt_id(tmp_path):
    rows = [{"image": {"bytes": png(c), "path": None}, "prompt_id": pid, "prompt": f"prompt {pid}", "rank": r,
             "overall_rating": 5}
            for pid, c, r in (("000a", "red", 2), ("000b", "green", 1), ("000a", "blue", 1), ("000b", "red", 2))]
    sets = read_ranked_sets(write_parquet(tmp_path / "validation.parquet", rows))
    assert [(e.prompt, e.ranks.tolist()) for e in sets] == [("prompt 000a", [2, 1]), ("prompt 000b", [1, 2])]
    assert [colour_of(im) for im in sets[0].images] == [COLOURS["red"], COLOURS["blue"]]


def test_unknown_layout_names_the_fields_to_give(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"text": "p", "pics": ["a.png", "b.png"], "score": [1, 2]}) + "\n")
    with pytest.raises(DataError, match=r"row 0: not a ranked image set: missing field 'images' / 'ranks' "
                                        r"\(fields present: \['pics', 'score', 'text'\]\).*prompt, images, ranks"):
        read_ranked_sets(str(path))


def test_native_rows_with_inline_images(tmp_path):
    """Before: a data: URI (as read_records makes of an Image column) was 'image file ... does not exist'."""
    uri = "data:image/png;base64," + base64.b64encode(png("green")).decode()
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "p", "images": [uri, uri], "ranks": [0, 1]}) + "\n")
    (e,) = read_ranked_sets(str(path))
    assert colour_of(e.images[0]) == COLOURS["green"]
    rows = [{"prompt": "p", "images": [{"bytes": png("red"), "path": None}, {"bytes": png("blue"), "path": None}],
             "ranks": [1, 0]}]
    (e,) = read_ranked_sets(write_parquet(tmp_path / "rows.parquet", rows))
    assert e.ranks.tolist() == [1, 0] and colour_of(e.images[1]) == COLOURS["blue"]


def test_in_memory_rows_bytes_pil_and_pickapic_layout():
    (a, b) = as_ranked_sets([
        {"prompt": "p", "images": [png("red"), Image.new("RGB", (8, 8), COLOURS["blue"])], "ranks": [0, 1]},
        {"caption": "c", "jpg_0": png("green"), "jpg_1": png("red"), "label_0": 0, "label_1": 1}])
    assert colour_of(a.images[0]) == COLOURS["red"] and b.ranks.tolist() == [1, 0]
    assert colour_of(b.images[0]) == COLOURS["green"]


def test_image_readers_take_bytes_structs_and_octet_stream_uris():
    assert colour_of(png("red")) == COLOURS["red"]
    assert to_pil({"bytes": png("blue"), "path": "x.png"}).getpixel((0, 0)) == COLOURS["blue"]
    uri = "data:application/octet-stream;base64," + base64.b64encode(png("green")).decode()
    assert colour_of(uri) == COLOURS["green"]
    with pytest.raises(DataError, match="image 3: image bytes does not hold a readable image"):
        to_tensor(b"not an image", "image 3")
    assert torch.is_tensor(to_tensor(bytearray(png("red"))))


def test_rlaif_v_and_mm_rlhf_rows_map_to_conversation_pairs():
    row = {"image": "data:x", "question": "What is red?", "chosen": "The cube.", "rejected": "The sky.", "idx": 3}
    out = published_pair_row(row, "row 0")
    assert out["images"] == "data:x" and out["idx"] == 3
    assert out["conversations_chosen"] == [{"role": "user", "content": "What is red?"},
                                           {"role": "assistant", "content": "The cube."}]
    assert out["conversations_rejected"][1] == {"role": "assistant", "content": "The sky."}
    native = {"images": [], "conversations_chosen": [], "conversations_rejected": []}
    assert published_pair_row(native) is native


def test_vlfeedback_rows_are_refused_naming_the_fields():
    row = {"id": "1", "prompt": "q", "models": ["a", "b"], "image": "data:x",
           "completions": [{"model": "a", "response": "r", "annotations": {}}]}
    with pytest.raises(DataError, match="row 2: a VLFeedback-style row.*image, question, chosen, rejected"):
        published_pair_row(row, "row 2")


def test_imagerewarddb_group_of_one_image_names_its_prompt_id(tmp_path):
    rows = [{"image": {"bytes": png("red"), "path": None}, "prompt_id": "000z", "prompt": "p", "rank": 1}]
    with pytest.raises(DataError, match=r"prompt_id '000z' \(set 0\): field 'images' must be a list of >= 2"):
        read_ranked_sets(write_parquet(tmp_path / "t.parquet", rows))


def test_a_hub_dataset_id_is_named_in_the_run_fingerprint():
    """Before: the fingerprint opened the id as a file (FileNotFoundError after the rows were read)."""
    from mmreward.vision.train import ImageRewardTrainConfig, _data_digest

    cfg = ImageRewardTrainConfig(data="yuvalkirstain/pickapic_v2", split="validation_unique")
    assert _data_digest(cfg) == {"hub_dataset": "yuvalkirstain/pickapic_v2", "split": "validation_unique"}


def test_an_rlaif_v_row_reads_as_a_vlm_preference_pair(tmp_path):
    """The mapping is what the VLM RM's pair reader uses: an RLAIF-V row becomes two conversations with its image;
    a VLFeedback row is refused naming the fields, through the same reader."""
    from mmreward.vision.vlm_rm import ConversationPair

    uri = "data:image/png;base64," + base64.b64encode(png("red")).decode()
    pair = ConversationPair.from_record({"image": uri, "question": "What is red?", "chosen": "The cube.",
                                         "rejected": "The sky."}, "row 0")
    for conv, reply in ((pair.chosen, "The cube."), (pair.rejected, "The sky.")):
        assert conv.messages[-1]["content"] == reply and conv.messages[0]["role"] == "user"
        assert len(conv.images) == 1
    with pytest.raises(DataError, match="row 1: a VLFeedback-style row"):
        ConversationPair.from_record({"prompt": "q", "image": uri, "completions": []}, "row 1")
