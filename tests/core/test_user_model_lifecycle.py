"""What an RLHF engineer does to a reward model held as a torch module in their own training code: score the
inputs a policy or a dataset hands it (other role conventions, message lists written as text, empty replies),
wrap it (DDP, torch.compile) and save it, and take gradients of its reward (ReFL / DRaFT-style)."""
import os
import sys

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "text"))

from text_rm_fixtures import CHATML, bert_config, llama_config, word_tokenizer  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import Comparison, TextPair, as_inputs  # noqa: E402
from mmreward.text import RewardModel  # noqa: E402
from mmreward.text.data import load_preference_pairs, pad_batch  # noqa: E402

USER = {"role": "user", "content": "what is two plus three"}
ITEMS = [TextPair("what is two plus three", "five"), TextPair("a", "b c d")]


def make(kind="llama", **kw):
    torch.manual_seed(0)
    config = llama_config() if kind == "llama" else bert_config()
    return RewardModel.from_backbone(config, tokenizer=word_tokenizer(chat_template=CHATML), **kw).eval()


@pytest.fixture(scope="module")
def rm():
    return make()


# ------------------------------------------------------------------ inputs: scored as training reads them
@pytest.mark.parametrize("role, meant", [("human", "user"), ("gpt", "assistant"), ("User", "user"),
                                         ("model", "assistant"), ("bot", "assistant")])
def test_score_refuses_roles_of_other_conventions_as_training_data_does(rm, role, meant):
    turns = [{**USER, "role": role if meant == "user" else "user"},
             {"role": role if meant == "assistant" else "assistant", "content": "five"}]
    k = 0 if meant == "user" else 1
    # a ShareGPT conversation was scored as written: the chat template printed "human" / "gpt" turns
    with pytest.raises(DataError, match=rf"^input 0: field 'messages'\[{k}\] has role '{role}': .* write it as "
                                        rf"'{meant}'"):
        rm.score([{"messages": turns}])
    prompt = [{**USER, "role": role}] if meant == "user" else [USER, {"role": role, "content": "a"}, USER]
    with pytest.raises(DataError, match=rf"^input 1: field 'prompt'\[{0 if meant == 'user' else 1}\] has role '{role}'"):
        rm.score([ITEMS[0], TextPair(prompt, "five")])
    # the same words training data uses for the same mistake
    with pytest.raises(DataError, match=rf"\[{k}\] has role '{role}': chat templates render roles as written"):
        load_preference_pairs([{"chosen": turns, "rejected": [turns[0], {"role": "assistant", "content": "six"}]}])


def test_roles_chat_templates_take_still_score(rm):
    tool = [USER, {"role": "assistant", "content": "a"}, {"role": "tool", "content": "b"},
            {"role": "assistant", "content": "five"}]
    assert torch.isfinite(rm.score([{"messages": tool}])).all()


@pytest.mark.parametrize("field", ["prompt", "response", "text"])
def test_score_refuses_a_message_list_written_as_text(rm, field):
    written = str([USER, {"role": "assistant", "content": "five"}])  # pandas' to_csv of a list column
    row = {"prompt": "what is two plus three", "response": "five"} if field != "text" else {}
    row[field] = written
    with pytest.raises(DataError, match=rf"^input 0: field '{field}' is a message list written as text"):
        rm.score([row])
    with pytest.raises(DataError, match=r"^input 0: first response is a message list written as text"):
        as_inputs(Comparison, [Comparison("q", written.replace("'", '"'), "b")])  # its JSON form too
    # a reply that talks about message lists is text, not a list written out
    assert torch.isfinite(rm.score([TextPair("what is two", f"say {written} a")])).all()


def test_empty_and_whitespace_replies_are_scored_not_refused(rm):
    """A policy can generate an empty or blank reply; RL needs its reward (usually low), and one refused input
    would fail the whole batch of rollouts. Scored as given, as the docs say."""
    scores = rm.score([TextPair("what is two plus three", r) for r in ("", "   ", "\n\n", "five")])
    assert scores.shape == (4,) and torch.isfinite(scores).all()


# ------------------------------------------------------------------ wrappers and saving
def test_a_wrappers_state_dict_given_to_save_pretrained_is_named_with_the_call_to_use(rm, tmp_path):
    for wrapped, prefix, call in ((torch.nn.DataParallel(rm), "module.", r"wrapper\.module\.state_dict\(\)"),
                                  (torch.compile(rm, backend="eager"), "_orig_mod.",
                                   r"compiled\._orig_mod\.state_dict\(\)")):
        with pytest.raises(ValueError, match=rf"every key starts with '{prefix}'.*: pass {call}"):
            rm.save_pretrained(tmp_path / "m", state_dict=wrapped.state_dict())
        assert not (tmp_path / "m").exists()
    rm.save_pretrained(tmp_path / "m", state_dict=torch.nn.DataParallel(rm).module.state_dict())
    torch.testing.assert_close(mmreward.load(tmp_path / "m").score(ITEMS), rm.score(ITEMS))


