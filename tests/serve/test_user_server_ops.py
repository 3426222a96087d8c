"""An operator running ``mmreward serve`` beside an RL trainer (OpenRLHF / verl / TRL loops): what the server's
log shows at each ``--log-level``, when the model itself fails and for a request carrying an X-Request-ID; a
shutdown told to wait for every request; connections that send an endless or no request head."""
import json
import logging
import math
import os
import signal
import subprocess
import sys

import httpx
import pytest
from serve_toys import ToyTextScorer

from mmreward.serve.app import LocalBackend
from mmreward.serve.config import ServeConfig

HERE = os.path.dirname(os.path.abspath(__file__))
# `mmreward serve` with the toy model types registered (as tests/serve/test_serve_process.py launches it)
LAUNCH = (f"import sys; sys.path.insert(0, {HERE!r}); import serve_toys; from mmreward.registry import register_model; "
          "[register_model(c.model_type, c) for c in serve_toys.ALL]; from mmreward.cli import main; "
          "sys.exit(main(['serve'] + sys.argv[1:]))")


class BuggyText(ToyTextScorer):
    """A text toy with a bug on one kind of input (a ZeroDivisionError deep in its forward: a 500, not a 422)."""

    def _score(self, items, batch_size):
        if any("crash" in str(it.response) for it in items):
            return self._buggy_helper()
        return super()._score(items, batch_size)

    def _buggy_helper(self):
        return 1 / 0


def test_a_model_failure_is_logged_with_the_models_traceback(start_server, caplog):
    # the 500's log line was "/score answered 500: ... ZeroDivisionError: division by zero" alone: nothing said
    # where in the model it failed, and the traceback was gone for good
    url = start_server(BuggyText())
    rows = [{"prompt": "a", "response": "fine"}, {"prompt": "a", "response": "crash"}]
    with caplog.at_level(logging.WARNING, logger="mmreward.serve"):
        r = httpx.post(url + "/score", json={"inputs": rows}, timeout=10)
    assert r.status_code == 500 and r.json()["error"] == ("the model failed on this request: input 1: "
                                                          "ZeroDivisionError: division by zero")
    [line] = [rec.getMessage() for rec in caplog.records if rec.name == "mmreward.serve"]
    first, _, rest = line.partition("\n")
    assert first == "/score answered 500: the model failed on this request: input 1: ZeroDivisionError: division by zero"
    assert rest.startswith("Traceback (most recent call last):") and "in _buggy_helper" in rest  # the model's frame
    assert rest.endswith("ZeroDivisionError: division by zero")
    # a rejected input (the client's fault) stays one line: no traceback
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmreward.serve"):
        assert httpx.post(url + "/score", json={"inputs": [{"prompt": "a", "response": "explode"}]}).status_code == 422
    assert [rec.getMessage() for rec in caplog.records if rec.name == "mmreward.serve"] == [
        "/score answered 422: the model rejected input 0: toy model refuses inputs containing 'explode'"]


def test_an_infinite_shutdown_timeout_waits_instead_of_failing_at_shutdown(capsys, monkeypatch):
    # `--shutdown-timeout-s inf` (wait for every request) drained, then failed the shutdown with a traceback:
    # Thread.join(inf) -> "OverflowError: timestamp out of range for platform time_t"
    backend = LocalBackend(ToyTextScorer(), ServeConfig(port=0, shutdown_timeout_s=math.inf))
    backend.close(math.inf)
    assert not backend.batcher.running()
    # a finite timeout the clock cannot hold is refused up front, as one line of the CLI
    with pytest.raises(ValueError, match=r"shutdown_timeout_s must be at most \d+ s, got 1e\+20; inf waits"):
        ServeConfig(shutdown_timeout_s=1e20)
    from mmreward.cli import main

    monkeypatch.delenv("MMREWARD_SERVE_API_KEY", raising=False)
    assert main(["serve", "--model", "/tmp", "--shutdown-timeout-s", "1e20"]) == 2
    err = capsys.readouterr().err
    assert "shutdown_timeout_s must be at most" in err and len(err.strip().splitlines()) == 1, err


