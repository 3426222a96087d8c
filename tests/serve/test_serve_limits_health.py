"""Server limits, health and the client's request cutting: a config no request fits is refused at
start, /healthz reports a dead model worker (503 with the reason) instead of "ok" while requests hang,
the client cuts batches of large inputs to the server's body limit (naming an input too large for any
request), and tool-calling chat turns (content null + tool_calls) are scored."""
import dataclasses

import httpx
import pytest
from serve_toys import ToyImageScorer, ToyTextScorer, assert_same_scores, png_b64

from mmreward.core.inputs import INPUT_TYPES, TextPair
from mmreward.serve import RewardClient, TRLRewardFunction
from mmreward.serve.app import BackgroundServer
from mmreward.serve.config import RayServeConfig, ServeConfig
from mmreward.serve.protocol import ROW_FIELDS

TOOL_CALLS = [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 2}"}}]


# ------------------------------------------------------------------ limits no request fits
@pytest.mark.parametrize("kw, words", [
    # 1e-9 MB is 0 bytes: the server started and answered every request 413
    ({"max_request_mb": 1e-9}, "max_request_mb must be at least"),
    ({"max_request_mb": 0.0005}, "0.0005 MB is 524 bytes, too small for any request"),
    ({"max_decoded_mb": 1e-9}, "max_decoded_mb must be at least"),
])
def test_a_limit_no_request_fits_is_refused(kw, words):
    with pytest.raises(ValueError, match=words):
        ServeConfig(**kw)
    ServeConfig(max_request_mb=0.001, max_decoded_mb=0.001)  # 1 KiB: small, but a text request fits


def test_cli_refuses_a_limit_no_request_fits_in_one_line(capsys):
    from mmreward.cli import main

    assert main(["serve", "--model", "/tmp", "--max-request-mb", "1e-9"]) == 2
    err = capsys.readouterr().err
    assert "max_request_mb must be at least" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kw", [{"replica_cpus": float("inf")}, {"replica_gpus": float("inf")}])
def test_ray_resources_must_be_finite(kw):
    with pytest.raises(ValueError, match="replica_cpus / replica_gpus must be finite numbers >= 0"):
        RayServeConfig(**kw)


# ------------------------------------------------------------------ health of the model worker
class _Broken:
    """Metrics whose queue-wait histogram raises: the worker thread dies outside a forward."""

    def __getattr__(self, name):
        raise RuntimeError("metrics backend exploded")


def test_healthz_reports_a_dead_worker_and_requests_fail_at_once_instead_of_hanging():
    server = BackgroundServer(ToyTextScorer(), ServeConfig(port=0))
    with server as url:
        assert httpx.get(url + "/healthz").json()["status"] == "ok"
        server.backend.batcher.metrics = _Broken()
        # the request the worker held when it died: answered, not left waiting forever
        r = httpx.post(url + "/score", json={"inputs": [{"prompt": "a", "response": "b"}]}, timeout=10)
        assert r.status_code == 503 and "model worker thread crashed" in r.json()["error"], r.text
        assert "metrics backend exploded" in r.json()["error"]
        assert "retry-after" not in r.headers  # waiting does not help
        h = httpx.get(url + "/healthz", timeout=10)
        assert h.status_code == 503, h.text
        body = h.json()
        assert body["status"] == "unhealthy" and "crashed (RuntimeError: metrics backend exploded)" in body["reason"]
        # later requests fail at once with the reason
        r = httpx.post(url + "/get_reward", json={"query": ["a b"]}, timeout=10)
        assert r.status_code == 503 and "crashed" in r.json()["error"], r.text
        # the client raises at once (no retries: waiting does not revive the worker)
        with pytest.raises(RuntimeError, match="503: the server cannot score: the model worker thread crashed"):
            RewardClient(url, retries=50).score([{"prompt": "a", "response": "b"}])


# ------------------------------------------------------------------ the client cuts requests to the body limit
@pytest.fixture(scope="module")
def small_body_url():
    with BackgroundServer(ToyTextScorer(), ServeConfig(port=0, max_request_mb=0.01)) as url:  # 10485 bytes
        yield url


