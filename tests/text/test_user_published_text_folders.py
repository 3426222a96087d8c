"""A user's downloaded text RM / PRM folders, as real downloads come: the hub cache's repository folder
(``models--org--name`` with ``refs/main`` and ``snapshots/<commit>/`` of links into ``blobs/``), a
``problem_type`` older transformers wrote for a one-label head, a ``model_type`` this transformers lacks,
and the file variations of published releases (``pytorch_model.bin`` only, shards + index, bf16 in the
config, tied embeddings, left padding, the chat template in tokenizer_config.json, README / optimizer /
training_args pickles beside the weights). Scores equal transformers' own classifier on the same inputs;
``mmreward info`` says how it reads each folder, or names what is wrong before ``--load``."""
import hashlib
import json
import os
import shutil

import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from text_rm_fixtures import BOS_TEMPLATE, llama_config, save_classifier, word_tokenizer  # noqa: E402

import mmreward  # noqa: E402
from mmreward.core.folders import CheckpointError  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402
from mmreward.info_cli import describe_folder  # noqa: E402

PROMPTS = ["what is two plus three", "a", "b c d e"]
RESPONSES = ["five", "b c a b d d c", "six"]
ITEMS = [TextPair(p, r) for p, r in zip(PROMPTS, RESPONSES)]


def _tok():
    return word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)


def _expected(seq, tok):
    """Skywork-Reward-V2's card: the rendered conversation, leading BOS string dropped, tokenised alone."""
    out = []
    for p, r in zip(PROMPTS, RESPONSES):
        text = tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                       tokenize=False)
        text = text[len(tok.bos_token):] if text.startswith(tok.bos_token) else text
        with torch.no_grad():
            out.append(seq(**tok(text, return_tensors="pt")).logits[0, 0].float())
    return torch.stack(out)


def _edit_json(path, fn):
    with open(path) as f:
        body = json.load(f)
    fn(body)
    with open(path, "w") as f:
        json.dump(body, f)


def _hub_cache(src, root, commits=("0123abcd",), ref="0123abcd"):
    """``root/models--org--name``: blobs/ holding the files, each snapshot linking to them, refs/main."""
    repo = os.path.join(root, "models--org--" + os.path.basename(src))
    os.makedirs(os.path.join(repo, "blobs"))
    for commit in commits:
        os.makedirs(os.path.join(repo, "snapshots", commit))
        for name in os.listdir(src):
            with open(os.path.join(src, name), "rb") as f:
                data = f.read()
            digest = hashlib.sha256(data).hexdigest()
            with open(os.path.join(repo, "blobs", digest), "wb") as f:
                f.write(data)
            os.symlink(os.path.join("..", "..", "blobs", digest), os.path.join(repo, "snapshots", commit, name))
    if ref is not None:
        os.makedirs(os.path.join(repo, "refs"))
        with open(os.path.join(repo, "refs", "main"), "w") as f:
            f.write(ref + "\n")
    return repo


def test_a_hub_cache_repository_folder_reads_the_snapshot_refs_main_names(tmp_path):
    tok = _tok()
    seq = save_classifier(tmp_path / "Skywork-Reward-V2-tiny", llama_config(), tok)
    repo = _hub_cache(str(tmp_path / "Skywork-Reward-V2-tiny"), str(tmp_path / "hub"), ("0123abcd", "4567ef01"))
    rm = mmreward.load(repo)  # was: "cannot tell which reward model this is (no config.json)"
    assert (rm.score(ITEMS, batch_size=2) - _expected(seq, tok)).abs().max().item() <= 1e-5
    info = describe_folder(repo)
    assert info["folder"] == os.path.join(repo, "snapshots", "0123abcd")
    assert info["reads_as"] == "transformers-sequence-classifier"
    # one snapshot and no refs/main: that snapshot; several and none named, or a ref to a missing one: named
    one = _hub_cache(str(tmp_path / "Skywork-Reward-V2-tiny"), str(tmp_path / "hub1"), ("aa11",), ref=None)
    assert describe_folder(one)["folder"] == os.path.join(one, "snapshots", "aa11")
    two = _hub_cache(str(tmp_path / "Skywork-Reward-V2-tiny"), str(tmp_path / "hub2"), ("aa11", "bb22"), ref=None)
    with pytest.raises(CheckpointError, match=r"2 snapshots \['aa11', 'bb22'\] and no refs/main"):
        mmreward.load(two)
    gone = _hub_cache(str(tmp_path / "Skywork-Reward-V2-tiny"), str(tmp_path / "hub3"), ("aa11",), ref="cc33")
    with pytest.raises(CheckpointError, match="refs/main names snapshot 'cc33', which snapshots/ lacks"):
        mmreward.load(gone)


