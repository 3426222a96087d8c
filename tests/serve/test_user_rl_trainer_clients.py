"""An RL-infrastructure user's clients against ``mmreward serve`` (127.0.0.1, tiny toy models): a server
stopped while requests wait, request bodies plain ``requests`` / shell users send by mistake, PRM
refinement settings, health checkers, and a mistyped CLI flag. Every error is a JSON 4xx / 503 naming
what to do, and the server keeps serving."""
import base64
import re
import threading
import time

import httpx
import numpy as np
import pytest
from serve_toys import ToyTextScorer, png_b64

from mmreward.serve import OpenRLHFRewardFunction, TRLRewardFunction, VerlRewardFunction
from mmreward.serve.app import BackgroundServer
from mmreward.serve.config import ServeConfig


class GatedText(ToyTextScorer):
    """A text toy whose forwards wait for ``gate`` (at most 20 s): requests stay in flight or queued for as
    long as a test needs, without timing."""

    def __init__(self, gate: threading.Event):
        super().__init__()
        self.gate, self.entered = gate, threading.Event()

    def _score(self, items, batch_size):
        self.entered.set()
        self.gate.wait(20)
        return super()._score(items, batch_size)


def _wait_for(predicate, what: str, limit_s: float = 10.0):
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ------------------------------------------------------------------ shutdown with requests queued
def test_requests_the_shutdown_timeout_cuts_off_get_a_json_503_with_retry_after():
    gate = threading.Event()
    # bucket_batches=1: the worker takes one request at a time, so two stay queued behind the blocked forward
    server = BackgroundServer(GatedText(gate), ServeConfig(port=0, max_batch=1, max_wait_ms=0, bucket_batches=1,
                                                           shutdown_timeout_s=0.2))
    url = server.start()
    answers: dict = {}

    def client(i):
        answers[i] = httpx.post(url + "/score", json={"inputs": [{"prompt": f"p{i}", "response": "r"}]}, timeout=30)

    clients = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    stopper = threading.Thread(target=server.stop)
    try:
        for t in clients:
            t.start()
        _wait_for(lambda: httpx.get(url + "/healthz").json()["queue_depth"] == 2, "two queued requests")
        stopper.start()  # its drain ends after 0.2 s with all three requests unanswered
        for t in clients:
            t.join(15)
        assert sorted(answers) == [0, 1, 2]
        for r in answers.values():  # was: a plain-text "Internal Server Error" 500 and a traceback per request
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/json" and r.headers["retry-after"] == "1"
            assert r.json() == {"status": 503, "error": "the server is shutting down: this request was not scored "
                                                        "within --shutdown-timeout-s (0.2 s); retry"}
    finally:
        gate.set()
        if stopper.is_alive():
            stopper.join(30)
        else:
            server.stop()
    assert not stopper.is_alive()


def test_a_forward_still_running_does_not_keep_the_server_from_stopping():
    gate = threading.Event()
    model = GatedText(gate)
    server = BackgroundServer(model, ServeConfig(port=0, shutdown_timeout_s=0.2))
    url = server.start()
    answers: list = []
    client = threading.Thread(target=lambda: answers.append(
        httpx.post(url + "/score", json={"inputs": [{"prompt": "p", "response": "r"}]}, timeout=30)))
    stopper = threading.Thread(target=server.stop)
    try:
        client.start()
        assert model.entered.wait(10)  # the forward runs, and will not end by itself for 20 s
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive()  # was: the stop (SIGTERM's exit) waited for the forward however long it took
        client.join(10)
        assert answers[0].status_code == 503 and "the server is shutting down" in answers[0].json()["error"]
    finally:
        gate.set()
        if stopper.is_alive():
            stopper.join(30)
        else:
            server.stop()


def test_a_bracketed_ipv6_host_is_refused_by_name():
    # was: "binding [::1] exposes the model beyond this machine: set --api-key", then "Name or service not known"
    with pytest.raises(ValueError, match=r"host '\[::1\]': give the IPv6 address without brackets \(--host ::1\)"):
        ServeConfig(host="[::1]")
    assert ServeConfig(host="::1", port=0).host == "::1"


# ------------------------------------------------------------------ bodies plain HTTP clients send by mistake
@pytest.fixture
def text_url(start_server, text_model):
    return start_server(text_model)


