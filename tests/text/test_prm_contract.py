"""The PRM model contract: published layouts (Math-Shepherd, Qwen2.5-Math-PRM, Skywork-o1-Open-PRM, RLHFlow) read
by ``mmreward.load`` score exactly as their official code does; every PRM type round-trips through
save_pretrained → mmreward.load; folders saved by mmreward 0.1 still load; wrong or partial folders and
over-long inputs are refused with messages naming what is wrong.

Each published folder is a tiny random model written by transformers' own ``save_pretrained`` from a
class with the official module names (so the key layout and config.json are the official ones); the
official computation is re-run from the model card / inference repository code (cited in docs/prm.md).
"""
import dataclasses
import json
import os
import re
import shutil

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mmreward  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import StepSolution  # noqa: E402
from mmreward.text.prm import published  # noqa: E402
from mmreward.text.prm.model import ProcessRewardModel  # noqa: E402
from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama  # noqa: E402

TOL = 1e-4  # |Δ| of step scores vs the official computation, fp32

PROBLEMS = ["What is 3 + 4 - 2 ?", "Sue has 18 pink flamingos and takes back 6 . How many are left ?",
            "What is 5 - 1 ?"]
SOLUTIONS = [
    StepSolution(PROBLEMS[0], ["3 + 4 = 7 .", "7 - 2 = 5 .", "The answer is 5 ."]),
    StepSolution(PROBLEMS[1], ["18 - 6 = 12 .", "The answer is 13 ."]),
    StepSolution(PROBLEMS[2], ["5 - 1 = 4 ."]),
    StepSolution(PROBLEMS[0], ["3 + 4 = 8 .", "8 - 2 = 6 .", "6 is the answer .", "The answer is 6 ."]),
]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


# ---------------------------------------------------------------- tiny tokenizers and models
def sentencepiece_like_tokenizer(corpus):
    """Mistral-like: words with ``▁`` prefixes (SentencePiece's dummy prefix), ``\\n`` on its own, BOS
    added by ``encode``; a word-level vocabulary over ``corpus``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\n"), "isolated"),
                                   pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)])
    words = sorted({w for text in corpus for w, _ in pre.pre_tokenize_str(text)})
    vocab = {t: i for i, t in enumerate(["<s>", "</s>", "<unk>"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def byte_bpe_tokenizer(corpus, bos=None):
    """Qwen-like: byte-level BPE trained on ``corpus`` (every text encodes), ``<|im_start|>`` /
    ``<|im_end|>`` / ``<extra_0>`` special tokens and a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=specials[1:])
    out.chat_template = CHAT_TEMPLATE
    return out


def _qwen2_config(tok, **kw):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, **kw)


