"""VL-RewardBench harness: the released formats (GitHub data.jsonl with images beside it, Hugging Face
parquet with image bytes), the source-set grouping of the benchmark's cal.py, the accuracies on a
scorer whose answers are known, bad rows, and the command on a tiny Skywork-style reward model."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mmreward.core.data import DataError
from mmreward.core.inputs import Conversation
from mmreward.core.model import RewardScorer
from mmreward.vision.published.vl_rewardbench import (evaluate_vl_rewardbench, read_vl_rewardbench,
                                                       source_dataset)

# (id, dataset folder of image_path) as in the release: one row per source set, 2 for wildvision
IDS = [("LRVInstruction-000000007746", "vlfeedback"), ("RLAIF-V-14", "rlaif-v"), ("RLHF-V-31", "rlhf-v"),
       ("hallucination_pair-1003", "povid"), ("mathverse_1294", "reasoning_tasks"),
       ("mmmu_pro_test_Electronics_6", "reasoning_tasks"), ("wildvision-battle-13", "wildvision-battle"),
       ("wildvision-battle-14", "wildvision-battle")]


def released_rows(root: str) -> list[dict]:
    """Rows with the release's fields; the preferred answer is the longer one except in two rows."""
    rows, rng = [], np.random.default_rng(0)
    for k, (item_id, dataset) in enumerate(IDS):
        rel = f"images/{dataset}/{item_id}.jpg"
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(os.path.join(root, rel))
        long, short = "a long and careful answer " * 2, "short"
        good_first = k % 2 == 0
        responses = [long, short] if good_first else [short, long]
        ranking = [0, 1] if good_first else [1, 0]
        if item_id in ("RLHF-V-31", "mathverse_1294"):  # here people preferred the short answer
            ranking = ranking[::-1]
        rows.append({"id": item_id, "image_path": rel, "query": "What is in the image?", "response": responses,
                     "human_ranking": ranking, "models": ["a", "b"], "judge": "human", "rationale": None,
                     "query_source": "test", "meta": {}, "human_error_analysis": []})
    return rows


class LengthJudge(RewardScorer):
    """Scores a conversation by the length of its last answer (a rule whose accuracy is known)."""

    model_type = "length_judge"
    input_types = (Conversation,)

    def _score(self, items, batch_size):
        return torch.tensor([float(len(c.messages[-1]["content"])) for c in items])


@pytest.fixture
def jsonl(tmp_path):
    data = tmp_path / "VL_RewardBench" / "data"
    data.mkdir(parents=True)
    rows = released_rows(str(data))
    (data / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(data / "data.jsonl"), rows


def test_source_sets_follow_cal_py():
    assert [source_dataset(i) for i, _ in IDS] == [d for _, d in IDS]


def test_accuracies_of_a_known_scorer(jsonl):
    """The longer answer wins everywhere but RLHF-V-31 (hallucination) and mathverse_1294 (reasoning)."""
    items = read_vl_rewardbench(jsonl[0])
    assert [it.dataset for it in items] == [d for _, d in IDS] and os.path.isfile(items[0].image)
    result = evaluate_vl_rewardbench(LengthJudge(), items, batch_size=3)
    s = result["summary"]
    assert s["n"] == 8 and s["general"] == 100.0 and s["hallucination"] == pytest.approx(66.67)
    assert s["reasoning"] == 50.0 and s["overall_accuracy"] == 75.0
    assert s["macro_average"] == pytest.approx((100 + 200 / 3 + 50) / 3, abs=0.01)
    assert s["datasets"]["rlhf-v"] == 0.0 and [r["correct"] for r in result["items"]].count(False) == 2


def test_parquet_release_with_image_bytes(jsonl, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    base = os.path.dirname(jsonl[0])
    rows = []
    for r in jsonl[1]:
        with open(os.path.join(base, r["image_path"]), "rb") as f:
            image = {"bytes": f.read(), "path": os.path.basename(r["image_path"])}
        rows.append({k: v for k, v in r.items() if k not in ("image_path", "meta")} | {"image": image})
    path = str(tmp_path / "test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    items = read_vl_rewardbench(path, limit=5)
    assert len(items) == 5 and isinstance(items[0].image, Image.Image)
    assert evaluate_vl_rewardbench(LengthJudge(), items)["summary"]["n"] == 5


@pytest.mark.parametrize("field, value, message", [
    ("human_ranking", [0, 0], "human_ranking"),
    ("response", ["only one"], "two answers"),
    ("image_path", "images/missing.jpg", "does not exist"),
    # wrong types were coerced: "ab" became two answers, 0.9 / 1.2 ranks 0 / 1, null the query "None"
    ("response", "ab", "field 'response' must hold two answers"),
    ("human_ranking", [0.9, 1.2], "field 'human_ranking' must rank"),
    ("human_ranking", "01", "field 'human_ranking' must rank"),
    ("human_ranking", [False, True], "field 'human_ranking' must rank"),
    ("query", None, "field 'query' must be a string"),
    ("id", None, "field 'id' must be a non-empty string"),
])
def test_bad_row_is_named(jsonl, field, value, message):
    path, rows = jsonl
    rows[3][field] = value
    with open(path, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=f"row 3.*{message}"):
        read_vl_rewardbench(path)


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_is_refused_not_sliced(jsonl, limit):
    """limit=-1 dropped the last row; limit=0 read every row."""
    with pytest.raises(ValueError, match=f"limit must be an integer >= 1 .*got {limit}"):
        read_vl_rewardbench(jsonl[0], limit=limit)
    assert len(read_vl_rewardbench(jsonl[0], limit=1)) == 1


def test_command_with_a_skywork_style_model(jsonl, tmp_path, capsys):
    from published_fixtures import qwen_vl_reward_folder

    from mmreward.cli import main

    folder = qwen_vl_reward_folder(str(tmp_path / "rm"))
    out = str(tmp_path / "results.json")
    assert main(["vision", "vl-rewardbench", "--model", folder, "--data", jsonl[0], "--out", out]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 8 and set(summary) >= {"general", "hallucination", "reasoning", "overall_accuracy"}
    with open(out) as f:
        assert len(json.load(f)["items"]) == 8


def test_model_without_conversations_is_refused(jsonl):
    class ImageOnly(LengthJudge):
        input_types = ()

    with pytest.raises(TypeError, match="Conversation"):
        evaluate_vl_rewardbench(ImageOnly(), read_vl_rewardbench(jsonl[0]))
