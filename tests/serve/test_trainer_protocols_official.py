"""The wire protocols and call signatures of the RL trainers, as their current official code uses them:
OpenRLHF's remote reward model (``SingleTurnAgentExecutor._fetch_rewards_via_http`` in 0.10+ / ``RemoteRewardModel``
in 0.9, ``remote_rm_fn`` before; ``serve_rm``'s reading of a query), TRL's ``GRPOTrainer._calculate_rewards``
and verl's reward managers. Exact request / response examples; expected values derived by hand from those
sources, not from the code under test."""
import asyncio
import inspect
import math
import os
import pickle
import sys
from functools import partial

import httpx
import pytest
import torch
from serve_toys import ToyStepScorer, ToyTextScorer

from mmreward.core.inputs import StepSolution, TextPair
from mmreward.serve import OpenRLHFRewardFunction, TRLRewardFunction, VerlRewardFunction
from mmreward.serve.protocol import ModelSpec, clean_query


class ByteLevelTok:
    """The special-token behaviour of a Llama-3-like tokenizer: it puts ``<s>`` before every text, and a decode
    writes special tokens next to the text ("<s>a"); pad ``<pad>`` and eos ``</s>`` are distinct."""

    pad_token, eos_token, bos_token, bos_token_id = "<pad>", "</s>", "<s>", 1

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [7]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join({1: "<s>", 7: "a"}[i] for i in ids)


class TokText(ToyTextScorer):
    def __init__(self, tokenizer=None):
        super().__init__()
        self.tokenizer = tokenizer or ByteLevelTok()


class TokSteps(ToyStepScorer):
    def __init__(self):
        super().__init__()
        self.tokenizer = ByteLevelTok()


async def _openrlhf_fetch_rewards_via_http(endpoints, queries, prompts, labels):
    """OpenRLHF 0.10's ``SingleTurnAgentExecutor._fetch_rewards_via_http``: the batch cut into
    ceil(n / servers) slices, one POST per server (every server, also with an empty slice), aiohttp's
    ``raise_for_status`` on each. (0.11.2 rotates one-query calls over its URLs instead and sends no empty
    slice: tests/serve/test_user_rl_trainer_clients.py runs that client itself.)"""
    aiohttp = pytest.importorskip("aiohttp")
    size = (len(queries) + len(endpoints) - 1) // len(endpoints)

    async def post(url, data):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.post(url, json=data) as response:
                response.raise_for_status()
                return await response.json()

    return await asyncio.gather(*(post(url, {"query": queries[i * size:(i + 1) * size],
                                             "prompts": prompts[i * size:(i + 1) * size],
                                             "labels": labels[i * size:(i + 1) * size]})
                                  for i, url in enumerate(endpoints)))


# ------------------------------------------------------------------ OpenRLHF: HTTP
def test_openrlhf_shards_one_query_over_two_servers_and_the_empty_shard_is_answered(start_server, text_model):
    # 0.10+ sends one query per call; with --remote_rm_url a,b the second server gets {"query": [], ...}: a 400
    # there failed the whole gather, and the sample lost its reward (OpenRLHF logs and trains without it)
    a, b = start_server(text_model), start_server(text_model)
    endpoints = [a + "/get_reward", b + "/get_reward"]
    q, p = "<|im_start|>user 2+2?<|im_end|><|im_start|>assistant 4<|im_end|>", "<|im_start|>user 2+2?<|im_end|>"
    answers = asyncio.run(_openrlhf_fetch_rewards_via_http(endpoints, [q], [p], [None]))
    want = text_model.score([TextPair(None, q)]).tolist()
    assert answers[1] == {"rewards": [], "scores": [], "extra_logs": {}}
    info = answers[0]  # what SingleTurnAgentExecutor reads: rewards_info_list[0]
    assert set(info) == {"rewards", "scores", "extra_logs"} and info["extra_logs"] == {}
    assert info["rewards"] == pytest.approx(want, abs=1e-6) and info["scores"] == info["rewards"]
    # 0.9 (RemoteRewardModel.get_rewards + update_samples_with_rewards): three queries over two servers, the
    # answers concatenated with torch.cat(torch.as_tensor(info["rewards"]))
    qs = [q, q + " five", q + " six"]
    answers = asyncio.run(_openrlhf_fetch_rewards_via_http(endpoints, qs, [p] * 3, ["4"] * 3))
    joined = torch.cat([torch.as_tensor(x["rewards"]) for x in answers])
    assert joined.tolist() == pytest.approx(text_model.score([TextPair(None, x) for x in qs]).tolist(), abs=1e-6)
    # an empty shard with only "query" (before 0.6 no prompts / labels were sent)
    assert httpx.post(b + "/get_reward", json={"query": []}).json() == {"rewards": [], "scores": [],
                                                                        "extra_logs": {}}
    # still refused: a query that is no list, or prompts of another length
    assert httpx.post(b + "/get_reward", json={"query": "q"}).status_code == 400
    r = httpx.post(b + "/get_reward", json={"query": [], "prompts": ["p"]})
    assert r.status_code == 400 and "0 queries but 1 prompts" in r.json()["error"]


