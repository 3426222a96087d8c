"""Edge cases of the trainer adapters: a server (or proxy) answering something other than the protocol,
non-finite step scores under refine, surrogates in trainer text, and verl / OpenRLHF call-shape slips."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from serve_toys import ToyStepScorer, ToyTextScorer, assert_same_scores

from mmreward.core.data import DataError
from mmreward.core.inputs import StepSolution, TextPair
from mmreward.serve import OpenRLHFRewardFunction, RewardClient, TRLRewardFunction, VerlRewardFunction
from mmreward.serve.adapters import _retry_after

INFO = {"model_type": "toy", "inputs": ["TextPair"], "parts": False, "max_items": 4, "max_request_mb": 1}


@pytest.fixture
def fake_server():
    """``fake_server(answer) -> url``: a stand-in server whose POSTs answer ``answer(n_inputs)`` as
    ``(status, body bytes, headers)``; GET /info answers INFO."""
    servers = []

    def start(answer):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, json.dumps(INFO).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                self._send(*answer(len(body.get("inputs") or body.get("query"))))

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _json(value):
    return json.dumps(value).encode()


@pytest.mark.parametrize("answer, match", [
    (lambda n: (200, b"<html>proxy login</html>"), "200 with a body that is not JSON.*proxy login"),
    (lambda n: (200, _json({"scores": [0.5], "rewards": [0.5]})),
     r"(inputs|queries) 0\.\.3\) answered 1 value\(s\) for '(scores|rewards)', expected 4"),
    (lambda n: (200, _json([0.5] * n)), "answered list, not a JSON object"),
    (lambda n: (200, _json({"scores": ["x"] * n, "rewards": ["x"] * n})), "answered 'x' as (scores|rewards)\\[0\\]"),
    (lambda n: (200, _json({"result": [0.5] * n})), "answered no '(scores|rewards)'"),
])
def test_a_malformed_answer_is_a_clear_error_not_misaligned_rewards(fake_server, answer, match):
    """A short answer was joined as is (6 inputs got 2 rewards, every later one out of step); a list or
    HTML body raised AttributeError / JSONDecodeError."""
    url = fake_server(answer)
    with pytest.raises(RuntimeError, match=match):
        TRLRewardFunction(url)(["q"] * 6, ["a"] * 6)
    with pytest.raises(RuntimeError, match=match):
        OpenRLHFRewardFunction(url)(["q a"] * 6)


def test_remote_nan_and_http_date_retry_after(fake_server):
    """A NaN in the answer (Python's json writes it) comes back as None, as the docs promise; a 503 whose
    Retry-After is an HTTP date raised "could not convert string to float"."""
    url = fake_server(lambda n: (200, b'{"scores": [NaN, 0.25, Infinity, null]}'))
    assert TRLRewardFunction(url)(["q"] * 4, ["a"] * 4) == [None, 0.25, None, None]
    busy = fake_server(lambda n: (503, b"busy", [("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")]))
    with pytest.raises(ConnectionError, match="failed after 2 tries: busy"):
        RewardClient(busy, retries=1).score([{"prompt": "q", "response": "a"}])
    # a gateway's 502 / 504 (its HTML page, not the server's JSON) is retried like its 503; once the server
    # answers, the request goes through
    calls = []

    def gateway_then_server(n):
        calls.append(n)
        if len(calls) == 1:
            return 502, b"<html>502 Bad Gateway</html>"
        if len(calls) == 2:
            return 504, b"<html>504 Gateway Time-out</html>"
        return 200, _json({"scores": [0.5] * n})

    url = fake_server(gateway_then_server)
    assert RewardClient(url, retries=2).score([{"prompt": "q", "response": "a"}]) == {"scores": [0.5]}
    assert len(calls) == 3
    with pytest.raises(ConnectionError, match="failed after 2 tries: .*504"):
        RewardClient(fake_server(lambda n: (504, b"<html>504</html>")), retries=1).score([{"prompt": "q", "response": "a"}])
    # the server's own 5xx JSON errors are not retried
    own = fake_server(lambda n: (502, _json({"error": "scoring failed", "status": 502})))
    with pytest.raises(RuntimeError, match="502: scoring failed"):
        RewardClient(own, retries=3).score([{"prompt": "q", "response": "a"}])
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 120) == 0.0  # a date in the past: no wait
    assert _retry_after("soon", 120) == 1.0 and _retry_after("3600", 5.0) == 5.0 and _retry_after(None, 120) == 1.0


class _NaNStepScorer(ToyStepScorer):
    """Step scores NaN for a solution whose first step holds "bad"."""

    def _score_parts(self, items, batch_size):
        out = super()._score_parts(items, batch_size)
        return [torch.full_like(o, float("nan")) if "bad" in it.steps[0] else o for o, it in zip(out, items)]


def test_refine_with_a_non_finite_step_score_fails_only_that_sample(start_server):
    """One NaN step score made refine_process_rewards raise for the whole batch (locally) or request."""
    model = _NaNStepScorer()
    refine = {"clip": 0.5}
    want = TRLRewardFunction(ToyStepScorer(), refine=refine)(["q"], ["good\n\ny"])[0]
    for target in (model, start_server(model)):
        got = TRLRewardFunction(target, refine=refine)(["q", "q"], ["bad\n\nx", "good\n\ny"])
        assert got[0] is None and abs(got[1] - want) < 1e-6
    body = RewardClient(start_server(model)).score(
        [StepSolution("q", ["bad", "x"]), StepSolution("q", ["good", "y"])], output="parts", refine=refine)
    assert body["scores"][0] is None and body["returns"][0] == [None, None] and body["parts"][0] == [None, None]
    assert abs(body["scores"][1] - want) < 1e-6


def test_surrogates_in_trainer_text_are_named_locally_and_remotely(start_server, text_model):
    """Locally a lone surrogate reached the model (a bare UnicodeEncodeError from the tokenizer side)."""
    for target in (text_model, start_server(text_model)):
        fn = TRLRewardFunction(target)
        with pytest.raises(DataError, match="completion 1: field 'response' holds an unpaired UTF-16 surrogate"):
            fn(["q", "q"], ["fine", "bad \ud800"])
        with pytest.raises(DataError, match=r"completion 0: field 'prompt'\[1\]\.content holds an unpaired"):
            fn([[{"role": "system", "content": "s"}, {"role": "user", "content": "\udc00"}]],
               [[{"role": "assistant", "content": "a"}]])


def test_verl_none_question_positional_batch_and_openrlhf_labels(text_model):
    verl = VerlRewardFunction(text_model)
    with pytest.raises(ValueError, match=r"sample 0: extra_info\['question'\] is None"):  # was scored without it
        verl(data_source="d", solution_str="an answer", ground_truth="g", extra_info={"question": None})
    # the batched form called positionally was "extra_info has no 'question' (it has list)"
    got = verl(["d", "d"], ["It is 4.", "Blue."], ["4", "b"], [{"question": "2+2?"}, {"question": "Colour?"}])
    assert_same_scores(got, text_model.score([TextPair("2+2?", "It is 4."), TextPair("Colour?", "Blue.")]).tolist())
    one = verl("d", [{"role": "assistant", "content": "It is 4."}], "4", {"question": "2+2?"})  # messages: one sample
    assert isinstance(one, float)
    assert abs(verl("d", np.str_("It is 4."), "4", {"question": "2+2?"}) - got[0]) < 1e-6  # numpy's str: one sample
    got_np = verl(np.array(["d", "d"]), np.array(["It is 4.", "Blue."]), None, np.array(
        [{"question": "2+2?"}, {"question": "Colour?"}], dtype=object))
    assert_same_scores(got_np, got)
    with pytest.raises(ValueError, match="got 2 queries but 1 labels"):  # the remote client refused it; local did not
        OpenRLHFRewardFunction(text_model)(["q a", "q b"], None, ["only one"])


def test_bad_name_and_refine_are_refused_when_the_reward_function_is_built(text_model, step_model):
    """name=None was logged by TRL as rewards/None; a refine typo or refine of a text RM in the trainer's
    process failed only at the first reward call, after the first rollout."""
    for name in (None, "", 3):
        with pytest.raises(ValueError, match="name must be a non-empty string"):
            TRLRewardFunction(text_model, name=name)
    with pytest.raises(ValueError, match="refine needs a step model"):
        TRLRewardFunction(text_model, refine={"clip": 0.5})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['clpi'\]"):
        VerlRewardFunction(step_model, refine={"clpi": 0.5})
    with pytest.raises(ValueError, match="refine.clip must be a finite number"):
        TRLRewardFunction("http://127.0.0.1:9", refine={"clip": "x"})  # no server needed to see that


def test_openrlhf_labels_the_server_ignores_never_fail_the_remote_call(start_server, text_model):
    """numpy / torch labels (ignored by the server and in-process) raised "cannot be sent as JSON" remotely."""
    want = OpenRLHFRewardFunction(text_model)(["q a", "q b"], ["q", "q"], np.array([1, 2]))["rewards"]
    remote = OpenRLHFRewardFunction(start_server(text_model))
    for labels in (np.array([1, 2]), [np.int64(1), "x"], torch.tensor([1, 2]), [object(), None]):
        assert_same_scores(remote(["q a", "q b"], ["q", "q"], labels)["rewards"], want)


class _NaNTextScorer(ToyTextScorer):
    def _score(self, items, batch_size):
        out = super()._score(items, batch_size)
        return torch.where(torch.tensor(["bad" in str(it.response) for it in items]), float("nan"), out)


def test_verl_gets_nan_floats_not_none_for_non_finite_rewards(start_server):
    """verl writes rewards into a float tensor: None (TRL's "no reward") failed there with "can't assign a
    NoneType to a torch.FloatTensor"."""
    model = _NaNTextScorer()
    for target in (model, start_server(model)):
        verl = VerlRewardFunction(target, prompt_key=None)
        batch = verl(data_sources=["d"] * 2, solution_strs=["bad one", "good one"], ground_truths=[None] * 2,
                     extra_infos=[{}, {}])
        one = verl(data_source="d", solution_str="bad one", ground_truth=None, extra_info={})
        reward_tensor = torch.zeros(2, 3)
        for i, r in enumerate(batch):  # as verl's reward managers do
            reward_tensor[i, 2] = r
        assert np.isnan(one) and np.isnan(batch[0]) and np.isfinite(batch[1])
        assert TRLRewardFunction(target)(["q"], ["bad one"]) == [None]  # TRL keeps None (read as NaN)


def test_slices_after_the_first_leave_room_for_the_output_the_first_answered(monkeypatch):
    """Without ``output`` the client adds the first slice's column ("parts") to the later requests: they
    were cut without it, so a slice packed to the byte limit went over it (a 413 from the server)."""
    client = RewardClient("http://127.0.0.1:9", max_request_bytes=200)
    sent = []

    def request(method, path, body=None):
        if method == "GET":
            return {"max_items": 100}
        sent.append(body)
        return {"parts": [[0.5]] * len(body["inputs"])}

    monkeypatch.setattr(client, "_request", request)
    rows = [{"prompt": "p", "response": "x" * n} for n in range(5, 25)]
    assert len(client.score(rows)["parts"]) == len(rows) and len(sent) > 2
    assert sent[1]["output"] == "parts"
    from mmreward.serve.adapters import _json_bytes

    assert max(len(_json_bytes(b, "")) for b in sent) <= 200
