"""An RL engineer wiring ``mmreward serve`` into trainers (OpenRLHF / TRL / verl / plain HTTP): server options
the model cannot use, a slow server seen by the client, API keys read from files, compressed bodies."""
import time

import httpx
import pytest
from serve_toys import ToyConfig, ToyImageScorer, ToyStepScorer, ToyTextScorer

from mmreward.serve import RewardClient, TRLRewardFunction
from mmreward.serve.app import BackgroundServer
from mmreward.serve.config import ServeConfig


@pytest.mark.parametrize("model", [ToyTextScorer, ToyImageScorer])
@pytest.mark.parametrize("flags, named", [(dict(refine_clip=0.5), "--refine-clip refines"),
                                          (dict(refine_delta=True), "--refine-delta refines"),
                                          (dict(refine_clip=0.0, refine_delta=True),
                                           "--refine-clip / --refine-delta refine")])
def test_refine_flags_for_a_model_without_text_step_scores_are_refused(model, flags, named):
    # `mmreward serve --model runs/rm --refine-clip 0.5` served the text RM and dropped the flag: the trainer got
    # raw scores while its user believed them Clip-refined
    with pytest.raises(ValueError, match=f"{named} the step scores of a PRM on /get_reward, but this "
                                         f"{model.model_type} model scores"):
        BackgroundServer(model(), ServeConfig(port=0, **flags))


def test_refine_flags_still_serve_a_prm_and_gamma_alone_is_refused(start_server):
    url = start_server(ToyStepScorer(), refine_clip=0.5)
    assert len(httpx.post(url + "/get_reward", json={"query": ["1 +1 1+1=2"], "prompts": ["1 +1 "]},
                          timeout=10).json()["rewards"]) == 1
    # --refine-gamma alone discounts nothing (no refinement is on): it was accepted and ignored
    with pytest.raises(ValueError, match=r"refine_gamma \(0.9\) discounts the refined step rewards: give "
                                         "refine_clip or refine_delta"):
        ServeConfig(refine_gamma=0.9)
    assert ServeConfig(refine_gamma=0.9, refine_delta=True).refine["gamma"] == 0.9


def test_a_client_read_timeout_is_not_retried(start_server):
    # a server slower than the client's timeout got the same request 6 times (5 retries: 6 forwards on an
    # already busy server) and the trainer waited ~6 timeouts for "ConnectionError: failed after 6 tries"
    model = ToyTextScorer(ToyConfig(delay_s=0.5))
    url = start_server(model, max_wait_ms=0)
    client = RewardClient(url, timeout=0.15)
    client.info()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"POST http://127\.0\.0\.1:\d+/score got no answer within "
                                           r"timeout=0\.15 s \(not retried"):
        client.score([{"prompt": "p", "response": "slow"}])
    assert time.monotonic() - t0 < 0.5
    time.sleep(0.6)  # the one forward ends
    assert len(model.forwards) == 1


def test_api_keys_with_a_trailing_newline_work_and_bad_ones_are_named(start_server):
    url = start_server(ToyTextScorer(), api_key="s3cret")
    # a key read with open(...).read() or from a .env line: it failed every try with httpx's "Illegal header
    # value", reported after 6 tries as a lost connection
    assert len(TRLRewardFunction(url, api_key="s3cret\n")(["p"], ["r"])) == 1
    with pytest.raises(ValueError, match="api_key must be printable ASCII without spaces"):
        RewardClient(url, api_key="sécret")  # was a UnicodeEncodeError at the first call
    with pytest.raises(ValueError, match="api_key must be printable ASCII without spaces"):
        RewardClient(url, api_key="s3 cret")
    with pytest.raises(ValueError, match="api_key is empty"):
        RewardClient(url, api_key=" \n")  # os.environ.get("RM_KEY", "") unset: 401s with no hint
    with pytest.raises(TypeError, match="api_key must be a string or None, got int"):
        RewardClient(url, api_key=1234)
    with pytest.raises(ValueError, match="401: missing or wrong API key"):
        TRLRewardFunction(url, api_key="wrong")(["p"], ["r"])