def _long(i: int, words: int = 700) -> str:
    return " ".join(f"w{i}x{k}" for k in range(words))  # ~5 KB


def test_client_score_cuts_large_inputs_to_the_body_limit(small_body_url):
    model = ToyTextScorer()
    rows = [{"prompt": f"q{i}", "response": _long(i)} for i in range(5)]  # ~27 KB in all, ~5.5 KB each
    got = RewardClient(small_body_url).score(rows)["scores"]  # was one request: 413
    assert_same_scores(got, model.score(rows).tolist(), tol=1e-5)
    # TextPair instances too, and the adapters (which go through the client)
    got = RewardClient(small_body_url).score([TextPair(r["prompt"], r["response"]) for r in rows])["scores"]
    assert_same_scores(got, model.score(rows).tolist(), tol=1e-5)
    trl = TRLRewardFunction(small_body_url)
    assert_same_scores(trl([r["prompt"] for r in rows], [r["response"] for r in rows]), model.score(rows).tolist(),
                       tol=1e-5)


def test_client_get_reward_cuts_large_queries_to_the_body_limit(small_body_url):
    model = ToyTextScorer()
    queries = [_long(i, 500) for i in range(6)]
    prompts = [q[:40] for q in queries]
    got = RewardClient(small_body_url).get_reward(queries, prompts, [None] * 6)
    assert_same_scores(got["rewards"], model.score([{"prompt": None, "response": q} for q in queries]).tolist(),
                       tol=1e-5)
    assert got["extra_logs"] == {}


def test_an_input_too_large_for_any_request_is_named_before_anything_is_sent(small_body_url):
    client = RewardClient(small_body_url)
    rows = [{"prompt": "a", "response": "b"}, {"prompt": "a", "response": "x" * 20000}]
    with pytest.raises(ValueError, match=r"input 1 is 200\d\d bytes as JSON.*request limit of 10485 bytes"):
        client.score(rows)
    with pytest.raises(ValueError, match="query 2 is .* bytes as JSON"):
        client.get_reward(["a", "b", "y" * 20000])
    metrics = httpx.get(small_body_url + "/metrics").text
    assert 'code="413"' not in metrics  # nothing was sent


def test_client_max_request_bytes_and_unsendable_inputs(small_body_url):
    model = ToyTextScorer()
    rows = [{"prompt": f"q{i}", "response": f"answer number {i}"} for i in range(8)]
    got = RewardClient(small_body_url, max_request_bytes=120).score(rows)["scores"]  # one input per request
    assert_same_scores(got, model.score(rows).tolist(), tol=1e-5)
    with pytest.raises(ValueError, match="max_request_bytes must be an integer >= 64"):
        RewardClient(small_body_url, max_request_bytes=0)
    with pytest.raises(ValueError, match="input 1 cannot be sent as JSON"):
        RewardClient(small_body_url).score([{"prompt": "a", "response": "b"}, {"prompt": "a", "response": {1, 2}}])
    with pytest.raises(ValueError, match="score got no inputs"):
        RewardClient(small_body_url).score([])


def test_client_cuts_image_requests_to_the_body_limit():
    import numpy as np

    rng = np.random.default_rng(0)
    images = [png_b64(rng.integers(0, 256, (40, 40, 3), np.uint8)) for _ in range(3)]  # ~6.5 KB base64 each
    rows = [{"prompt": f"p{i}", "image": im} for i, im in enumerate(images)]
    with BackgroundServer(ToyImageScorer(), ServeConfig(port=0, max_request_mb=0.01)) as url:
        assert httpx.post(url + "/score", json={"inputs": rows}).status_code == 413  # what one request would get
        got = RewardClient(url).score(rows)["scores"]
        one_by_one = [RewardClient(url).score([r])["scores"][0] for r in rows]
    assert_same_scores(got, one_by_one)


# ------------------------------------------------------------------ tool-calling turns
def _agent_turns():
    return [{"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": None, "tool_calls": TOOL_CALLS},
            {"role": "tool", "tool_call_id": "call_1", "content": "4"},
            {"role": "assistant", "content": "It is 4."}]


