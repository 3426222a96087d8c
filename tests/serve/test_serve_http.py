"""The HTTP server in this process (127.0.0.1, a free port): every modality, correctness under
concurrent load, bad requests, limits, API key, backpressure, disconnects, a failing input, /metrics."""
import asyncio
import base64
import socket
import time

import httpx
import numpy as np
import pytest
import torch
from serve_toys import ToyVideoScorer, assert_same_scores, png_b64

from mmreward.core.inputs import Episode, ImagePrompt, VideoPrompt
from mmreward.ops import refine_process_rewards


def texts(n, tag="p"):
    return [{"prompt": f"{tag}{i}", "response": " ".join(f"w{i}_{k}" for k in range(2 + i % 7))} for i in range(n)]


async def post_all(url, bodies, path="/score", headers=None):
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(*(client.post(url + path, json=b, headers=headers) for b in bodies))


# ------------------------------------------------------------------ correctness under load
def test_64_concurrent_clients_each_get_their_own_offline_score(start_server, text_model):
    rows = texts(192)
    expected = text_model.score(rows).tolist()
    text_model.forwards.clear()
    url = start_server(text_model, max_batch=32, max_wait_ms=20, max_padding=None)

    async def client(c):  # 64 clients, 3 single-input requests each, back to back
        async with httpx.AsyncClient(timeout=30) as http:
            return [(i, (await http.post(url + "/score", json={"inputs": [rows[i]]})).json()["scores"][0])
                    for i in range(c, 192, 64)]

    async def main():
        return await asyncio.gather(*(client(c) for c in range(64)))

    answers = [a for per_client in asyncio.run(main()) for a in per_client]
    assert sorted(i for i, _ in answers) == list(range(192))  # every request answered exactly once
    got = dict(answers)
    assert_same_scores([got[i] for i in range(192)], expected)
    sizes = [len(f) for f in text_model.forwards]
    assert sum(sizes) == 192 and max(sizes) > 8, sizes  # requests really shared forwards
    metrics = httpx.get(url + "/metrics").text
    assert 'mmreward_serve_requests_total{code="200",endpoint="/score"} 192' in metrics
    assert f"mmreward_serve_batch_size_count {len(sizes)}" in metrics


