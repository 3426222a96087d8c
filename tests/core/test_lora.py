"""LoRA adapters (mmreward.core.lora) against the formula, merged weights and the saved-folder contract."""
import copy

import pytest
import torch
from torch import nn

from mmreward.core.lora import (LoraLinear, LoraSettings, apply_lora, enable_gradient_checkpointing, has_lora,
                                lora_layers, merge_lora, merged_state_dict)


def reference(x, W, b, A, B, scaling):
    """y = x Wᵀ + b + s · x Aᵀ Bᵀ, computed in float64."""
    x64 = x.double()
    y = x64 @ W.double().T + (b.double() if b is not None else 0)
    return y + scaling * (x64 @ A.double().T) @ B.double().T


def random_lora(in_f, out_f, rank, *, dtype=torch.float32, bias=True, seed=0):
    torch.manual_seed(seed)
    base = nn.Linear(in_f, out_f, bias=bias).to(dtype)
    layer = LoraLinear(base, rank, alpha=2.0 * rank + 1)
    with torch.no_grad():
        layer.lora_B.normal_()  # a trained-looking update (a fresh one is zero)
    return layer


@pytest.mark.parametrize("shape", [(3, 5, 7, 2), (1, 1, 1, 1), (4, 17, 3, 8), (2, 64, 33, 64)])
def test_forward_and_gradients_match_the_formula_fp32(shape):
    n, in_f, out_f, rank = shape
    layer = random_lora(in_f, out_f, rank)
    x = torch.randn(2, n, in_f, requires_grad=True)  # (B, T, in): any leading shape
    y = layer(x)
    ref_x = x.detach().double().requires_grad_()
    A = layer.lora_A.detach().double().requires_grad_()
    B = layer.lora_B.detach().double().requires_grad_()
    ref = reference(ref_x, layer.base.weight.detach(), layer.base.bias.detach(), A, B, layer.scaling)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    y.backward(g.float())
    ref.backward(g)
    torch.testing.assert_close(x.grad.double(), ref_x.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.lora_A.grad.double(), A.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.lora_B.grad.double(), B.grad, rtol=1e-4, atol=1e-4)
    assert layer.base.weight.grad is None and layer.base.bias.grad is None  # the base is frozen


def test_bf16_base_keeps_float32_adapters_and_output_dtype():
    layer = random_lora(24, 12, 4, dtype=torch.bfloat16)
    assert layer.lora_A.dtype == layer.lora_B.dtype == torch.float32
    x = torch.randn(5, 24, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    ref = reference(x, layer.base.weight, layer.base.bias, layer.lora_A.detach(), layer.lora_B.detach(), layer.scaling)
    torch.testing.assert_close(y.double(), ref, rtol=2e-2, atol=5e-2)
    y.float().sum().backward()
    assert layer.lora_A.grad.dtype == torch.float32 and torch.isfinite(layer.lora_A.grad).all()


def test_extreme_inputs_stay_finite_and_match():
    layer = random_lora(8, 4, 2)
    x = torch.tensor([[1e15, -1e15, 0, 0, 1e-30, 0, 3, 0]])
    ref = reference(x, layer.base.weight.detach(), layer.base.bias.detach(), layer.lora_A.detach(),
                    layer.lora_B.detach(), layer.scaling)
    torch.testing.assert_close(layer(x).double(), ref, rtol=1e-4, atol=ref.abs().max().item() * 1e-5)


def test_a_fresh_adapter_changes_nothing():
    torch.manual_seed(0)
    base = nn.Linear(6, 3)
    x = torch.randn(4, 6)
    before = base(x)
    assert torch.equal(LoraLinear(base, 2, 8.0)(x), before)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_merged_layer_gives_the_adapted_outputs(dtype, tol):
    layer = random_lora(16, 9, 3, dtype=dtype)
    x = torch.randn(7, 16, dtype=dtype)
    merged = layer.merged()
    assert type(merged) is nn.Linear and merged.weight.dtype == dtype
    torch.testing.assert_close(merged(x).float(), layer(x).float(), rtol=tol, atol=tol * 4)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.q_proj = nn.Linear(8, 8)
        self.block = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8, bias=False))
        self.norm = nn.LayerNorm(8)

    def forward(self, ids):
        h = self.embed(ids)
        return self.norm(self.block(self.q_proj(h)))


