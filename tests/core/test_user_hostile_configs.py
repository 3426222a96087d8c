"""Model folders a service's users upload with a hostile or broken ``config.json`` (a million layers, a 10**12
vocabulary, a NaN ``layer_norm_eps``, zero attention heads), and JSON-lines inputs with one multi-GB line. Each
is one error naming the field (or the line) and the file, raised before the memory it would take is allocated.

The memory tests never allocate what a regression would: the backbone builders are wrapped so that a build that
is not on the meta device (or one of more than 64 layers anywhere) fails the test instead."""
import gzip
import io
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass

import pytest
import torch

pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "text"))

import mmreward  # noqa: E402
from mmreward.core import data as D  # noqa: E402
from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.folders import CheckpointError, build_manifest  # noqa: E402
from mmreward.core.model import Pretrained  # noqa: E402
from mmreward.core.weights import hf_config  # noqa: E402
from mmreward.registry import MODEL_TYPES  # noqa: E402

LINE_LIMIT = "MMREWARD_MAX_LINE_BYTES"
HUGE = {"num_hidden_layers": 10**6, "vocab_size": 10**12, "hidden_size": 10**7, "intermediate_size": 10**8}


def _on_meta() -> bool:
    return torch.empty(0).device.type == "meta"


def _guard(real, layers_of):
    """``real`` (a backbone builder) that fails the test when asked to build for real, or to build more than 64
    layers even on the meta device (a million layers of Python objects): what a hostile config would cost."""
    def build(config, *args, **kwargs):
        layers = layers_of(config)
        if not _on_meta() or (isinstance(layers, int) and layers > 64):
            raise AssertionError(f"built for real / {layers} layers before the config was checked")
        return real(config, *args, **kwargs)
    return build


def _layers(config):
    return (config.get("num_hidden_layers") if isinstance(config, dict)
            else getattr(config, "num_hidden_layers", None))


def _hostile_copy(src, dst, edit) -> str:
    """A copy of saved folder ``src`` whose config.json ``edit`` changed, with a manifest that matches it (a
    stranger uploading a folder writes whatever manifest they like)."""
    shutil.copytree(src, dst)
    path = os.path.join(dst, "config.json")
    with open(path) as f:
        body = json.load(f)
    edit(body)
    with open(path, "w") as f:
        json.dump(body, f)
    with open(os.path.join(dst, "manifest.json"), "w") as f:
        json.dump(build_manifest(str(dst)), f)
    return str(dst)


def _backbone_edit(**fields):
    return lambda body: body["config"]["backbone"].update(fields)


@pytest.fixture(scope="module")
def bert_rm(tmp_path_factory):
    from text_rm_fixtures import bert_config, word_tokenizer

    from mmreward.text import RewardModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bert") / "rm"
    RewardModel.from_backbone(bert_config(), word_tokenizer(pair=True)).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def llama_rm(tmp_path_factory):
    from text_rm_fixtures import save_tiny_rm

    return save_tiny_rm(tmp_path_factory.mktemp("llama") / "rm")


@pytest.fixture
def no_real_backbone(monkeypatch):
    import mmreward.text.reward_model as R

    monkeypatch.setattr(R, "backbone_from_config", _guard(R.backbone_from_config, _layers))


# ------------------------------------------------------------------ sizes far beyond the weights
@pytest.mark.parametrize("field", sorted(HUGE))
def test_a_text_rm_config_far_larger_than_its_weights_is_refused_before_building(bert_rm, tmp_path, no_real_backbone,
                                                                                field):
    folder = _hostile_copy(bert_rm, tmp_path / "m", _backbone_edit(**{field: HUGE[field]}))
    with pytest.raises(CheckpointError, match=rf"config.json: config fields? .*'backbone\.{field}'.*"
                                              r"refused before building the model") as e:
        mmreward.load(folder)
    assert "model.safetensors" in str(e.value)