# ------------------------------------------------------------------ each modality
def test_text_pairs_and_conversations(start_server, text_model):
    url = start_server(text_model)
    rows = [{"prompt": "2+2?", "response": "4"},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    r = httpx.post(url + "/score", json={"inputs": rows})
    assert r.status_code == 200
    assert_same_scores(r.json()["scores"], text_model.score(rows).tolist())


def test_prm_steps_get_per_step_scores_and_refinement_on_request(start_server, step_model):
    url = start_server(step_model)
    rows = [{"problem": "1+1", "steps": ["one plus one", "is two"]}, {"problem": "2*3", "steps": ["six", "done", "ok"]}]
    offline = [t.tolist() for t in step_model.score_parts(rows)]
    r = httpx.post(url + "/score", json={"inputs": rows}).json()
    assert [len(p) for p in r["parts"]] == [2, 3]
    assert_same_scores([v for p in r["parts"] for v in p], [v for p in offline for v in p])
    r = httpx.post(url + "/score", json={"inputs": rows, "output": "scores"}).json()
    assert_same_scores(r["scores"], step_model.score(rows).tolist())
    r = httpx.post(url + "/score", json={"inputs": rows, "refine": {"clip": 0.2, "delta": False}}).json()
    refined, returns = refine_process_rewards(torch.tensor([v for p in offline for v in p]), torch.tensor([2, 3]),
                                              clip=0.2)
    np.testing.assert_allclose([v for p in r["step_rewards"] for v in p], refined.numpy(), atol=1e-5)
    np.testing.assert_allclose(r["scores"], [returns[0].item(), returns[2].item()], atol=1e-5)


def test_images_as_base64_json_and_as_raw_png_or_jpeg_bodies(start_server, image_model):
    url = start_server(image_model)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (12 + i, 10, 3), dtype=np.uint8) for i in range(3)]
    rows = [{"prompt": f"red {i}", "image": png_b64(im)} for i, im in enumerate(imgs)]
    rows[1]["image"] = "data:image/png;base64," + rows[1]["image"]
    r = httpx.post(url + "/score", json={"inputs": rows})
    assert r.status_code == 200, r.text
    offline = image_model.score([ImagePrompt(f"red {i}", png_b64(im)) for i, im in enumerate(imgs)]).tolist()
    assert_same_scores(r.json()["scores"], offline)
    jpeg = base64.b64decode(png_b64(imgs[0], "JPEG"))
    r = httpx.post(url + "/score", params={"prompt": "red 0"}, content=jpeg, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert_same_scores(r.json()["scores"], image_model.score([ImagePrompt("red 0", jpeg)]).tolist())


def test_episode_and_video_frames_get_per_frame_scores(start_server, episode_model):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    raw = {"shape": list(frames.shape), "data": base64.b64encode(frames.tobytes()).decode()}
    url = start_server(episode_model)
    r = httpx.post(url + "/score", json={"inputs": [{"frames": raw}, {"frames": [png_b64(f) for f in frames[:3]]}]})
    assert r.status_code == 200, r.text
    want = [t.tolist() for t in episode_model.score_parts([Episode(frames), Episode(frames[:3])])]
    assert [len(p) for p in r.json()["parts"]] == [5, 3]
    assert_same_scores(r.json()["parts"][0], want[0])
    assert r.json()["parts"][1] == pytest.approx(want[1], abs=1e-6)
    video_model = ToyVideoScorer()
    url = start_server(video_model)
    r = httpx.post(url + "/score", json={"inputs": [{"prompt": "open the drawer", "video": raw}]})
    assert r.json()["parts"][0] == pytest.approx(video_model.score_parts([VideoPrompt("x", frames)])[0].tolist(), abs=1e-6)


# ------------------------------------------------------------------ bad requests: clear 4xx, the server keeps serving
@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "malformed JSON"),
    (b"", 400, "empty request body"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"inputs": "hello"}', 400, "field 'inputs' must be a non-empty list"),
    (b'{"inputs": [{"prompt": "a"}]}', 400, "input 0"),
    (b'{"inputs": [{"prompt": "a", "response": 5}]}', 400, "field 'response'"),
    (b'{"inputs": [{"prompt": "a", "response": "b"}], "outptu": "x"}', 400, "unknown field(s) ['outptu']"),
    (b'{"inputs": [{"prompt": "a", "response": "b"}], "output": "parts"}', 400, "output 'parts' needs a step"),
    (b'{"inputs": [{"prompt": "a", "response": "b"}], "refine": {"clip": 1}}', 400, "refine needs a step model"),
])
def test_malformed_requests_get_a_clear_error_and_the_server_keeps_serving(start_server, text_model, body, status,
                                                                           words):
    url = start_server(text_model)
    r = httpx.post(url + "/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and words in r.json()["error"], r.text
    assert httpx.post(url + "/score", json={"inputs": texts(1)}).status_code == 200


def test_limits_on_body_size_item_count_and_image_size(start_server, text_model, image_model):
    url = start_server(text_model, max_request_mb=0.01, max_items=4, max_queue=16)
    r = httpx.post(url + "/score", json={"inputs": [{"prompt": "p", "response": "x" * 20000}]})
    assert r.status_code == 413 and "the limit is 10485" in r.json()["error"]
    r = httpx.post(url + "/score", json={"inputs": texts(5)})
    assert r.status_code == 413 and "limit is 4 per request" in r.json()["error"]
    r = httpx.post(url + "/get_reward", json={"query": ["a"] * 5})
    assert r.status_code == 413
    url = start_server(image_model, max_image_pixels=100)
    big = png_b64(np.zeros((20, 20, 3), dtype=np.uint8))
    r = httpx.post(url + "/score", json={"inputs": [{"prompt": "p", "image": big}]})
    assert r.status_code == 413 and "20x20 pixels" in r.json()["error"]
    assert httpx.post(url + "/score", json={"inputs": [{"prompt": "p", "image": png_b64(np.zeros((5, 5, 3), np.uint8))}]}
                      ).status_code == 200


@pytest.mark.parametrize("image, words", [
    ("/etc/passwd", "not valid base64"),
    ("https://example.com/cat.png", "not valid base64"),
    (base64.b64encode(b"definitely not an image").decode(), "not a decodable"),
    (base64.b64encode(base64.b64decode(png_b64(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)))[:1500]
                      ).decode(), "corrupt PNG image"),
    (123, "must be a base64 string"),
])
def test_undecodable_images_are_400_naming_the_field(start_server, image_model, image, words):
    url = start_server(image_model)
    r = httpx.post(url + "/score", json={"inputs": [{"prompt": "ok", "image": png_b64(np.zeros((4, 4, 3), np.uint8))},
                                                    {"prompt": "bad", "image": image}]})
    assert r.status_code == 400 and "input 1: field 'image'" in r.json()["error"] and words in r.json()["error"], r.text


