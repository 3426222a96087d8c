"""An RL loop's view of the scorers: a score does not depend on what else is in the batch (longer / shorter
neighbours, their order, how batch_size splits them, duplicates) nor on who else is calling (threads scoring
one model at once), and repeated calls keep no autograd graph."""
import os
import sys
import threading

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "text"))

from mmreward.core.inputs import ImagePrompt, StepSolution, TextPair  # noqa: E402

ORDERS = ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2])


def _same_alone_and_batched(score, items, sizes=(1, 2, 3, 16)):
    """``score(items, batch_size)`` of every order and split equals each input scored alone."""
    alone = [score([it], 1)[0] for it in items]
    for bs in sizes:
        for order in ORDERS[:len(items)] if len(items) == 4 else ([*range(len(items))], [*range(len(items))][::-1]):
            got = score([items[i] for i in order], bs)
            for j, i in enumerate(order):
                torch.testing.assert_close(torch.as_tensor(got[j]), torch.as_tensor(alone[i]), atol=1e-5, rtol=1e-5,
                                           msg=f"input {i} at position {j}, batch_size {bs}")
    return alone


# ------------------------------------------------------------------ text reward models
TEXT = [TextPair("what is two plus three", "five"), TextPair("a", "b c a b d d c " * 4),
        TextPair("b c " * 12, "six"), TextPair("what is the answer", "seven seven")]


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_text_rm_score_ignores_neighbours_order_and_batch_split(kind):
    from text_rm_fixtures import bert_config, llama_config, word_tokenizer

    from mmreward.text import RewardModel

    torch.manual_seed(0)
    rm = RewardModel.from_backbone({"llama": llama_config, "bert": bert_config}[kind](), tokenizer=word_tokenizer())
    alone = _same_alone_and_batched(lambda xs, bs: rm.score(xs, batch_size=bs), TEXT)
    dup = rm.score([TEXT[1], TEXT[0], TEXT[1], TEXT[1]], batch_size=2)
    assert torch.equal(dup[[0, 2, 3]], dup[0].repeat(3)) and abs(float(dup[0] - alone[1])) < 1e-5
    # the caller's train() mode (a model being trained between rollouts) does not turn dropout on
    rm.train()
    torch.testing.assert_close(rm.score(TEXT, batch_size=3), torch.stack(alone), atol=1e-5, rtol=1e-5)
    assert rm.training
    out = rm.score(TEXT)
    assert not out.requires_grad and out.grad_fn is None and not torch.is_inference(out)


def test_prm_step_scores_ignore_neighbours_order_and_batch_split():
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("char")
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, heads=2, seed=0), tok, head="lm",
                                           max_length=200)
    items = [StepSolution("3 +4 -2", ["3+4=7", "7-2=5"]), StepSolution("1 +1", ["1+1=2"]),
             StepSolution("3 +4 -2 +5 +1 -3", ["3+4=7", "7-2=5", "5+5=1", "1+1=2", "2-3=9"]),
             StepSolution("2 +2", ["2+2=4", "4+0=4"])]
    _same_alone_and_batched(lambda xs, bs: prm.score_parts(xs, batch_size=bs), items, sizes=(1, 3, 16))
    _same_alone_and_batched(lambda xs, bs: prm.score(xs, batch_size=bs), items, sizes=(2,))


# ------------------------------------------------------------------ generative judges
CORPUS = ["which is better ? [[A]] [[B]] Yes No <answer> </answer> is it right the cat sat on a mat"]


def _msgs(text):
    return [{"role": "user", "content": text}]


JUDGE_PROMPTS = [_msgs("is it right"), _msgs("the cat sat on a mat which is better ? " * 4), _msgs("cat"),
                 _msgs("Yes No [[A]]")]


@pytest.fixture(scope="module")
def judge_lm():
    from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

    tok = word_tokenizer(CORPUS)
    return tiny_llama(len(tok), hidden=32, layers=1, heads=2), tok


class _RecordingTokenizer:
    """A tokenizer that records every assignment to its attributes (``padding_side`` is shared by every
    thread that uses the tokenizer)."""

    def __init__(self, tok):
        object.__setattr__(self, "_tok", tok)
        object.__setattr__(self, "writes", [])

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __setattr__(self, name, value):
        self.writes.append(name)
        setattr(self._tok, name, value)

    def __call__(self, *args, **kwargs):
        return self._tok(*args, **kwargs)