def test_a_size_the_weights_do_not_have_is_named_from_a_meta_build_not_allocated(bert_rm, tmp_path, no_real_backbone):
    # within the cheap bound (about 13M parameters), but not these weights: the shapes of a build on the meta
    # device are compared with the header before anything is built for real
    folder = _hostile_copy(bert_rm, tmp_path / "m", _backbone_edit(intermediate_size=100_000))
    with pytest.raises(CheckpointError, match=r"do not match its config: backbone\.encoder\.layer\.0\.intermediate\."
                                              r"dense\.weight has shape \(64, 32\), the model expects \(100000, 32\)"):
        mmreward.load(folder)


def test_a_prm_config_far_larger_than_its_weights_is_refused_before_building(tmp_path, monkeypatch):
    import mmreward.text.prm.model as P
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("char")
    P.ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=2, heads=2, seed=0), tok,
                                       max_length=80).save_pretrained(str(tmp_path / "prm"))
    monkeypatch.setattr(P, "_build_backbone", _guard(P._build_backbone, _layers))
    huge = _hostile_copy(tmp_path / "prm", tmp_path / "a", _backbone_edit(vocab_size=10**12))
    with pytest.raises(CheckpointError, match=r"'backbone\.vocab_size', 'backbone\.hidden_size' "
                                              r"\(vocab_size=1000000000000 x hidden_size=32\)"):
        mmreward.load(huge)
    wrong = _hostile_copy(tmp_path / "prm", tmp_path / "b", _backbone_edit(intermediate_size=100_000))
    with pytest.raises(CheckpointError, match=r"mlp\.\w+_proj\.weight has shape .*, the model expects .*100000"):
        mmreward.load(wrong)


@dataclass
class StackConfig:
    width: int = 4
    num_layers: int = 2


class Stack(Pretrained, torch.nn.Module):
    """A model of mmreward's own kind (the default ``_load``: its dataclass config + ``model.safetensors``)."""
    model_type = "hostile_stack"
    config_class = StackConfig

    def __init__(self, config=None):
        super().__init__()
        self.config = config or StackConfig()
        if not _on_meta() and (self.config.width > 64 or self.config.num_layers > 64) or self.config.num_layers > 64:
            raise AssertionError(f"built {self.config} before the config was checked")
        self.layers = torch.nn.ModuleList(torch.nn.Linear(self.config.width, self.config.width)
                                          for _ in range(self.config.num_layers))


@pytest.fixture
def stack(tmp_path):
    MODEL_TYPES["hostile_stack"] = f"{__name__}:Stack"
    Stack().save_pretrained(str(tmp_path / "stack"))
    yield tmp_path / "stack"
    MODEL_TYPES.pop("hostile_stack", None)


@pytest.mark.parametrize("field,value,message", [
    ("num_layers", 10**6, r"config field 'num_layers' is 1000000, but the weights in .*model\.safetensors "
                          r"hold numbered blocks 0\.\.1 only"),
    ("width", 10**6, r"layers\.0\.weight has shape \(4, 4\), the model expects \(1000000, 1000000\)")])
def test_an_own_model_type_config_is_checked_against_its_weights_before_building(stack, tmp_path, field, value,
                                                                                message):
    folder = _hostile_copy(stack, tmp_path / "m", lambda body: body["config"].update({field: value}))
    with pytest.raises(CheckpointError, match=message):
        mmreward.load(folder)


def test_a_published_config_is_checked_before_transformers_builds_it(tmp_path):
    from text_rm_fixtures import bert_config
    from transformers import BertModel

    BertModel(bert_config()).save_pretrained(str(tmp_path))
    raw = json.loads((tmp_path / "config.json").read_text())
    assert hf_config(raw, str(tmp_path)).num_hidden_layers == 2
    with pytest.raises(CheckpointError, match=r"config\.json: config field 'num_hidden_layers' is 1000000"):
        hf_config({**raw, "num_hidden_layers": 10**6}, str(tmp_path))
    with pytest.raises(CheckpointError, match=r"config\.json: config field 'layer_norm_eps' must be a finite number"):
        hf_config({**raw, "layer_norm_eps": -1.0}, str(tmp_path))


