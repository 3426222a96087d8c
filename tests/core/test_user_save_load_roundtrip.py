"""A user who saves and reloads reward models many ways: ``save_pretrained`` → ``mmreward.load`` gives the same
scores bit for bit, whatever the model was built from (a transformers module with its BERT pooler included), and
the meta device (``mmreward info --load --device meta``) describes a model without pretending to score or save."""
import os
import shutil
import sys

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "text"))

import mmreward  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402

ITEMS = [TextPair("what is two plus three", "five"), TextPair("a", "b c a b d"), TextPair("b c", "six")]


def _bert_rm_with_pooler():
    from text_rm_fixtures import bert_config, word_tokenizer
    from transformers import BertModel

    from mmreward.text import RewardModel

    torch.manual_seed(0)
    backbone = BertModel(bert_config())  # add_pooling_layer defaults to True
    assert backbone.pooler is not None
    return RewardModel.from_backbone(backbone, tokenizer=word_tokenizer())


def test_from_backbone_of_a_bert_module_with_its_pooler_reloads_bit_for_bit(tmp_path):
    from mmreward.core.model import load_weights
    from mmreward.text import RewardModel

    rm = _bert_rm_with_pooler()
    before = rm.score(ITEMS)
    folder = str(tmp_path / "rm")
    rm.save_pretrained(folder)
    assert not [k for k in load_weights(folder) if k.startswith("backbone.pooler.")]
    for loaded in (mmreward.load(folder), RewardModel.from_pretrained(folder)):
        assert torch.equal(loaded.score(ITEMS), before)
    # saved again into the folder it was loaded from, twice: still the same model
    again = mmreward.load(folder)
    again.save_pretrained(folder)
    again.save_pretrained(folder)
    assert torch.equal(mmreward.load(folder).score(ITEMS), before)


def test_a_folder_saved_with_the_unused_bert_pooler_still_loads(tmp_path):
    """Folders written before the pooler was dropped hold ``backbone.pooler.dense.*``: they never changed a
    score, and load as the model scored (not "unexpected 2 tensor(s)")."""
    from mmreward.core.model import load_weights, save_weights

    rm = _bert_rm_with_pooler()
    before = rm.score(ITEMS)
    folder, old = str(tmp_path / "rm"), str(tmp_path / "old")
    rm.save_pretrained(folder)
    shutil.copytree(folder, old)
    weights = load_weights(old)
    weights["backbone.pooler.dense.weight"] = torch.randn(32, 32)
    weights["backbone.pooler.dense.bias"] = torch.randn(32)
    save_weights(old, weights)
    os.remove(os.path.join(old, "manifest.json"))  # the file changed: a folder as an older save left it
    assert torch.equal(mmreward.load(old).score(ITEMS), before)


def test_the_meta_device_loads_to_describe_and_refuses_to_score_or_save(tmp_path):
    rm = _bert_rm_with_pooler()
    before = rm.score(ITEMS)
    folder = str(tmp_path / "rm")
    rm.save_pretrained(folder)
    meta = mmreward.load(folder, device="meta")  # what `mmreward info --load --device meta` does
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    with pytest.raises(ValueError, match="RewardModel.score: .*meta device"):
        meta.score(ITEMS)
    with pytest.raises(ValueError, match="RewardModel.save_pretrained: .*meta device"):
        meta.save_pretrained(folder)
    assert torch.equal(mmreward.load(folder).score(ITEMS), before)  # the saved folder is untouched


def test_serve_config_refuses_the_meta_device():
    from mmreward.serve.config import ServeConfig

    for device in ("meta", "META", torch.device("meta")):
        with pytest.raises(ValueError, match="ServeConfig.device .*meta device"):
            ServeConfig(device=device)
    assert ServeConfig(device="cpu").device == "cpu"