def test_tool_call_turns_with_null_content_are_scored_over_http(start_server, text_model):
    url = start_server(text_model)
    expected = text_model.score([{"messages": [{**m, "content": m["content"] or ""} for m in _agent_turns()]}]).tolist()
    r = httpx.post(url + "/score", json={"inputs": [{"messages": _agent_turns()}]})
    assert r.status_code == 200, r.text
    assert_same_scores(r.json()["scores"], expected)
    r = httpx.post(url + "/score", json={"inputs": [{"prompt": "q", "response": [{"role": "assistant", "content": None}]}]})
    assert r.status_code == 400 and "'content' is null" in r.json()["error"] and "tool_calls" in r.json()["error"]
    # TRL's conversational completions of an agent: the prompt, then the tool-calling completion
    got = TRLRewardFunction(url)([_agent_turns()[:1]], [_agent_turns()[1:]])
    assert_same_scores(got, expected)


# ------------------------------------------------------------------ one declaration of the row fields
def test_row_fields_are_each_input_types_declaration_and_from_record_reads_every_key():
    for cls in INPUT_TYPES.values():
        assert ROW_FIELDS[cls] == cls.row_fields() and set(cls.row_fields()) == {
            k for keys in cls.row_keys.values() for k in keys}
        assert set(cls.row_keys) == {f.name for f in dataclasses.fields(cls)}, cls  # every field declared
    canonical = {
        "Comparison": {"prompt": "p", "first": "a", "second": "b"},
        "StepSolution": {"problem": "p", "steps": ["s"]},
        "ImagePrompt": {"prompt": "p", "image": "IMG"},
        "VideoPrompt": {"prompt": "p", "video": "VID"},
        "Conversation": {"messages": [{"role": "user", "content": "m"}], "images": ["I"]},
        "VisualSteps": {"question": "q", "steps": ["s"], "images": ["I"]},
        "Episode": {"frames": "F", "success": [1]},
    }
    for cls in INPUT_TYPES.values():
        if cls is TextPair:
            continue
        base = canonical[cls.__name__]
        for name, keys in cls.row_keys.items():
            for key in keys:  # the field under each of its declared keys reads as under its own name
                row = {**{k: v for k, v in base.items() if k != name}, key: base[name]}
                assert cls.from_record(row) == cls.from_record(base), (cls, key)
    turns = [{"role": "user", "content": "r"}]
    assert [TextPair.from_record({k: v}) for k, v in (("response", "r"), ("text", "r"), ("messages", turns))] == [
        TextPair(None, "r"), TextPair(None, "r"), TextPair(None, turns)]


# ------------------------------------------------------------------ JSON Python's parser reads loosely
@pytest.fixture(scope="module")
def text_url():
    with BackgroundServer(ToyTextScorer(), ServeConfig(port=0)) as url:
        yield url


@pytest.mark.parametrize("body, words", [
    # Python keeps the last of two equal keys: "b" was scored, "a" silently dropped
    (b'{"inputs": [{"prompt": "q", "response": "a", "response": "b"}]}',
     "malformed JSON: field 'response' is given twice in one object"),
    (b'{"inputs": [{"prompt": "q", "response": "a"}], "inputs": [{"prompt": "q", "response": "b"}]}',
     "field 'inputs' is given twice"),
    # a surrogate as raw bytes (json.loads decodes them with surrogatepass): was a 422 from the model's encoder
    (b'{"inputs": [{"prompt": "a", "response": "x\xed\xa0\x80y"}]}',
     "input 0: field 'response' holds an unpaired UTF-16 surrogate"),
    # a prompt the model would not read
    (b'{"inputs": [{"prompt": "what is 3+3?", "messages": [{"role": "user", "content": "2+2?"}]}]}',
     "input 0: field 'prompt' would be ignored"),
    (b'{"inputs": [{"prompt": "a", "response": "b\x01"}]}', "malformed JSON: Invalid control character at line"),
])
def test_json_read_loosely_by_python_is_a_400(text_url, body, words):
    r = httpx.post(text_url + "/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and words in r.json()["error"], r.text
    r = httpx.post(text_url + "/score", content='{"inputs": [{"prompt": "été", "response": "中文"}]}'.encode("utf-16"),
                   headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text  # UTF-16 JSON (RFC 8259 readers accept it) with valid text
