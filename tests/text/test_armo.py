"""ArmoRM (RLHFlow/ArmoRM-Llama3-8B-v0.1) through ``mmreward.load`` without its remote code: a tiny
random ``LlamaForRewardModelWithGating`` with the official module names and forward (its
``modeling_custom.py`` written out here), saved by transformers, scores as the model card computes it;
the objectives, save / load, and refusals."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from transformers import LlamaConfig, LlamaModel, LlamaPreTrainedModel  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402
from mmreward.text.armo import ArmoRewardModel  # noqa: E402

LLAMA3_TEMPLATE = ("<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   "{{ m['content'] }}<|eot_id|>{% endfor %}"
                   "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
PAIRS = [TextPair("What is 3 + 4 ?", "It is 7 ."), TextPair("What is 3 + 4 ?", "8 , I think"),
         TextPair("Name a colour .", "Blue ."), TextPair("Say hi .", "hi hi hi hi")]
K = 5


def llama3_like_tokenizer():
    """Byte-level BPE with Llama-3's special tokens, a BOS post-processor and its chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    bpe = Tokenizer(models.BPE())
    # line breaks on their own, as Llama-3's pattern splits them ("\n\n" one piece before any text)
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\n+"), "isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["user assistant\n\n"] + [f"{p.prompt} {p.response}" for p in PAIRS],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", 0)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  additional_special_tokens=specials[2:])
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


class GatingNetwork(nn.Module):
    def __init__(self, in_features, out_features, bias=True, temperature=10, logit_scale=1.0, hidden_dim=1024,
                 n_hidden=3):
        super().__init__()
        self.temperature = temperature
        self.logit_scale = nn.Parameter(torch.ones(1) * logit_scale)
        layers = []
        for _ in range(n_hidden):
            layers.append(nn.Linear(in_features, hidden_dim))
            in_features = hidden_dim
        layers.append(nn.Linear(in_features, out_features, bias=bias))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        x = F.softmax(x / self.temperature, dim=1)
        return x * self.logit_scale[0]


class LlamaForRewardModelWithGating(LlamaPreTrainedModel):
    """modeling_custom.py of the release (the forward's score path, batch of one as its card runs it)."""

    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        config_dict = config.to_dict()
        self.num_objectives = config_dict.get("num_objectives", 19)
        self.regression_layer = nn.Linear(config.hidden_size, self.num_objectives, bias=False)
        self.post_init()
        eye = torch.zeros(self.num_objectives, self.num_objectives)
        eye[range(self.num_objectives), range(self.num_objectives)] = 1.0
        self.reward_transform_matrix = nn.Parameter(eye)
        self.reward_transform_matrix.requires_grad = False
        self.gating = GatingNetwork(config.hidden_size, config.num_objectives,
                                    temperature=config_dict.get("gating_temperature", 10),
                                    hidden_dim=config_dict.get("gating_hidden_dim", 1024),
                                    n_hidden=config_dict.get("gating_n_hidden", 3))

    def forward(self, input_ids, token_pattern):
        tokens_hidden_states = self.model(input_ids).last_hidden_state
        dummy_iterator = torch.arange(input_ids.shape[0])
        hidden_states = tokens_hidden_states[dummy_iterator, -1]  # pad_token_id None, batch 1: the last token
        rewards = self.regression_layer(hidden_states)

        def find_token_for_gating(lst):
            for j in range(len(lst) - len(token_pattern), -1, -1):
                if lst[j:j + len(token_pattern)] == token_pattern:
                    return j
            raise ValueError("Token pattern not found in the list.")

        gating_token_positions = [find_token_for_gating(ids.tolist()) for ids in input_ids]
        prompt_embedding = tokens_hidden_states[dummy_iterator, gating_token_positions, :]
        gating_output = self.gating(prompt_embedding)
        rewards_adjusted = rewards @ self.reward_transform_matrix
        return torch.sum(gating_output * rewards_adjusted, dim=1), rewards_adjusted


@pytest.fixture(scope="module")
def armo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ArmoRM-Llama3-8B-v0.1")
    tok = llama3_like_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, num_objectives=K,
                      gating_hidden_dim=16, gating_n_hidden=2, gating_temperature=10)
    torch.manual_seed(0)
    model = LlamaForRewardModelWithGating(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        model.reward_transform_matrix.copy_(torch.eye(K) + 0.2 * torch.randn(K, K))
        model.gating.logit_scale.fill_(1.7)
    model.config.auto_map = {"AutoModelForSequenceClassification": "modeling_custom.LlamaForRewardModelWithGating"}
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder), model, tok