def test_a_model_cast_to_bf16_before_saving_reloads_in_bf16_and_scores_as_it_did(tmp_path):
    """``.to(torch.bfloat16)`` casts the rotary ``inv_freq`` buffers too, which are not saved; a model rebuilt in
    bf16 computes them in float32: the reloaded model said bf16 but scored differently in the last bits."""
    from mmreward.core.inputs import StepSolution
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("char")
    prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0), tok, max_length=160)
    prm = prm.to(torch.bfloat16)
    items = [StepSolution("3 +4 -2", ["3+4=7", "7-2=5"]), StepSolution("5 -1", ["5-1=4"]),
             StepSolution("1+1", ["1+1=2", "2", "done"])]
    before, parts = prm.score(items), prm.score_parts(items)
    folder = str(tmp_path / "prm")
    prm.save_pretrained(folder)
    for loaded in (mmreward.load(folder), ProcessRewardModel.from_pretrained(folder)):
        assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
        assert dict((n, b.dtype) for n, b in loaded.named_buffers()) == dict((n, b.dtype) for n, b in prm.named_buffers())
        assert torch.equal(loaded.score(items), before)
        assert all(torch.equal(a, b) for a, b in zip(loaded.score_parts(items), parts))
    # dtype= still casts everything
    assert {b.dtype for b in mmreward.load(folder, dtype="fp32").buffers() if b.is_floating_point()} == {torch.float32}


@pytest.mark.parametrize("kind", ["LlamaForCausalLM", "BertForMaskedLM"])
def test_from_backbone_of_a_model_with_an_lm_head_uses_its_base_model(tmp_path, kind):
    """An SFT checkpoint as ``AutoModelForCausalLM`` loads it (LM head tied to the embeddings): the reward head
    reads its base model's hidden states; before, every score failed with "'CausalLMOutputWithPast' object has no
    attribute 'last_hidden_state'"."""
    import transformers
    from text_rm_fixtures import bert_config, llama_config, word_tokenizer

    from mmreward.text import RewardModel

    torch.manual_seed(0)
    config = llama_config(tie_word_embeddings=True) if kind.startswith("Llama") else bert_config()
    lm = getattr(transformers, kind)(config)
    rm = RewardModel.from_backbone(lm, tokenizer=word_tokenizer())
    assert rm.backbone is lm.base_model
    before = rm.score(ITEMS)
    rm.save_pretrained(str(tmp_path / "rm"))
    assert torch.equal(mmreward.load(str(tmp_path / "rm")).score(ITEMS), before)


def test_from_backbone_refuses_a_sequence_classifier_whose_head_it_would_drop():
    from text_rm_fixtures import llama_config, word_tokenizer
    from transformers import LlamaForSequenceClassification

    from mmreward.text import RewardModel

    seq = LlamaForSequenceClassification(llama_config(num_labels=1))
    with pytest.raises(TypeError, match="LlamaForSequenceClassification.*trained head"):
        RewardModel.from_backbone(seq, tokenizer=word_tokenizer())


def test_saving_into_a_link_or_a_run_folder_names_the_folder_to_save_into(tmp_path):
    """Refusals that say where to save instead: a link (``latest -> v3``) names the folder it points to, and a
    training run's folder names its saved model folder."""
    from mmreward.core.folders import CheckpointError
    from text_rm_fixtures import llama_config, word_tokenizer

    from mmreward.text import RewardModel

    rm = RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer())
    real, link = tmp_path / "v3", tmp_path / "latest"
    rm.save_pretrained(str(real))
    os.symlink(real, link)
    with pytest.raises(CheckpointError, match=f"points to {real}.*name {real} itself"):
        rm.save_pretrained(str(link))
    run = tmp_path / "run"
    rm.save_pretrained(str(run / "model"))
    (run / "metrics.csv").write_text("step,loss\n")
    with pytest.raises(CheckpointError, match=f"its saved model folder is {run / 'model'}"):
        rm.save_pretrained(str(run))
    assert os.path.islink(link) and sorted(os.listdir(run)) == ["metrics.csv", "model"]