def test_shared_layers_are_not_mistaken_for_a_hostile_layer_count(tmp_path):
    # ALBERT: 12 layers share one group's weights (numbered 0 only); the margin keeps such a folder loadable
    from text_rm_fixtures import vocab_size, word_tokenizer
    from transformers import AlbertConfig

    from mmreward.text import RewardModel

    cfg = AlbertConfig(vocab_size=vocab_size(), embedding_size=8, hidden_size=32, intermediate_size=64,
                       num_hidden_layers=12, num_attention_heads=4, max_position_embeddings=64)
    rm = RewardModel.from_backbone(cfg, word_tokenizer(pair=True)).eval()
    rm.save_pretrained(str(tmp_path / "albert"))
    rows = [{"prompt": "what is two plus three", "response": "five"}]
    assert torch.equal(mmreward.load(str(tmp_path / "albert")).score(rows), rm.score(rows))


# ------------------------------------------------------------------ numbers that score NaN
@pytest.mark.parametrize("which,field,value", [
    ("bert", "layer_norm_eps", float("nan")), ("bert", "layer_norm_eps", -1.0), ("bert", "layer_norm_eps", math.inf),
    ("llama", "rms_norm_eps", float("nan")), ("llama", "rms_norm_eps", -1e-6), ("llama", "num_attention_heads", 0),
    ("llama", "num_key_value_heads", 0)])
def test_a_config_number_that_would_score_nan_is_refused_naming_field_and_file(bert_rm, llama_rm, tmp_path, which,
                                                                               field, value):
    src = bert_rm if which == "bert" else llama_rm
    folder = _hostile_copy(src, tmp_path / "m", _backbone_edit(**{field: value}))
    with pytest.raises(CheckpointError, match=rf"{tmp_path}/m/config\.json: config field 'backbone\.{field}' "
                                              r"must be (a number, not NaN|a finite number >= 0|an integer >= 1)"):
        mmreward.load(folder)


def test_a_nan_anywhere_is_refused_but_an_unused_initializer_range_is_not():
    from mmreward.core.weights import check_config_numbers

    check_config_numbers({"model_type": "bert", "initializer_range": float("nan"), "layer_norm_eps": 0.0}, "c.json")
    check_config_numbers({"eps": -1.0, "n_heads": 0}, "c.json")  # no transformers config: names say nothing
    with pytest.raises(CheckpointError, match=r"c\.json: config field 'config\.scale\[1\]' must be a number, not NaN"):
        check_config_numbers({"scale": [1.0, float("nan")]}, "c.json", "config")
    with pytest.raises(CheckpointError, match=r"'backbone\.text_config\.rope_theta' must be a finite number > 0"):
        check_config_numbers({"backbone": {"model_type": "x", "text_config": {"rope_theta": 0}}}, "c.json")


def test_the_cli_says_it_in_one_line(bert_rm, tmp_path, capsys, no_real_backbone):
    from helpers import one_line_error

    from mmreward.cli import main

    folder = _hostile_copy(bert_rm, tmp_path / "m", _backbone_edit(num_hidden_layers=10**6))
    assert main(["info", folder, "--load"]) == 2
    assert "'backbone.num_hidden_layers' is 1000000" in one_line_error(capsys)


# ------------------------------------------------------------------ JSON lines: one enormous line
class _Stream:
    """A binary stream that records the most bytes any one read asked for (``readline(-1)``: no bound)."""

    def __init__(self, data: bytes):
        self._f = io.BytesIO(data)
        self.asked = 0

    def readline(self, size=-1):
        self.asked = max(self.asked, math.inf if size is None or size < 0 else size)
        return self._f.readline(size)