def test_apply_lora_targets_freezes_and_undo_restores_exactly():
    torch.manual_seed(0)
    net = Net()
    net.embed.weight.requires_grad_(False)  # a flag of the caller's own: undo must restore it as it was
    layers = {n: m for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    applied = apply_lora(net, LoraSettings(2))
    assert sorted(lora_layers(net)) == ["block.0", "block.2", "q_proj"]
    trainable = sorted(n for n, p in net.named_parameters() if p.requires_grad)
    assert trainable == sorted(f"{n}.lora_{x}" for n in ("block.0", "block.2", "q_proj") for x in "AB")
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(net, LoraSettings(2))
    applied.undo()
    assert not has_lora(net)
    assert all(net.get_submodule(n) is m for n, m in layers.items())  # the very same modules
    assert not net.embed.weight.requires_grad and net.norm.weight.requires_grad and net.q_proj.weight.requires_grad

    apply_lora(net, LoraSettings(2, targets="q_proj"))
    assert list(lora_layers(net)) == ["q_proj"]
    with pytest.raises(ValueError, match=r"\['v_proj'\] match no linear layer of Net; its linear layers are named "
                                         r"\['0', '2', 'q_proj'\]"):
        apply_lora(Net(), LoraSettings(2, targets="q_proj, v_proj"))


@pytest.mark.parametrize("kw,match", [(dict(rank=0), "rank must be an integer >= 1"),
                                      (dict(rank=True), "rank must be an integer"),
                                      (dict(rank=2, alpha=float("nan")), "alpha must be a finite number > 0"),
                                      (dict(rank=2, alpha=0), "alpha must be a finite number > 0"),
                                      (dict(rank=2, dropout=1.0), r"dropout must be in \[0, 1\)"),
                                      (dict(rank=2, targets=" , "), "targets must be")])
def test_bad_settings_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        LoraSettings(**kw)


def test_merged_state_dict_has_the_plain_names_and_loads_into_a_plain_model():
    torch.manual_seed(0)
    plain = Net()
    adapted = copy.deepcopy(plain)
    apply_lora(adapted, LoraSettings(3, alpha=6.0))
    with torch.no_grad():
        for layer in lora_layers(adapted).values():
            layer.lora_B.normal_()
    ids = torch.tensor([[1, 2, 3], [4, 5, 9]])
    state = merged_state_dict(adapted)
    assert sorted(state) == sorted(plain.state_dict())
    assert has_lora(adapted)  # merged_state_dict does not change the model
    plain.load_state_dict(state)
    torch.testing.assert_close(plain(ids), adapted(ids), rtol=1e-5, atol=1e-5)
    assert merge_lora(adapted) == 3 and not has_lora(adapted)
    torch.testing.assert_close(adapted(ids), plain(ids), rtol=0, atol=0)


def test_adapter_dropout_trains_only_in_train_mode():
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(32, 8), 4, 8.0, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 32)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    torch.manual_seed(1)
    a = layer(x)
    torch.manual_seed(2)
    assert not torch.equal(a, layer(x))


def test_save_pretrained_of_a_model_with_adapters_writes_a_plain_folder(tmp_path):
    pytest.importorskip("transformers")
    from helpers import word_tokenizer
    from transformers import BertConfig

    import mmreward
    from mmreward.text import RewardModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     max_position_embeddings=16)
    rm = RewardModel.from_backbone(cfg, tokenizer=word_tokenizer(["a", "b", "c"], model_max_length=16))
    apply_lora(rm.backbone, LoraSettings(2))
    with torch.no_grad():
        for layer in lora_layers(rm).values():
            layer.lora_B.normal_()
    pairs = [("a b", "c"), ("b", "a a c")]
    expected = rm.score(pairs)
    rm.save_pretrained(tmp_path / "m")
    loaded = mmreward.load(str(tmp_path / "m"))
    assert not has_lora(loaded)
    torch.testing.assert_close(loaded.score(pairs), expected, rtol=1e-5, atol=1e-5)
    # an explicit state_dict is checked against the names a saved folder holds
    rm.save_pretrained(tmp_path / "m2", state_dict=merged_state_dict(rm))
    with pytest.raises(ValueError, match="lacks"):
        rm.save_pretrained(tmp_path / "m3", state_dict=rm.state_dict())