def _serve_once(tmp_path, *flags):
    """Run ``mmreward serve`` with ``flags`` on a free port, send one good and one rejected request, SIGTERM it;
    returns (stdout, stderr)."""
    ToyTextScorer().save_pretrained(tmp_path / "toy")
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "--model", str(tmp_path / "toy"), "--port", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stderr.readline()  # "mmreward serve: ... on http://127.0.0.1:PORT — ..."
        assert " on http://" in banner, banner + proc.stderr.read()
        url = banner.split(" on ", 1)[1].split()[0]
        assert httpx.post(url + "/score", json={"inputs": [{"prompt": "a", "response": "b"}]}, timeout=30).status_code \
            == 200
        assert httpx.post(url + "/score", json={"inputs": [{"prompt": "a", "response": "explode"}]}).status_code == 422
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        return out, banner + err
    finally:
        proc.kill()
        proc.communicate()


def test_log_level_info_logs_every_request_and_refusals_carry_their_level(tmp_path):
    # the help says "info logs every request", but the access log was switched off: nothing; and the server's own
    # lines came bare ("/score answered 422: ...") from Python's last-resort handler
    out, err = _serve_once(tmp_path, "--log-level", "info")
    assert '"POST /score HTTP/1.1" 200' in out and '"POST /score HTTP/1.1" 422' in out, out
    assert "WARNING:  /score answered 422: the model rejected input 0" in err, err


def test_log_level_error_silences_the_servers_warnings(tmp_path):
    # --log-level error (or critical) silenced uvicorn only: every refused request still printed a line
    out, err = _serve_once(tmp_path, "--log-level", "error")
    assert "answered 422" not in err and "POST /score" not in out, (out, err)


class KeyErrorText(ToyTextScorer):
    """A text toy whose forward has a KeyError bug on one kind of input (read as that input's fault: a 422)."""

    def _score(self, items, batch_size):
        if any("lookup" in str(it.response) for it in items):
            return self._lookup_helper()
        return super()._score(items, batch_size)

    def _lookup_helper(self):
        return {}["input_ids"]


def test_a_key_error_in_the_model_is_a_422_logged_with_its_traceback(start_server, caplog):
    # a KeyError / IndexError / TypeError is answered as the input's fault (422), but it is as often a model bug:
    # its log line said "... rejected input 0: 'input_ids'" and nothing else
    url = start_server(KeyErrorText())
    with caplog.at_level(logging.WARNING, logger="mmreward.serve"):
        r = httpx.post(url + "/score", json={"inputs": [{"prompt": "a", "response": "lookup"}]}, timeout=10)
    assert r.status_code == 422 and r.json()["error"] == "the model rejected input 0: 'input_ids'"
    [line] = [rec.getMessage() for rec in caplog.records if rec.name == "mmreward.serve"]
    first, _, rest = line.partition("\n")
    assert first == "/score answered 422: the model rejected input 0: 'input_ids'"
    assert "in _lookup_helper" in rest and rest.endswith("KeyError: 'input_ids'")