def test_openrlhf_before_0_6_sends_only_query_and_reads_rewards(start_server, text_model):
    # remote_rm_fn(api_url, queries, score_key="rewards"): request_api_wrapper posts {"query": queries} and
    # returns response["rewards"], put in torch.tensor
    url = start_server(text_model)
    r = httpx.post(url + "/get_reward", json={"query": ["a b c", "d e"]}, headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    want = text_model.score([TextPair(None, "a b c"), TextPair(None, "d e")]).tolist()
    assert torch.tensor(r.json()["rewards"]).tolist() == pytest.approx(want, abs=1e-6)
    # labels of any JSON kind are accepted and ignored (datasets' label column: str, number, null, dict)
    body = {"query": ["a b c", "d e"], "prompts": ["a", "d"], "labels": [{"answer": 3}, None]}
    assert httpx.post(url + "/get_reward", json=body).json()["rewards"] == pytest.approx(want, abs=1e-6)


# ------------------------------------------------------------------ OpenRLHF: serve_rm's reading of a query
SPEC = ModelSpec("t", (TextPair,), False, ("<pad>", "</s>", "<s>"))


@pytest.mark.parametrize("query, want", [
    ("<s>user hi</s>assistant yo</s>", "user hi</s>assistant yo</s>"),  # 0.9+: the decoded bos, once
    ("<pad><pad><s>user hi</s>assistant yo</s>", "user hi</s>assistant yo</s>"),  # left padding (<= 0.8, HF generate)
    ("<s>user hi</s>assistant yo</s><pad><pad><pad>", "user hi</s>assistant yo</s>"),  # right padding (<= 0.8 vLLM)
    ("<s>user hi</s>assistant yo<pad><pad>", "user hi</s>assistant yo"),  # truncated: no eos is invented
    ("<s>user hi</s>assistant yo<pad>", "user hi</s>assistant yo<pad>"),  # one pad may be the policy's own eos
    ("user hi</s>assistant yo</s>", "user hi</s>assistant yo</s>"),  # nothing to strip
    ("user <pad> hi<s></s>", "user <pad> hi<s></s>"),  # special tokens inside the text stay
])
def test_a_query_is_read_as_serve_rm_reads_it(query, want):
    assert clean_query(query, SPEC) == want


def test_pad_equal_to_eos_keeps_the_one_eos_of_the_response():
    # Llama-3 base / many policies: pad = eos; <= 0.8 right-padded with it. serve_rm <= 0.8 stripped the run and
    # appended one eos
    spec = ModelSpec("t", (TextPair,), False, ("</s>", "</s>", None))
    assert clean_query("</s></s>q a</s></s></s>", spec) == "q a</s>"
    assert clean_query("q a</s>", spec) == "q a</s>"
    assert clean_query("q a", spec) == "q a"
    # a model without tokenizer tokens (None): the query as sent
    assert clean_query("<pad>q a</s><pad>", ModelSpec("t", (TextPair,), False)) == "<pad>q a</s><pad>"
    # decodes that write spaces between special tokens (SentencePiece, word level)
    spaced = ModelSpec("t", (TextPair,), False, ("[PAD]", "</s>", "<s> "))
    assert clean_query("[PAD] [PAD] <s> user a </s> [PAD] [PAD]", spaced) == "user a </s> "


def test_served_and_in_process_openrlhf_rewards_score_the_cleaned_query(start_server):
    model = TokText()
    url = start_server(model)
    spec = ModelSpec.of(model)
    assert spec.query_tokens == ("<pad>", "</s>", "<s>")
    assert httpx.get(url + "/info").json()["query_tokens"] == {"pad": "<pad>", "eos": "</s>", "bos": "<s>"}
    queries = ["<s>user one</s>assistant two</s>", "<pad><s>user one</s>assistant two</s><pad><pad>"]
    for fn in (OpenRLHFRewardFunction(model), OpenRLHFRewardFunction(url)):
        model.forwards.clear()
        got = fn(queries, ["<s>user one</s>", "<s>user one</s>"], [None, None])["rewards"]
        # the model saw "user one</s>assistant two</s>" (ToyTextScorer writes "prompt || response") twice
        assert [t for f in model.forwards for t in f] == [" || user one</s>assistant two</s>"] * 2
        assert got[0] == got[1] == pytest.approx(model.score([TextPair(None, "user one</s>assistant two</s>")]).item())


def test_openrlhf_split_cuts_a_padded_query_after_its_prompt(start_server):
    # --openrlhf-split (and step models) cut the response after the prompt: a left-padded query used to be a
    # 400 "does not start with its prompt"; the prompt loses the bos the tokenizer adds again
    steps = TokSteps()
    url = start_server(steps)
    q = "<pad><pad><s>solve 1+1</s>x = 1\n\nx + 1 = 2</s><pad>"
    body = {"query": [q], "prompts": ["<s>solve 1+1</s>"], "labels": ["2"]}
    r = httpx.post(url + "/get_reward", json=body)
    assert r.status_code == 200, r.text
    want = steps.score([StepSolution("solve 1+1</s>", ["x = 1", "x + 1 = 2</s>"])]).item()
    assert r.json()["rewards"] == pytest.approx([want], abs=1e-6)
    text = TokText()
    url = start_server(text, openrlhf_split=True)
    r = httpx.post(url + "/get_reward", json=body)
    assert r.status_code == 200, r.text
    want = text.score([TextPair("solve 1+1</s>", "x = 1\n\nx + 1 = 2</s>")]).item()
    assert r.json()["rewards"] == pytest.approx([want], abs=1e-6)


def test_a_real_tokenizer_query_gets_one_bos_and_the_chat_score(start_server):
    # a Llama-layout tokenizer (adds <s> itself) and a chat template that writes {{ bos_token }}: OpenRLHF's
    # decoded query starts with "<s>", which the model's encoding used to double ([4, 4, ...])
    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "text"))
    from text_rm_fixtures import BOS_TEMPLATE, llama_config, word_tokenizer

    from mmreward.text import RewardModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
        rm = RewardModel.from_backbone(llama_config(), tokenizer=tok).eval()
    msgs = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}]
    ids = list(tok.apply_chat_template(msgs, tokenize=True)["input_ids"])
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    pad = tok.pad_token_id
    queries = [tok.decode(x, skip_special_tokens=False) for x in (ids, [pad, pad] + ids + [pad])]
    spec = ModelSpec.of(rm)
    for q in queries:  # the model sees exactly the policy's tokens, as serve_rm (add_special_tokens=False) did
        assert rm.encoder.encode([TextPair(None, clean_query(q, spec))])[0].ids == ids
    want = rm.score([TextPair(msgs[:1], "c")]).item()  # the same conversation scored in-process
    for target in (rm, start_server(rm)):
        got = OpenRLHFRewardFunction(target)(queries, [None, None], [None, None])["rewards"]
        assert got == pytest.approx([want, want], abs=1e-5)