def test_a_line_longer_than_the_limit_is_named_without_being_read_whole(tmp_path, monkeypatch):
    monkeypatch.setenv(LINE_LIMIT, "64")
    row = json.dumps({"prompt": "p", "response": "r" * 30})
    fits = json.dumps({"prompt": "p", "response": "x" * (64 - len(row) + 30)})
    assert len(fits.encode()) == 64  # exactly the limit: read
    data = f"{row}\n{fits}\n{json.dumps({'prompt': 'p', 'response': 'y' * 10_000})}\n{row}\n".encode()
    stream = _Stream(data)
    rows = D.jsonl_rows(stream, "<stdin>")
    assert [r["response"][:1] for r in (next(rows), next(rows))] == ["r", "x"]
    with pytest.raises(DataError, match=r"<stdin>: line 3 is longer than 64 bytes .*MMREWARD_MAX_LINE_BYTES"):
        next(rows)
    assert stream.asked == 65  # never more than the limit and its newline at once
    path = tmp_path / "big.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(data)
    with pytest.raises(DataError, match=rf"{path}: line 3 is longer than 64 bytes"):
        list(D.iter_records(str(path)))
    (tmp_path / "big.jsonl").write_bytes(data)
    with pytest.raises(DataError, match=r"big\.jsonl: line 3 is longer than 64 bytes"):
        D.read_records(str(tmp_path / "big.jsonl"))


def test_the_line_limit_is_generous_by_default_and_checked(tmp_path, monkeypatch):
    monkeypatch.delenv(LINE_LIMIT, raising=False)
    assert D.max_line_bytes() == 256 << 20
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt": "p", "response": "r" * 100_000}) + "\n")
    assert len(D.read_records(str(tmp_path / "a.jsonl"))[0]["response"]) == 100_000
    monkeypatch.setenv(LINE_LIMIT, "lots")
    with pytest.raises(DataError, match=r"MMREWARD_MAX_LINE_BYTES must be a whole number of bytes >= 1, got 'lots'"):
        D.read_records(str(tmp_path / "a.jsonl"))


def test_a_config_json_of_gigabytes_is_refused_by_its_size_not_read(bert_rm, tmp_path, monkeypatch):
    from mmreward.core import weights as W

    monkeypatch.setattr(W, "MAX_JSON_BYTES", 4096)  # the real limit is 64 MiB; the file here is a few KB
    folder = _hostile_copy(bert_rm, tmp_path / "m", lambda body: body.update(padding="x" * 5000))
    with pytest.raises(CheckpointError, match=r"config\.json is \d+ bytes, more than the 4096 bytes any JSON config"):
        mmreward.load(folder)


@pytest.mark.parametrize("field,value,message", [
    ("num_hidden_layers", 10**6, r"'backbone_config\.text_config\.num_hidden_layers' is 1000000, but the weights"),
    ("rms_norm_eps", float("nan"), r"'backbone_config\.text_config\.rms_norm_eps' must be a number, not NaN")])
def test_a_vlm_backbone_config_is_checked_before_building(tmp_path, monkeypatch, field, value, message):
    from mmreward.vision import synthetic as S
    from mmreward.vision import vlm_data
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel

    proc = tiny_processor(S.COLOUR_WORDS)
    VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc).save_pretrained(str(tmp_path / "vlm"))
    folder = _hostile_copy(tmp_path / "vlm", tmp_path / "m",
                           lambda body: body["backbone_config"]["text_config"].update({field: value}))
    monkeypatch.setattr(vlm_data, "backbone_from_dict", lambda *a, **k: pytest.fail("built before the check"))
    with pytest.raises(CheckpointError, match=message):
        mmreward.load(folder)


def test_a_csv_cell_as_long_as_a_json_line_may_be_is_read(tmp_path):
    import csv

    # csv's own cap is 128 KiB a cell: a long answer (or an inline image's data: URI) that reads from JSON lines
    # was refused from a CSV; the cap is csv's global setting: raised to the JSON-line limit, never lowered (a
    # limit put back after each read raced with reads in other threads)
    (tmp_path / "long.csv").write_text("prompt,response\nhi," + "x" * 200_000 + "\n")
    before = csv.field_size_limit()
    assert len(D.read_records(str(tmp_path / "long.csv"))[0]["response"]) == 200_000
    assert csv.field_size_limit() >= max(before, D.max_line_bytes())