def test_a_compiled_model_saves_its_own_key_names_and_the_folder_scores(rm, tmp_path):
    from safetensors.torch import load_file, save_file

    compiled = torch.compile(rm, backend="eager")
    torch.testing.assert_close(compiled.score(ITEMS), rm.score(ITEMS))
    compiled.save_pretrained(tmp_path / "c")
    assert not [k for k in load_file(str(tmp_path / "c" / "model.safetensors")) if "_orig_mod" in k]
    torch.testing.assert_close(mmreward.load(tmp_path / "c").score(ITEMS), rm.score(ITEMS))
    # weights written by hand from the compiled module's state_dict: the prefix is named, not "missing 22 tensors"
    save_file({k: v.contiguous() for k, v in compiled.state_dict().items()}, str(tmp_path / "c" / "model.safetensors"))
    os.remove(tmp_path / "c" / "manifest.json")
    with pytest.raises(CheckpointError, match=r"every key starts with '_orig_mod\.'"):
        mmreward.load(tmp_path / "c")


def test_compiling_in_place_scores_through_the_compiled_forward_and_saves_plain_keys(tmp_path):
    """The docs' way to compile a reward model: torch.compile(model).score would run the uncompiled module."""
    from torch._dynamo.utils import counters

    rm = make()
    expected = rm.score(ITEMS)
    counters.clear()
    rm.compile(backend="eager")
    torch.testing.assert_close(rm.score(ITEMS), expected)
    assert counters["stats"]["unique_graphs"] > 0  # score went through dynamo
    rm.save_pretrained(tmp_path / "m")
    torch.testing.assert_close(mmreward.load(tmp_path / "m").score(ITEMS), expected)


# ------------------------------------------------------------------ gradients of the reward
@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_forward_with_inputs_embeds_gives_the_score_and_its_gradient(kind):
    rm = make(kind)
    ids, mask, types = pad_batch(rm.encode(ITEMS), rm.pad_id)
    embeds = rm.backbone.get_input_embeddings()(ids).detach().requires_grad_(True)
    reward = rm(None, mask, types, inputs_embeds=embeds)
    torch.testing.assert_close(reward.detach(), rm.score(ITEMS), atol=1e-5, rtol=1e-5)
    reward.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    assert not rm.score(ITEMS).requires_grad  # score is inference only, as the docs say
    with pytest.raises(ValueError, match="input_ids or inputs_embeds, not both"):
        rm(ids, mask, inputs_embeds=embeds)
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of inputs_embeds' \(N, T\)"):
        rm(None, mask[:, :-1], inputs_embeds=embeds)
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(N, T, 32\) \(the width of the backbone's input "
                                         r"embeddings\)"):
        rm(None, mask, inputs_embeds=embeds[..., :8])


def test_inputs_embeds_of_a_backbone_whose_embeddings_are_narrower_than_its_hidden_states():
    """ALBERT embeds tokens in embedding_size (16 here) and projects them to the hidden size (32): its embeddings
    were refused as not (N, T, 32), and 32-wide ones then failed inside ALBERT."""
    from transformers import AlbertConfig

    from text_rm_fixtures import vocab_size

    torch.manual_seed(0)
    config = AlbertConfig(vocab_size=vocab_size(), embedding_size=16, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=64)
    rm = RewardModel.from_backbone(config, tokenizer=word_tokenizer(chat_template=CHATML)).eval()
    ids, mask, types = pad_batch(rm.encode(ITEMS), rm.pad_id)
    embeds = rm.backbone.get_input_embeddings()(ids).detach().requires_grad_(True)  # (N, T, 16)
    reward = rm(None, mask, types, inputs_embeds=embeds)
    torch.testing.assert_close(reward.detach(), rm.score(ITEMS), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(N, T, 16\)"):
        rm(None, mask, types, inputs_embeds=torch.zeros(*ids.shape, 32))


def test_armo_forward_with_inputs_embeds_reads_the_gate_from_the_ids():
    from mmreward.text.armo import ArmoRewardModel, ArmoRMConfig

    tok = word_tokenizer(chat_template=CHATML)
    torch.manual_seed(0)
    config = ArmoRMConfig(backbone={**llama_config().to_dict(), "model_type": "llama"}, input_format="chat",
                          max_length=64, num_objectives=3, gating_hidden_dim=8, gating_n_hidden=1,
                          gating_pattern=tok.encode("<|im_end|> <|im_start|> assistant", add_special_tokens=False))
    armo = ArmoRewardModel(config, tok).eval()
    ids, mask, _ = pad_batch(armo.encode(ITEMS), armo.pad_id)
    embeds = armo.backbone.get_input_embeddings()(ids).detach().requires_grad_(True)
    reward = armo(ids, mask, inputs_embeds=embeds)
    torch.testing.assert_close(reward.detach(), armo.score(ITEMS), atol=1e-5, rtol=1e-5)
    reward.sum().backward()
    assert embeds.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="ArmoRM with inputs_embeds needs input_ids too"):
        armo(None, mask, inputs_embeds=embeds)


def test_a_written_message_list_is_told_from_text_in_one_pass():
    """The check runs on every string a client sends the server: it was one regex with two `.*`, quadratic in
    the length (a 512 KB response of repeated '"role": ' took seconds); a 4 MB one is read in one pass now."""
    from mmreward.core.inputs import _is_written_message_list as written

    assert written("[{'role': 'user', 'content': 'hi'}]")
    assert written(' [ {"content": "x", "role": "user"} ,\n {"role": "assistant", "content": "y"} ] ')
    for text in ('[{"role": "user"}]', 'see [{"role": "user", "content": "x"}]', '[{"a": 1, "b": 2}]',
                 '[{"role": "user", "content": "x"}] and more', "plain text", ""):
        assert not written(text), text
    long = '[{"role": ' + '"role": ' * (1 << 19)
    assert not written(long) and written(long + "}]")
