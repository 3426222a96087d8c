"""Trainer adapters: TRL reward_funcs callables and OpenRLHF remote reward functions, local and remote,
driven through TRL's and OpenRLHF's own reward-calling code where those packages import."""
import asyncio
import pickle
import types

import httpx
import numpy as np
import pytest
import torch
from serve_toys import ToyConfig, ToyTextScorer, assert_same_scores

from mmreward.core.inputs import StepSolution, TextPair
from mmreward.ops import refine_process_rewards
from mmreward.serve import OpenRLHFRewardFunction, RewardClient, TRLRewardFunction

PROMPTS = ["What is 2+2?", "Name a colour.", "Say hi."]
COMPLETIONS = ["It is 4.", "Blue, clearly.", "Hi there, friend!"]


def test_trl_callable_local_and_remote_match_offline_scores(start_server, text_model):
    offline = text_model.score([TextPair(p, c) for p, c in zip(PROMPTS, COMPLETIONS)]).tolist()
    local = TRLRewardFunction(text_model, name="toy_rm")
    remote = TRLRewardFunction(start_server(text_model))
    kwargs = {"completion_ids": [[1, 2]] * 3, "trainer_state": None, "answer": ["4", "blue", "hi"]}  # TRL's extras
    assert_same_scores(local(prompts=PROMPTS, completions=COMPLETIONS, **kwargs), offline)
    assert_same_scores(remote(prompts=PROMPTS, completions=COMPLETIONS, **kwargs), offline)
    assert local.__name__ == "toy_rm"
    pickle.loads(pickle.dumps(remote))  # trainers may copy reward functions to worker processes


def test_trl_conversational_completions_are_scored_as_one_conversation(start_server, text_model):
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    completions = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    offline = text_model.score([TextPair(None, p + c) for p, c in zip(prompts, completions)]).tolist()
    assert_same_scores(TRLRewardFunction(start_server(text_model))(prompts, completions), offline)


def test_trl_grpo_trainer_calls_the_reward_function(start_server, text_model):
    """TRL's own GRPOTrainer._calculate_rewards (the code that calls reward_funcs) on a stub trainer."""
    trl = pytest.importorskip("trl", reason="TRL is not installed")
    from trl.trainer.grpo_trainer import GRPOTrainer
    from trl.trainer.utils import get_callable_name, is_async_callable

    fn = TRLRewardFunction(start_server(text_model), name="mmreward_rm")
    assert get_callable_name(fn) == "mmreward_rm" and not is_async_callable(fn)
    trainer = types.SimpleNamespace(
        accelerator=types.SimpleNamespace(device=torch.device("cpu"), is_main_process=True),
        state=types.SimpleNamespace(global_step=0), args=types.SimpleNamespace(report_to=[]), environments=None,
        reward_funcs=[fn], reward_processing_classes=[None], reward_func_names=[get_callable_name(fn)],
        _log_completion_extra=lambda *a, **k: None, _log_metric=lambda *a, **k: None, chat_template_kwargs={})
    inputs = [{"prompt": p, "completion": c, "answer": "x"} for p, c in zip(PROMPTS, COMPLETIONS)]
    rewards = GRPOTrainer._calculate_rewards(trainer, inputs, PROMPTS, COMPLETIONS, [[1]] * 3)
    offline = text_model.score([TextPair(p, c) for p, c in zip(PROMPTS, COMPLETIONS)])
    assert rewards.shape == (3, 1) and trl.__version__
    assert_same_scores(rewards[:, 0].tolist(), offline.tolist())


def test_trl_callable_over_a_prm_splits_steps_and_refines(start_server, step_model):
    completions = ["step one\n\nstep two\n\nso 4", "just blue"]
    items = [StepSolution("What is 2+2?", ["step one", "step two", "so 4"]), StepSolution("Colour?", ["just blue"])]
    prompts = ["What is 2+2?", "Colour?"]
    assert_same_scores(TRLRewardFunction(step_model)(prompts, completions), step_model.score(items).tolist())
    parts = [t for t in step_model.score_parts(items)]
    _, returns = refine_process_rewards(torch.cat(parts), torch.tensor([3, 1]), delta=True, clip=0.3)
    want = [returns[0].item(), returns[3].item()]
    refine = {"clip": 0.3, "delta": True}
    np.testing.assert_allclose(TRLRewardFunction(step_model, refine=refine)(prompts, completions), want, atol=1e-6)
    remote = TRLRewardFunction(start_server(step_model), refine=refine)
    np.testing.assert_allclose(remote(prompts, completions), want, atol=1e-6)


