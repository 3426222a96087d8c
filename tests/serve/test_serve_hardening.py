"""Bad and unusual requests found by probing the server: each gets one clear 4xx naming the field or
input (never a 500, a traceback in the log or a silently ignored field), and errors name the input of
the request at fault. Servers are module-scoped (one per model) to keep the file fast."""
import asyncio
import base64
import socket
import time

import httpx
import numpy as np
import pytest
from serve_toys import ToyEpisodeScorer, ToyImageScorer, ToyStepScorer, ToyTextScorer, assert_same_scores, png_b64

from mmreward.core.data import DataError
from mmreward.core.inputs import TextPair
from mmreward.serve.app import BackgroundServer
from mmreward.serve.batcher import InputRejected, Job, score_jobs
from mmreward.serve.config import ServeConfig

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def text_url():
    with BackgroundServer(ToyTextScorer(), ServeConfig(port=0)) as url:
        yield url


@pytest.fixture(scope="module")
def step_url():
    with BackgroundServer(ToyStepScorer(), ServeConfig(port=0)) as url:
        yield url


@pytest.fixture(scope="module")
def image_url():
    with BackgroundServer(ToyImageScorer(), ServeConfig(port=0)) as url:
        yield url


@pytest.fixture(scope="module")
def episode_url():
    with BackgroundServer(ToyEpisodeScorer(), ServeConfig(port=0)) as url:
        yield url


def ok_text(url):
    return httpx.post(url + "/score", json={"inputs": [{"prompt": "a", "response": "b"}]}).status_code == 200


# ------------------------------------------------------------------ JSON that Python's parser cannot take
@pytest.mark.parametrize("body, words", [
    # a RecursionError inside json.loads: was a 500 "internal error" with a traceback in the log
    (b'{"inputs": ' + b"[" * 100000 + b"]" * 100000 + b"}", "malformed JSON: nested too deeply"),
    (b'{"inputs": [{"prompt": "a", "response": ' + b"[" * 990 + b"]" * 990 + b"}]}", "nested too deeply"),
    # Python refuses integers of more than 4300 digits: was a 500
    (b'{"inputs": [{"prompt": "a", "response": "b"}], "output": ' + b"9" * 5000 + b"}", "Exceeds the limit (4300 digits)"),
    # a lone surrogate is valid JSON but no text: it reached the model (a tokenizer's obscure TypeError)
    (b'{"inputs": [{"prompt": "a", "response": "x\\ud800y"}]}',
     "input 0: field 'response' holds an unpaired UTF-16 surrogate '\\\\ud800' at character 1"),
    (b'{"inputs": [{"messages": [{"role": "user", "content": "\\udc00"}]}]}',
     "input 0: field 'messages'[0].content holds an unpaired UTF-16 surrogate"),
])
def test_json_python_cannot_take_is_a_400_naming_the_problem(text_url, body, words):
    r = httpx.post(text_url + "/score", content=body, headers=JSON)
    assert r.status_code == 400 and words in r.text, r.text
    assert ok_text(text_url)


def test_surrogate_pairs_are_text_and_a_lone_one_is_refused_on_get_reward(text_url):
    r = httpx.post(text_url + "/score", content=b'{"inputs": [{"prompt": "a", "response": "party \\ud83c\\udf89"}]}',
                   headers=JSON)
    assert r.status_code == 200, r.text
    r = httpx.post(text_url + "/get_reward", content=b'{"query": ["fine", "bad \\ud800"]}', headers=JSON)
    assert r.status_code == 400 and "field 'query'[1] holds an unpaired UTF-16 surrogate" in r.text, r.text


# ------------------------------------------------------------------ fields that were silently ignored or defaulted
@pytest.mark.parametrize("output", ["", 0, False])
def test_a_falsy_output_is_refused_not_read_as_the_default(text_url, output):
    r = httpx.post(text_url + "/score", json={"inputs": [{"prompt": "a", "response": "b"}], "output": output})
    assert r.status_code == 400 and "field 'output' must be one of ['scores', 'parts']" in r.text, r.text
    r = httpx.post(text_url + "/score", json={"inputs": [{"prompt": "a", "response": "b"}], "output": None})
    assert r.status_code == 200 and "scores" in r.json()  # null is the default