def test_a_request_id_is_echoed_and_names_the_log_line(start_server, caplog):
    # behind Envoy / Istio / nginx every request carries an X-Request-ID; the server neither returned it nor logged
    # it, so a trainer's failed request could not be matched to the server's line about it among many workers'
    url = start_server(ToyTextScorer())
    with caplog.at_level(logging.WARNING, logger="mmreward.serve"):
        ok = httpx.post(url + "/get_reward", json={"query": ["fine"]}, headers={"X-Request-ID": "rollout-7-a1"})
        bad = httpx.post(url + "/score", json={"inputs": [{"prompt": "a", "response": "explode"}]},
                         headers={"X-Request-ID": "rollout-7-b2"})
        lost = httpx.post(url + "/get_rewards", json={"query": ["a"]}, headers={"X-Request-ID": "rollout-7-c3"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "rollout-7-a1"
    assert bad.status_code == 422 and bad.headers["x-request-id"] == "rollout-7-b2"
    assert lost.status_code == 404 and lost.headers["x-request-id"] == "rollout-7-c3"
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "mmreward.serve"]
    assert lines[0] == "/score answered 422 (X-Request-ID rollout-7-b2): the model rejected input 0: toy model " \
                       "refuses inputs containing 'explode'"
    assert lines[1].startswith("(routing) answered 404 (X-Request-ID rollout-7-c3): no route POST /get_rewards")
    assert "x-request-id" not in httpx.post(url + "/get_reward", json={"query": ["a"]}).headers  # none sent, none back


def test_an_endless_request_header_is_refused_431_and_the_server_keeps_serving(start_server):
    # --max-request-mb bounds the body only: a connection sending one endless header (before any API key is
    # checked) grew the server's memory by all it sent and was never answered
    import socket

    from mmreward.serve.app import MAX_HEAD_BYTES

    url = start_server(ToyTextScorer(), api_key="secret")
    host, port = url[len("http://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /score HTTP/1.1\r\nHost: rm\r\nX-Junk: " + b"a" * (2 * MAX_HEAD_BYTES))
        answer = b""
        while True:  # the server answers and closes the connection
            chunk = s.recv(4096)  # was: no answer at all (socket.timeout)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ") and b"connection: close" in head, answer[:300]
    assert json.loads(body) == {"error": f"the request line and headers pass {MAX_HEAD_BYTES} bytes", "status": 431}
    # headers of an ordinary size (a long cookie, a proxy's tracing headers) still reach the route
    r = httpx.post(url + "/score", json={"inputs": [{"prompt": "a", "response": "b"}]},
                   headers={"Authorization": "Bearer secret", "Cookie": "c" * 8000})
    assert r.status_code == 200 and len(r.json()["scores"]) == 1


def test_a_connection_that_sends_no_request_is_answered_408_and_closed(start_server, monkeypatch):
    # a connection that sent nothing (or half a header) was held for ever: enough of them use up the server's open
    # files and it accepts no trainer any more
    import socket

    import mmreward.serve.app as app

    monkeypatch.setattr(app, "HEAD_TIMEOUT_S", 0.2)  # read when each connection opens
    url = start_server(ToyTextScorer())
    host, port = url[len("http://"):].rsplit(":", 1)
    for sent in (b"", b"POST /score HTTP/1.1\r\nHost: rm\r\n"):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(sent)
            answer = b""
            while True:
                chunk = s.recv(4096)  # was: socket.timeout, the connection still open
                if not chunk:
                    break
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert json.loads(body)["error"] == "the request line and headers did not arrive within 0.2 s of connecting"
    # ordinary clients (a kept-alive connection, several requests) are served as before
    with httpx.Client(timeout=10) as client:
        for _ in range(2):
            assert client.post(url + "/score", json={"inputs": [{"prompt": "a", "response": "b"}]}).status_code == 200
    # a kept-alive connection's next head is timed from the last response (a header byte now and then held it)
    body = json.dumps({"inputs": [{"prompt": "a", "response": "b"}]}).encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /score HTTP/1.1\r\nHost: rm\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        s.sendall(b"POST /score HTTP/1.1\r\nHost: rm\r\n")
        answer = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert json.loads(rest)["error"].endswith("within 0.2 s of the last response")


def test_a_background_server_that_cannot_bind_stops_its_model_worker():
    """A port in use made BackgroundServer.start() raise with the batcher's worker thread still running (and holding
    the model): `with BackgroundServer(...)` does not reach __exit__ when __enter__ raises."""
    import socket

    from mmreward.serve.app import BackgroundServer

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        server = BackgroundServer(ToyTextScorer(), ServeConfig(port=busy.getsockname()[1]))
        assert server.backend.batcher._worker.is_alive()
        with pytest.raises(Exception, match="in use|cannot listen|address"):
            with server:
                pass
        server.backend.batcher._worker.join(5)
        assert not server.backend.batcher._worker.is_alive()
    finally:
        busy.close()