def _chunks(fn, queries, prompts, labels, size):
    """OpenRLHF 0.7.1 - 0.9 (RemoteRewardModel.get_rewards): reward_func over micro_rollout_batch_size chunks."""
    return [fn(queries[i:i + size], prompts[i:i + size], labels[i:i + size]) for i in range(0, len(queries), size)]


class NanText(TokText):
    def _score(self, items, batch_size):
        out = super()._score(items, batch_size)
        return torch.where(torch.tensor(["nan" in str(it.response) for it in items]), float("nan"), out)


def test_openrlhf_reward_func_answers_each_release_can_join(start_server):
    model = TokText()
    queries = ["<s>q one a", "<s>q two b", "<s>q three c"]
    prompts, labels = ["<s>q one", "<s>q two", "<s>q three"], ["1", "2", "3"]
    want = model.score([TextPair(None, q[3:]) for q in queries]).tolist()
    for target in (model, start_server(model)):
        obj = OpenRLHFRewardFunction(target)
        # 0.7.1 - 0.8.2: the reward_func returns the rewards tensor; torch.cat(rewards_list).chunk(...)
        joined = torch.cat(_chunks(obj.as_function(output="tensor"), queries, prompts, labels, 2), dim=0)
        assert joined.dtype == torch.float32 and joined.tolist() == pytest.approx(want, abs=1e-6)
        # 0.8.3 - 0.8.10 (update_samples_with_rewards): torch.cat([info["rewards"] ...]), no as_tensor
        infos = _chunks(obj.as_function(output="tensors"), queries, prompts, labels, 2)
        assert torch.cat([info["rewards"] for info in infos]).tolist() == pytest.approx(want, abs=1e-6)
        assert torch.cat([info["scores"] for info in infos]).tolist() == pytest.approx(want, abs=1e-6)
        assert all(info["extra_logs"] == {} for info in infos)
        with pytest.raises(TypeError, match="expected Tensor"):  # why "tensors" exists: lists cannot be joined
            torch.cat([info["rewards"] for info in _chunks(obj.as_function(), queries, prompts, labels, 2)])
        # 0.8.11 - 0.9 (torch.as_tensor) and 0.10+ (one query per call, torch.tensor([reward])) take every form
        for output in ("lists", "tensors"):
            fn = obj.as_function(output=output)
            infos = _chunks(fn, queries, prompts, labels, 2)
            assert torch.cat([torch.as_tensor(i["rewards"]) for i in infos]).tolist() == pytest.approx(want, abs=1e-6)
            one = [torch.tensor([fn([q], [p], [lab])["rewards"]]).reshape(-1).item()
                   for q, p, lab in zip(queries, prompts, labels)]
            assert one == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match=r"output must be one of \['lists', 'tensors', 'tensor'\]"):
        OpenRLHFRewardFunction(model).as_function(output="tensors ")
    # no finite reward: a tensor cannot hold None (it would be NaN, poisoning the advantages): an error naming the
    # query, or the missing_reward given
    nan = NanText()
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match=r"query 1 'q nan' .* missing_reward=VALUE"):
        OpenRLHFRewardFunction(nan).as_function(output="tensors")(["q a", "q nan"], None, None)
    got = OpenRLHFRewardFunction(nan, missing_reward=-1.0).as_function(output="tensor")(["q a", "q nan"], None, None)
    assert got[1].item() == -1.0 and math.isfinite(got[0].item())


