"""The adapters under the trainers that call them: a real TRL ``GRPOTrainer`` trains on CPU with
``TRLRewardFunction`` over a tiny text RM (in-process and served), and OpenRLHF's and verl's reward-calling
code (as their current sources call a reward function) gets what it can use."""
import asyncio
import inspect
import math
import os
import sys
import zlib
from functools import partial

import numpy as np
import pytest
import torch
from serve_toys import ToyTextScorer

from mmreward.core.inputs import TextPair
from mmreward.serve import OpenRLHFRewardFunction, TRLRewardFunction, VerlRewardFunction

PROMPTS = ["what is two plus three", "say a b c"]


class HashNanToy(ToyTextScorer):
    """No finite reward for about a third of the responses (chosen by their text, so in-process and served agree)."""

    def _score(self, items, batch_size):
        out = super()._score(items, batch_size)
        bad = [zlib.crc32(str(it.response).encode()) % 3 == 0 for it in items]
        return torch.where(torch.tensor(bad), float("nan"), out)


def _tiny_rm_and_policy():
    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "text"))
    from text_rm_fixtures import CHATML, llama_config, word_tokenizer
    from transformers import LlamaForCausalLM

    from mmreward.text import RewardModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        rm = RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer(chat_template=CHATML)).eval()
        policy = LlamaForCausalLM(llama_config(bos_token_id=4, eos_token_id=5))
    return rm, policy, word_tokenizer(bos=True, chat_template=CHATML)


