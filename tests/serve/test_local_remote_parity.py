"""A reward function gives the same rewards with the model in-process and through ``mmreward serve``:
the same numbers (float tolerance), the same None / NaN for samples the model gives no finite reward,
the same kind of error for bad input, and the same numbers when the server batches concurrent requests
together as when each is scored alone. One tiny model per kind the server serves."""
import math
import os
import sys
import threading

import numpy as np
import pytest
import torch
from serve_toys import ToyImageScorer, ToyStepScorer, ToyTextScorer, assert_same_scores

from mmreward.core.inputs import Conversation, Episode, ImagePrompt, VideoPrompt
from mmreward.serve import OpenRLHFRewardFunction, RewardClient, TRLRewardFunction, VerlRewardFunction

P = ["what is two plus three", "say a b c", "what is the answer", "say d"]
C = ["five", "a b c d e f g h", "six seven", "d e"]
P_STEPS = ["3 +4 -2", "1 +1", "2 +2", "5 -1"]
C_STEPS = ["3+4=7\n\n7-2=5", "1+1=2", "2+2=4\n\n4=4", "5-1=4"]


def concurrently(fns):
    """Each fn() on its own thread, started together (the server batches them); their results in order."""
    out, errors = [None] * len(fns), []

    def run(i):
        try:
            out[i] = fns[i]()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return out


def check_adapters(model, url, prompts, completions, refine=None, tol=1e-5):
    """TRL / verl / OpenRLHF adapters over ``model`` in-process and over ``url``: equal rewards, batched
    concurrently by the server or not."""
    local, remote = TRLRewardFunction(model, refine=refine), TRLRewardFunction(url, refine=refine)
    expected = local(prompts, completions)
    assert_same_scores(remote(prompts, completions), expected, tol)
    infos = [{"question": p} for p in prompts]
    assert_same_scores(VerlRewardFunction(url, refine=refine).rewards(completions, infos),
                       VerlRewardFunction(model, refine=refine).rewards(completions, infos), tol)
    if refine is None:
        queries = [f"{p} {c}" for p, c in zip(prompts, completions)]
        assert_same_scores(OpenRLHFRewardFunction(url)(queries, prompts)["rewards"],
                           OpenRLHFRewardFunction(model)(queries, prompts)["rewards"], tol)
    alone = [local([p], [c])[0] for p, c in zip(prompts, completions)]
    assert_same_scores(alone, expected, tol)
    together = concurrently([lambda i=i: TRLRewardFunction(url, refine=refine)([prompts[i]], [completions[i]])[0]
                             for i in range(len(prompts))])
    assert_same_scores(together, alone, tol)


@pytest.mark.parametrize("refine", [None, {"clip": 0.5}, {"delta": True}])
def test_text_and_step_toys_agree_in_process_and_served(start_server, refine):
    text, steps = ToyTextScorer(), ToyStepScorer()
    if refine is None:
        check_adapters(text, start_server(text, max_wait_ms=50), P, C)
    check_adapters(steps, start_server(steps, max_wait_ms=50), P_STEPS, C_STEPS, refine)


def test_tiny_text_rm_and_prm_agree_in_process_and_served(start_server):
    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "text"))
    from text_rm_fixtures import CHATML, llama_config, word_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer
    from mmreward.text.reward_model import RewardModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        rm = RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer(bos=True, chat_template=CHATML)).eval()
        tok = char_tokenizer("char")
        lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                        bos_token_id=1, eos_token_id=1))
        prm = ProcessRewardModel.from_backbone(lm, tok, head="lm", step_tag="=").eval()
    check_adapters(rm, start_server(rm, max_wait_ms=50), P, C, tol=1e-5)
    prm_url = start_server(prm, max_wait_ms=50)
    check_adapters(prm, prm_url, P_STEPS, C_STEPS, tol=1e-5)
    check_adapters(prm, prm_url, P_STEPS, C_STEPS, {"delta": True}, tol=1e-5)
    # a sample the model refuses (longer than its max_length): a ValueError naming it, here and served
    long = ["1+1=2" * 40]
    with pytest.raises(ValueError, match="input 0"):
        TRLRewardFunction(prm)(["1 +1"], long)
    with pytest.raises(ValueError, match="422: the model rejected input 0"):
        TRLRewardFunction(prm_url)(["1 +1"], long)


class NanToy(ToyTextScorer):
    """No finite reward for a response holding "nan"."""

    def _score(self, items, batch_size):
        out = super()._score(items, batch_size)
        return torch.where(torch.tensor(["nan" in str(it.response) for it in items]), float("nan"), out)


