"""Published text RM layouts through `mmreward.load`: transformers sequence classifiers (parity with
`AutoModelForSequenceClassification` on identical tiny random weights), folders of mmreward 0.1, and
the round trip save → load → identical scores for every text RM kind."""
import json
import os

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from safetensors.torch import load_file, save_file  # noqa: E402
from text_rm_fixtures import (BOS_TEMPLATE, CHATML, bert_config, deberta_v2_config, distilbert_config,  # noqa: E402
                              electra_config, llama_config, mpnet_config, qwen2_config, roberta_config,
                              save_classifier, save_legacy_folder, word_tokenizer, xlm_roberta_config)

import mmreward  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402
from mmreward.text import RewardModel  # noqa: E402

PROMPTS = ["what is two plus three", "a", "b c d e", "what is the answer to a"]
RESPONSES = ["five", "b c a b d d c", "six", "seven seven seven"]
ITEMS = [TextPair(p, r) for p, r in zip(PROMPTS, RESPONSES)]

ENCODERS = {  # name -> (config, tokenizer): the OpenAssistant convention, tokenizer(prompt, response)
    "bert": (bert_config, lambda: word_tokenizer(pair=True)),
    "deberta-v2": (deberta_v2_config, lambda: word_tokenizer(pair=True)),
    "roberta": (roberta_config, lambda: word_tokenizer(pair=True, types=False)),  # type_vocab_size 1
    "xlm-roberta": (xlm_roberta_config, lambda: word_tokenizer(pair=True, types=False)),
    "electra": (electra_config, lambda: word_tokenizer(pair=True)),  # OpenAssistant's electra-large RM
    "distilbert": (distilbert_config, lambda: word_tokenizer(pair=True, types=False)),  # no token types
    "mpnet": (mpnet_config, lambda: word_tokenizer(pair=True, types=False)),
}
DECODERS = {  # name -> (config, tokenizer): the Skywork-Reward-V2 convention, the chat template
    "llama": (llama_config, lambda: word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)),
    "qwen2": (qwen2_config, lambda: word_tokenizer(chat_template=CHATML)),
}


def transformers_encoder_scores(seq, tok):
    enc = tok(PROMPTS, RESPONSES, padding=True, return_tensors="pt")
    with torch.no_grad():
        return seq(**enc).logits[:, 0]


def transformers_decoder_scores(seq, tok):
    """Skywork-Reward-V2's model card: render the conversation, drop a duplicate BOS, tokenise, one
    conversation at a time."""
    out = []
    for p, r in zip(PROMPTS, RESPONSES):
        text = tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                       tokenize=False)
        if tok.bos_token and text.startswith(tok.bos_token):
            text = text[len(tok.bos_token):]
        with torch.no_grad():
            out.append(seq(**tok(text, return_tensors="pt")).logits[0, 0])
    return torch.stack(out)


@pytest.mark.parametrize("name", sorted(ENCODERS) + sorted(DECODERS))
def test_sequence_classifier_parity(tmp_path, name):
    make_config, make_tok = {**ENCODERS, **DECODERS}[name]
    seq = save_classifier(tmp_path, make_config(), make_tok())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path))  # as a user of the published model loads it
    rm = mmreward.load(str(tmp_path))
    assert isinstance(rm, RewardModel) and not rm.training
    expected = (transformers_encoder_scores if name in ENCODERS else transformers_decoder_scores)(seq, tok)
    got = rm.score(ITEMS, batch_size=3)  # batched, padded, sorted by length
    assert got.dtype == torch.float32 and expected.std() > 1e-3  # the inputs are told apart
    assert (got - expected).abs().max().item() <= 1e-4, (got, expected)
    assert rm.config.input_format == ("pair" if name in ENCODERS else "chat")
    assert rm.config.pooling == ("first" if name in ENCODERS else "last_non_pad")


def _rewrite_weights(folder, fn):
    path = os.path.join(folder, "model.safetensors")
    state = fn(load_file(path))
    save_file(state, path, metadata={"format": "pt"})