# ------------------------------------------------------------------ OpenRLHF
def test_openrlhf_protocol_fields(start_server, text_model):
    """OpenRLHF's remote RM protocol as its client sends it: {"query", "prompts", "labels"} ->
    {"rewards", "scores", "extra_logs"}; the query (prompt + response) is scored as one text."""
    url = start_server(text_model)
    queries = [p + " " + c for p, c in zip(PROMPTS, COMPLETIONS)]
    r = httpx.post(url + "/get_reward", json={"query": queries, "prompts": PROMPTS, "labels": ["4", None, "hi"]})
    body = r.json()
    assert r.status_code == 200 and set(body) == {"rewards", "scores", "extra_logs"}
    offline = text_model.score([TextPair(None, q) for q in queries]).tolist()
    assert_same_scores(body["rewards"], offline)
    assert body["scores"] == body["rewards"]
    assert OpenRLHFRewardFunction(text_model)(queries, PROMPTS, None)["rewards"] == pytest.approx(offline, abs=1e-6)
    split = start_server(text_model, openrlhf_split=True)
    body = httpx.post(split + "/get_reward", json={"query": queries, "prompts": PROMPTS}).json()
    want = text_model.score([TextPair(p, " " + c) for p, c in zip(PROMPTS, COMPLETIONS)]).tolist()
    assert_same_scores(body["rewards"], want)
    bad = httpx.post(split + "/get_reward", json={"query": ["other text"], "prompts": ["What"]})
    assert bad.status_code == 400 and "query 0 does not start with its prompt" in bad.json()["error"]


def test_openrlhf_own_client_code_against_the_server_and_the_reward_func_file(start_server, text_model, tmp_path):
    agent = pytest.importorskip("openrlhf.utils.agent", reason="OpenRLHF is not importable (pip install --no-deps "
                                                              "openrlhf pylatexenc runs this test)")
    url = start_server(text_model, max_batch=8, max_wait_ms=20)
    queries = [p + " " + c for p, c in zip(PROMPTS, COMPLETIONS)]
    offline = text_model.score([TextPair(None, q) for q in queries]).tolist()

    async def one_rollout_each(executor):  # OpenRLHF sends one query per rollout, many rollouts at once
        return await asyncio.gather(*(executor._fetch_rewards_via_http([q], [p], [None])
                                      for q, p in zip(queries, PROMPTS)))

    answers = asyncio.run(one_rollout_each(agent.SingleTurnAgentExecutor(url + "/get_reward")))
    assert_same_scores([a[0]["rewards"][0] for a in answers], offline)
    # --remote_rm_url reward_func.py: OpenRLHF loads `reward_func` from the file and calls it on a thread
    path = tmp_path / "reward_func.py"
    path.write_text(f"from mmreward.serve import OpenRLHFRewardFunction\nreward_func = OpenRLHFRewardFunction({url!r})\n")
    executor = agent.SingleTurnAgentExecutor(str(path))
    got = asyncio.run(executor._fetch_rewards_via_func(queries, PROMPTS, [None] * 3))
    assert_same_scores([g["rewards"][0] for g in got], offline)


def test_openrlhf_endpoint_with_a_prm_refines_server_side(start_server, step_model):
    prompts = ["Q: 2+2?\n", "Q: colour?\n"]
    responses = ["two plus two\n\nis four", "blue"]
    items = [StepSolution(p, r.split("\n\n")) for p, r in zip(prompts, responses)]
    url = start_server(step_model, refine_clip=0.1, refine_delta=True, refine_gamma=1.0)
    body = httpx.post(url + "/get_reward", json={"query": [p + r for p, r in zip(prompts, responses)],
                                                 "prompts": prompts}).json()
    parts = step_model.score_parts(items)
    _, returns = refine_process_rewards(torch.cat(parts), torch.tensor([2, 1]), clip=0.1, delta=True)
    np.testing.assert_allclose(body["rewards"], [returns[0].item(), returns[2].item()], atol=1e-6)
    plain = start_server(step_model)
    body = httpx.post(plain + "/get_reward", json={"query": [p + r for p, r in zip(prompts, responses)],
                                                   "prompts": prompts}).json()
    assert_same_scores(body["rewards"], step_model.score(items).tolist())


def test_openrlhf_endpoint_refuses_models_that_do_not_read_text(start_server, image_model):
    r = httpx.post(start_server(image_model) + "/get_reward", json={"query": ["hello"]})
    assert r.status_code == 400 and "scores ImagePrompt" in r.json()["error"]


