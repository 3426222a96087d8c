"""Two gaps of the RL-trainer integration: (1) a sample without a finite reward under OpenRLHF (its
``torch.tensor(rewards)`` cannot read None): ``missing_reward`` on the server and the adapter, a one-time
warning without it, counted in /metrics; (2) TRL's GRPOTrainer with a VLM policy over a VLM reward model:
prompts / completions and the dataset's image column become ``Conversation(messages, images)``, scored as
``model.score`` scores them, in-process and served, with clear errors when the images are missing."""
import logging
import math
import warnings
import zlib

import httpx
import numpy as np
import pytest
import torch
from serve_toys import ToyTextScorer, assert_same_scores

from mmreward.core.inputs import Conversation
from mmreward.serve import OpenRLHFRewardFunction, TRLRewardFunction
from mmreward.serve.cli import build_parser
from mmreward.serve.config import ServeConfig

QUERIES = [f"question {i} answer {w}" for i, w in enumerate(["one", "two", "three", "four", "five", "six"])]


class NanToy(ToyTextScorer):
    """No finite reward for the responses whose hash is 0 mod 3 (the same in-process and served)."""

    def _score(self, items, batch_size):
        out = super()._score(items, batch_size)
        bad = [zlib.crc32(str(it.response).encode()) % 3 == 0 for it in items]
        return torch.where(torch.tensor(bad), float("nan"), out)


def _missing(queries):
    return [i for i, q in enumerate(queries)
            if zlib.crc32(q.encode()) % 3 == 0]


def test_openrlhf_missing_reward_fills_nulls_in_process_and_served(start_server, caplog):
    toy = NanToy()
    missing = _missing(QUERIES)
    assert missing and len(missing) < len(QUERIES)  # the fixture holds both kinds
    # default: the documented protocol (null / None), and one warning naming the query
    plain_url = start_server(toy)
    with caplog.at_level(logging.WARNING, logger="mmreward.serve"):
        body = httpx.post(plain_url + "/get_reward", json={"query": QUERIES}).json()
        httpx.post(plain_url + "/get_reward", json={"query": QUERIES})
    assert [i for i, r in enumerate(body["rewards"]) if r is None] == missing
    warned = [r.getMessage() for r in caplog.records if "--missing-reward" in r.getMessage()]
    assert len(warned) == 1 and f"query {missing[0]} " in warned[0], warned
    metrics = httpx.get(plain_url + "/metrics").text
    assert f'mmreward_serve_missing_rewards_total{{endpoint="/get_reward",filled="false"}} {2 * len(missing)}' in metrics

    # the server's fallback: every reward a number, the finite ones unchanged; OpenRLHF's torch.tensor reads it
    url = start_server(toy, missing_reward=-1.0)
    filled = httpx.post(url + "/get_reward", json={"query": QUERIES}).json()
    assert [filled["rewards"][i] for i in missing] == [-1.0] * len(missing)
    assert filled["scores"] == filled["rewards"]
    assert [r for i, r in enumerate(filled["rewards"]) if i not in missing] == \
        [r for r in body["rewards"] if r is not None]
    assert torch.tensor(filled["rewards"]).isfinite().all()
    assert f'filled="true"}} {len(missing)}' in httpx.get(url + "/metrics").text

    # the adapter: the same keyword in-process and over a server without a fallback
    for target in (toy, plain_url):
        fn = OpenRLHFRewardFunction(target, missing_reward=-2).as_function()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a fallback given: no warning
            out = fn(QUERIES, None, None)
        assert [out["rewards"][i] for i in missing] == [-2.0] * len(missing) and out["scores"] == out["rewards"]
        assert_same_scores([r for i, r in enumerate(out["rewards"]) if i not in missing],
                           [r for r in body["rewards"] if r is not None])
        # without it: None as documented, with one RuntimeWarning naming the first such query
        bare = OpenRLHFRewardFunction(target)
        with pytest.warns(RuntimeWarning, match=rf"query {missing[0]} .*missing_reward="):
            assert [i for i, r in enumerate(bare(QUERIES)["rewards"]) if r is None] == missing
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            bare(QUERIES)  # once per reward function
    with pytest.raises(RuntimeError, match="Could not infer dtype of NoneType"):
        torch.tensor(body["rewards"])  # why the fallback exists


def test_missing_reward_is_checked_and_on_the_cli(text_model):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="missing_reward must be a finite number"):
            ServeConfig(missing_reward=bad)
        with pytest.raises(ValueError, match="missing_reward must be a finite number"):
            OpenRLHFRewardFunction(text_model, missing_reward=bad)
    for bad in ("-1", True):
        with pytest.raises((TypeError, ValueError), match="missing_reward"):
            ServeConfig(missing_reward=bad)
        with pytest.raises(ValueError, match="missing_reward"):
            OpenRLHFRewardFunction(text_model, missing_reward=bad)
    args = build_parser().parse_args(["--model", "m", "--missing-reward", "-1.0"])
    assert args.missing_reward == -1.0
    assert build_parser().parse_args(["--model", "m"]).missing_reward is None