def official_scores(model, tok):
    """The card: apply_chat_template([user, assistant]) → model(input_ids).score, one conversation at a time."""
    pattern = tok.encode("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False)
    scores, objectives = [], []
    for p in PAIRS:
        messages = [{"role": "user", "content": p.prompt}, {"role": "assistant", "content": p.response}]
        input_ids = tok.apply_chat_template(messages, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            score, rewards = model(input_ids, pattern)
        scores.append(score[0])
        objectives.append(rewards[0])
    return torch.stack(scores), torch.stack(objectives)


def test_armo_scores_and_objectives_equal_its_code(armo, tmp_path):
    from transformers import AutoTokenizer

    folder, model, _ = armo
    tok = AutoTokenizer.from_pretrained(folder)  # as its card loads it
    cfg = json.load(open(f"{folder}/config.json"))
    assert cfg["architectures"] == ["LlamaForRewardModelWithGating"] and "auto_map" in cfg
    rm = mmreward.load(folder)
    assert isinstance(rm, ArmoRewardModel) and rm.config.input_format == "chat"
    want, want_obj = official_scores(model, tok)
    got = rm.score(PAIRS, batch_size=3)  # batched and padded
    assert want.std() > 1e-3 and float((got - want).abs().max()) <= 1e-5, (got, want)
    torch.testing.assert_close(rm.objectives(PAIRS, batch_size=2), want_obj, atol=1e-5, rtol=1e-5)
    rm.save_pretrained(str(tmp_path / "ours"))
    again = mmreward.load(str(tmp_path / "ours"))
    assert again.model_type == "armo_rm" and torch.equal(again.score(PAIRS), rm.score(PAIRS))
    with pytest.raises(ValueError, match="fused_head=False"):
        rm(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long), return_hidden=True)


def test_armo_refuses_partial_folders_and_replies_without_a_prompt_turn(armo, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder, _, _ = armo
    partial = shutil.copytree(folder, tmp_path / "partial")
    state = load_file(f"{partial}/model.safetensors")
    del state["gating.logit_scale"]
    save_file(state, f"{partial}/model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing ArmoRM head tensor.*gating.logit_scale"):
        mmreward.load(str(partial))
    rm = mmreward.load(folder)
    no_turn = rm.tokenizer("just text", return_tensors="pt")["input_ids"]
    with pytest.raises(DataError, match="batch row 0 has no prompt turn before its reply"):
        rm(no_turn, torch.ones_like(no_turn))
    with pytest.raises(DataError, match="input 1 has no prompt turn before its reply"):
        rm.score([PAIRS[0], {"text": "a reply alone"}])


def test_text_commands_open_armo(armo, tmp_path, capsys):
    """RewardModel.from_pretrained (what `mmreward text score` uses) opens the release and a saved copy."""
    from mmreward.text import RewardModel

    folder, _, _ = armo
    rm = RewardModel.from_pretrained(folder)
    assert isinstance(rm, ArmoRewardModel)
    rm.save_pretrained(str(tmp_path / "saved"))
    assert isinstance(RewardModel.from_pretrained(str(tmp_path / "saved")), ArmoRewardModel)


def test_armo_fine_tunes_on_preferences(armo, tmp_path):
    """train_reward_model (the one text-RM loop, its default unfused loss) trains an ArmoRM: held-out
    accuracy on a rule that depends on the prompt (a colour for "Name a colour", a greeting for "Say hi")
    goes from chance to high."""
    import random

    from mmreward.text.train import RewardTrainConfig, evaluate_pairs, train_reward_model

    rng = random.Random(0)

    def pairs(n):
        out = []
        for i in range(n):
            k, colour = rng.randrange(1, 4), i % 2 == 0
            good, bad = ("Blue", "hi") if colour else ("hi", "Blue")
            out.append({"prompt": "Name a colour ." if colour else "Say hi .", "chosen": " ".join([good] * k),
                        "rejected": " ".join([bad] * k)})
        return out

    rm = mmreward.load(armo[0])
    train, held = pairs(64), pairs(32)
    before = evaluate_pairs(rm, held)["accuracy"]
    cfg = RewardTrainConfig(output_dir=str(tmp_path / "run"), max_steps=150, batch_size=8, lr=1e-3, warmup_steps=0,
                            log_every=100, save_every=0, progress=False, tensorboard=False)
    train_reward_model(rm, train, held, cfg)
    after = evaluate_pairs(rm, held)["accuracy"]
    assert before <= 0.75 and after >= 0.9, (before, after)


def test_a_wrong_shape_is_named_as_in_the_release(armo, tmp_path):
    """The error names the release's tensor (``regression_layer.weight``, ``model.*``), not ours."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder, _, _ = armo
    for key, shape in (("regression_layer.weight", (K, 16)), ("model.layers.1.mlp.up_proj.weight", (64, 16))):
        bad = shutil.copytree(folder, tmp_path / key)
        state = load_file(f"{bad}/model.safetensors")
        state[key] = torch.zeros(shape)
        save_file(state, f"{bad}/model.safetensors", metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match=rf"{key} has shape \({shape[0]}, 16\) in the weights but the ArmoRM "
                                                  rf"layout of its config.json expects \({shape[0]}, 32\)"):
            mmreward.load(str(bad))


def test_a_bf16_release_loads_in_bf16(armo, tmp_path):
    """The release is bf16: it loads as saved (an fp32 copy of 8B doubled the memory), scoring within
    bf16 rounding of the same weights in fp32."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder, _, _ = armo
    bf16 = shutil.copytree(folder, tmp_path / "bf16")
    state = {k: v.to(torch.bfloat16) for k, v in load_file(f"{bf16}/model.safetensors").items()}
    save_file(state, f"{bf16}/model.safetensors", metadata={"format": "pt"})
    rm = mmreward.load(str(bf16))
    assert {p.dtype for p in rm.parameters()} == {torch.bfloat16}
    want = mmreward.load(str(bf16), dtype="float32").score(PAIRS)
    assert float((rm.score(PAIRS) - want).abs().max()) <= 0.05 * float(want.abs().max())