def test_judge_greedy_verdicts_ignore_neighbours_and_leave_the_tokenizer_alone(judge_lm):
    """Before: every encode switched the shared tokenizer's padding_side to "left" and back; threads judging at
    once left it "left" for good (a reward model sharing it then padded on the wrong side) and one could
    tokenise right-padded mid-switch."""
    from mmreward.text.generative.runner import JudgeConfig, JudgeRunner

    model, tok = judge_lm
    tok.padding_side = "right"
    rec = _RecordingTokenizer(tok)
    run = JudgeRunner(model, rec, JudgeConfig(max_new_tokens=6, batch_size=4))
    alone = [run.generate([p])[0] for p in JUDGE_PROMPTS]
    for bs in (1, 3, 4):
        for order in ORDERS:
            assert run.generate([JUDGE_PROMPTS[i] for i in order], batch_size=bs) == [alone[i] for i in order]
    probs = torch.cat([run.choice_probs([p], ["Yes", "No"]) for p in JUDGE_PROMPTS])
    torch.testing.assert_close(run.choice_probs(JUDGE_PROMPTS, ["Yes", "No"], batch_size=3), probs,
                               atol=1e-5, rtol=1e-5)
    assert rec.writes == [] and tok.padding_side == "right"
    enc = run.encode(["cat", "the cat sat"])
    assert enc["attention_mask"].tolist()[0][:2] == [0, 0] and enc["attention_mask"][:, -1].tolist() == [1, 1]
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        run.encode(["cat", ""])


def test_judge_sampling_in_threads_reproduces_serial_samples_and_keeps_the_global_rng(judge_lm):
    """Before: sampled generation seeded the process-wide RNG inside fork_rng; threads sampling at once drew
    from each other's seeds (79 of 80 calls differed from the serial texts) and left the global RNG changed."""
    from mmreward.text.generative.runner import JudgeConfig, JudgeRunner

    model, tok = judge_lm
    run = JudgeRunner(model, tok, JudgeConfig(max_new_tokens=6, batch_size=2, do_sample=True, num_samples=2,
                                              temperature=1.5, seed=3))
    want = run.generate(JUDGE_PROMPTS)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    got: list = []

    def work():
        for _ in range(4):
            got.append(run.generate(JUDGE_PROMPTS))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 16 and all(g == want for g in got)
    assert torch.equal(torch.get_rng_state(), state)


def test_judge_numbered_rows_are_per_thread(judge_lm):
    """A judge numbering its subset of prompts (``numbered``) in one thread does not rename another thread's."""
    from mmreward.text.generative.runner import JudgeConfig, JudgeRunner

    model, tok = judge_lm
    run = JudgeRunner(model, tok, JudgeConfig(max_new_tokens=2))
    entered, release = threading.Event(), threading.Event()

    def other():
        with run.numbered([7, 8]):
            entered.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    try:
        assert entered.wait(5)
        with pytest.raises(ValueError, match="prompt 1 is empty"):  # not "prompt 8", the other thread's name
            run.generate(["cat", ""])
    finally:
        release.set()
        t.join()


# ------------------------------------------------------------------ vision scorers
def test_image_scorer_ignores_neighbours_of_other_sizes_order_and_batch_split():
    from mmreward.vision import synthetic as S
    from mmreward.vision.image_reward import ImageRewardModel
    from mmreward.vision.testing import tiny_clip_config, word_tokenizer

    torch.manual_seed(0)
    tok = word_tokenizer(S.vocabulary(), max_length=16)
    cfg = tiny_clip_config(len(tok), width=32, image_size=32)
    cfg.text_config.max_position_embeddings = 16
    model = ImageRewardModel.from_backbone(cfg, tokenizer=tok)
    g = torch.Generator().manual_seed(0)
    sizes = [(32, 32), (64, 48), (17, 90), (40, 40)]
    prompts = ["red", "a red square on a blue " + "green " * 3, "blue", "green"]
    items = [ImagePrompt(p, torch.rand(3, h, w, generator=g)) for p, (h, w) in zip(prompts, sizes)]
    _same_alone_and_batched(lambda xs, bs: model.score(xs, batch_size=bs), items, sizes=(1, 3, 16))


