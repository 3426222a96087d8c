"""docs/serving.md's `/score` answers, checked as written: an image scorer's image rows answer
``scores`` (one float each), its videos ``parts`` (one list of frame scores each)."""
import httpx
import numpy as np
import pytest
import torch
from serve_toys import png_b64

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def image_model():
    from mmreward.vision import synthetic as S
    from mmreward.vision.image_reward import ConvTextConfig, ImageRewardModel

    torch.manual_seed(0)
    return ImageRewardModel.from_backbone(ConvTextConfig(vocab=S.vocabulary(), embed_dim=16)).eval()


def test_image_rows_answer_scores_and_videos_parts(image_model, start_server):
    """An ImageRewardModel scores videos too (it has parts); image rows used to answer
    {"parts": [[x]]} where the docs' table (and the raw image body) give {"scores": [x]}."""
    from mmreward.serve import RewardClient

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    url = start_server(image_model, max_items=2)
    rows = [{"prompt": "a red circle", "image": png_b64(im)} for im in images]
    body = httpx.post(url + "/score", json={"inputs": rows[:2]}).json()
    expected = image_model.score([{"prompt": "a red circle", "image": im} for im in images]).tolist()
    assert set(body) == {"scores"} and body["scores"] == pytest.approx(expected[:2], abs=1e-5)
    video = {"prompt": "a red circle", "video": [png_b64(im) for im in images]}
    body = httpx.post(url + "/score", json={"inputs": [video]}).json()
    assert set(body) == {"parts"} and len(body["parts"][0]) == 3
    assert set(httpx.post(url + "/score", json={"inputs": [rows[0], video]}).json()) == {"parts"}  # a video: parts
    assert httpx.post(url + "/score", json={"inputs": rows[:1], "output": "parts"}).json()["parts"][0] == \
        pytest.approx(expected[:1], abs=1e-5)  # asked for: still given
    # the client splits a request at the server's max_items (2): every slice answers the first one's column
    answer = RewardClient(url).score(rows + [video])
    assert set(answer) == {"scores"} and len(answer["scores"]) == 4
    answer = RewardClient(url).score([video] + rows)
    assert set(answer) == {"parts"} and [len(p) for p in answer["parts"]] == [3, 1, 1, 1]