def test_a_one_label_classification_problem_type_loads_as_the_reward(tmp_path):
    """transformers 4.x saved ``problem_type: single_label_classification`` with one label; transformers 5 refuses
    that config (a ValueError naming neither folder nor file). It only picks the training loss."""
    tok = _tok()
    seq = save_classifier(tmp_path / "rm", llama_config(), tok)
    _edit_json(tmp_path / "rm" / "config.json", lambda d: d.update(problem_type="single_label_classification"))
    with pytest.warns(UserWarning, match="problem_type 'single_label_classification' with one label is ignored"):
        rm = mmreward.load(str(tmp_path / "rm"))
    assert (rm.score(ITEMS) - _expected(seq, tok)).abs().max().item() <= 1e-5
    rm.save_pretrained(str(tmp_path / "saved"))
    assert torch.equal(mmreward.load(str(tmp_path / "saved")).score(ITEMS), rm.score(ITEMS))


def test_a_model_type_transformers_lacks_and_two_labels_are_named_by_info_and_load(tmp_path, capsys):
    tok = _tok()
    save_classifier(tmp_path / "foo", llama_config(), tok)
    _edit_json(tmp_path / "foo" / "config.json",
               lambda d: d.update(architectures=["FooForSequenceClassification"], model_type="foo"))
    # was: transformers' ValueError naming neither the folder nor config.json, and `info` saying it reads it
    for call in (mmreward.load, describe_folder):
        with pytest.raises(CheckpointError, match=r"foo: its config.json names FooForSequenceClassification with "
                                                  r"model_type 'foo', which transformers .* does not know"):
            call(str(tmp_path / "foo"))
    save_classifier(tmp_path / "two", llama_config(), tok)
    _edit_json(tmp_path / "two" / "config.json", lambda d: d.update(id2label={"0": "bad", "1": "good"}))
    with pytest.raises(CheckpointError, match="a classifier with 2 labels"):
        describe_folder(str(tmp_path / "two"))  # was: read as a one-label reward model until --load
    from mmreward.core.cli_config import run_cli
    from mmreward.info_cli import main

    capsys.readouterr()
    assert run_cli("mmreward info", main, [str(tmp_path / "two")]) == 2  # one line on stderr, exit 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "2 labels" in err


def _variant(folder, kind):
    """Rewrite a saved classifier folder as a release of ``kind`` ships it."""
    from safetensors.torch import load_file, save_file

    weights = os.path.join(folder, "model.safetensors")
    if kind == "bin-and-pickles":  # pytorch_model.bin only, plus files that must never be unpickled
        torch.save(load_file(weights), os.path.join(folder, "pytorch_model.bin"))
        os.remove(weights)
        for name in ("training_args.bin", "optimizer.pt"):
            with open(os.path.join(folder, name), "wb") as f:
                f.write(b"\x80\x04cposix\nsystem\n(S'exit 3'\ntR.")  # a pickle that would run a command
        for name, text in (("README.md", "# RM\n"), (".gitattributes", "*.bin filter=lfs\n")):
            with open(os.path.join(folder, name), "w") as f:
                f.write(text)
    elif kind == "shards":
        state = load_file(weights)
        os.remove(weights)
        names = sorted(state)
        weight_map = {}
        for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
            shard = f"model-0000{i + 1}-of-00002.safetensors"
            save_file({k: state[k] for k in part}, os.path.join(folder, shard), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, shard))
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    elif kind == "template-in-tokenizer-config-left-padding":
        template = os.path.join(folder, "chat_template.jinja")
        if os.path.exists(template):
            with open(template) as f:
                text = f.read()
            os.remove(template)
        else:
            text = BOS_TEMPLATE
        _edit_json(os.path.join(folder, "tokenizer_config.json"),
                   lambda d: d.update(chat_template=text, padding_side="left"))
    elif kind == "id2label-regression":
        _edit_json(os.path.join(folder, "config.json"), lambda d: (
            d.pop("num_labels", None), d.update(id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0},
                                                problem_type="regression")))


