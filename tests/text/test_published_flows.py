"""The first things a new user does with a published text RM folder: `mmreward.load(folder)` then
`score` on unusual-but-valid inputs (a system turn, several turns, Unicode, a message-list prompt with
a string response, long replies mixed with short ones) and the refusals of a conversation without a
reply. Batched scores equal one-by-one scores and transformers' own forward."""
import warnings

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from test_armo import PAIRS, armo  # noqa: E402,F401  (armo: the module-scoped ArmoRM folder fixture)
from text_rm_fixtures import BOS_TEMPLATE, llama_config, save_classifier, word_tokenizer  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402

SYSTEM_MULTI_TURN = [{"role": "system", "content": "say a"}, {"role": "user", "content": "what is the answer"},
                     {"role": "assistant", "content": "five"}, {"role": "user", "content": "two plus three"},
                     {"role": "assistant", "content": "five six"}]
ROWS = [{"prompt": "what is two plus three", "response": "five"},
        {"messages": SYSTEM_MULTI_TURN},
        {"prompt": [{"role": "system", "content": "say"}, {"role": "user", "content": "what is"}], "response": "six"},
        {"prompt": "你好 😀 مرحبا", "response": "answer 😀"},
        {"prompt": "a", "response": " ".join(["five"] * 60)}]  # past max_length=48: truncated


@pytest.fixture(scope="module")
def llama_no_pad(tmp_path_factory):
    """A Llama-style classifier whose tokenizer has no pad token (and asks for left padding) and whose
    config has no pad_token_id, as many Llama-3 RMs are published."""
    folder = tmp_path_factory.mktemp("llama-rm-no-pad")
    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE, model_max_length=48)
    tok.pad_token = None
    tok.padding_side = "left"
    cfg = llama_config()
    cfg.pad_token_id = None
    seq = save_classifier(str(folder), cfg, tok)
    return str(folder), seq, tok


def _reference(seq, tok, row):
    msgs = row.get("messages") or (
        ([{"role": "user", "content": row["prompt"]}] if isinstance(row["prompt"], str) else row["prompt"])
        + [{"role": "assistant", "content": row["response"]}])
    ids = tok(tok.apply_chat_template(msgs, tokenize=False), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return float(seq(**ids).logits[0, 0])


def test_batches_of_unusual_rows_score_as_one_by_one_and_as_transformers(llama_no_pad):
    folder, seq, tok = llama_no_pad
    rm = mmreward.load(folder)
    with pytest.warns(UserWarning, match=r"truncated 1 of 5 inputs to max_length=48"):
        batch = rm.score(ROWS, batch_size=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = torch.stack([rm.score([r])[0] for r in ROWS])
    assert float((batch - single).abs().max()) <= 1e-5
    for row, got in zip(ROWS[:4], batch[:4]):  # the rows that fit: exactly transformers' logits
        assert abs(float(got) - _reference(seq, tok, row)) <= 1e-4
    assert batch.std() > 1e-3
    bf16 = mmreward.load(folder, dtype="bf16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert float((bf16.score(ROWS[:4]) - batch[:4]).abs().max()) <= 0.05 * float(batch[:4].abs().max()) + 0.05


@pytest.mark.parametrize("row", [{"messages": [{"role": "user", "content": "a"}]},
                                 {"messages": SYSTEM_MULTI_TURN[:4]},
                                 {"prompt": [{"role": "user", "content": "a"}]}])
def test_a_conversation_without_a_reply_is_refused_naming_the_input(llama_no_pad, row):
    rm = mmreward.load(llama_no_pad[0])
    with pytest.raises(DataError, match="input 1"):
        rm.score([ROWS[0], row])


def test_armo_objectives_warn_about_truncation_as_score_does(armo):  # noqa: F811
    folder = armo[0]
    rm = mmreward.load(folder)
    long = {"messages": [{"role": "system", "content": "Be brief . " * 30}, {"role": "user", "content": "What ? " * 60},
                         {"role": "assistant", "content": "It is 7 . " * 60}]}
    rows = [long, PAIRS[0]]
    with pytest.warns(UserWarning, match=r"truncated 1 of 2 inputs to max_length=256 tokens"):
        score = rm.score(rows)
    with pytest.warns(UserWarning, match=r"truncated 1 of 2 inputs to max_length=256 tokens"):
        objectives = rm.objectives(rows, batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = rm.objectives([long])
    torch.testing.assert_close(objectives[:1], alone, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(score).all()