def test_a_refine_clip_too_large_for_a_float_is_a_400(step_url):
    body = b'{"inputs": [{"problem": "p", "steps": ["a"]}], "refine": {"clip": 1' + b"0" * 400 + b"}}"
    r = httpx.post(step_url + "/score", content=body, headers=JSON)  # OverflowError: was a 500
    assert r.status_code == 400 and "refine.clip must be a finite number or null" in r.text, r.text


@pytest.mark.parametrize("fixture, row, unknown", [
    ("text_url", {"prompt": "a", "response": "b", "reponse_b": "c"}, "['reponse_b']"),
    ("image_url", {"promt": "a red car", "image": png_b64(np.zeros((4, 4, 3), np.uint8))}, "['promt']"),
    ("episode_url", {"frames": [png_b64(np.zeros((4, 4, 3), np.uint8))], "succes": [1]}, "['succes']"),
])
def test_an_unknown_field_in_an_input_is_a_400_naming_it(request, fixture, row, unknown):
    # a typo in an optional field was dropped: the image scored against an empty prompt, the episode
    # without its success flags, with a 200
    url = request.getfixturevalue(fixture)
    r = httpx.post(url + "/score", json={"inputs": [row]})
    assert r.status_code == 400 and f"input 0 has unknown field(s) {unknown}" in r.text, r.text


def test_every_documented_field_and_alias_is_still_accepted(text_url, step_url, episode_url):
    frames = {"shape": [2, 4, 4, 3], "data": base64.b64encode(bytes(96)).decode()}
    for url, rows in [
        (text_url, [{"prompt": None, "response": "b"}, {"text": "t"},
                    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]),
        (step_url, [{"problem": "p", "steps": ["a"]}, {"prompt": "p", "completions": ["a"]},
                    {"question": "p", "steps": [{"text": "a"}]}]),
        (episode_url, [{"frames": frames, "success": [0, 1]}, {"episode": frames}, {"video": frames}]),
    ]:
        r = httpx.post(url + "/score", json={"inputs": rows})
        assert r.status_code == 200, r.text


def test_one_image_field_holding_a_list_is_a_400(image_url):
    img = png_b64(np.zeros((4, 4, 3), np.uint8))
    r = httpx.post(image_url + "/score", json={"inputs": [{"prompt": "a", "image": [img, img]}]})
    assert r.status_code == 400 and "input 0: field 'image' must be one base64 image, got a list of 2" in r.text, r.text


def test_an_image_body_content_type_is_case_insensitive(image_url):
    raw = base64.b64decode(png_b64(np.zeros((4, 4, 3), np.uint8)))
    r = httpx.post(image_url + "/score", params={"prompt": "x"}, content=raw, headers={"content-type": "Image/PNG"})
    assert r.status_code == 200 and len(r.json()["scores"]) == 1, r.text  # was "request body is not UTF-8 JSON"


def test_an_undecodable_image_error_shows_its_first_bytes_not_a_python_object(image_url):
    gif = "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
    r = httpx.post(image_url + "/score", json={"inputs": [{"prompt": "a", "image": gif}]})
    assert r.status_code == 400 and "starting b'GIF89a" in r.text and "BytesIO" not in r.text, r.text


# ------------------------------------------------------------------ which input failed
class IndexNamingToy(ToyTextScorer):
    """Names a rejected input by its position in the forward, as the text models do ("input 2: ...")."""

    model_type = "serve_toy_index"

    def _score(self, items, batch_size):
        for i, it in enumerate(items):
            if "overlong" in str(it.response):
                raise DataError(f"input {i}: its template tokens alone are more than max_length")
        return super()._score(items, batch_size)


class BatchOnlyFailureToy(ToyTextScorer):
    """Fails any forward of more than two inputs (out of memory); every input scores alone."""

    model_type = "serve_toy_oom"

    def _score(self, items, batch_size):
        if len(items) > 2:
            raise RuntimeError("CUDA out of memory")
        return super()._score(items, batch_size)


def test_a_rejected_input_is_named_by_its_index_in_the_request():
    model = IndexNamingToy()
    good = [TextPair(f"p{i}", " ".join(["long words here"] * (3 + i))) for i in range(4)]
    bad = TextPair("p", "overlong")  # the shortest: first in the length-sorted forward
    jobs = [Job(good[:2] + [bad] + good[2:3], "scores"), Job(good[3:], "scores")]
    outcomes = score_jobs(model, jobs, max_batch=8)
    # was "input 0: ..." (its place in the sorted forward), for the request's input 2
    assert isinstance(outcomes[0], InputRejected)
    assert str(outcomes[0]) == "input 2: its template tokens alone are more than max_length"
    assert_same_scores(outcomes[1], model.score(good[3:]).tolist())