@pytest.mark.parametrize("kind", ["bin-and-pickles", "shards", "template-in-tokenizer-config-left-padding",
                                  "id2label-regression", "tied"])
def test_release_file_variations_score_as_transformers(tmp_path, kind):
    tok = _tok()
    seq = save_classifier(tmp_path / "rm", llama_config(tie_word_embeddings=kind == "tied"), tok)
    _variant(str(tmp_path / "rm"), kind)
    info = describe_folder(str(tmp_path / "rm"))
    assert info["reads_as"] == "transformers-sequence-classifier"
    rm = mmreward.load(str(tmp_path / "rm"))
    got = rm.score(ITEMS, batch_size=2)
    assert (got - _expected(seq, tok)).abs().max().item() <= 1e-5
    rm.save_pretrained(str(tmp_path / "saved"))
    assert torch.equal(mmreward.load(str(tmp_path / "saved")).score(ITEMS, batch_size=2), got)


def test_a_bf16_release_scores_as_transformers_in_bf16(tmp_path):
    tok = _tok()
    save_classifier(tmp_path / "fp32", llama_config(), tok)
    from transformers import AutoModelForSequenceClassification

    seq = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "fp32")).to(torch.bfloat16)
    seq.save_pretrained(str(tmp_path / "bf16"))
    tok.save_pretrained(str(tmp_path / "bf16"))
    shutil.rmtree(tmp_path / "fp32")
    rm = mmreward.load(str(tmp_path / "bf16"))
    assert next(rm.backbone.parameters()).dtype == torch.bfloat16  # as saved
    ref = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "bf16"), dtype="auto").eval()
    # bf16 arithmetic: equal to transformers' own bf16 output up to bf16 rounding of the logits
    assert (rm.score(ITEMS, batch_size=1) - _expected(ref, tok)).abs().max().item() <= 2e-2
    full = mmreward.load(str(tmp_path / "bf16"), dtype="float32")
    assert (full.score(ITEMS) - _expected(ref.float(), tok)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("key", ["torch_dtype", "dtype"])
def test_weights_load_in_the_dtype_they_were_saved_in_not_the_configs(tmp_path, key):
    """docs/text.md: "dtype as saved". fp32 weights under a config naming float16 (a config edited by hand, or
    from another save) were cast to fp16 by transformers' ``dtype="auto"``: scores off by fp16 rounding."""
    tok = _tok()
    seq = save_classifier(tmp_path / "rm", llama_config(), tok)
    _edit_json(tmp_path / "rm" / "config.json", lambda d: (d.pop("dtype", None), d.pop("torch_dtype", None),
                                                           d.update({key: "float16"})))
    rm = mmreward.load(str(tmp_path / "rm"))
    assert {p.dtype for p in rm.parameters()} == {torch.float32}
    assert (rm.score(ITEMS) - _expected(seq, tok)).abs().max().item() <= 1e-5
    total = sum(p.numel() for p in rm.parameters())
    assert describe_folder(str(tmp_path / "rm"), load=True)["dtypes"] == {"float32": total}
    assert next(mmreward.load(str(tmp_path / "rm"), dtype="bf16").backbone.parameters()).dtype == torch.bfloat16


def test_a_snapshot_whose_config_blob_never_arrived_is_named(tmp_path):
    """A download stopped before config.json's blob: was "cannot tell which reward model this is (no config.json)"
    and a list of every layout, for the snapshot and for its hub-cache repository folder."""
    save_classifier(tmp_path / "rm", llama_config(), _tok())
    repo = _hub_cache(str(tmp_path / "rm"), str(tmp_path / "hub"))
    snapshot = os.path.join(repo, "snapshots", "0123abcd")
    os.remove(os.path.realpath(os.path.join(snapshot, "config.json")))
    for path in (snapshot, repo):
        for call in (mmreward.load, describe_folder):
            with pytest.raises(CheckpointError, match=r"snapshots/0123abcd/config.json is a link to \.\./\.\./blobs/"
                                                      r"\w+, which does not exist: a download or copy that did not"):
                call(path)


def test_a_classifier_whose_code_ships_in_the_folder_is_refused_with_the_reason(tmp_path):
    """ChatGLMForSequenceClassification-style: a *ForSequenceClassification name, a model_type transformers lacks and
    an auto_map. Was transformers' own error (asking for trust_remote_code), naming neither folder nor file."""
    save_classifier(tmp_path / "glm", llama_config(), _tok())
    _edit_json(tmp_path / "glm" / "config.json", lambda d: d.update(
        architectures=["ChatGLMForSequenceClassification"], model_type="chatglm",
        auto_map={"AutoConfig": "configuration_chatglm.ChatGLMConfig",
                  "AutoModelForSequenceClassification": "modeling_chatglm.ChatGLMForSequenceClassification"}))
    for call in (mmreward.load, describe_folder):
        with pytest.raises(CheckpointError, match=r"glm holds ChatGLMForSequenceClassification\. Its model code ships "
                                                  r"inside the checkpoint \(auto_map"):
            call(str(tmp_path / "glm"))


def test_a_tokenizer_whose_class_ships_in_the_folder_is_refused_without_a_prompt(tmp_path, monkeypatch):
    """tokenizer_config.json with an auto_map: transformers asked "Do you wish to run the custom code? [y/N]" on the
    terminal (and runs the folder's code on "y"); mmreward never runs code from a folder."""
    save_classifier(tmp_path / "rm", llama_config(), _tok())
    _edit_json(tmp_path / "rm" / "tokenizer_config.json", lambda d: d.update(
        tokenizer_class="XTokenizer", auto_map={"AutoTokenizer": ["tokenization_x.XTokenizer", None]}))

    asked = []

    def prompt(question=""):
        asked.append(question)
        return "n"

    monkeypatch.setattr("builtins.input", prompt)
    with pytest.raises(CheckpointError, match=r"cannot load the tokenizer .*rm: ValueError: .*custom code"):
        mmreward.load(str(tmp_path / "rm"))
    assert asked == []


def test_an_mmreward_folder_whose_tokenizer_class_ships_inside_is_refused_without_a_prompt(tmp_path, monkeypatch):
    """mmreward's own folders keep their tokenizer in a subfolder read by ``load_tokenizer``: a
    tokenizer_config.json with an auto_map there is refused too, never asked about."""
    import transformers as tr

    from mmreward.text.reward_model import RewardModel

    torch.manual_seed(0)
    cfg = tr.LlamaConfig(vocab_size=_tok().vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=32, max_position_embeddings=64)
    RewardModel.from_backbone(cfg, tokenizer=_tok()).save_pretrained(str(tmp_path / "m"))
    _edit_json(tmp_path / "m" / "tokenizer" / "tokenizer_config.json", lambda d: d.update(
        tokenizer_class="XTokenizer", auto_map={"AutoTokenizer": ["tokenization_x.XTokenizer", None]}))
    os.remove(tmp_path / "m" / "manifest.json")  # an edit on purpose (else the manifest names the edited file)
    asked = []
    monkeypatch.setattr("builtins.input", lambda question="": asked.append(question) or "n")
    with pytest.raises(CheckpointError, match=r"cannot load the tokenizer .*: ValueError: .*custom code"):
        mmreward.load(str(tmp_path / "m"))
    assert asked == []


def test_a_sentencepiece_only_tokenizer_without_the_package_says_what_to_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("sentencepiece") is not None:
        pytest.skip("sentencepiece is installed here")
    from mmreward.text.reward_model import load_tokenizer

    (tmp_path / "tokenizer.model").write_bytes(b"\x00" * 64)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    with pytest.raises(CheckpointError, match="pip install sentencepiece"):
        load_tokenizer(str(tmp_path))