def test_no_reward_and_bad_input_mean_the_same_in_process_and_served(start_server):
    model = NanToy()
    url = start_server(model)
    prompts, completions = ["p", "p", "p"], ["good", "nan here", "fine"]
    for fn in (TRLRewardFunction(model), TRLRewardFunction(url)):
        got = fn(prompts, completions)
        assert got[1] is None and all(isinstance(v, float) for v in (got[0], got[2]))
        assert fn([], []) == []  # an empty batch: no rewards, no error
        with pytest.raises(TypeError, match="prompts must be a list"):
            fn("p", ["x"])
        with pytest.raises(ValueError, match=r"completion 1: field 'response' must be a string"):
            fn(["p", "p"], ["x", 5])
        with pytest.raises(ValueError, match="explode"):  # a sample the model refuses
            fn(["p"], ["explode"])
    for fn in (VerlRewardFunction(model, prompt_key=None), VerlRewardFunction(url, prompt_key=None)):
        got = fn(solution_strs=completions)
        assert math.isnan(got[1]) and not math.isnan(got[0])
    for fn in (OpenRLHFRewardFunction(model), OpenRLHFRewardFunction(url)):
        assert fn(["a good", "a nan"])["rewards"][1] is None
        assert fn([]) == {"rewards": [], "scores": [], "extra_logs": {}}
    with pytest.raises(ValueError, match="no inputs"):
        RewardClient(url).score([])


def test_an_error_of_a_split_request_names_the_input_the_caller_gave(start_server):
    # the client cuts 5 inputs into requests of max_items=2: the server names the bad one by its index in its
    # request ("input 1"), which used to reach the caller as is, though it is input 3 of the caller's list
    model = ToyTextScorer()
    url = start_server(model, max_items=2)
    completions = ["a", "b", "c", "d explode", "e"]
    with pytest.raises(ValueError, match=r"rejected input 3: toy model refuses"):
        TRLRewardFunction(url)(["p"] * 5, completions)
    with pytest.raises(ValueError, match=r"rejected input 3: toy model refuses"):
        OpenRLHFRewardFunction(url)([f"p {c}" for c in completions])
    rows = [{"prompt": "p", "response": "a"}] * 3 + [{"prompt": "p", "respons": "a"}]
    with pytest.raises(ValueError, match=r"400: input 3 has unknown field\(s\) \['respons'\]"):
        RewardClient(url).score(rows)
    with pytest.raises(ValueError, match=r"400: query 3 must be a string"):
        RewardClient(url).get_reward(["a", "b", "c", 5])
    assert len(RewardClient(url).score([{"prompt": "p", "response": c} for c in "abcde"])["scores"]) == 5


def test_pil_images_are_scored_served_as_in_process(start_server):
    # ImagePrompt / Conversation with PIL images, as model.score takes them: the client used to refuse them
    # ("cannot be sent as JSON"); they go as lossless PNG and get the in-process scores
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)) for _ in range(3)]
    toy = ToyImageScorer()
    inputs = [ImagePrompt(w, im) for w, im in zip(["red", "green", "blue"], images)]
    url = start_server(toy, max_wait_ms=50)
    assert_same_scores(RewardClient(url).score(inputs)["scores"], toy.score(inputs).tolist())
    together = concurrently([lambda x=x: RewardClient(url).score([x])["scores"][0] for x in inputs])
    assert_same_scores(together, [toy.score([x]).item() for x in inputs])
    with pytest.raises(ValueError, match=r"input 0\.image: a PIL image in mode 'CMYK'.*convert it to RGB"):
        RewardClient(url).score([ImagePrompt("red", images[0].convert("CMYK"))])
    # text adapters over an image model: the same refusal in-process and served
    for fn in (TRLRewardFunction(toy), TRLRewardFunction(url)):
        with pytest.raises(ValueError, match="model scores ImagePrompt: use /score"):
            fn(["a"], ["b"])

    pytest.importorskip("transformers")
    from mmreward.vision import synthetic as S
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel

    proc = tiny_processor(S.COLOUR_WORDS)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vlm = VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc).eval()
    convs = [Conversation([{"role": "user", "content": f"<image> {w}"}, {"role": "assistant", "content": w}], [im])
             for w, im in zip(S.COLOUR_WORDS[:3], images)]
    vlm_url = start_server(vlm, max_wait_ms=50)
    expected = [vlm.score([c]).item() for c in convs]
    assert_same_scores(RewardClient(vlm_url).score(convs)["scores"], expected, 1e-5)
    together = concurrently([lambda c=c: RewardClient(vlm_url).score([c])["scores"][0] for c in convs])
    assert_same_scores(together, expected, 1e-5)


