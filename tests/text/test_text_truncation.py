"""Truncation keeps what matters: special / template tokens (the token the score is read from among
them) always survive; the prompt loses its start first (down to its share), then the response its end;
the model records max_length and the policy, and training, scoring and evaluation use them."""
import warnings

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from text_rm_fixtures import BOS_TEMPLATE, CHATML, bert_config, llama_config, word_tokenizer  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402
from mmreward.text import RewardModel  # noqa: E402
from mmreward.text.data import TextEncoder  # noqa: E402
from mmreward.text.eval.rewardbench import score_responses  # noqa: E402

PROMPT = "a b c d e f g h"  # 8 words, one token each
RESPONSE = "two plus three five six seven what is the answer"  # 10 words


def tokens(tok, row):
    return tok.convert_ids_to_tokens(row.ids)


def test_encoder_pair_keeps_cls_and_separators_and_splits_the_budget():
    tok = word_tokenizer(pair=True)
    enc = TextEncoder(tok, max_length=12, input_format="pair", prompt_share=0.25)
    row = enc.encode([(PROMPT, RESPONSE)])[0]
    # budget 12 - 3 specials = 9 content tokens; the prompt keeps int(0.25 * 9) = 2 from its end,
    # the response its first 7
    assert tokens(tok, row) == ["[CLS]", "g", "h", "[SEP]", "two", "plus", "three", "five", "six", "seven", "what", "[SEP]"]
    assert row.types == [0] * 4 + [1] * 8 and (row.cut_prompt, row.cut_response) == (6, 3)
    short = enc.encode([("a", RESPONSE)])[0]  # a short prompt keeps all of it: the response gets the rest
    assert tokens(tok, short)[:4] == ["[CLS]", "a", "[SEP]", "two"] and len(short) == 12 and short.cut_prompt == 0
    fits = enc.encode([("a", "five")])[0]
    assert tokens(tok, fits) == ["[CLS]", "a", "[SEP]", "five", "[SEP]"]


@pytest.mark.parametrize("share, kept_prompt", [(0.0, []), (0.5, ["e", "f", "g", "h"]), (1.0, list("abcdefgh"))])
def test_prompt_share_is_the_policy_knob(share, kept_prompt):
    tok = word_tokenizer()
    row = TextEncoder(tok, max_length=10, prompt_share=share).encode([(PROMPT, RESPONSE)])[0]  # joined: [CLS] .. [SEP]
    got = tokens(tok, row)
    assert got[0] == "[CLS]" and got[-1] == "[SEP]" and len(got) == 10
    assert got[1:1 + len(kept_prompt)] == kept_prompt
    assert got[1 + len(kept_prompt):-1] == RESPONSE.split()[:8 - len(kept_prompt)]  # the response's opening


def test_keep_end_cuts_the_first_content_tokens_but_keeps_specials():
    tok = word_tokenizer()
    row = TextEncoder(tok, max_length=6, truncation="keep_end").encode([(PROMPT, RESPONSE)])[0]
    assert tokens(tok, row) == ["[CLS]", "what", "is", "the", "answer", "[SEP]"]


@pytest.mark.parametrize("template, bos", [(CHATML, False), (BOS_TEMPLATE, True)])
def test_chat_template_tokens_survive_and_the_last_token_stays(template, bos):
    tok = word_tokenizer(chat_template=template, bos=bos)
    full = TextEncoder(tok, input_format="chat").encode([(PROMPT, RESPONSE)])[0]
    row = TextEncoder(tok, max_length=16, input_format="chat", prompt_share=0.25).encode([(PROMPT, RESPONSE)])[0]
    got, whole = tokens(tok, row), tokens(tok, full)
    assert len(got) == 16 and got[-1] == whole[-1]  # the token the last-token score is read from
    assert got[0] == whole[0]  # BOS / [CLS]
    content = set(PROMPT.split()) | set(RESPONSE.split())
    assert [t for t in got if t not in content] == [t for t in whole if t not in content]  # every template token
    kept = [t for t in got if t in content]
    budget = len(kept)
    n_prompt = int(0.25 * budget)
    assert kept == PROMPT.split()[-n_prompt:] + RESPONSE.split()[:budget - n_prompt]