# ------------------------------------------------------------------ TRL
def test_trl_grpo_calls_the_function_as_calculate_rewards_does(start_server, text_model):
    from trl.trainer.utils import get_callable_name

    for target in (text_model, start_server(text_model)):
        fn = TRLRewardFunction(target, name="rm")
        assert get_callable_name(fn) == "rm" and not inspect.iscoroutinefunction(fn)
        prompts = [[{"role": "user", "content": "2+2?"}]] * 2
        completions = [[{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "5"}]]
        # GRPOTrainer._calculate_rewards: keyword call; dataset columns, trainer_state, log_extra, log_metric
        out = fn(prompts=prompts, completions=completions, completion_ids=[[1], [2]], answer=["4", "4"],
                 trainer_state=object(), log_extra=lambda *a: None, log_metric=lambda *a: None)
        rewards = torch.tensor([r if r is not None else torch.nan for r in out], dtype=torch.float32)
        want = text_model.score([TextPair(None, prompts[0] + c) for c in completions])
        torch.testing.assert_close(rewards, want.float())


# ------------------------------------------------------------------ verl
def test_verl_reward_loop_and_batch_manager_calls(start_server, text_model):
    # verl NaiveRewardManager (reward loop): compute_score(data_source=, solution_str=, ground_truth=,
    # extra_info=, **reward_router kwargs) run in an executor; a float result is the score. BatchRewardManager:
    # compute_score(data_sources=, solution_strs=, ground_truths=, extra_infos=, **reward_kwargs) -> list
    url = start_server(text_model)
    for target in (text_model, url):
        fn = VerlRewardFunction(target)
        assert not inspect.iscoroutinefunction(fn)
        extra = {"question": "2+2?", "index": 0, "num_turns": None, "rollout_reward_scores": {}}

        async def run_single():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, lambda: fn(data_source="gsm8k", solution_str="4",
                                                               ground_truth="4", extra_info=extra))

        score = asyncio.run(run_single())
        assert isinstance(score, float) and not isinstance(score, dict)
        want = text_model.score([TextPair("2+2?", "4"), TextPair("2+2?", "5")]).tolist()
        assert score == pytest.approx(want[0], abs=1e-6)
        scores = fn(data_sources=["gsm8k"] * 2, solution_strs=["4", "5"], ground_truths=["4", "4"],
                    extra_infos=[extra, extra], max_resp_len=8)
        assert scores == pytest.approx(want, abs=1e-6) and not any(math.isnan(s) for s in scores)
    # PrimeRewardManager: partial(compute_score, data_source, solution_str, ground_truth, extra_info) run in a
    # process pool (pickled), positionally
    fn = pickle.loads(pickle.dumps(VerlRewardFunction(url)))
    assert partial(fn, "gsm8k", "5", "4", extra)() == pytest.approx(want[1], abs=1e-6)