def _randomise(module: nn.Module, seed: int) -> None:
    """Random weights for every parameter (biases too), small enough that scores stay away from 0 / 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if "norm" not in name else 0.1) + (1.0 if "norm" in name else 0.0))


def _qwen_classes():
    from transformers import Qwen2Model, Qwen2PreTrainedModel

    class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
        """modeling_qwen2_rm.py of Qwen/Qwen2.5-Math-PRM-7B (as vLLM's qwen2_rm.py mirrors it): the Qwen2
        backbone ``model`` and ``score = Sequential(Linear(H, H), ReLU(), Linear(H, 2))``."""

        def __init__(self, config):
            super().__init__(config)
            self.model = Qwen2Model(config)
            H = config.hidden_size
            self.score = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, 2))
            self.post_init()

        def forward(self, input_ids, attention_mask=None):
            return (self.score(self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state),)

    class ValueHead(nn.Module):  # skywork-o1-prm-inference model_utils/prm_model.py
        def __init__(self, config):
            super().__init__()
            self.dropout = nn.Dropout(0.1)
            self.summary = nn.Linear(config.hidden_size, 1)

        def forward(self, hidden):
            return self.summary(self.dropout(hidden))

    class Qwen2ForPrmModel(Qwen2PreTrainedModel):
        """Skywork's PRM_MODEL: a Qwen2 causal LM (``model``, ``lm_head``) + ``v_head``; the value is read
        from the last hidden state (``hidden_states[-1]``) and ``return_probs`` applies a sigmoid."""

        def __init__(self, config):
            super().__init__(config)
            self.model = Qwen2Model(config)
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            self.v_head = ValueHead(config)
            self.post_init()

        def forward(self, input_ids, attention_mask=None):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return torch.sigmoid(self.v_head(hidden).squeeze(-1))

    return Qwen2ForProcessRewardModel, Qwen2ForPrmModel


# ---------------------------------------------------------------- official computations
def official_math_shepherd(folder, solutions):
    """peiyi9979/math-shepherd-mistral-7b-prm model card: candidate_tokens = encode("+ -")[1:],
    step_tag_id = encode("ки")[-1], input f"{question} {output}", softmax over the two logits [:, :, 0]."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    candidate_tokens = tokenizer.encode("+ -")[1:]
    step_tag_id = tokenizer.encode("ки")[-1]
    out = []
    for sol in solutions:
        output = "\n".join(f"{s} ки" for s in sol.steps)
        input_id = torch.tensor([tokenizer.encode(f"{sol.problem} {output}")])
        with torch.no_grad():
            logits = model(input_id).logits[:, :, candidate_tokens]
            scores = logits.softmax(dim=-1)[:, :, 0]
            out.append(scores[input_id == step_tag_id])
    return out


def official_qwen_prm(folder, solutions, cls):
    """Qwen/Qwen2.5-Math-PRM-7B model card: chat of system / query / "<extra_0>".join(steps) + "<extra_0>",
    make_step_rewards: softmax over the 2 labels, P(label 1) at every <extra_0>."""
    import torch.nn.functional as F
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = cls.from_pretrained(folder).eval()

    def make_step_rewards(logits, token_masks):
        probabilities = F.softmax(logits, dim=-1)
        probabilities = probabilities * token_masks.unsqueeze(-1)  # bs, seq_len, num_labels
        all_scores_res = []
        for i in range(probabilities.size(0)):
            sample = probabilities[i]  # seq_len, num_labels
            positive_probs = sample[sample != 0].view(-1, 2)[:, 1]  # valid_tokens, num_labels
            all_scores_res.append(positive_probs.cpu().tolist())
        return all_scores_res

    out = []
    for sol in solutions:
        messages = [{"role": "system", "content": published.QWEN_PRM_SYSTEM}, {"role": "user", "content": sol.problem},
                    {"role": "assistant", "content": "<extra_0>".join(sol.steps) + "<extra_0>"}]
        conversation_str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        input_ids = tokenizer.encode(conversation_str, return_tensors="pt")
        with torch.no_grad():
            outputs = model(input_ids=input_ids)
        step_sep_id = tokenizer.encode("<extra_0>")[0]
        token_masks = input_ids == step_sep_id
        out.append(torch.tensor(make_step_rewards(outputs[0], token_masks)[0]))
    return out


def official_skywork(folder, solutions, cls):
    """skywork-o1-prm-inference README + model_utils/io_utils.py: prepare_input(problem, response,
    step_token="\\n"), prepare_batch_input_for_model (right padding), sigmoid of the value head,
    derive_step_rewards at the reward flags."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = cls.from_pretrained(folder).eval()

    def prepare_input(problem, response, tokenizer, step_token):
        prompt_ids = tokenizer.encode(tokenizer.bos_token + problem + "\n")
        response_ids, reward_flags = [], [0] * len(prompt_ids)
        step_token_id = tokenizer.encode(step_token)[-1]
        for step in response.split(step_token):
            step_ids = tokenizer.encode(step) if step != "" else []
            step_ids += [step_token_id]
            flag = [0] * len(step_ids)
            flag[-1] = 1
            response_ids.extend(step_ids)
            reward_flags.extend(flag)
        return prompt_ids + response_ids, reward_flags

    rows = [prepare_input(s.problem, "\n".join(s.steps), tokenizer, "\n") for s in solutions]
    pad = torch.nn.utils.rnn.pad_sequence
    input_ids = pad([torch.LongTensor(ids) for ids, _ in rows], batch_first=True, padding_value=tokenizer.pad_token_id)
    attention_mask = pad([torch.LongTensor([1] * len(ids)) for ids, _ in rows], batch_first=True, padding_value=0)
    flags = pad([torch.LongTensor(f) for _, f in rows], batch_first=True, padding_value=0)
    with torch.no_grad():
        rewards = model(input_ids=input_ids, attention_mask=attention_mask)
    return [rewards[i][torch.nonzero(flags[i] == 1).view(-1)] for i in range(len(rows))]


LLAMA3_TEMPLATE = ("<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   "{{ m['content'] }}<|eot_id|>{% endfor %}"
                   "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def official_rlhflow(folder, solutions):
    """RLHFlow/RLHF-Reward-Modeling math/prm_evaluate.py (the Llama3.1-8B-PRM-*-Data cards): a user turn
    per step (problem + " " + the first), each answered "+"; for step k the conversation up to it,
    logits[:, -3, [+, -]] softmaxed, P(+)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    candidate_tokens = [tokenizer.encode("+")[-1], tokenizer.encode("-")[-1]]
    out = []
    for sol in solutions:
        conversation, scores = [], []
        for k, step in enumerate(sol.steps):
            text = sol.problem + " " + step if k == 0 else step
            conversation.append({"content": text, "role": "user"})
            conversation.append({"content": "+", "role": "assistant"})
            input_ids = tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)["input_ids"]
            with torch.no_grad():
                logits = model(input_ids).logits[:, -3, candidate_tokens]
            scores.append(logits.softmax(dim=-1)[:, 0][0])
        out.append(torch.stack(scores))
    return out