def test_a_rejected_input_of_a_large_request_is_named_across_its_slices(start_server):
    model = ToyTextScorer()
    rows = [{"prompt": f"p{i}", "response": f"answer {i}"} for i in range(11)]
    rows[7]["response"] = "this will explode"
    url = start_server(model, max_batch=4)  # slices 0-3, 4-7, 8-10
    r = httpx.post(url + "/score", json={"inputs": rows})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "the model rejected input 7: toy model refuses inputs containing 'explode'"


def test_a_batch_that_fails_as_a_whole_is_answered_input_by_input():
    model = BatchOnlyFailureToy()
    items = [TextPair(f"p{i}", f"response number {i}") for i in range(5)]
    outcomes = score_jobs(model, [Job(items, "scores")], max_batch=8)
    assert_same_scores(outcomes[0], ToyTextScorer().score(items).tolist())


# ------------------------------------------------------------------ a client gone while sending its body
def test_a_client_gone_mid_body_is_client_gone_not_an_internal_error(start_server, text_model, caplog):
    url = start_server(text_model)
    host, port = url.removeprefix("http://").split(":")
    body = b'{"inputs": [{"prompt": "gone", "response": "half a body'
    with socket.create_connection((host, int(port))) as s:  # promises 100 bytes more than it sends
        s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body) + 100, body))
        time.sleep(0.2)
    deadline = time.time() + 5
    while 'mmreward_serve_cancelled_total{endpoint="/score"} 1' not in (m := httpx.get(url + "/metrics").text):
        assert time.time() < deadline, m
        time.sleep(0.05)
    assert 'kind="internal"' not in m and 'kind="client_gone"' in m and 'code="500"' not in m
    assert "unexpected error" not in caplog.text  # no traceback logged for it
    assert ok_text(url)


# ------------------------------------------------------------------ CLI / config
@pytest.mark.parametrize("args, words", [
    # keys a client cannot send as 'Authorization: Bearer KEY' locked every client out
    (["--api-key", " "], "api_key must be printable ASCII without spaces"),
    (["--api-key", " secret"], "api_key must be printable ASCII without spaces"),
    (["--api-key", "clé"], "api_key must be printable ASCII without spaces"),
    # Ray settings without --ray served one in-process model, silently
    (["--replicas", "4"], "--replicas configure Ray Serve: add --ray"),
    (["--max-replicas", "3", "--replica-gpus", "1"], "--max-replicas, --replica-gpus configure Ray Serve: add --ray"),
    # a floor without autoscaling was ignored; a negative one failed inside Ray's deploy (rc 1, 150 lines)
    (["--ray", "--min-replicas", "-1"], "min_replicas is the autoscaling floor: give max_replicas too"),
])
def test_cli_settings_that_would_lock_clients_out_or_be_ignored_are_one_line_exit_2(args, words, capsys, monkeypatch):
    from mmreward.cli import main

    monkeypatch.delenv("MMREWARD_SERVE_API_KEY", raising=False)
    assert main(["serve", "--model", "/tmp", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_an_api_key_from_the_environment_with_a_newline_is_refused(monkeypatch):
    monkeypatch.setenv("MMREWARD_SERVE_API_KEY", "secret\n")
    with pytest.raises(ValueError, match=r"\$MMREWARD_SERVE_API_KEY must be printable ASCII"):
        ServeConfig()


def test_many_clients_with_mixed_good_and_bad_inputs_get_their_own_answers(start_server, text_model):
    rows = [{"prompt": f"c{i}", "response": " ".join(f"w{i}_{k}" for k in range(1 + i % 9))} for i in range(40)]
    bodies = [{"inputs": rows[i:i + 4]} for i in range(0, 40, 4)]
    bodies[3]["inputs"][2] = {"prompt": "x", "response": "please explode"}
    url = start_server(text_model, max_batch=8, max_wait_ms=30)

    async def main():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.post(url + "/score", json=b) for b in bodies))

    answers = asyncio.run(main())
    assert answers[3].status_code == 422 and "rejected input 2:" in answers[3].json()["error"]
    for k, (b, a) in enumerate(zip(bodies, answers)):
        if k != 3:
            assert a.status_code == 200, a.text
            assert_same_scores(a.json()["scores"], text_model.score(b["inputs"]).tolist())