def _train_grpo(tmp_path, policy, tokenizer, reward_funcs, conversational, **config):
    """Two GRPO steps on CPU; returns the trainer and, per step, (prompts, completions, rewards_per_func) as
    TRL's own ``_calculate_rewards`` computed them."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    prompts = [[{"role": "user", "content": p}] for p in PROMPTS] if conversational else PROMPTS
    dataset = Dataset.from_dict({"prompt": prompts, "answer": ["five", "a b c"]})  # an extra column: a kwarg
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=6, max_steps=2, logging_steps=1, report_to="none", use_cpu=True,
                      save_strategy="no", learning_rate=1e-2, bf16=False, seed=0, **config)
    trainer = GRPOTrainer(model=policy, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer)
    seen, calculate = [], trainer._calculate_rewards

    def spy(inputs, prompts, completions, completion_ids):
        rewards = calculate(inputs, prompts, completions, completion_ids)
        seen.append((prompts, completions, rewards.clone()))
        return rewards

    trainer._calculate_rewards = spy
    before = [p.detach().clone() for p in policy.parameters()]
    trainer.train()
    assert trainer.state.global_step == 2 and len(seen) == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters())), "the policy did not move"
    return trainer, seen


def _expected(model, prompts, completions, conversational):
    items = [TextPair(None, p + c) if conversational else TextPair(p, c) for p, c in zip(prompts, completions)]
    with torch.inference_mode():
        return model.score(items)


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_grpo_trains_on_the_rewards_of_a_local_and_a_served_rm(tmp_path, start_server, conversational):
    pytest.importorskip("trl", reason="TRL is not installed")
    rm, policy, tokenizer = _tiny_rm_and_policy()
    url = start_server(rm)
    for where, target in (("local", rm), ("served", url)):
        name = f"rm_{where}"
        _, policy, _ = _tiny_rm_and_policy()  # a fresh policy per run
        trainer, seen = _train_grpo(tmp_path / where, policy, tokenizer, [TRLRewardFunction(target, name=name)],
                                    conversational)
        logs = [h for h in trainer.state.log_history if f"rewards/{name}/mean" in h]
        assert len(logs) == 2
        for (prompts, completions, rewards), log in zip(seen, logs):
            assert isinstance(completions[0], list) == conversational  # TRL's two formats reached the adapter
            want = _expected(rm, prompts, completions, conversational)
            torch.testing.assert_close(rewards[:, 0], want, atol=1e-5, rtol=1e-5)
            assert log[f"rewards/{name}/mean"] == pytest.approx(want.mean().item(), abs=1e-5)
            assert log["reward"] == pytest.approx(want.mean().item(), abs=1e-5)


def test_grpo_weighs_two_mmreward_functions_and_reads_no_reward_as_nan(tmp_path, start_server):
    pytest.importorskip("trl", reason="TRL is not installed")
    rm, policy, tokenizer = _tiny_rm_and_policy()
    nan_toy = HashNanToy()
    funcs = [TRLRewardFunction(rm, name="rm"), TRLRewardFunction(start_server(nan_toy), name="judge")]
    trainer, seen = _train_grpo(tmp_path, policy, tokenizer, funcs, False, reward_weights=[1.0, 0.5])
    logs = [h for h in trainer.state.log_history if "rewards/judge/mean" in h]
    nans = 0
    for (prompts, completions, rewards), log in zip(seen, logs):
        want_rm = _expected(rm, prompts, completions, False)
        want_judge = nan_toy.score([TextPair(p, c) for p, c in zip(prompts, completions)])
        nans += int(torch.isnan(want_judge).sum())
        torch.testing.assert_close(rewards[:, 0], want_rm, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rewards[:, 1], want_judge, atol=1e-5, rtol=1e-5, equal_nan=True)  # None -> NaN
        assert log["rewards/judge/mean"] == pytest.approx(torch.nanmean(want_judge).item(), abs=1e-5)
        total = (want_rm + 0.5 * torch.nan_to_num(want_judge, nan=0.0)).mean().item()  # TRL's nansum of weights
        assert log["reward"] == pytest.approx(total, abs=1e-5)
    assert nans > 0  # the run did meet rewards the judge could not give


def test_trl_dataset_columns_of_any_name_are_keyword_arguments(start_server, text_model):
    # TRL passes every dataset column as a keyword: a column called "self" used to fail each step with
    # "TypeError: __call__() got multiple values for argument 'self'"
    for fn in (TRLRewardFunction(text_model), TRLRewardFunction(start_server(text_model))):
        got = fn(prompts=["p"], completions=["c"], completion_ids=[[1]], self=["x"], model=["m"], name=["n"],
                 trainer_state=None, log_extra=print, log_metric=print, environments=None)
        assert got == pytest.approx(text_model.score([TextPair("p", "c")]).tolist())


def test_openrlhf_reward_func_file_works_with_every_release(start_server, text_model):
    url = start_server(text_model)
    queries, prompts, labels = ["q one", "q two"], ["q", "q"], ["1", "2"]
    want = text_model.score([TextPair(None, q) for q in queries]).tolist()
    for target in (text_model, url):
        obj = OpenRLHFRewardFunction(target)
        reward_func = obj.as_function()
        assert inspect.isfunction(reward_func) and reward_func.reward_function is obj
        # OpenRLHF 0.11 (SingleTurnAgentExecutor._fetch_rewards_via_func): one query per call, on a thread, and
        # the reward / score put in tensors
        for fn in (obj, reward_func):
            infos = asyncio.run(_openrlhf_011_calls(fn, queries, prompts, labels))
            got = [torch.tensor([info.get("rewards")]).reshape(-1).item() for info in infos]
            assert got == pytest.approx(want, abs=1e-6)
        # OpenRLHF 0.7.1 - 0.9.0 (update_samples_with_rewards): chunks of micro_rollout_batch_size, joined as tensors
        info = reward_func(queries, prompts, labels)
        assert torch.cat([torch.as_tensor(info["rewards"])]).tolist() == pytest.approx(want, abs=1e-6)
        assert set(info) == {"rewards", "scores", "extra_logs"}
        # keyword arguments a release adds (the documented reward_func(queries, prompts, labels, **kwargs))
        assert obj(queries, prompts, labels, images=None)["rewards"] == pytest.approx(want, abs=1e-6)
    ray = pytest.importorskip("ray")
    # 0.7.1 - 0.9.0 hand the file's reward_func to ray.remote, which takes a plain function only
    with pytest.raises(TypeError, match="function or a class"):
        ray.remote(OpenRLHFRewardFunction(url))
    remote = ray.remote(OpenRLHFRewardFunction(url).as_function())
    assert remote is not None
    from ray import cloudpickle  # what carries it to Ray's workers

    copy = cloudpickle.loads(cloudpickle.dumps(OpenRLHFRewardFunction(url).as_function()))
    assert copy(queries, prompts, labels)["rewards"] == pytest.approx(want, abs=1e-6)


async def _openrlhf_011_calls(fn, queries, prompts, labels):
    calls = [asyncio.to_thread(fn, [q], [p], [lab]) for q, p, lab in zip(queries, prompts, labels)]
    return await asyncio.gather(*calls)


def _verl_call_with_kwargs(raw_fn, extra_kwargs, *args, **kwargs):  # verl.trainer.ppo.reward._call_with_kwargs
    return raw_fn(*args, **{**kwargs, **extra_kwargs})


def test_verl_reward_managers_get_floats_they_can_write(start_server):
    model = HashNanToy()
    url = start_server(model)
    solutions = ["five", "six", "seven", "a b", "c d e", "f"]
    extras = np.array([{"question": "what is two plus three", "index": i} for i in range(len(solutions))],
                      dtype=object)
    want = model.score([TextPair("what is two plus three", s) for s in solutions])
    assert torch.isnan(want).any() and not torch.isnan(want).all()
    for target in (model, url):
        raw = VerlRewardFunction(target)
        assert not inspect.iscoroutinefunction(raw)  # verl runs it synchronously (partial(_call_with_kwargs, ...))
        fn = partial(_verl_call_with_kwargs, raw, {"max_len": 9})  # custom_reward_function.reward_kwargs
        # NaiveRewardManager / the reward loop: one sample by keyword, extra_info grown by verl, router kwargs
        reward_tensor = torch.zeros(len(solutions), 4)
        for i, s in enumerate(solutions):
            extra = {**extras[i], "num_turns": None, "rollout_reward_scores": {}}
            reward_tensor[i, 3] = fn(data_source="openai/gsm8k", solution_str=s, ground_truth="5", extra_info=extra,
                                     reward_router_address=None, reward_model_tokenizer=None)
        torch.testing.assert_close(reward_tensor[:, 3], want, equal_nan=True)
        # BatchRewardManager: numpy columns by keyword
        scores = fn(data_sources=np.array(["openai/gsm8k"] * len(solutions), dtype=object), solution_strs=solutions,
                    ground_truths=["5"] * len(solutions), extra_infos=extras)
        assert all(isinstance(s, float) for s in scores)
        torch.testing.assert_close(torch.tensor(scores), want, equal_nan=True)
        assert sum(math.isnan(s) for s in scores) == int(torch.isnan(want).sum())


def test_a_model_that_reads_no_text_is_named_by_every_adapter(start_server, image_model):
    # OpenRLHF's adapter over an image model used to blame the query ("query 0 does not start with its
    # prompt"), TRL's and verl's spoke of "this endpoint"
    url = start_server(image_model)
    calls = {TRLRewardFunction: lambda f: f(["p"], ["c"]),
             VerlRewardFunction: lambda f: f(data_source="d", solution_str="c", ground_truth="",
                                             extra_info={"question": "p"}),
             OpenRLHFRewardFunction: lambda f: f(["p c"], ["p"], [""])}
    for cls, call in calls.items():
        for target in (image_model, url):
            with pytest.raises(ValueError, match=rf"^{cls.__name__} gives the model the trainer's text .* the model "
                                                 r"scores ImagePrompt: use /score"):
                call(cls(target))