def test_form_data_and_image_bytes_sent_as_json_are_named(text_url):
    # requests.post(url, data={...}) (form data) instead of json=
    r = httpx.post(text_url + "/score", data={"inputs": "2+2?"})
    assert r.status_code == 400
    assert "the body is form data, Content-Type application/x-www-form-urlencoded" in r.json()["error"]
    assert "requests.post(url, json=body)" in r.json()["error"]
    # curl -d '{...}' sends JSON as form data: a JSON-looking body that is malformed gets no form hint
    r = httpx.post(text_url + "/score", content=b'{"inputs": [1,]}',
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "form data" not in r.json()["error"]
    # requests.post(url, data=open("x.png", "rb")): image bytes with no Content-Type, on either route
    png = base64.b64decode(png_b64(np.zeros((4, 4, 3), np.uint8)))
    for path in ("/score", "/get_reward"):
        r = httpx.post(text_url + path, content=png)
        assert r.status_code == 400
        assert r.json()["error"].startswith("request body is not UTF-8 JSON: the body is a PNG image; POST it to "
                                            "/score with 'Content-Type: image/png'")
    # an image body as application/octet-stream with its ?prompt=: the Content-Type is at fault, not the query
    r = httpx.post(text_url + "/score?prompt=a+red+car", content=png,
                   headers={"content-type": "application/octet-stream"})
    assert r.status_code == 400
    assert "query parameter 'prompt' goes with a raw image body, which needs 'Content-Type: image/png'" in \
        r.json()["error"] and "'application/octet-stream'" in r.json()["error"]
    assert httpx.post(text_url + "/score", json={"inputs": [{"prompt": "a", "response": "b"}]}).status_code == 200


def test_line_wrapped_base64_images_are_decoded(start_server, image_model):
    url = start_server(image_model)
    rgb = np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3)
    raw = base64.b64decode(png_b64(rgb))
    wrapped = base64.encodebytes(raw).decode()  # 76-character lines, as `base64 FILE` prints them
    assert "\n" in wrapped.strip()
    plain = httpx.post(url + "/score", json={"inputs": [{"prompt": "red", "image": base64.b64encode(raw).decode()}]})
    got = httpx.post(url + "/score", json={"inputs": [{"prompt": "red", "image": wrapped}]})
    assert got.status_code == 200, got.text  # was: "is not valid base64 (... never a file path or URL)"
    assert got.json() == plain.json()
    bad = httpx.post(url + "/score", json={"inputs": [{"prompt": "red", "image": "/data/cat 1.png"}]})
    assert bad.status_code == 400 and "is not valid base64" in bad.json()["error"]


# ------------------------------------------------------------------ a PRM's refine settings
def test_a_refine_gamma_without_clip_or_delta_is_refused_not_ignored(start_server, step_model):
    url = start_server(step_model)
    row = {"problem": "3 +4", "steps": ["3+4=7", "7=7"]}
    r = httpx.post(url + "/score", json={"inputs": [row], "refine": {"gamma": 0.9}})
    assert r.status_code == 400, r.text  # was: 200 with the raw parts, the discount silently dropped
    assert r.json()["error"].startswith("refine.gamma (0.9) discounts the refined step rewards: give refine.clip "
                                        "or refine.delta: true too")
    for off in ({}, {"gamma": 1.0}, {"clip": None, "delta": False}):  # explicitly no refinement: raw parts
        r = httpx.post(url + "/score", json={"inputs": [row], "refine": off})
        assert r.status_code == 200 and set(r.json()) == {"parts"}
    assert set(httpx.post(url + "/score", json={"inputs": [row], "refine": {"delta": True, "gamma": 0.9}})
               .json()) == {"parts", "step_rewards", "returns", "scores"}
    # the adapters read refine= the same way, when the reward function is built
    with pytest.raises(ValueError, match=r"refine.gamma \(0.5\) discounts"):
        TRLRewardFunction(step_model, refine={"gamma": 0.5})
    with pytest.raises(ValueError, match=r"refine.gamma \(0.5\) discounts"):
        TRLRewardFunction(url, refine={"gamma": 0.5})


# ------------------------------------------------------------------ health checkers, the CLI
def test_healthz_answers_head_for_health_checkers(text_url):
    r = httpx.head(text_url + "/healthz")
    assert r.status_code == 200 and r.content == b""  # was: 405, read as unhealthy


def test_a_mistyped_cli_option_names_the_one_meant(capsys):
    from mmreward.serve.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "runs/rm", "--max-batch-size", "64"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unrecognized arguments: --max-batch-size 64; did you mean --max-batch (not --max-batch-size)?" in err