# ------------------------------------------------------------------ query parameters, gone clients, large batches
@pytest.mark.parametrize("path, params, body, words", [
    ("/score", {"output": "parts"}, {"inputs": [{"prompt": "a", "response": "b"}]}, "unknown query parameter(s) ['output']"),
    ("/get_reward", {"split": "1"}, {"query": ["a b"]}, "unknown query parameter(s) ['split']"),
])
def test_query_parameters_that_would_be_ignored_are_a_400(text_url, path, params, body, words):
    r = httpx.post(text_url + path, params=params, json=body)
    assert r.status_code == 400 and words in r.text, r.text


def test_an_image_body_takes_one_prompt_and_nothing_else_in_the_query(image_url):
    raw = base64.b64decode(png_b64(np.zeros((4, 4, 3), np.uint8)))
    post = lambda params: httpx.post(image_url + "/score", params=params, content=raw,  # noqa: E731
                                     headers={"content-type": "image/png"})
    r = post([("prompt", "a red car"), ("prompt", "a blue car")])  # one of them was scored, silently
    assert r.status_code == 400 and "['prompt'] given more than once" in r.text, r.text
    r = post({"prompt": "a", "output": "parts"})
    assert r.status_code == 400 and "unknown query parameter(s) ['output']" in r.text, r.text
    assert post({"prompt": "a red car"}).status_code == 200


def test_a_gone_clients_inputs_leave_the_queue_at_once(start_server, slow_text_model):
    """queue_depth and max_queue count waiting inputs: a disconnected client's held both until the
    worker reached them, so a server busy with one long forward answered 503 to room it had."""
    url = start_server(slow_text_model, max_batch=1, max_wait_ms=0, max_items=3, max_queue=3)
    host, port = url.removeprefix("http://").split(":")

    async def main():
        async with httpx.AsyncClient(timeout=30) as client:
            busy = asyncio.ensure_future(client.post(url + "/score", json={"inputs": [{"prompt": "a", "response": "b"}]}))
            await asyncio.sleep(0.1)  # the model is busy for 0.3 s
            body = b'{"inputs": [{"prompt": "g", "response": "1"}, {"prompt": "g", "response": "2"}, ' \
                   b'{"prompt": "g", "response": "3"}]}'
            with socket.create_connection((host, int(port))) as s:  # 3 inputs queued, then the client hangs up
                s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.05)
            depth = (await client.get(url + "/healthz")).json()["queue_depth"]
            after = await client.post(url + "/score", json={"inputs": [{"prompt": "c", "response": "d"}]})
            return depth, after.status_code, (await busy).status_code

    depth, code, first = asyncio.run(main())
    assert (depth, code, first) == (0, 200, 200)


def test_the_client_splits_a_large_openrlhf_batch_at_the_servers_max_items(start_server, text_model):
    from mmreward.serve import OpenRLHFRewardFunction, RewardClient

    url = start_server(text_model, max_items=4)
    queries = [f"question {i} answer {'x ' * i}" for i in range(10)]
    want = text_model.score([TextPair(None, q) for q in queries]).tolist()
    body = RewardClient(url).get_reward(queries, [f"question {i}" for i in range(10)], [None] * 10)
    assert_same_scores(body["rewards"], want)  # was a ValueError: 'query' has 10 items; the limit is 4
    assert body["scores"] == body["rewards"] and body["extra_logs"] == {}
    assert_same_scores(OpenRLHFRewardFunction(url)(queries, None, None)["rewards"], want)
    with pytest.raises(ValueError, match="got 10 queries but 3 prompts"):
        RewardClient(url).get_reward(queries, ["a", "b", "c"])


def test_a_job_cancelled_between_its_forwards_is_not_scored_further():
    model = ToyTextScorer()
    loop = asyncio.new_event_loop()
    try:
        job = Job([TextPair(f"p{i}", f"r{i} " * (1 + i)) for i in range(6)], "scores", loop.create_future(), loop)
        calls = []

        def on_forward(n, _s):  # the client goes away after the first forward of its request
            calls.append(n)
            job.future.cancel()

        score_jobs(model, [job], max_batch=2, on_forward=on_forward)
        assert calls == [2] and sum(len(f) for f in model.forwards) == 2  # was three forwards, six inputs
    finally:
        loop.close()