def test_gradient_checkpointing_gives_the_same_gradients():
    pytest.importorskip("transformers")
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=16)
    plain = LlamaModel(cfg)
    checkpointed = copy.deepcopy(plain)
    for m in (plain, checkpointed):
        apply_lora(m, LoraSettings(2))
        m.train()
    enable_gradient_checkpointing(checkpointed)
    assert checkpointed.config.use_cache is True  # left as it is: the saved config stays the model's own
    ids = torch.randint(0, 32, (2, 7))
    grads, calls = [], []
    for m in (plain, checkpointed):
        m.load_state_dict(plain.state_dict())
        m.zero_grad()
        count = [0]
        hook = m.layers[0].mlp.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        m(input_ids=ids).last_hidden_state.square().mean().backward()
        hook.remove()
        calls.append(count[0])
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad})
    assert calls == [1, 2]  # checkpointing really recomputes the block in the backward pass
    assert grads[0] and sorted(grads[0]) == sorted(grads[1])
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="Net does not support it"):
        enable_gradient_checkpointing(Net())


def test_all_linear_leaves_a_language_models_output_layer_out():
    pytest.importorskip("transformers")
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=16)
    lm = LlamaForCausalLM(cfg)
    apply_lora(lm, LoraSettings(2))
    wrapped = sorted(lora_layers(lm))
    assert "lm_head" not in wrapped and len(wrapped) == 7  # q k v o, gate up down
    lm2 = LlamaForCausalLM(cfg)
    apply_lora(lm2, LoraSettings(2, targets="lm_head"))  # named, it is given one
    assert list(lora_layers(lm2)) == ["lm_head"]


def test_linear_subclasses_that_read_their_own_weight_are_left_alone():
    """nn.MultiheadAttention's out_proj (NonDynamicallyQuantizableLinear) is read as .weight by F.multi_head_attention
    _forward, past any adapter: only plain nn.Linear layers get one."""
    net = nn.Module()
    net.attn = nn.MultiheadAttention(8, 2)
    net.proj = nn.Linear(8, 8)
    apply_lora(net, LoraSettings(2))
    assert list(lora_layers(net)) == ["proj"]


def test_folded_weights_are_made_on_the_cpu_and_targets_are_recorded_in_one_spelling():
    from mmreward.core.lora import AdapterOptions

    torch.manual_seed(0)
    net = Net()
    apply_lora(net, LoraSettings(2))
    state = merged_state_dict(net)
    assert state["q_proj.weight"].device.type == "cpu" and state["q_proj.weight"].dtype == torch.float32
    a = AdapterOptions(lora_rank=2, lora_targets="q_proj,v_proj").adapter_record()
    b = AdapterOptions(lora_rank=2, lora_targets=" v_proj, q_proj ,q_proj").adapter_record()
    assert a == b and a["lora"]["targets"] == ["q_proj", "v_proj"]
    assert AdapterOptions().adapter_record() == {}


def test_compiled_models_save_their_weights_under_their_own_names(tmp_path):
    """A compiled sub-module would save '<name>._orig_mod.*' keys no load reads: refused with the call to use; a
    LoRA model's own state_dict given to save_pretrained is named with the call that gives the saved names."""
    pytest.importorskip("transformers")
    from helpers import word_tokenizer
    from transformers import BertConfig

    from mmreward.text import RewardModel

    cfg = BertConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     max_position_embeddings=16)
    rm = RewardModel.from_backbone(cfg, tokenizer=word_tokenizer(["a", "b"], model_max_length=16))
    backbone = rm.backbone
    rm.backbone = torch.compile(backbone)
    with pytest.raises(ValueError, match=r"'backbone' is a torch.compile wrapper .*model.backbone.compile\(\)"):
        rm.save_pretrained(tmp_path / "c")
    rm.backbone = backbone
    apply_lora(rm.backbone, LoraSettings(2))
    with pytest.raises(ValueError, match=r"pass mmreward.core.lora.merged_state_dict\(model\)"):
        rm.save_pretrained(tmp_path / "d", state_dict=rm.state_dict())


def test_a_fully_frozen_module_is_named_as_frozen():
    net = Net()
    net.requires_grad_(False)
    with pytest.raises(ValueError, match="every nn.Linear layer of Net is frozen"):
        apply_lora(net, LoraSettings(2), trainable_only=True)
    apply_lora(net, LoraSettings(2))  # without trainable_only (apply_lora by hand), frozen layers are adapted