@pytest.mark.parametrize("fields,named", [
    ({"num_local_experts": 10**6, "intermediate_size": 64}, r"'num_local_experts', 'intermediate_size'"),
    ({"num_experts": 10**5, "intermediate_size": 64, "moe_intermediate_size": 16},
     r"'num_experts', 'moe_intermediate_size'"),
    ({"num_attention_heads": 4, "head_dim": 10**7}, r"'num_attention_heads', 'head_dim'")])
def test_expert_counts_and_head_sizes_count_towards_the_implied_size(fields, named):
    from mmreward.core.weights import check_config_fits_weights

    shapes = {"layers.0.w": (100, 100), "layers.1.w": (100, 100)}
    base = {"model_type": "x", "hidden_size": 32, "num_hidden_layers": 2}
    check_config_fits_weights({**base, "num_local_experts": 8, "intermediate_size": 64}, shapes, "c.json", "w")
    with pytest.raises(CheckpointError, match=rf"c\.json: config fields 'num_hidden_layers', {named}.*refused before"):
        check_config_fits_weights({**base, **fields}, shapes, "c.json", "w")


@pytest.mark.parametrize("field,value,message", [
    ("num_hidden_layers", 10**6, r"config field 'num_hidden_layers' is 1000000, but the weights in"),
    ("layer_norm_eps", float("nan"), r"config field 'layer_norm_eps' must be a number, not NaN")])
def test_a_shared_backbone_folder_is_checked_before_from_backbone_builds_it(tmp_path, monkeypatch, field, value,
                                                                           message):
    import transformers
    from text_rm_fixtures import bert_config, word_tokenizer
    from transformers import BertModel

    from mmreward.text import RewardModel

    BertModel(bert_config()).save_pretrained(str(tmp_path))
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, field: value}))
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("built before the check"))
    with pytest.raises(CheckpointError, match=message):
        RewardModel.from_backbone(str(tmp_path), word_tokenizer(pair=True))


@pytest.mark.parametrize("shard", ["../secret.bin", "/SECRET", "sub/../../secret.bin", "..\\secret.bin"])
def test_a_shard_index_naming_a_file_outside_the_folder_is_refused_before_it_is_opened(tmp_path, shard):
    from safetensors.torch import save_file

    from mmreward.core import weights as W

    secret = tmp_path / "secret.bin"
    secret.write_text("TOPSECRET-PASSWORD-0123456789")
    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"model.a": torch.zeros(2), "model.b": torch.zeros(3)}, str(folder / "model-1.safetensors"))
    entry = shard.replace("/SECRET", str(secret))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.a": "model-1.safetensors", "model.b": entry}}))
    for read in (W.read_weights, W.weight_shapes):
        with pytest.raises(CheckpointError, match=r"index\.json: weight_map\['model\.b'\] names .*, not a file inside "
                                                  r"the folder") as e:
            read(str(folder))
        assert "TOPSECRET" not in str(e.value)  # before: "…/secret.bin is not a torch.save file (it begins b'TOPSECRET…"


# ------------------------------------------------------------------ the published / VLM / judge / manifest paths
@pytest.mark.parametrize("field,value,message", [
    ("num_hidden_layers", 10**6, r"config field 'num_hidden_layers' is 1000000, but the weights"),
    ("layer_norm_eps", float("nan"), r"config field 'layer_norm_eps' must be a number, not NaN"),
    ("num_attention_heads", 0, r"config field 'num_attention_heads' must be an integer >= 1")])