def test_openrlhf_split_without_prompts_says_prompts_are_missing(start_server, text_model):
    url = start_server(text_model, openrlhf_split=True)
    r = httpx.post(url + "/get_reward", json={"query": ["q a", "q b"], "prompts": ["q", None]})
    # was "query 1 does not start with its prompt", about a prompt never sent
    assert r.status_code == 400 and "query 1 has no prompt to cut the response after" in r.text, r.text
    r = httpx.post(url + "/get_reward", json={"query": ["q a"], "prompts": ["q "]})
    assert_same_scores(r.json()["rewards"], text_model.score([TextPair("q ", "a")]).tolist())


@pytest.mark.parametrize("kw, words", [
    # OpenRLHF's URL names the route; the client then asked /get_reward/info and failed with a 404
    (dict(url="http://127.0.0.1:5000/get_reward"), "give the server's base URL (http://host:port), not a route"),
    (dict(url="http://127.0.0.1:5000/score/"), "not a route"),
    (dict(url="http://127.0.0.1:5000", retries=-1), "retries must be an integer >= 0, got -1"),  # "failed after 0 tries"
    (dict(url="http://127.0.0.1:5000", timeout=0), "timeout must be a number of seconds > 0, got 0"),
])
def test_reward_client_settings_are_checked_up_front(kw, words):
    from mmreward.serve import RewardClient

    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        RewardClient(**kw)


def test_ray_serving_a_folder_no_replica_can_load_fails_before_ray_starts(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray Serve is not installed (pip install mmreward[serve-ray])")
    from mmreward.cli import main

    def init(*a, **k):  # was: Ray started, the deployment failed, 150 lines of log and exit 1
        raise AssertionError("Ray started for a folder no replica can load")

    monkeypatch.setattr(ray, "init", init)
    (tmp_path / "notamodel").mkdir()
    assert main(["serve", "--model", str(tmp_path / "notamodel"), "--ray"]) == 2
    err = capsys.readouterr().err
    assert "cannot tell which reward model this is (no config.json)" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("cls, kw, words", [
    ("ServeConfig", dict(refine_delta="no"), "ServeConfig.refine_delta must be true or false, got 'no'"),  # was: Delta on
    ("ServeConfig", dict(openrlhf_split="false"), "ServeConfig.openrlhf_split must be true or false"),
    ("ServeConfig", dict(port=True), "ServeConfig.port must be an integer, got True"),  # was: port 1
    ("ServeConfig", dict(host=None), "ServeConfig.host must be a string, got None"),
    ("ServeConfig", dict(api_key=123), "ServeConfig.api_key must be a string or None, got 123"),  # was AttributeError
    ("ServeConfig", dict(max_padding="none"), "ServeConfig.max_padding must be a number or None"),
    ("RayServeConfig", dict(max_replicas=2.5), "RayServeConfig.max_replicas must be an integer or None, got 2.5"),
    ("RayServeConfig", dict(ray_address=5), "RayServeConfig.ray_address must be a string or None, got 5"),
])
def test_configs_set_from_python_refuse_wrong_types_naming_the_field(cls, kw, words, monkeypatch):
    import mmreward.serve.config as config

    monkeypatch.delenv("MMREWARD_SERVE_API_KEY", raising=False)
    with pytest.raises(TypeError, match=words.replace("(", r"\(").replace(")", r"\)")):
        getattr(config, cls)(**kw)
    assert ServeConfig(max_padding=None, refine_clip=1, max_request_mb=1).refine == {"clip": 1, "delta": False,
                                                                                       "gamma": 1.0}


def test_a_request_body_that_stalls_is_answered_408_and_the_connection_freed(start_server, text_model, monkeypatch):
    import mmreward.serve.app as app

    monkeypatch.setattr(app, "BODY_IDLE_TIMEOUT_S", 0.3)
    url = start_server(text_model)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:  # sends half its body, then nothing
        s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                  b'{"inputs": [')
        reply = s.recv(4096).decode()  # was: no answer, ever
    assert reply.startswith("HTTP/1.1 408") and "request body stalled: no bytes for 0.3 s after 12 bytes" in reply, reply
    assert ok_text(url)


@pytest.mark.parametrize("sep", ["", None, 5])
def test_an_adapter_step_separator_must_be_a_non_empty_string(step_model, sep):
    from mmreward.serve import TRLRewardFunction

    # was str.split's "empty separator" (or a TypeError) at the first reward call, mid-training
    with pytest.raises(ValueError, match="step_separator must be a non-empty string"):
        TRLRewardFunction(step_model, step_separator=sep)
