"""Judge runner (tiny Llama + in-process tokenizer) and position-bias helpers."""
import pytest
import torch

from mmreward.text.generative.parsing import parse_ab, parse_scores
from mmreward.text.generative.position import (
    both_orders, evaluate_pairs_with_judge, order_averaged, pairwise_judge_accuracy, rmbench_with_judge,
    swap_consistency, verdict_prob,
)
from mmreward.text.generative.runner import JudgeConfig, JudgeRunner, parse_metrics
from mmreward.text.generative.sft import lm_loss, sft_batch
from mmreward.text.generative.tiny import tiny_llama, word_tokenizer


CORPUS = ["which is better ? [[A]] [[B]] Yes No <answer> </answer> is it right the cat sat on a mat"]


@pytest.fixture(scope="module")
def lm():
    tok = word_tokenizer(CORPUS)
    return tiny_llama(len(tok), hidden=32, layers=1, heads=2), tok


def msgs(text):
    return [{"role": "user", "content": text}]


def test_config_validation():
    with pytest.raises(ValueError, match="do_sample"):
        JudgeConfig(num_samples=3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        JudgeConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        JudgeConfig(temperature=0.0)


def test_generate_shapes_determinism_and_errors(lm):
    model, tok = lm
    prompts = [msgs("is it right"), msgs("the cat sat on a mat which is better ?"), "<user> cat <eos> <assistant> "]
    cfg = JudgeConfig(max_new_tokens=6, num_samples=3, do_sample=True, temperature=1.5, batch_size=2, seed=7)
    state = torch.random.get_rng_state()
    a = JudgeRunner(model, tok, cfg).generate(prompts)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    b = JudgeRunner(model, tok, cfg).generate(prompts)
    assert a == b and len(a) == 3 and all(len(r) == 3 for r in a)
    cfg2 = JudgeConfig(max_new_tokens=6, num_samples=3, do_sample=True, temperature=1.5, batch_size=2, seed=8)
    assert JudgeRunner(model, tok, cfg2).generate(prompts) != a
    greedy = JudgeRunner(model, tok, JudgeConfig(max_new_tokens=5, batch_size=1)).generate(prompts)
    assert greedy == JudgeRunner(model, tok, JudgeConfig(max_new_tokens=5, batch_size=3)).generate(prompts)
    r = JudgeRunner(model, tok)
    with pytest.raises(ValueError, match="empty"):
        r.generate([])
    with pytest.raises(TypeError, match=r"prompts\[1\]"):
        r.generate(["ok", [{"content": "no role"}]])
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        JudgeRunner(model, tok, JudgeConfig(max_prompt_tokens=3)).generate([msgs("the cat sat on a mat")])


def test_unparsable_output_is_an_explicit_no_verdict(lm):
    model, tok = lm
    r = JudgeRunner(model, tok, JudgeConfig(max_new_tokens=4))
    res = r.run([msgs("the cat"), msgs("a mat")], lambda t: parse_scores(t, 2))  # no digits in the vocabulary
    assert all(not x.ok and x.reason and x.value is None for row in res for x in row)
    res = r.run([msgs("the cat")], lambda t: 1 / 0)  # a crashing parser is caught, the text is kept
    assert res[0][0].reason.startswith("parser error: ZeroDivisionError") and isinstance(res[0][0].text, str)
    m = parse_metrics([[res[0][0]], [res[0][0]]])
    assert m["n"] == 2 and m["parse_rate"] == 0.0 and sum(m["reasons"].values()) == 2


def test_trained_judge_output_is_parsed(lm):
    """A tiny LM taught two verdicts emits them; the runner parses them (parse rate 1)."""
    _, tok = lm
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2, seed=1)
    data = [(msgs("the cat which is better ?"), "<answer> [[A]] </answer>"), (msgs("a mat which is better ?"), "[[B]]")]
    batch = sft_batch(tok, [d[0] for d in data], [d[1] for d in data])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = lm_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    res = JudgeRunner(model, tok, JudgeConfig(max_new_tokens=8)).run([d[0] for d in data], parse_ab)
    assert [row[0].value for row in res] == ["A", "B"], [row[0].text for row in res]
    assert parse_metrics(res)["parse_rate"] == 1.0


def test_choice_probs_ignore_left_padding(lm):
    model, tok = lm
    r = JudgeRunner(model, tok, JudgeConfig(batch_size=4))
    short, long = msgs("cat"), msgs("the cat sat on a mat which is better ? is it right")
    p_batch = r.choice_probs([short, long], ["Yes", "No"])
    p_alone = r.choice_probs([short], ["Yes", "No"])
    assert torch.allclose(p_batch.sum(1), torch.ones(2))
    assert torch.allclose(p_batch[0], p_alone[0], atol=1e-5)
    with pytest.raises(ValueError, match="share a first token"):
        r.choice_probs([short], ["Yes", "Yes"])