def test_wrong_or_partial_classifier_folders_are_refused(tmp_path):
    tok = word_tokenizer(pair=True)
    save_classifier(tmp_path / "nohead", bert_config(), tok)
    _rewrite_weights(tmp_path / "nohead", lambda s: {k: v for k, v in s.items() if not k.startswith("classifier.")})
    with pytest.raises(CheckpointError, match=r"classification head weights \['classifier.bias', 'classifier.weight'\] "
                                              "are missing"):
        mmreward.load(str(tmp_path / "nohead"))
    save_classifier(tmp_path / "prefix", bert_config(), tok)
    _rewrite_weights(tmp_path / "prefix", lambda s: {k.replace("bert.", "encoder_model.", 1): v for k, v in s.items()})
    with pytest.raises(CheckpointError, match="wrong key prefix: the backbone weights are stored under 'encoder_model.' "
                                              "but BertForSequenceClassification expects 'bert.'"):
        mmreward.load(str(tmp_path / "prefix"))
    cfg = bert_config()
    cfg.num_labels = 2
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(str(tmp_path / "two"))
    tok.save_pretrained(str(tmp_path / "two"))
    with pytest.raises(CheckpointError, match="a classifier with 2 labels"):
        mmreward.load(str(tmp_path / "two"))
    save_classifier(tmp_path / "notok", bert_config(), tok)
    os.remove(tmp_path / "notok" / "tokenizer.json")
    with pytest.raises(CheckpointError, match="has no tokenizer files"):
        mmreward.load(str(tmp_path / "notok"))
    save_classifier(tmp_path / "noweights", bert_config(), tok)
    os.remove(tmp_path / "noweights" / "model.safetensors")
    with pytest.raises(CheckpointError, match="has no weights"):
        mmreward.load(str(tmp_path / "noweights"))


def _ours(kind):
    torch.manual_seed(0)
    if kind == "bert-mean-joined":
        return RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer())
    if kind == "bert-first-pair":
        return RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer(pair=True), pooling="first")
    return RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer(chat_template=CHATML))  # llama-last-chat


KINDS = ["bert-mean-joined", "bert-first-pair", "llama-last-chat", "legacy", "seq-bert", "seq-deberta-v2",
         "seq-roberta", "seq-llama", "seq-qwen2"]