# ------------------------------------------------------------------ the client
def test_client_waits_out_a_full_queue_and_reports_errors(start_server):
    model = ToyTextScorer(ToyConfig(delay_s=0.2))
    url = start_server(model, max_batch=1, max_wait_ms=0, max_items=1, max_queue=1, retry_after_s=1)
    clients = [RewardClient(url, retries=10) for _ in range(4)]

    async def main():
        return await asyncio.gather(*(asyncio.to_thread(c.score, [{"prompt": f"p{i}", "response": "r"}])
                                      for i, c in enumerate(clients)))

    results = asyncio.run(main())
    assert_same_scores([r["scores"][0] for r in results],
                       model.score([{"prompt": f"p{i}", "response": "r"} for i in range(4)]).tolist())
    assert 'kind="queue_full"' in httpx.get(url + "/metrics").text  # some of them were told to wait
    with pytest.raises(ValueError, match="400: .*field 'response'"):
        clients[0].score([{"prompt": "p", "response": 3}])
    with pytest.raises(ConnectionError, match="failed after 2 tries"):
        RewardClient("http://127.0.0.1:9", retries=1).info()


def test_verl_reward_function_per_sample_and_batched_local_and_remote(start_server, text_model):
    """verl's two reward-manager call shapes (keywords, as NaiveRewardManager / BatchRewardManager call
    them); the prompt comes from extra_info."""
    from mmreward.serve import VerlRewardFunction

    offline = text_model.score([TextPair(p, c) for p, c in zip(PROMPTS, COMPLETIONS)]).tolist()
    infos = [{"question": p, "split": "train", "index": i} for i, p in enumerate(PROMPTS)]
    for fn in (VerlRewardFunction(text_model), VerlRewardFunction(start_server(text_model))):
        batched = fn(data_sources=["gsm8k"] * 3, solution_strs=COMPLETIONS, ground_truths=["4", "b", "h"],
                     extra_infos=infos)
        assert_same_scores(batched, offline)
        one = fn(data_source="gsm8k", solution_str=COMPLETIONS[1], ground_truth="b", extra_info=infos[1])
        assert isinstance(one, float) and abs(one - offline[1]) < 1e-5
    alone = VerlRewardFunction(text_model, prompt_key=None)(solution_strs=COMPLETIONS, data_sources=None,
                                                           ground_truths=None, extra_infos=None)
    assert_same_scores(alone, text_model.score([TextPair(None, c) for c in COMPLETIONS]).tolist())
    with pytest.raises(ValueError, match="sample 0: verl passes no prompt.*has no 'question'.*\\['index'\\]"):
        VerlRewardFunction(text_model)(data_source="x", solution_str="a", ground_truth="y", extra_info={"index": 0})
    with pytest.raises(ValueError, match="solution_str= .per sample. or solution_strs="):
        VerlRewardFunction(text_model)()


def test_adapters_take_empty_batches_and_refuse_strings_and_none(start_server, text_model):
    """A string was scored one sample per character; None gave a bare TypeError; an empty batch raised
    "score got no inputs" locally and a server error remotely."""
    from mmreward.serve import VerlRewardFunction

    url = start_server(text_model)
    for target in (text_model, url):
        trl, orl, verl = TRLRewardFunction(target), OpenRLHFRewardFunction(target), VerlRewardFunction(target)
        assert trl([], []) == [] and verl(solution_strs=[], extra_infos=[]) == []
        assert orl([]) == {"rewards": [], "scores": [], "extra_logs": {}}
        for bad in ("ab", None, {"a": 1}, {"x"}):
            with pytest.raises(TypeError, match=f"prompts must be a list .one entry per sample., got {type(bad).__name__}"):
                trl(bad, ["cd", "ef"])
        with pytest.raises(TypeError, match="completions must be a list .one entry per sample., got str"):
            trl(["ab", "cd"], "cd")
        with pytest.raises(TypeError, match="queries must be a list .one entry per sample., got str"):
            orl("abc")
        with pytest.raises(TypeError, match="solution_strs must be a list .one entry per sample., got str"):
            verl(solution_strs="xy", extra_infos=None)
        with pytest.raises(ValueError, match="got 2 queries but 1 prompts"):
            orl(["a b", "c d"], ["a"])
        # verl hands numpy object arrays
        infos = np.array([{"question": p} for p in PROMPTS], dtype=object)
        got = verl(solution_strs=np.array(COMPLETIONS, dtype=object), extra_infos=infos)
        assert_same_scores(got, text_model.score([TextPair(p, c) for p, c in zip(PROMPTS, COMPLETIONS)]).tolist())


def test_prm_adapter_refuses_non_text_completions(step_model):
    """None, 5, a dict or a list of plain strings were scored as the texts "None", "5", their repr…"""
    from mmreward.core.data import DataError

    trl = TRLRewardFunction(step_model)
    for bad in (None, 5, {"text": "x"}, ["step one", "step two"]):
        with pytest.raises(DataError, match="completion 1: field 'response' must be a string or a list of messages"):
            trl(["q0", "q1"], ["a fine answer", bad])
    with pytest.raises(DataError, match="completion 0: field 'prompt' must be a string"):
        trl([7], ["an answer"])
    assert len(trl(["q"], [[{"role": "assistant", "content": "step one\n\nstep two"}]])) == 1
