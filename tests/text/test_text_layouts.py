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
    assert rm.config.pooling == ("first" if name in ENCODERS else "last")


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