def _model(kind, folder):
    if kind.startswith("seq-"):
        make_config, make_tok = {**ENCODERS, **DECODERS}[kind[4:]]
        save_classifier(folder, make_config(), make_tok())
        return mmreward.load(str(folder))
    if kind == "legacy":
        save_legacy_folder(folder, _ours("llama-last-chat"))
        return mmreward.load(str(folder))
    return _ours(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_save_load_gives_identical_scores(tmp_path, kind):
    rm = _model(kind, tmp_path / "source")
    before = rm.score(ITEMS)
    rm.save_pretrained(str(tmp_path / "saved"))
    body = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert body["model_type"] == "text_reward_model" and body["config"]["max_length"] == rm.config.max_length
    assert {"config.json", "model.safetensors", "manifest.json", "tokenizer"} == set(os.listdir(tmp_path / "saved"))
    loaded = mmreward.load(str(tmp_path / "saved"))
    assert type(loaded) is RewardModel and loaded.config_dict() == rm.config_dict()
    torch.testing.assert_close(loaded.score(ITEMS), before, atol=0, rtol=0)


def test_legacy_folder_loads_with_its_settings(tmp_path):
    rm = _ours("llama-last-chat")
    save_legacy_folder(tmp_path, rm)
    loaded = RewardModel.from_pretrained(str(tmp_path))
    assert loaded.config.truncation == "keep_end" and loaded.config.pooling == "last"
    assert loaded.config.max_length == 64  # the tokenizer's / backbone's limit: 0.1 did not record one
    torch.testing.assert_close(loaded.score(ITEMS), rm.score(ITEMS), atol=1e-6, rtol=0)
    save_legacy_folder(tmp_path / "notok", rm)
    os.remove(tmp_path / "notok" / "tokenizer.json")
    with pytest.raises(CheckpointError, match="has no tokenizer files"):
        mmreward.load(str(tmp_path / "notok"))
    with open(tmp_path / "model.safetensors", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CheckpointError, match="truncated"):
        mmreward.load(str(tmp_path))


# ---------------------------------------------------------------- Qwen2.5-Math-RM (remote code in its release)
def test_qwen_math_rm_scores_as_its_card(tmp_path):
    """A tiny Qwen2ForRewardModel (the release's module names: ``model``, ``score`` = Linear → ReLU →
    Linear(1)) saved by transformers; the card's computation: chat [system, user, assistant] rendered,
    ``encode(add_special_tokens=False)``, the score at the last token."""
    from torch import nn
    from transformers import Qwen2Model, Qwen2PreTrainedModel

    from mmreward.text.prm.published import QWEN_PRM_SYSTEM as QWEN_MATH_SYSTEM

    class Qwen2ForRewardModel(Qwen2PreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.model = Qwen2Model(config)
            self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(),
                                       nn.Linear(config.hidden_size, 1))
            self.post_init()

        def forward(self, input_ids):
            return self.score(self.model(input_ids).last_hidden_state)[:, -1, 0]

    from tokenizers import processors

    tok = word_tokenizer(chat_template=CHATML + "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A")  # Qwen adds no special tokens
    torch.manual_seed(0)
    ref = Qwen2ForRewardModel(qwen2_config()).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.3)
    ref.config.auto_map = {"AutoModel": "modeling_qwen2_rm.Qwen2ForRewardModel"}
    ref.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path))  # as the card loads it
    want = []
    for p, r in zip(PROMPTS, RESPONSES):
        chat = [{"role": "system", "content": QWEN_MATH_SYSTEM}, {"role": "user", "content": p},
                {"role": "assistant", "content": r}]
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
        with torch.no_grad():
            want.append(ref(tok.encode(text, return_tensors="pt", add_special_tokens=False))[0])
    want = torch.stack(want)
    rm = mmreward.load(str(tmp_path))
    assert rm.config.system_prompt == QWEN_MATH_SYSTEM and rm.config.pooler_act == "relu"
    got = rm.score(ITEMS, batch_size=3)
    assert want.std() > 1e-3 and float((got - want).abs().max()) <= 1e-4, (got, want)
    # a conversation that brings its own system turn keeps it
    own = [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPTS[0]},
           {"role": "assistant", "content": RESPONSES[0]}]
    text = tok.apply_chat_template(own, tokenize=False)
    with torch.no_grad():
        mine = ref(tok.encode(text, return_tensors="pt", add_special_tokens=False))[0]
    assert float((rm.score([TextPair(None, own)])[0] - mine).abs()) <= 1e-4
    with pytest.raises(ValueError, match="system_prompt.*chat"):
        from mmreward.text.reward_model import RewardModelConfig
        RewardModelConfig(backbone={"model_type": "bert"}, input_format="joined", system_prompt="x")
    # the 72B release is bf16: it loads as saved, not as an fp32 copy twice its size
    _rewrite_weights(tmp_path, lambda s: {k: v.to(torch.bfloat16) for k, v in s.items()})
    rm = mmreward.load(str(tmp_path))
    assert {p.dtype for p in rm.parameters()} == {torch.bfloat16}
    assert float((rm.score(ITEMS) - want).abs().max()) <= 0.05 * float(want.abs().max())


def _shard(folder):
    """Split a saved classifier's model.safetensors into two shards and an index, as large releases are."""
    state = load_file(os.path.join(folder, "model.safetensors"))
    os.remove(os.path.join(folder, "model.safetensors"))
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[:len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in halves.items():
        save_file({k: state[k] for k in keys}, os.path.join(folder, shard), metadata={"format": "pt"})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {k: s for s, keys in halves.items() for k in keys}}, f)
    return halves