def test_a_refused_api_key_says_what_was_wrong_with_it(start_server, text_model):
    url = start_server(text_model, api_key="s3cret")
    body = {"query": ["2+2? 4"]}
    for headers, why in [({}, "the request has no Authorization header"),  # OpenRLHF's remote RM sends none
                         ({"X-API-Key": "s3cret"}, "the request has no Authorization header; its 'x-api-key' "
                                                   "header is not read"),
                         ({"Authorization": "s3cret"}, "its Authorization header is not of the form 'Bearer KEY'"),
                         ({"Authorization": "Bearer s3cre7"}, "the key is wrong")]:
        r = httpx.post(url + "/get_reward", json=body, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"] == f"missing or wrong API key: send 'Authorization: Bearer KEY' ({why})"
        assert "s3cret" not in r.json()["error"]
    assert httpx.post(url + "/get_reward", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_unknown_field_names_are_cut_short_in_the_error(text_url):
    long_key = "k" * 100_000
    r = httpx.post(text_url + "/score", json={"inputs": [{"prompt": "a", "response": "b", long_key: 1}]})
    assert r.status_code == 400 and len(r.content) < 400, len(r.content)  # was: the 100 KB key sent back whole
    assert r.json()["error"].startswith("input 0 has unknown field(s) ['kkkk")
    many = {f"extra{i}": i for i in range(1000)}
    r = httpx.post(text_url + "/get_reward", json={"query": ["a"], **many})
    assert r.status_code == 400 and len(r.content) < 400, len(r.content)
    assert "unknown field(s) ['extra0', 'extra1', 'extra10', 'extra100', 'extra101', and 995 more]" in r.json()["error"]
    r = httpx.post(text_url + "/score", json={"inputs": [{"prompt": "a", "response": "b", "respons": "c"}]})
    assert "input 0 has unknown field(s) ['respons']; rows of TextPair have" in r.json()["error"]


def test_openrlhf_0_11_rotates_one_query_calls_over_its_remote_urls(start_server, text_model):
    """OpenRLHF 0.11's own ``_fetch_rewards_via_http``: with two ``--reward.remote_url`` servers and one query per
    rollout, each call goes to the next URL (no empty shard is sent), and every reward is the query's own."""
    agent = pytest.importorskip("openrlhf.utils.agent", reason="OpenRLHF is not importable")
    import asyncio
    import inspect

    if "_reward_endpoint_cycle" not in inspect.getsource(agent.SingleTurnAgentExecutor._fetch_rewards_via_http):
        pytest.skip("an OpenRLHF release before the round robin over remote URLs")
    first, second = ToyTextScorer(), ToyTextScorer()
    urls = [start_server(first) + "/get_reward", start_server(second) + "/get_reward"]
    queries = [f"question {i}? " + " ".join(f"w{i}_{k}" for k in range(1 + i)) for i in range(4)]
    executor = agent.SingleTurnAgentExecutor(urls)

    async def rollouts():
        return [await executor._fetch_rewards_via_http([q], [q.split("?")[0]], [None]) for q in queries]

    answers = asyncio.run(rollouts())
    assert [len(f) for f in first.forwards] == [1, 1] and [len(f) for f in second.forwards] == [1, 1]
    got = [a[0]["rewards"][0] for a in answers]
    np.testing.assert_allclose(got, first.score([{"prompt": None, "response": q} for q in queries]).tolist(),
                               atol=1e-6)


def test_a_port_in_use_under_ray_is_one_line_exit_2_before_ray_starts(capsys, monkeypatch):
    import socket

    ray = pytest.importorskip("ray", reason="Ray Serve is not installed (pip install mmreward[serve-ray])")
    from mmreward.cli import main

    def init(*a, **k):
        raise AssertionError("Ray started although the port is taken")

    monkeypatch.setattr(ray, "init", init)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", "/nonexistent/rm", "--ray", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    # was: "model folder '/nonexistent/rm' does not exist"; with a real folder, Ray started before the port was tried
    assert f"cannot listen on 127.0.0.1:{port} (--host / --port): Address already in use" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    with socket.socket() as taken:  # joining a cluster: its Serve proxy may hold the port already, not checked here
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", "/nonexistent/rm", "--ray", "--ray-address", "auto", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "cannot listen" not in err and "does not exist" in err, err


@pytest.mark.parametrize("target, words", [
    ("localhost:8000", "'localhost:8000' looks like a server address without its scheme: give the URL, "
                       "'http://localhost:8000'"),
    ("rm-host:5000/get_reward", "give the URL, 'http://rm-host:5000' (not a route)"),
    ("ws://127.0.0.1:8000", "'ws://127.0.0.1:8000' is a ws:// URL: mmreward serve speaks HTTP"),
])
def test_a_server_address_without_http_is_named_not_read_as_a_model_folder(target, words):
    # was: "model folder 'localhost:8000' does not exist", or a hub error about repo ids
    for cls in (TRLRewardFunction, VerlRewardFunction, OpenRLHFRewardFunction):
        with pytest.raises(ValueError, match=re.escape(words)):
            cls(target)


def test_an_upper_case_url_scheme_reaches_the_server(text_url, text_model):
    rm = TRLRewardFunction(text_url.replace("http://", "HTTP://"))  # was: read as a model folder
    np.testing.assert_allclose(rm(["2+2?"], ["4"]), text_model.score([{"prompt": "2+2?", "response": "4"}]).tolist(),
                               atol=1e-6)


def test_a_refused_request_is_logged_with_its_reason_rate_limited(start_server, text_model, caplog, monkeypatch):
    """OpenRLHF's remote-RM client (aiohttp ``raise_for_status``) logs only "400, message='Bad Request'": the
    server's log is where the trainer's user reads why."""
    import logging

    import mmreward.serve.app as app

    url = start_server(text_model)
    with caplog.at_level(logging.WARNING, logger="mmreward.serve"):
        for _ in range(3):  # one mistake on every rollout: one line, not three
            assert httpx.post(url + "/get_reward", json={"query": [["tokens"]]}).status_code == 400
        lines = [r.getMessage() for r in caplog.records if r.name == "mmreward.serve"]
        assert lines == ["/get_reward answered 400: query 0 must be a string, got ['tokens']"]  # was: nothing
        monkeypatch.setattr(app, "ERROR_LOG_INTERVAL_S", 0.0)
        httpx.post(url + "/get_reward", json={"query": [["tokens"]]})
        lines = [r.getMessage() for r in caplog.records if r.name == "mmreward.serve"]
        assert lines[1:] == ["/get_reward answered 400: query 0 must be a string, got ['tokens'] (2 more 400s on "
                             "/get_reward since the last such line)"]
        assert httpx.post(url + "/get_reward", json={"query": ["fine"]}).status_code == 200
        assert len([r for r in caplog.records if r.name == "mmreward.serve"]) == 2  # answered requests: no line


def test_a_wrong_route_names_the_routes_and_is_logged(text_url, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="mmreward.serve"):
        # OpenRLHF given --remote_rm_url http://HOST:PORT (without /get_reward): aiohttp shows "404, Not Found"
        r = httpx.post(text_url + "/", json={"query": ["a"], "prompts": ["a"], "labels": [None]})
        assert r.status_code == 404  # was: {"error": "Not Found"}, and nothing in the server's log
        assert r.json()["error"].startswith("no route POST /: the routes are POST /score, POST /get_reward "
                                            "(OpenRLHF's remote RM: --remote_rm_url http://HOST:PORT/get_reward)")
        r = httpx.get(text_url + "/get_reward")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        assert r.json()["error"].startswith("GET /get_reward is not allowed (Allow: POST); the routes are")
    lines = [r.getMessage() for r in caplog.records if r.name == "mmreward.serve"]
    assert [line.split(":")[0] for line in lines] == ["(routing) answered 404", "(routing) answered 405"]
    assert httpx.post(text_url + "/get_reward", json={"query": ["a"]}).status_code == 200


def test_routes_answer_with_a_trailing_slash_and_wrong_routes_are_counted(text_url):
    """httpx does not follow the 307 Starlette answers POST /score/ with: the trainer saw a bare 307."""
    r = httpx.post(text_url + "/score/", json={"inputs": [{"prompt": "a", "response": "b"}]})
    assert r.status_code == 200 and len(r.json()["scores"]) == 1
    assert httpx.post(text_url + "/get_reward/", json={"query": ["a"]}).status_code == 200
    assert httpx.get(text_url + "/healthz/").status_code == 200
    assert httpx.post(text_url + "/get_rewards", json={"query": ["a"]}).status_code == 404
    assert httpx.get(text_url + "/score").status_code == 405
    metrics = httpx.get(text_url + "/metrics").text
    assert 'mmreward_serve_errors_total{endpoint="(routing)",kind="no_route"} 1' in metrics
    assert 'mmreward_serve_errors_total{endpoint="(routing)",kind="wrong_method"} 1' in metrics
    assert 'mmreward_serve_requests_total{code="404",endpoint="(routing)"} 1' in metrics