def test_a_published_sequence_classifier_config_is_checked_before_transformers_builds_it(tmp_path, monkeypatch,
                                                                                         field, value, message):
    """A *ForSequenceClassification folder: 10**6 layers ran a meta build for minutes, a NaN eps scored NaN, zero
    heads raised a bare ZeroDivisionError."""
    from text_rm_fixtures import bert_config, save_classifier, word_tokenizer
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path / "rm"
    save_classifier(folder, bert_config(), word_tokenizer(pair=True))
    body = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**body, field: value}))
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_config",
                        lambda *a, **k: pytest.fail("built before the check"))
    with pytest.raises(CheckpointError, match=message):
        mmreward.load(str(folder))


def test_a_vlm_text_config_size_its_weights_lack_is_named_from_a_meta_build(tmp_path, monkeypatch):
    """A modest wrong size (no heuristic bound catches it) was built for real before the mismatch was named."""
    from mmreward.vision import synthetic as S
    from mmreward.vision import vlm_data
    from mmreward.vision.testing import tiny_processor, tiny_qwen2vl_config
    from mmreward.vision.vlm_rm import VLMRewardConfig, VLMRewardModel

    proc = tiny_processor(S.COLOUR_WORDS)
    VLMRewardModel(VLMRewardConfig(), tiny_qwen2vl_config(proc), proc).save_pretrained(str(tmp_path / "vlm"))
    folder = _hostile_copy(tmp_path / "vlm", tmp_path / "m",
                           lambda body: body["backbone_config"]["text_config"].update(intermediate_size=72))
    real = vlm_data.backbone_from_dict

    def meta_only(*a, **k):
        assert _on_meta(), "built for real before the shapes were compared"
        return real(*a, **k)

    monkeypatch.setattr(vlm_data, "backbone_from_dict", meta_only)
    with pytest.raises(CheckpointError, match=r"do not match its config: .*mlp.* has shape"):
        mmreward.load(folder)


def test_a_judge_causal_lm_config_is_checked_before_transformers_builds_it(tmp_path):
    from mmreward.text.generative.base import load_causal_lm
    from text_rm_fixtures import CHATML, llama_config, word_tokenizer
    from transformers import LlamaForCausalLM

    LlamaForCausalLM(llama_config()).save_pretrained(str(tmp_path / "lm"))
    word_tokenizer(bos=True, chat_template=CHATML).save_pretrained(str(tmp_path / "lm"))
    assert load_causal_lm(str(tmp_path / "lm"))[0] is not None
    path = tmp_path / "lm" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "rms_norm_eps": float("nan")}))
    with pytest.raises(CheckpointError, match=r"config field 'rms_norm_eps' must be a number, not NaN"):
        load_causal_lm(str(tmp_path / "lm"))


def test_a_manifest_of_gigabytes_is_refused_by_its_size_not_read(bert_rm, tmp_path, monkeypatch):
    from mmreward.core import folders as F

    folder = tmp_path / "m"
    shutil.copytree(bert_rm, folder)
    monkeypatch.setattr(F, "MAX_MANIFEST_BYTES", 64)  # the real cap is 64 MiB
    with pytest.raises(CheckpointError, match=r"manifest\.json is \d+ bytes, more than any manifest mmreward writes"):
        mmreward.load(str(folder))


def test_large_computed_buffers_of_a_valid_config_are_not_refused_but_terabytes_are(tmp_path):
    """The bound on computed (unsaved) buffers counted elements: a valid GPT-Neo (a bool causal mask of
    max_positions² per layer, 50 M elements against a tiny model's 2 M weights) was refused."""
    from mmreward.core.model import build_for_weights

    class Masked(torch.nn.Module):
        def __init__(self, positions):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(4, 4))
            self.register_buffer("bias", torch.ones(positions, positions, dtype=torch.bool), persistent=False)

    shapes = {"weight": (4, 4)}
    assert isinstance(build_for_weights(lambda: Masked(5000), str(tmp_path), shapes), Masked)  # 25 MB of bools
    with pytest.raises(CheckpointError, match=r"computes buffer 'bias' of shape \(1000000, 1000000\)"):
        build_for_weights(lambda: Masked(10**6), str(tmp_path), shapes)