def test_api_key_is_required_when_set_and_health_stays_open(start_server, text_model):
    url = start_server(text_model, api_key="s3cret")
    assert httpx.post(url + "/score", json={"inputs": texts(1)}).status_code == 401
    r = httpx.post(url + "/score", json={"inputs": texts(1)}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(url + "/metrics").status_code == 401
    ok = httpx.post(url + "/score", json={"inputs": texts(1)}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert httpx.get(url + "/healthz").json()["status"] == "ok"


def test_binding_beyond_loopback_needs_an_api_key(text_model):
    from mmreward.serve.app import BackgroundServer
    from mmreward.serve.config import ServeConfig

    with pytest.raises(ValueError, match="--api-key"):
        BackgroundServer(text_model, ServeConfig(host="0.0.0.0", port=0))


# ------------------------------------------------------------------ load faults
def test_full_queue_answers_503_with_retry_after(start_server, slow_text_model):
    url = start_server(slow_text_model, max_batch=2, max_wait_ms=0, max_items=2, max_queue=2, retry_after_s=3)
    answers = asyncio.run(post_all(url, [{"inputs": texts(2, tag=f"r{k}")} for k in range(6)]))
    codes = sorted(r.status_code for r in answers)
    assert 200 in codes and 503 in codes, codes
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["retry-after"] == "3" and "server busy" in busy.json()["error"]
    assert 'kind="queue_full"' in httpx.get(url + "/metrics").text


def test_one_failing_input_errors_its_request_while_the_batch_succeeds(start_server, text_model):
    rows = texts(12)
    bodies = [{"inputs": [r]} for r in rows]
    bodies[5] = {"inputs": [{"prompt": "p", "response": "please explode"}]}
    url = start_server(text_model, max_batch=16, max_wait_ms=50)
    answers = asyncio.run(post_all(url, bodies))
    assert answers[5].status_code == 422 and "explode" in answers[5].json()["error"]
    good = [i for i in range(12) if i != 5]
    assert all(answers[i].status_code == 200 for i in good)
    assert_same_scores([answers[i].json()["scores"][0] for i in good], text_model.score([rows[i] for i in good]).tolist())


def test_a_client_that_disconnects_mid_request_is_dropped_and_serving_goes_on(start_server, slow_text_model):
    url = start_server(slow_text_model, max_batch=1, max_wait_ms=0)
    host, port = url.removeprefix("http://").split(":")

    async def main():
        async with httpx.AsyncClient(timeout=30) as client:
            busy = asyncio.ensure_future(client.post(url + "/score", json={"inputs": texts(3, tag="first")}))  # 3 forwards: 0.9 s
            deadline = time.time() + 10  # until the first request occupies the model (a loaded machine is slow)
            while not any("first" in t for f in slow_text_model.forwards for t in f):
                assert time.time() < deadline, "the first request never reached the model"
                await asyncio.sleep(0.01)
            body = b'{"inputs": [{"prompt": "gone", "response": "never scored"}]}'
            with socket.create_connection((host, int(port))) as s:  # send a request, then hang up
                s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await asyncio.sleep(0.05)
            return await busy

    assert asyncio.run(main()).status_code == 200
    deadline = time.time() + 5
    while "mmreward_serve_cancelled_total{endpoint=\"/score\"} 1" not in httpx.get(url + "/metrics").text:
        assert time.time() < deadline, "the disconnect was not noticed"
        time.sleep(0.05)
    assert httpx.post(url + "/score", json={"inputs": texts(1)}).status_code == 200
    assert not any("gone" in t for f in slow_text_model.forwards for t in f)  # its forward never ran


# ------------------------------------------------------------------ other endpoints
def test_info_healthz_metrics(start_server, step_model):
    url = start_server(step_model, max_batch=7)
    info = httpx.get(url + "/info").json()
    assert info["model_type"] == "serve_toy_steps" and info["inputs"] == ["StepSolution"] and info["parts"]
    assert info["max_batch"] == 7
    assert httpx.get(url + "/healthz").json() == {"status": "ok", "model_type": "serve_toy_steps", "queue_depth": 0}
    httpx.post(url + "/score", json={"inputs": [{"problem": "p", "steps": ["a"]}]})
    text = httpx.get(url + "/metrics").text
    for name, kind in [("requests_total", "counter"), ("errors_total", "counter"), ("queue_depth", "gauge"),
                       ("batch_size", "histogram"), ("request_seconds", "histogram"), ("forward_seconds", "histogram")]:
        assert f"# TYPE mmreward_serve_{name} {kind}" in text
    assert 'mmreward_serve_batch_size_bucket{le="1"} 1' in text and 'mmreward_serve_batch_size_bucket{le="+Inf"} 1' in text
    assert httpx.get(url + "/nowhere").status_code == 404
    assert httpx.get(url + "/score").status_code == 405


def test_a_sixteen_bit_grey_png_decodes_to_its_grey_levels():
    import io

    from PIL import Image

    from mmreward.serve.config import ServeConfig
    from mmreward.serve.protocol import _DecodeBudget, image_from_bytes

    grey8 = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    buf = io.BytesIO()
    Image.fromarray(grey8.astype(np.uint16) * 257).save(buf, format="PNG")
    img = image_from_bytes(buf.getvalue(), "input 0", _DecodeBudget(ServeConfig()))
    assert img.mode == "RGB" and np.array_equal(np.asarray(img)[..., 0], grey8)