def test_video_and_episode_models_agree_in_process_and_served(start_server):
    from serve_toys import ToyVideoScorer

    rng = np.random.default_rng(1)
    clips = [rng.integers(0, 256, (3 + i, 8, 8, 3), dtype=np.uint8) for i in range(3)]
    video = ToyVideoScorer()
    inputs = [VideoPrompt(f"clip {i}", c) for i, c in enumerate(clips)]
    url = start_server(video, max_wait_ms=50)
    served = RewardClient(url).score(inputs)["parts"]
    for got, want in zip(served, video.score_parts(inputs)):
        np.testing.assert_allclose(got, want.tolist(), atol=1e-6)

    # an image + video scorer, images and a video in one batch: scores and per-frame parts as in-process
    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "vision"))
    from PIL import Image
    from test_vision_video import tiny_scorer

    scorer = tiny_scorer().eval()
    mixed = [ImagePrompt(f"a {c}", Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
             for c in ("red", "blue")] + [VideoPrompt("a red", rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))]
    scorer_url = start_server(scorer, max_wait_ms=50)
    assert_same_scores(RewardClient(scorer_url).score(mixed, output="scores")["scores"], scorer.score(mixed).tolist(),
                       1e-5)
    for got, want in zip(RewardClient(scorer_url).score(mixed)["parts"], scorer.score_parts(mixed)):
        np.testing.assert_allclose(got, want.tolist(), atol=1e-5)
    together = concurrently([lambda x=x: RewardClient(scorer_url).score([x], output="scores")["scores"][0]
                             for x in mixed])
    assert_same_scores(together, [scorer.score([x]).item() for x in mixed], 1e-5)

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "robotics"))
    from test_diffusion_reward import frames, make_reward

    dr = make_reward()  # fitted as tests/robotics/test_reward_contract.py fitted_reward
    dr.fit_statistics([frames(6, s) for s in range(2)])
    dr.update_rnd(frames(6, 3))
    episodes = [Episode(frames(4 + i, 10 + i)) for i in range(3)]
    alone = [dr.score_parts([e])[0].tolist() for e in episodes]
    dr_url = start_server(dr, max_wait_ms=100)
    client = RewardClient(dr_url)
    for got, want in zip(client.score(episodes)["parts"], alone):
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(client.score(episodes, output="scores")["scores"], dr.score(episodes).tolist(),
                               atol=1e-5)
    together = concurrently([lambda e=e: RewardClient(dr_url).score([e])["parts"][0] for e in episodes])
    for got, want in zip(together, alone):
        np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):  # float frames: named before sending
        client.score([Episode(frames(4, 0).float())])
    with pytest.raises(ValueError, match="refine needs a step model"):
        client.score(episodes, refine={"clip": 0.5})


def test_visual_prm_agrees_in_process_and_served(start_server):
    """VisualPRM (images + steps): per-step parts, solution scores and refined step rewards as in-process,
    alone and batched with other clients' requests."""
    pytest.importorskip("transformers")
    from mmreward.core.inputs import VisualSteps
    from mmreward.vision import synthetic as S
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.visual_prm import VisualPRM, VisualPRMConfig

    proc = tiny_processor(S.COLOUR_WORDS)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        prm = VisualPRM(VisualPRMConfig(), tiny_qwen2vl_config(proc), proc).eval()
    inputs = [VisualSteps(r["question"], r["steps"], r["images"]) for r in S.colour_step_rows(3, seed=2)]
    url = start_server(prm, max_wait_ms=50)
    client = RewardClient(url)
    for got, want in zip(client.score(inputs)["parts"], prm.score_parts(inputs)):
        np.testing.assert_allclose(got, want.tolist(), atol=1e-5)
    assert_same_scores(client.score(inputs, output="scores")["scores"], prm.score(inputs).tolist(), 1e-5)
    together = concurrently([lambda x=x: client.score([x])["parts"][0] for x in inputs])
    for got, x in zip(together, inputs):
        np.testing.assert_allclose(got, prm.score_parts([x])[0].tolist(), atol=1e-5)
    # refined step rewards (clipped, as PURE's min-form): the server's equal the in-process refinement
    from mmreward.serve.protocol import refine_parts

    refined = refine_parts([p.tolist() for p in prm.score_parts(inputs)], {"clip": 0.5, "delta": False, "gamma": 1.0})
    served = client.score(inputs, refine={"clip": 0.5})
    for key, want in refined.items():
        for got, w in zip(served[key], want):
            np.testing.assert_allclose(got, w, atol=1e-5)
    # images as model.score takes them: uint8 arrays, torch [3, H, W] and float arrays of 8-bit levels go as
    # lossless PNG; a float image 8 bits cannot hold is refused before sending (the server would see others)
    img = np.asarray(inputs[0].images[0])
    for form in (img, torch.from_numpy(img.copy()).permute(2, 0, 1), img.astype(np.float32) / 255):
        x = VisualSteps(inputs[0].question, inputs[0].steps, [form])
        np.testing.assert_allclose(client.score([x])["parts"][0], prm.score_parts([x])[0].tolist(), atol=1e-5)
    smooth = VisualSteps(inputs[0].question, inputs[0].steps, [img.astype(np.float32) / 255 + 1e-3])
    with pytest.raises(ValueError, match=r"input 0\.images\[0\]: a float image goes to the server as 8-bit PNG"):
        client.score([smooth])