def test_eval_mode_keeps_submodule_modes_and_overlapping_calls_stay_in_eval():
    """Before: eval_mode restored ``module.train(was)``: a submodule the caller froze in eval mode came back in
    train mode (dropout on), and of two overlapping calls (threads) the first to finish turned dropout back
    on under the other."""
    from mmreward.vision.scoring import eval_mode

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5), torch.nn.Linear(2, 2))
    model.train()
    model[2].eval()
    first, second = eval_mode(model), eval_mode(model)
    first.__enter__()
    second.__enter__()
    assert not any(m.training for m in model.modules())
    first.__exit__(None, None, None)
    assert not any(m.training for m in model.modules())  # the second call is still scoring
    second.__exit__(None, None, None)
    assert model.training and model[1].training and not model[2].training


def test_direct_scoring_helpers_keep_the_callers_submodule_modes(judge_lm):
    """JudgeRunner.generate / choice_probs and RewardModel.score_encoded (called directly, outside ``score``)
    used to restore ``model.train(was)``: a part the caller froze in eval mode came back with dropout on."""
    from text_rm_fixtures import bert_config, word_tokenizer

    from mmreward.text import RewardModel
    from mmreward.text.generative.runner import JudgeConfig, JudgeRunner

    model, tok = judge_lm
    run = JudgeRunner(model, tok, JudgeConfig(max_new_tokens=2))
    frozen = model.model.layers[0]
    model.train()
    frozen.eval()
    try:
        run.generate(JUDGE_PROMPTS[:2])
        run.choice_probs(JUDGE_PROMPTS[:2], ["Yes", "No"])
        assert model.training and not frozen.training
    finally:
        model.eval()
    torch.manual_seed(0)
    rm = RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer()).train()
    rm.backbone.embeddings.eval()
    rm.score_encoded(rm.encode(TEXT[:2]))
    assert rm.training and rm.backbone.encoder.training and not rm.backbone.embeddings.training


def test_step_policies_sampling_in_threads_reproduce_their_serial_steps(judge_lm):
    """Two MCTS step policies (own seeds) sampling at once in two threads draw what each draws alone: both
    seed the process-wide RNG for ``generate``, so they take turns (``core.device.seeded_sampling``)."""
    from mmreward.text.prm.search import HFStepPolicy

    model, tok = judge_lm

    def steps(seed):
        policy = HFStepPolicy(model, tok, max_new_tokens=5, temperature=1.5, seed=seed)
        return [policy("problem: add a and b", ["first step"] * (i % 2)) for i in range(6)]

    want = {seed: steps(seed) for seed in (1, 2)}
    state = torch.get_rng_state()
    got: dict = {}
    threads = [threading.Thread(target=lambda s=s: got.__setitem__(s, [steps(s) for _ in range(3)]))
               for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {seed: [w] * 3 for seed, w in want.items()}
    assert torch.equal(torch.get_rng_state(), state)


def test_gram_judge_and_critic_rm_reward_keep_the_callers_submodule_modes():
    """``GRAM.judge`` and ``CriticRM.reward`` (public scoring helpers) restored ``model.train(was)``, turning a
    part the caller froze in eval mode back to train (and, from two threads, dropout on under a running call)."""
    from mmreward.text.generative.critic_rm import CriticRM, CriticRMConfig
    from mmreward.text.generative.gram import GRAM, GRAMConfig
    from mmreward.text.generative.heads import ScalarHeadLM
    from mmreward.text.generative.tiny import tiny_llama, word_tokenizer

    tok = word_tokenizer(["good bad q0 q1 Question : [A] [B] Which response is better ? Answer A or B . Critique"])
    gram = GRAM(tiny_llama(len(tok), hidden=32, layers=1, heads=2), tok, GRAMConfig())
    crm = CriticRM(ScalarHeadLM(tiny_llama(len(tok), hidden=32, layers=1, heads=2, seed=0)), tok,
                   CriticRMConfig(request="Critique", max_new_tokens=2))
    for model, call in ((gram.model, lambda: gram.judge(["q0"], ["good"], ["bad"])),
                        (crm.model, lambda: crm.reward(["q0"], ["good"], ["Critique good"]))):
        frozen = next(m for m in model.modules() if m is not model and list(m.parameters()))
        model.train()
        frozen.eval()
        call()
        assert model.training and not frozen.training