# ---------------------------------------------------------------- published folders
def _math_shepherd_tokenizer():
    return sentencepiece_like_tokenizer([f"{s.problem} " + "\n".join(f"{x} ки" for x in s.steps) for s in SOLUTIONS]
                                        + ["ки", "+ -"])


def _qwen_tokenizer(bos=None):
    return byte_bpe_tokenizer([published.QWEN_PRM_SYSTEM, "system user assistant\n"]
                              + [s.problem + " " + " ".join(s.steps) for s in SOLUTIONS], bos)


def write_math_shepherd(folder):
    from transformers import MistralConfig, MistralForCausalLM

    tok = _math_shepherd_tokenizer()
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    model = MistralForCausalLM(cfg)
    _randomise(model, 1)
    model.save_pretrained(folder, max_shard_size="20KB")  # sharded, as the 7B release
    tok.save_pretrained(folder)
    return folder


def write_qwen_prm(folder):
    cls, _ = _qwen_classes()
    tok = _qwen_tokenizer()
    model = cls(_qwen2_config(tok, pad_token_id=tok.pad_token_id))
    _randomise(model, 2)
    model.config.auto_map = {"AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
                             "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_skywork(folder):
    _, cls = _qwen_classes()
    tok = _qwen_tokenizer(bos="<|endoftext|>")
    model = cls(_qwen2_config(tok, pad_token_id=tok.pad_token_id, tie_word_embeddings=False))
    _randomise(model, 3)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_rlhflow(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["user assistant\n\n+ -"] + [s.problem + " " + " ".join(s.steps) for s in SOLUTIONS],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  additional_special_tokens=specials[2:])
    tok.chat_template = LLAMA3_TEMPLATE
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    _randomise(model, 4)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


WRITERS = {"math-shepherd": write_math_shepherd, "qwen2.5-math-prm": write_qwen_prm, "skywork-o1-open-prm": write_skywork,
           "rlhflow-prm": write_rlhflow}


FOLDER_NAMES = {"rlhflow-prm": "Llama3.1-8B-PRM-Deepseek-Data"}  # the release's repository name


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    return {name: write(str(root / FOLDER_NAMES.get(name, f"{name}-tiny"))) for name, write in WRITERS.items()}


def _official(name, folder, solutions):
    qwen_cls, sky_cls = _qwen_classes()
    if name == "math-shepherd":
        return official_math_shepherd(folder, solutions)
    if name == "qwen2.5-math-prm":
        return official_qwen_prm(folder, solutions, qwen_cls)
    if name == "rlhflow-prm":
        return official_rlhflow(folder, solutions)
    return official_skywork(folder, solutions, sky_cls)


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("name, input_format, head", [("math-shepherd", "math_shepherd", "lm"),
                                                      ("qwen2.5-math-prm", "qwen_prm", "mlp"),
                                                      ("skywork-o1-open-prm", "skywork_prm", "value"),
                                                      ("rlhflow-prm", "rlhflow_prm", "lm")])
def test_published_layout_scores_equal_the_official_code(folders, name, input_format, head):
    from mmreward.registry import detect

    folder = folders[name]
    assert detect(folder)[0] == name
    prm = mmreward.load(folder)  # no flags: the layout is recognised from the folder
    assert isinstance(prm, ProcessRewardModel) and (prm.config.input_format, prm.config.head) == (input_format, head)
    ours = prm.score_parts(SOLUTIONS, batch_size=3)  # batched, right-padded
    ref = _official(name, folder, SOLUTIONS)
    for sol, a, b in zip(SOLUTIONS, ours, ref):
        assert a.shape == (len(sol.steps),) == b.shape
        assert float((a - b.float()).abs().max()) <= TOL
    allsteps = torch.cat(ours)
    assert float(allsteps.min()) < 0.9 and float(allsteps.max()) > 0.1 and float(allsteps.std()) > 0.01  # not saturated
    torch.testing.assert_close(prm.score(SOLUTIONS), torch.stack([s.min() for s in ours]))  # aggregation: min


def test_layouts_are_told_apart(folders):
    for name, folder in folders.items():
        cfg = json.load(open(os.path.join(folder, "config.json")))
        hits = [n for n, fn in (("math-shepherd", published.is_math_shepherd), ("qwen2.5-math-prm", published.is_qwen_prm),
                                ("skywork-o1-open-prm", published.is_skywork_prm), ("rlhflow-prm", published.is_rlhflow_prm))
                if fn(folder, cfg)]
        assert hits == [name]
    # a causal LM is Math-Shepherd only when named so (the release has no other marker) …
    plain = shutil.copytree(folders["math-shepherd"], os.path.join(os.path.dirname(folders["math-shepherd"]), "some-lm"))
    cfg = json.load(open(os.path.join(plain, "config.json")))
    assert not published.is_math_shepherd(plain, cfg)
    cache = os.path.join(os.path.dirname(plain), "models--peiyi9979--math-shepherd-mistral-7b-prm", "snapshots", "0abc")
    assert published.is_math_shepherd(shutil.copytree(plain, cache), cfg)  # a hub cache snapshot
    assert published.is_math_shepherd(plain, {**cfg, "_name_or_path": "peiyi9979/math-shepherd-mistral-7b-prm"})
    inside = shutil.copytree(plain, os.path.join(os.path.dirname(plain), "math-shepherd-runs", "policy-lm"))
    assert not published.is_math_shepherd(inside, cfg)  # only the folder's own name counts
    # … but its loader reads it under any name
    torch.testing.assert_close(published.load_math_shepherd(plain).score_parts(SOLUTIONS[:1]),
                               mmreward.load(folders["math-shepherd"]).score_parts(SOLUTIONS[:1]))
    # Skywork weights in a causal-LM config are recognised by their value head
    sky = shutil.copytree(folders["skywork-o1-open-prm"], os.path.join(os.path.dirname(plain), "sky-as-causal-lm"))
    cfg = json.load(open(os.path.join(sky, "config.json")))
    cfg["architectures"] = ["Qwen2ForCausalLM"]
    assert published.is_skywork_prm(sky, cfg)


# ---------------------------------------------------------------- wrong or partial folders
def _rewrite_weights(folder, edit):
    from safetensors.torch import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    save_file(edit(load_file(path)), path, metadata={"format": "pt"})


@pytest.mark.parametrize("name, edit, message", [
    ("qwen2.5-math-prm", lambda s: {k: v for k, v in s.items() if not k.startswith("score.2")},
     r"missing Qwen2ForProcessRewardModel head .*score\.2\.weight"),
    ("qwen2.5-math-prm", lambda s: {k.replace("model.", "transformer.", 1): v for k, v in s.items()},
     r"no backbone tensors under 'model\.'.*transformer"),
    ("qwen2.5-math-prm", lambda s: {k: v for k, v in s.items() if k != "model.layers.1.mlp.up_proj.weight"},
     r"missing 1 backbone tensor.*model\.layers\.1\.mlp\.up_proj\.weight"),
    ("qwen2.5-math-prm", lambda s: {**s, "value.weight": torch.zeros(3)}, r"not part of the Qwen2\.5-Math-PRM layout.*value\.weight"),
    ("skywork-o1-open-prm", lambda s: {k: v for k, v in s.items() if not k.startswith("v_head")},
     r"missing value head .*v_head\.summary\.weight"),
])
def test_wrong_or_partial_folders_are_refused(folders, tmp_path, name, edit, message):
    folder = shutil.copytree(folders[name], str(tmp_path / name))
    _rewrite_weights(folder, edit)
    with pytest.raises(CheckpointError, match=message):
        mmreward.load(folder)


@pytest.mark.parametrize("name, key, shape, want", [
    ("qwen2.5-math-prm", "score.0.weight", (32, 16), r"\(32, 32\)"),
    ("qwen2.5-math-prm", "score.2.bias", (3,), r"\(2,\)"),  # was cut to 2 without a word
    ("qwen2.5-math-prm", "model.layers.0.mlp.up_proj.weight", (64, 16), r"\(64, 32\)"),
    ("skywork-o1-open-prm", "v_head.summary.bias", (3,), r"\(1,\)"),  # was a RuntimeError from reshape
    ("skywork-o1-open-prm", "v_head.summary.weight", (1, 16), r"\(1, 32\)"),
])
def test_a_wrong_shape_is_named_as_in_the_files(folders, tmp_path, name, key, shape, want):
    folder = shutil.copytree(folders[name], str(tmp_path / name))
    _rewrite_weights(folder, lambda s: {**s, key: torch.zeros(shape)})
    with pytest.raises(CheckpointError, match=re.escape(f"{key} has shape {shape} in the weights") + ".* expects " + want):
        mmreward.load(folder)


@pytest.mark.parametrize("name", ["qwen2.5-math-prm", "rlhflow-prm"])
def test_a_chat_layout_without_its_chat_template_names_the_file(folders, tmp_path, name):
    """transformers saves the template as chat_template.jinja: a copy of only the tokenizer files loses it."""
    folder = shutil.copytree(folders[name], str(tmp_path / os.path.basename(folders[name])))
    os.remove(os.path.join(folder, "chat_template.jinja"))
    with pytest.raises(CheckpointError, match=re.escape(folder) + ": .*chat template.*chat_template.jinja"):
        mmreward.load(folder)


def test_missing_tokenizer_lm_head_and_pickled_weights(folders, tmp_path):
    folder = shutil.copytree(folders["qwen2.5-math-prm"], str(tmp_path / "qwen"))
    for f in os.listdir(folder):
        if f.startswith(("tokenizer", "special_tokens", "chat_template")):
            os.remove(os.path.join(folder, f))
    with pytest.raises(CheckpointError, match="has no tokenizer"):
        mmreward.load(folder)
    ms = shutil.copytree(folders["math-shepherd"], str(tmp_path / "math-shepherd"))
    index_path = os.path.join(ms, "model.safetensors.index.json")
    index = json.load(open(index_path))
    shard = index["weight_map"]["model.embed_tokens.weight"]
    os.rename(os.path.join(ms, shard), os.path.join(ms, "moved"))
    with pytest.raises(CheckpointError, match="missing weights file .*" + shard):
        mmreward.load(ms)
    os.rename(os.path.join(ms, "moved"), os.path.join(ms, shard))
    index["weight_map"].pop("lm_head.weight")  # a release without its LM head
    json.dump(index, open(index_path, "w"))
    with pytest.raises(CheckpointError, match="missing lm_head.weight"):
        mmreward.load(ms)
    # a pytorch_model.bin release reads with weights_only=True (tensors, no code)
    sky = shutil.copytree(folders["skywork-o1-open-prm"], str(tmp_path / "sky-bin"))
    from safetensors.torch import load_file

    torch.save(load_file(os.path.join(sky, "model.safetensors")), os.path.join(sky, "pytorch_model.bin"))
    os.remove(os.path.join(sky, "model.safetensors"))
    torch.testing.assert_close(mmreward.load(sky).score_parts(SOLUTIONS), mmreward.load(folders["skywork-o1-open-prm"]).score_parts(SOLUTIONS))
    os.remove(os.path.join(sky, "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match="has no weights"):
        mmreward.load(sky)


def test_tag_text_inside_a_step_is_an_error_not_a_shifted_score(folders):
    prm = mmreward.load(folders["qwen2.5-math-prm"])
    with pytest.raises(DataError, match=r"input 1: its tokens hold 3 step tags .* for 2 steps"):
        prm.score_parts([SOLUTIONS[0], StepSolution(PROBLEMS[2], ["5 - 1 = 4 .<extra_0>", "The answer is 5 ."])])


# ---------------------------------------------------------------- our own PRM types
def _ours(kind):
    tok = char_tokenizer("char")
    if kind == "lm":
        return ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, heads=2, seed=0), tok, max_length=160)
    if kind == "mlp":  # Qwen2.5-Math-PRM's head on a fresh backbone, its rows drawn at random (zeros score 0.5)
        prm = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, heads=2, seed=0), tok, head="mlp",
                                               max_length=160)
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in prm.head_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        return prm
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=160))
    return ProcessRewardModel.from_backbone(bert, tok, head="value", score="identity", aggregation="mean", max_length=160)