def test_a_compressed_body_is_refused_by_its_content_encoding(start_server):
    import gzip
    import json

    url = start_server(ToyTextScorer())
    body = gzip.compress(json.dumps({"inputs": [{"prompt": "p", "response": "r"}]}).encode())
    for route in ("/score", "/get_reward"):
        r = httpx.post(url + route, content=body, headers={"content-type": "application/json",
                                                           "content-encoding": "gzip"}, timeout=10)
        # was 400 "request body is not UTF-8 JSON", which sends the user looking for a bad character
        assert r.status_code == 415, r.text
        assert r.json()["error"] == ("Content-Encoding 'gzip' is not supported: send the body uncompressed "
                                     "(plain JSON, or an image's bytes)")
    ok = httpx.post(url + "/score", json={"inputs": [{"prompt": "p", "response": "r"}]},
                    headers={"content-encoding": "identity"}, timeout=10)
    assert ok.status_code == 200 and len(ok.json()["scores"]) == 1


def test_verl_chat_prompts_stored_as_numpy_object_arrays_are_read(start_server):
    # verl's extra_info of a parquet row read with pandas holds its chat messages as a numpy object array: it was
    # a DataError ("field 'prompt' must be a string or a list of messages, got array([...])")
    import numpy as np

    from mmreward.serve import VerlRewardFunction

    model = ToyTextScorer()
    messages = [{"role": "user", "content": "what is 2+2"}]
    want = VerlRewardFunction(model)(data_source="d", solution_str="4", ground_truth="4",
                                     extra_info={"question": messages})
    for target in (model, start_server(model)):
        fn = VerlRewardFunction(target)
        got = fn(data_source="d", solution_str="4", ground_truth="4",
                 extra_info={"question": np.array(messages, dtype=object)})
        assert got == pytest.approx(want, abs=1e-6)
        batch = fn(data_sources=["d"], solution_strs=["4"], ground_truths=["4"],
                   extra_infos=np.array([{"question": np.array(messages, dtype=object)}], dtype=object))
        assert batch == pytest.approx([want], abs=1e-6)


def test_ray_refuses_refine_flags_the_model_cannot_use_before_ray_starts(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="the serve-ray extra is not installed")
    import ray

    import mmreward.registry
    from mmreward.serve.config import RayServeConfig
    from mmreward.serve.ray import serve_ray

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr(mmreward.registry, "detect", lambda folder: ("serve_toy_text", ToyTextScorer.from_pretrained))
    with pytest.raises(ValueError, match="--refine-delta refines the step scores of a PRM on /get_reward, but this "
                                         "serve_toy_text model scores TextPair"):
        serve_ray(str(tmp_path), ServeConfig(refine_delta=True), RayServeConfig())


def test_get_reward_refuses_labels_that_do_not_line_up_with_the_queries(start_server):
    # the adapters refuse labels of another length; the server answered them 200 (its caller's labels no longer
    # matched its queries, silently)
    url = start_server(ToyTextScorer())
    for labels, words in (([1, 2, 3], "got 1 queries but 3 labels"), ([], "got 1 queries but 0 labels"),
                          ("4", "got 1 queries but labels '4'")):
        r = httpx.post(url + "/get_reward", json={"query": ["a b"], "labels": labels}, timeout=10)
        assert r.status_code == 400 and r.json()["error"].startswith(words), r.text
    for labels in (None, [None], [{"answer": 3}]):  # null, or one label of any JSON kind per query
        r = httpx.post(url + "/get_reward", json={"query": ["a b"], "labels": labels}, timeout=10)
        assert r.status_code == 200 and len(r.json()["rewards"]) == 1
    assert httpx.post(url + "/get_reward", json={"query": [], "prompts": [], "labels": []},
                      timeout=10).json()["rewards"] == []
