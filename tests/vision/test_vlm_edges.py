"""Edge inputs of the VLM reward models (VLMRewardModel, VisualPRM): inputs past the backbone's context
are refused naming the input and the lengths (nothing is truncated), in scoring and in training."""
import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.inputs import Conversation, VisualSteps  # noqa: E402
from mmreward.core.trainer import TrainConfig  # noqa: E402
from mmreward.vision import synthetic as S  # noqa: E402
from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config  # noqa: E402
from mmreward.vision.visual_prm import VisualPRM, VisualPRMConfig  # noqa: E402
from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel, train_vlm_reward  # noqa: E402


@pytest.fixture(scope="module")
def proc():
    return tiny_processor(S.COLOUR_WORDS)


def short_context(proc, n=30):
    cfg = tiny_qwen2vl_config(proc)
    cfg.text_config.max_position_embeddings = n
    return cfg


IMG = np.zeros((56, 56, 3), np.uint8)  # 4 image tokens with the tiny processor


def turns(user):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": "red"}]


def test_inputs_past_the_context_are_refused_naming_them(proc, tmp_path):
    torch.manual_seed(0)
    rm = VLMRewardModel(VLMRewardConfig(), short_context(proc), proc)
    ok = Conversation(turns("red"), [IMG])
    assert rm.score([ok]).shape == (1,)
    with pytest.raises(DataError, match=r"input 2: \d+ tokens \(4 of them image / video tokens\) exceed the model's "
                                        r"context of 30 tokens"):
        rm.score([ok, ok, Conversation(turns("red " * 40), [IMG])])
    prm = VisualPRM(VisualPRMConfig(), short_context(proc), proc)
    assert prm.score_parts([VisualSteps("red", ["red"], [IMG])])[0].shape == (1,)
    with pytest.raises(DataError, match=r"input 1: \d+ tokens .* context of 30 tokens"):
        prm.score([VisualSteps("red", ["red"], [IMG]), VisualSteps("red", ["red"] * 12, [IMG])])
    # training: the row is named
    rows = S.colour_preference_rows(4, seed=0)
    rows[2]["conversations_rejected"][-1] = {"role": "assistant", "content": "red " * 100}
    rm = VLMRewardModel(VLMRewardConfig(), short_context(proc, 100), proc)
    with pytest.raises(DataError, match=r"rows: row 2 \(rejected\): \d+ tokens .* context of 100 tokens"):
        train_vlm_reward(rm, rows, TrainConfig(output_dir=str(tmp_path / "run"), batch_size=4, max_steps=1,
                                               progress=False, log_every=0, tensorboard=False, plot=False))