# ------------------------------------------------------------------ TRL + a VLM reward model
@pytest.fixture(scope="module")
def vlm():
    pytest.importorskip("transformers")
    from mmreward.vision import synthetic as S
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel

    proc = tiny_processor(S.COLOUR_WORDS)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc).eval(), S.COLOUR_WORDS


def _images(n):
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)) for _ in range(n)]


def _trl_batch(words, images):
    """What TRL 1.x's GRPOTrainer passes a reward function for a VLM policy: the prompts with the images put
    in their first user turn (prepare_multimodal_messages), conversational completions, and every dataset
    column as a keyword (here 'image', one per sample)."""
    prompts = [[{"role": "user", "content": [{"type": "image", "image": im},
                                              {"type": "text", "text": "what colour is the image"}]}]
               for im in images]
    completions = [[{"role": "assistant", "content": f"the image is {w}"}] for w in words]
    return prompts, completions, {"image": list(images), "completion_ids": [[1]] * len(words),
                                  "trainer_state": None}


def _expected(model, words, images):
    convs = [Conversation([{"role": "user", "content": "what colour is the image"},
                           {"role": "assistant", "content": f"the image is {w}"}], [im])
             for w, im in zip(words, images)]
    return model.score(convs).tolist()


def test_trl_reward_function_over_a_vlm_rm_scores_conversations(vlm, start_server):
    model, colours = vlm
    words, images = colours[:3], _images(3)
    prompts, completions, kwargs = _trl_batch(words, images)
    expected = _expected(model, words, images)
    assert len(set(np.round(expected, 6))) == 3  # the images and words matter
    url = start_server(model, max_wait_ms=5)
    for target in (model, url):
        fn = TRLRewardFunction(target)
        assert_same_scores(fn(prompts, completions, **kwargs), expected, 1e-5)
        # older TRL: plain-text prompts, the images only in the 'images' column (a list per sample)
        plain = [[{"role": "user", "content": "what colour is the image"}] for _ in words]
        assert_same_scores(fn(plain, completions, images=[[im] for im in images]), expected, 1e-5)
        # standard (string) prompt and completion with an 'image' column
        assert_same_scores(fn(["what colour is the image"] * 3, [f"the image is {w}" for w in words],
                              image=list(images)), expected, 1e-5)
        # placeholders ({"type": "image"} without the image) filled from the column
        holders = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour is the image"}]}]
                   for _ in words]
        assert_same_scores(fn(holders, completions, images=[[im] for im in images]), expected, 1e-5)


def test_trl_reward_function_over_a_vlm_rm_names_missing_images(vlm):
    model, colours = vlm
    words, images = colours[:2], _images(2)
    fn = TRLRewardFunction(model)
    plain = [[{"role": "user", "content": "what colour is the image"}] for _ in words]
    completions = [[{"role": "assistant", "content": f"the image is {w}"}] for w in words]
    with pytest.raises(ValueError, match=r"completion 0: the reward model reads images .* no 'images' / 'image' column"):
        fn(plain, completions)
    with pytest.raises(ValueError, match=r"completion 1: .*image\[1\] is None"):
        fn(plain, completions, image=[images[0], None])
    with pytest.raises(ValueError, match=r"got 2 prompts but 1 entries in the 'images' column"):
        fn(plain, completions, images=[[images[0]]])
    holders = [[{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "q"}]}]
               for _ in words]
    with pytest.raises(ValueError, match=r"completion 0: its prompt has 2 image placeholder\(s\) but images\[0\] has 1"):
        fn(holders, completions, images=[[im] for im in images])
    # text-only samples only when asked for
    text_only = TRLRewardFunction(model, require_images=False)(plain, completions)
    assert all(math.isfinite(r) for r in text_only)
    with pytest.raises(TypeError, match="require_images"):
        TRLRewardFunction(model, require_images="yes")


def test_trl_reward_function_over_a_visual_prm_scores_visual_steps(vlm, start_server):
    from mmreward.core.inputs import VisualSteps
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.visual_prm import VisualPRM, VisualPRMConfig

    _, colours = vlm
    proc = tiny_processor(colours)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        prm = VisualPRM(VisualPRMConfig(), tiny_qwen2vl_config(proc), proc).eval()
    words, images = colours[:3], _images(3)
    prompts, _, kwargs = _trl_batch(words, images)
    completions = [[{"role": "assistant", "content": f"the image is\n\n{w}"}] for w in words]
    expected = prm.score([VisualSteps("what colour is the image", ["the image is", w], [im])
                          for w, im in zip(words, images)]).tolist()
    fn = TRLRewardFunction(prm)
    assert fn.inputs(prompts, completions, **kwargs)[0].steps == ["the image is", words[0]]
    assert_same_scores(fn(prompts, completions, **kwargs), expected, 1e-5)
    assert_same_scores(TRLRewardFunction(start_server(prm))(prompts, completions, **kwargs), expected, 1e-5)