def test_damaged_sharded_classifier_folders_are_named_not_filled_at_random(tmp_path):
    tok = word_tokenizer(pair=True)
    save_classifier(tmp_path / "ok", bert_config(), tok)
    expected = mmreward.load(str(tmp_path / "ok")).score(ITEMS)
    # an index left from an older sharded save beside model.safetensors: transformers reads the single file
    with open(tmp_path / "ok" / "model.safetensors.index.json", "w") as f:
        json.dump({"metadata": {}, "weight_map": {"bert.pooler.dense.weight": "model-00001-of-00009.safetensors"}}, f)
    torch.testing.assert_close(mmreward.load(str(tmp_path / "ok")).score(ITEMS), expected, atol=0, rtol=0)
    save_classifier(tmp_path / "sharded", bert_config(), tok)
    halves = _shard(tmp_path / "sharded")
    torch.testing.assert_close(mmreward.load(str(tmp_path / "sharded")).score(ITEMS), expected, atol=0, rtol=0)
    # a shard the index places a tensor in, without it: transformers would start it at random, silently
    second = tmp_path / "sharded" / "model-00002-of-00002.safetensors"
    dropped = halves[second.name][0]
    save_file({k: v for k, v in load_file(second).items() if k != dropped}, second, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"places 1 tensor\(s\) in {second.name} that the shard does not hold, "
                                              rf"e\.g\. \['{dropped}'\]"):
        mmreward.load(str(tmp_path / "sharded"))
    os.remove(second)  # a download that stopped part-way
    with pytest.raises(CheckpointError, match=rf"missing weights file .*{second.name}: model.safetensors.index.json names 2 shard"):
        mmreward.load(str(tmp_path / "sharded"))


def test_a_wrong_shape_names_the_tensor_and_both_shapes(tmp_path):
    key = "bert.encoder.layer.0.attention.self.query.weight"
    save_classifier(tmp_path / "st", bert_config(), word_tokenizer(pair=True))
    _rewrite_weights(tmp_path / "st", lambda s: {**s, key: torch.zeros(32, 16)})
    with pytest.raises(CheckpointError, match=rf"{key} has shape \(32, 16\) in the weights but "
                                              r"BertForSequenceClassification of its config.json expects \(32, 32\)"):
        mmreward.load(str(tmp_path / "st"))
    save_classifier(tmp_path / "bin", bert_config(), word_tokenizer(pair=True))  # pytorch_model.bin only
    state = load_file(tmp_path / "bin" / "model.safetensors")
    os.remove(tmp_path / "bin" / "model.safetensors")
    torch.save({**state, "classifier.weight": torch.zeros(2, 32)}, tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"classifier.weight has shape \(2, 32\) in the weights but .* expects \(1, 32\)"):
        mmreward.load(str(tmp_path / "bin"))


def test_unused_tensors_are_stated_and_a_config_without_labels_names_the_fix(tmp_path):
    save_classifier(tmp_path / "extra", bert_config(), word_tokenizer(pair=True))
    expected = mmreward.load(str(tmp_path / "extra")).score(ITEMS)
    _rewrite_weights(tmp_path / "extra", lambda s: {**s, "lm_head.weight": torch.zeros(5, 32)})
    with pytest.warns(UserWarning, match=r"1 tensor\(s\) that BertForSequenceClassification does not use are ignored, "
                                         r"e\.g\. \['lm_head\.weight'\]"):
        rm = mmreward.load(str(tmp_path / "extra"))
    torch.testing.assert_close(rm.score(ITEMS), expected, atol=0, rtol=0)
    # a hand-written config.json without num_labels / id2label is 2 labels to transformers; the head says 1
    save_classifier(tmp_path / "nolabels", llama_config(), word_tokenizer(bos=True, chat_template=BOS_TEMPLATE))
    path = tmp_path / "nolabels" / "config.json"
    body = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("id2label", "label2id", "num_labels")}
    path.write_text(json.dumps(body))
    with pytest.raises(CheckpointError, match=r"sets neither num_labels nor id2label, which transformers reads as 2 "
                                              r"labels, but its head score.weight has shape \(1, 32\).*add \"num_labels\": 1"):
        mmreward.load(str(tmp_path / "nolabels"))