def test_conversation_turns_lose_the_oldest_prompt_tokens_first():
    tok = word_tokenizer(chat_template=CHATML)
    conv = [{"role": "user", "content": "a b c d"}, {"role": "assistant", "content": "e f g h"},
            {"role": "user", "content": "what is the answer"}, {"role": "assistant", "content": "five six"}]
    enc = TextEncoder(tok, max_length=18, input_format="chat", prompt_share=0.0)
    got = tokens(tok, enc.encode([TextPair(None, conv)])[0])
    # 4 turns x 3 template tokens + [CLS] [SEP] = 14 kept; 4 content tokens fit: the whole response
    # (the last turn) and the end of the prompt (the earlier turns)
    content = [t for t in got if t not in ("[CLS]", "[SEP]", "<|im_start|>", "<|im_end|>", "user", "assistant")]
    assert len(got) == 18 and content == ["the", "answer", "five", "six"]
    assert got.count("<|im_start|>") == 4 and got.count("<|im_end|>") == 4 and got[-2:] == ["<|im_end|>", "[SEP]"]


def test_rewritten_contents_fall_back_to_cutting_the_start():
    tok = word_tokenizer(chat_template="{% for m in messages %}{{ m['role'] }} {{ m['content'] | trim }} [SEP] {% endfor %}")
    row = TextEncoder(tok, max_length=8, input_format="chat").encode([(" " + PROMPT, RESPONSE + " ")])[0]
    got = tokens(tok, row)
    assert len(got) == 8 and got[0] == "[CLS]" and got[-1] == "[SEP]" and got[-2] == "[SEP]"


def test_too_long_templates_and_the_warning():
    tok = word_tokenizer(chat_template=CHATML)
    with pytest.raises(DataError, match="input 0: its special / template tokens alone are 8 tokens, more than "
                                        "max_length=7"):
        TextEncoder(tok, max_length=7, input_format="chat").encode([("a", "b")])
    torch.manual_seed(0)
    rm = RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer(pair=True), max_length=12, pooling="first")
    with pytest.warns(UserWarning, match=r"truncated 1 of 2 inputs to max_length=12 tokens \(prompt_first: 6 prompt and "
                                         r"3 response tokens cut, up to 9 from one input; special and template tokens kept\)"):
        rm.score([TextPair(PROMPT, RESPONSE), TextPair("a", "b")])


@pytest.mark.parametrize("make_config, tok_kw, pooling", [(bert_config, dict(pair=True), "first"),
                                                          (llama_config, dict(chat_template=CHATML), "last")])
def test_every_path_uses_the_recorded_max_length(tmp_path, make_config, tok_kw, pooling):
    from mmreward.text import RewardTrainConfig, evaluate_pairs, train_reward_model

    torch.manual_seed(0)
    rm = RewardModel.from_backbone(make_config(), tokenizer=word_tokenizer(**tok_kw), pooling=pooling)
    assert rm.config.max_length == 64
    pairs = [{"prompt": PROMPT, "chosen": RESPONSE, "rejected": "six " * (i + 3)} for i in range(8)]
    cfg = RewardTrainConfig(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, max_length=18, progress=False,
                            tensorboard=False, plot=False, log_every=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_reward_model(rm, pairs, pairs, cfg)
    assert any("max_length=18" in str(w.message) for w in caught)
    assert rm.config.max_length == 18
    rm.save_pretrained(str(tmp_path / "rm"))
    loaded = mmreward.load(str(tmp_path / "rm"))
    assert (loaded.config.max_length, loaded.config.truncation, loaded.config.prompt_share) == (18, "prompt_first", 0.25)
    items = [TextPair(PROMPT, RESPONSE), TextPair(PROMPT, "six six six")]
    rows = loaded.encode(items)
    assert max(len(r) for r in rows) == 18 and rows == rm.encode(items)
    direct = loaded.score(items)
    torch.testing.assert_close(score_responses(loaded, [PROMPT] * 2, [RESPONSE, "six six six"]), direct)
    torch.testing.assert_close(rm.score(items), direct)
    chosen = loaded.score([TextPair(p["prompt"], p["chosen"]) for p in pairs])
    rejected = loaded.score([TextPair(p["prompt"], p["rejected"]) for p in pairs])
    acc = evaluate_pairs(loaded, pairs)
    assert acc["n"] == 8 and acc["accuracy"] == pytest.approx((chosen > rejected).float().mean().item())
    assert acc["reward_gap"] == pytest.approx((chosen - rejected).mean().item(), abs=1e-6)