def test_verl_no_reward_is_named_once_or_replaced_by_missing_reward(start_server):
    # verl's GRPO advantage is (score - group mean) / group std with no NaN handling: one NaN sample makes its
    # whole group NaN; the adapter says so once, or returns missing_reward
    import warnings

    nan = NanText()
    url = start_server(nan)
    for target in (nan, url):
        fn = VerlRewardFunction(target, prompt_key=None)
        with pytest.warns(RuntimeWarning, match=r"sample 1 'nan b' .* missing_reward=VALUE"):
            got = fn(data_sources=["d", "d"], solution_strs=["a", "nan b"], ground_truths=["", ""],
                     extra_infos=[{}, {}])
        assert math.isnan(got[1]) and math.isfinite(got[0])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per reward function
            assert math.isnan(fn(data_source="d", solution_str="nan c", ground_truth="", extra_info={}))
        filled = VerlRewardFunction(target, prompt_key=None, missing_reward=-1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert filled(data_sources=["d", "d"], solution_strs=["a", "nan b"], ground_truths=["", ""],
                          extra_infos=[{}, {}]) == [pytest.approx(got[0]), -1.0]
            assert filled(data_source="d", solution_str="nan c", ground_truth="", extra_info={}) == -1.0
    for bad in (float("nan"), True, "1"):
        with pytest.raises(ValueError, match="missing_reward must be a finite number"):
            VerlRewardFunction(nan, missing_reward=bad)