def test_a_classifier_transformers_cannot_build_is_named(tmp_path):
    """VideoScore's Idefics2ForSequenceClassification: transformers' raw "Unrecognized configuration class …
    for this kind of AutoModel" named no folder; now one error naming it and the reason."""
    folder = tmp_path / "videoscore"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "idefics2", "architectures":
                                                    ["Idefics2ForSequenceClassification"], "num_labels": 1}))
    with pytest.raises(CheckpointError, match=r"videoscore: its config.json names Idefics2ForSequenceClassification, "
                                              r"but transformers has no sequence-classification class for model_type "
                                              r"'idefics2'"):
        mmreward.load(str(folder))


def test_a_decoder_classifier_with_pad_eos_reads_where_transformers_reads(tmp_path):
    """TRL pads with eos when the tokenizer has no pad token (Llama, Mistral, GPT-2) and sets the model's
    pad_token_id to it; with a chat template that ends turns with eos, transformers' classifier (the one the run
    trained) reads the token before those eos. mmreward read the last token: another score (0.90 vs 0.74)."""
    from text_rm_fixtures import BOS_TEMPLATE, llama_config, save_classifier, word_tokenizer

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    tok.pad_token = tok.eos_token
    cfg = llama_config()
    cfg.pad_token_id = tok.eos_token_id
    seq = save_classifier(tmp_path / "rm", cfg, tok)
    rm = mmreward.load(str(tmp_path / "rm"))
    rows = [{"prompt": "what is two plus three", "response": "five"}, {"prompt": "say a", "response": "b c d e"}]
    encoded = rm.encode(rows)
    assert all(e.ids[-1] == tok.eos_token_id for e in encoded)  # the texts end with the pad (= eos) token
    with torch.no_grad():
        want = torch.stack([seq(input_ids=torch.tensor([e.ids])).logits[0, 0] for e in encoded])
    torch.testing.assert_close(rm.score(rows, batch_size=2), want, atol=1e-5, rtol=0)
    again = tmp_path / "saved"
    rm.save_pretrained(str(again))  # the reading rule is kept when the model is saved as mmreward's own
    torch.testing.assert_close(mmreward.load(str(again)).score(rows), want, atol=1e-5, rtol=0)


def test_soft_token_rewards_of_a_last_non_pad_model_read_the_token_score_reads(tmp_path):
    """inputs_embeds alone read the last mask position (the trailing eos of a pad = eos model) while score read the
    token before it: the differentiable reward differed from score. Ids beside the embeddings locate it."""
    from text_rm_fixtures import BOS_TEMPLATE, llama_config, save_classifier, word_tokenizer

    from mmreward.text.data import pad_batch

    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    tok.pad_token = tok.eos_token
    cfg = llama_config()
    cfg.pad_token_id = tok.eos_token_id
    save_classifier(tmp_path / "rm", cfg, tok)
    rm = mmreward.load(str(tmp_path / "rm")).requires_grad_(False)
    rows = [{"prompt": "what is two plus three", "response": "five"}, {"prompt": "say a", "response": "b c d e"}]
    ids, mask, _ = pad_batch(rm.encode(rows), rm.pad_id)
    embeds = rm.backbone.get_input_embeddings()(ids).clone().requires_grad_(True)
    soft = rm(ids, mask, inputs_embeds=embeds)
    torch.testing.assert_close(soft.detach(), rm.score(rows), atol=1e-5, rtol=0)
    soft.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"pass input_ids with inputs_embeds to locate it"):
        rm(None, mask, inputs_embeds=embeds)