@pytest.mark.parametrize("kind", ["lm", "mlp", "value-identity", "math-shepherd", "qwen2.5-math-prm", "skywork-o1-open-prm"])
def test_save_then_mmreward_load_gives_identical_step_scores(folders, tmp_path, kind):
    prm = mmreward.load(folders[kind]) if kind in folders else _ours(kind.split("-")[0]).eval()
    sols = SOLUTIONS if kind in folders else [StepSolution("3 +4 -2", ["3+4=7", "7-2=5"]), StepSolution("5 -1", ["5-1=4"])]
    prm.save_pretrained(str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "manifest.json", "model.safetensors", "tokenizer"]
    again = mmreward.load(str(tmp_path / "m"))
    as_json = lambda cfg: json.loads(json.dumps(dataclasses.asdict(cfg)))  # noqa: E731 (JSON keys are strings)
    assert type(again) is ProcessRewardModel and as_json(again.config) == as_json(prm.config)
    for a, b in zip(again.score_parts(sols), prm.score_parts(sols)):
        assert torch.equal(a, b)
    assert torch.equal(again.score(sols), prm.score(sols))
    assert torch.equal(again.aggregate_parts(again.score_parts(sols)), again.score(sols))  # one forward for both


def test_folders_saved_by_mmreward_0_1_still_load(tmp_path):
    """The 0.1 layout: tokenizer/ + core.checkpoint.save_model (config.json with _mmreward.weights_bytes),
    config without the fields added since (aggregation, truncate, input_format, system_prompt)."""
    from mmreward.core.checkpoint import save_model

    prm = _ours("lm").eval()
    folder = str(tmp_path / "old")
    os.makedirs(folder)
    prm.tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
    old_fields = ("head", "backbone", "step_tag", "step_separator", "good_token", "bad_token", "score", "max_length")
    save_model(folder, prm.state_dict(), {"model_type": "process_reward_model",
                                          "config": {k: v for k, v in dataclasses.asdict(prm.config).items() if k in old_fields}})
    sols = [StepSolution("3 +4 -2", ["3+4=7", "7-2=5"])]
    again = mmreward.load(folder)
    assert torch.equal(again.score_parts(sols)[0], prm.score_parts(sols)[0])
    w = os.path.join(folder, "model.safetensors")
    open(w, "ab").write(b"0")
    with pytest.raises(CheckpointError, match="bytes but config.json expects"):
        mmreward.load(folder)