# ------------------------------------------------------------------------------ position bias
def test_order_average_and_consistency_by_hand():
    p_ab, p_ba = torch.tensor([0.9, 0.8, 0.5, 0.3]), torch.tensor([0.2, 0.7, 0.4, 0.6])
    assert torch.allclose(order_averaged(p_ab, p_ba), torch.tensor([0.85, 0.55, 0.55, 0.35], dtype=torch.float64))
    assert swap_consistency(p_ab, p_ba) == pytest.approx(2 / 4)  # rows 0 and 3 flip with the order
    assert pairwise_judge_accuracy(torch.tensor([1.0, 0.5, 0.0, 0.7])) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert verdict_prob(["A", None, "B"]).tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="verdicts"):
        verdict_prob(["C"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        order_averaged(torch.tensor([float("nan")]), torch.tensor([0.5]))


def test_both_orders_exposes_position_bias():
    always_first = lambda p, a, b: torch.ones(len(p))  # noqa: E731  -- pure position bias
    by_length = lambda p, a, b: torch.tensor([float(len(x) > len(y)) for x, y in zip(a, b)])  # noqa: E731
    rows = [{"prompt": "q", "chosen": "long answer", "rejected": "no"}] * 3
    biased = evaluate_pairs_with_judge(always_first, rows)
    assert biased["accuracy_chosen_first"] == 1.0 and biased["accuracy_chosen_second"] == 0.0
    assert biased["accuracy"] == 0.5 and biased["consistency"] == 0.0
    fair = evaluate_pairs_with_judge(by_length, rows)
    assert fair["accuracy"] == 1.0 and fair["consistency"] == 1.0
    out = both_orders(by_length, ["q"], ["aaa"], ["b"])
    assert out["p"].tolist() == [1.0]
    with pytest.raises(ValueError, match="row 0"):
        evaluate_pairs_with_judge(by_length, [{"prompt": "q", "chosen": 1, "rejected": "x"}])


def test_judge_from_scores_by_hand():
    from mmreward.text.generative.position import judge_from_scores

    j = judge_from_scores(lambda p, r: torch.tensor([float(len(x)) for x in r]))
    assert j(["q", "q", "q"], ["aa", "a", "b"], ["a", "aa", "c"]).tolist() == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="equally long"):
        j(["q"], ["a", "b"], ["c"])
    # equally long strings were judged one character per row
    with pytest.raises(TypeError, match="judge: prompts must be a list, got 'ab'"):
        j("ab", "cd", "ef")
    with pytest.raises(TypeError, match="judge: second must be a list, got"):
        j(["q"], ["a"], {"b": 1})


def test_rmbench_with_judge_matrix():
    item = {"prompt": "q", "chosen": ["c", "cc detailed", "## cc"], "rejected": ["r", "rr detailed", "## rr"]}
    oracle = lambda p, a, b: torch.tensor([float(x.startswith(("c", "#")) and "cc" in x or x == "c") for x in a])  # noqa: E731
    res = rmbench_with_judge(oracle, [item, item])
    assert res["hard"] == 1.0 and res["easy"] == 1.0 and res["normal"] == 1.0
    longer = lambda p, a, b: torch.tensor([float(len(x) > len(y)) for x, y in zip(a, b)])  # noqa: E731
    res = rmbench_with_judge(longer, [item])
    assert res["matrix"][0][1] == 0.0 and res["matrix"][1][0] == 1.0  # style decides, not correctness
    with pytest.raises(ValueError, match="3 chosen"):
        rmbench_with_judge(longer, [{"prompt": "q", "chosen": ["a"], "rejected": ["b"]}])


def test_sft_batch_and_heads_reject_bad_input(lm):
    from mmreward.text.generative.heads import last_token_hidden

    _, tok = lm
    b = sft_batch(tok, [msgs("the cat"), "<user> a <eos> <assistant> "], ["Yes", "No is it right"])
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
    assert (b["labels"][b["attention_mask"] == 0] == -100).all()
    with pytest.raises(ValueError, match="2 prompts but 1 targets"):
        sft_batch(tok, [msgs("a"), msgs("b")], ["Yes"])
    with pytest.raises(ValueError, match="empty batch"):
        sft_batch(tok, [], [])
    with pytest.raises(TypeError, match=r"targets\[0\]"):
        sft_batch(tok, [msgs("a")], [None])
    with pytest.raises(ValueError, match="max_length"):
        sft_batch(tok, [msgs("the cat sat on a mat")], ["Yes"], max_length=4)
    with pytest.raises(ValueError, match="row 1 of the batch is empty"):
        last_token_hidden(torch.zeros(2, 3, 4), torch.tensor([[1, 1, 0], [0, 0, 0]]))
    h = torch.arange(24.0).view(2, 3, 4)
    assert torch.equal(last_token_hidden(h, torch.tensor([[1, 1, 0], [1, 1, 1]])), torch.stack([h[0, 1], h[1, 2]]))


# ------------------------------------------------------------------------------ prompts the model cannot read
def tiny_gpt2(tok, positions):
    """A GPT-2 (learned position table of ``positions`` rows) over ``tok``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=positions, n_embd=16, n_layer=1, n_head=2,
                                          eos_token_id=2, pad_token_id=0, bos_token_id=None))


def test_max_prompt_tokens_error_counts_prompts_within_the_call(lm):
    model, tok = lm
    # batch_size=1: the long prompt is row 0 of its batch but prompt 1 of the call
    r = JudgeRunner(model, tok, JudgeConfig(max_prompt_tokens=3, batch_size=1, max_new_tokens=2))
    with pytest.raises(ValueError, match="prompt 1 has 6 tokens > max_prompt_tokens=3"):
        r.generate(["the cat", "the cat sat on a mat"])
    with pytest.raises(ValueError, match="prompt 1 has 6 tokens"):
        r.choice_probs(["the cat", "the cat sat on a mat"], ["Yes", "No"])


def test_tokens_outside_the_model_embeddings_are_refused_naming_the_prompt(lm):
    model, _ = lm
    big = word_tokenizer(CORPUS, extra=["zebra"])  # one word more than the model has embeddings for
    r = JudgeRunner(model, big, JudgeConfig(max_new_tokens=2, batch_size=1))
    vocab = model.get_input_embeddings().num_embeddings
    with pytest.raises(ValueError, match=rf"prompt 1 holds token id {vocab}, but the model has embeddings for ids "
                                         rf"0\.\.{vocab - 1}"):
        r.generate(["the cat", "a zebra"])
    with pytest.raises(ValueError, match="prompt 1 holds token id"):
        r.choice_probs(["the cat", "a zebra"], ["Yes", "No"])
    # a pad token the model lacks is named as such, not blamed on the shorter prompt it pads
    big.pad_token = "zebra"
    with pytest.raises(ValueError, match=f"pad token id {vocab} is outside the model's embeddings"):
        JudgeRunner(model, big, JudgeConfig(max_new_tokens=2)).generate(["the cat", "the cat sat"])


def test_learned_position_table_limits_prompt_plus_new_tokens():
    from transformers import OPTConfig, OPTForCausalLM

    tok = word_tokenizer(CORPUS)
    model = tiny_gpt2(tok, positions=8)
    six = "the cat sat on a mat"
    # past the table GPT-2 failed inside its position embedding with an IndexError naming no prompt
    with pytest.raises(ValueError, match="prompt 1 is 6 tokens \\+ max_new_tokens=4 - 1 = 9 positions, more than "
                                         "the 8 positions GPT2LMHeadModel reads"):
        JudgeRunner(model, tok, JudgeConfig(max_new_tokens=4, batch_size=1)).generate(["the cat", six])
    # 6 prompt tokens + 3 new read 8 positions (the last new token is never fed back): fits
    out = JudgeRunner(model, tok, JudgeConfig(max_new_tokens=3, batch_size=1)).generate(["the cat", six])
    assert len(out) == 2
    r = JudgeRunner(model, tok, JudgeConfig(batch_size=1))
    assert r.choice_probs(["the cat", six + " is it"], ["Yes", "No"]).shape == (2, 2)  # 8 tokens: fits
    with pytest.raises(ValueError, match="prompt 1 is 9 tokens, more than the 8 positions"):
        r.choice_probs(["the cat", six + " is it right"], ["Yes", "No"])

    from mmreward.text.generative.runner import position_limit

    opt = OPTForCausalLM(OPTConfig(vocab_size=len(tok), max_position_embeddings=8, hidden_size=16, ffn_dim=32,
                                   num_hidden_layers=1, num_attention_heads=2, word_embed_proj_dim=16))
    assert position_limit(model) == 8 and position_limit(opt) == 8  # OPT's table holds 2 offset rows more
    assert position_limit(tiny_llama(len(tok), hidden=32, layers=1, heads=2)) is None  # rotary: no hard end


def test_gram_errors_name_the_prompt_within_the_call():
    from mmreward.text.generative.gram import GRAM, GRAMConfig

    tok = word_tokenizer(["good bad q0 q1 A B Which response is better ? Answer or ."])
    gram = GRAM(tiny_gpt2(tok, positions=40), tok, GRAMConfig(instruction="Which response is better ?", batch_size=1))
    assert gram.judge(["q0"], ["good"], ["bad"]).shape == (1,)
    with pytest.raises(ValueError, match="prompt 1 is .* tokens, more than the 40 positions"):
        gram.judge(["q0", "q1"], ["good", "good " * 40], ["bad", "bad"])