def test_over_long_inputs_raise_unless_truncation_is_asked_for(folders):
    prm = _ours("lm").eval()
    long = StepSolution("3 +4", ["3+4=7"] * 30)  # 1 + 5 + 30 * 9 tokens > 160
    with pytest.raises(DataError, match=r"input 1: problem \+ 30 steps are 276 tokens, more than max_length=160"):
        prm.score_parts([StepSolution("5 -1", ["5-1=4"]), long])
    prm.config.truncate = True
    parts = prm.score_parts([long])[0]
    kept = int((~torch.isnan(parts)).sum())
    assert 0 < kept < 30 and bool(torch.isnan(parts[kept:]).all())
    # the scored steps equal scoring only those steps; the aggregate uses them
    torch.testing.assert_close(parts[:kept], prm.score_parts([StepSolution("3 +4", ["3+4=7"] * kept)])[0])
    torch.testing.assert_close(prm.score([long]), parts[:kept].min().reshape(1))
    qwen = mmreward.load(folders["qwen2.5-math-prm"])
    qwen.config.max_length = 40
    with pytest.raises(DataError, match="input 0: .* more than max_length=40"):
        qwen.score_parts(SOLUTIONS[:1])


def test_score_takes_rows_and_checks_its_inputs():
    prm = _ours("lm").eval()
    rows = [{"problem": "3 +4 -2", "steps": ["3+4=7", "7-2=5"]}, {"question": "5 -1", "steps": [{"text": "5-1=4"}]}]
    assert [p.shape for p in prm.score_parts(rows)] == [(2,), (1,)]
    with pytest.raises(TypeError, match="takes a list of inputs"):
        prm.score(StepSolution("3", ["a"]))
    with pytest.raises(DataError, match="input 0: field 'steps' must be a non-empty list"):
        prm.score([{"problem": "3", "steps": []}])
    with pytest.raises(ValueError, match="batch_size"):
        prm.score(rows, batch_size=-1)
    with pytest.raises(ValueError, match="aggregation='prod' needs probabilities"):
        dataclasses.replace(_ours("value-identity").config, aggregation="prod")
