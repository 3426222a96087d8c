"""WARM: weight averaging of reward models fine-tuned from one init — learning test, init / key
checks, weights, and the `mmreward text merge` CLI."""
import copy
import json
import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from mmreward.text.recipes.cli import merge_main
from mmreward.text.recipes.warm import (
    WARMInitError,
    average_state_dicts,
    init_distances,
    warm_average,
)

WORDS = [f"w{i}" for i in range(8)] + ["q"]  # w0-w3 are worth +1, w4-w7 are worth -1


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]")


def tiny_rm(seed):
    from mmreward.text.reward_model import RewardModel

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=len(WORDS) + 4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32)
    return RewardModel.from_backbone(cfg, tokenizer=tokenizer())


def value_pairs(n, rng):
    """Responses are 2-5 words; the one with the larger total worth (+1 for w0-w3, -1 for w4-w7) is chosen."""
    rows = []
    while len(rows) < n:
        a, b = ([rng.randrange(8) for _ in range(rng.randint(2, 5))] for _ in range(2))
        va, vb = (sum(1 if t < 4 else -1 for t in x) for x in (a, b))
        if va == vb:
            continue
        if va < vb:
            a, b = b, a
        rows.append({"prompt": "q", "chosen": " ".join(f"w{t}" for t in a), "rejected": " ".join(f"w{t}" for t in b)})
    return rows


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three RMs fine-tuned from one init with different seeds (data order and dropout draws) and data
    subsets; dropout stays on (WARM diversifies its members with it)."""
    from mmreward.text.train import RewardTrainConfig, evaluate_pairs, train_reward_model

    root = tmp_path_factory.mktemp("warm")
    rng = random.Random(0)
    data, test = value_pairs(96, rng), value_pairs(300, rng)
    init = tiny_rm(0)
    out = []
    for m in range(3):
        rm = copy.deepcopy(init)
        tc = RewardTrainConfig(output_dir=str(root / f"run{m}"), max_steps=30, batch_size=16, lr=2e-3, warmup_steps=5,
                               seed=m, disable_dropout=False, progress=False, tensorboard=False, plot=False,
                               resume=False, log_every=0)
        train_reward_model(rm, data[m * 16:m * 16 + 64], None, tc)
        rm.save_pretrained(str(root / f"rm{m}"))
        out.append((rm, str(root / f"rm{m}"), evaluate_pairs(rm, test)["accuracy"]))
    return out, test, root


@pytest.mark.learning
def test_warm_average_at_least_mean_of_members(members):
    from mmreward.text.train import evaluate_pairs

    ms, test, _ = members
    accs = [a for _, _, a in ms]
    assert max(init_distances([m.state_dict() for m, _, _ in ms])) < 0.8  # ~0.4-0.45 here
    merged = warm_average([m for m, _, _ in ms])
    acc = evaluate_pairs(merged, test)["accuracy"]
    assert sum(accs) / 3 > 0.65, accs  # the members learned something (chance: 0.5)
    # init seeds 0 / 1 / 2 gave members (.74 .77 .79) → .79, (.81 .83 .79) → .82, (.79 .77 .75) → .80
    assert acc >= sum(accs) / 3, (acc, accs)
    # the members are untouched and the merge is their parameter mean
    k = "head.weight"
    assert torch.allclose(merged.state_dict()[k], sum(m.state_dict()[k] for m, _, _ in ms) / 3, atol=1e-6)


def test_weighted_average_and_checks():
    a, b = {"w": torch.tensor([0.0, 4.0]), "i": torch.tensor([1, 2])}, {"w": torch.tensor([2.0, 0.0]), "i": torch.tensor([1, 2])}
    avg = average_state_dicts([a, b], [3, 1], check_init=False)
    assert torch.allclose(avg["w"], torch.tensor([0.5, 3.0])) and torch.equal(avg["i"], a["i"])
    with pytest.raises(ValueError, match="2 weights for 3 models|got 2 weights"):
        average_state_dicts([a, b, a], [1, 1])
    with pytest.raises(ValueError, match="weights must be"):
        average_state_dicts([a, b], [1, -1])
    with pytest.raises(WARMInitError, match="shape"):
        average_state_dicts([a, {"w": torch.zeros(3), "i": a["i"]}])
    with pytest.raises(WARMInitError, match="missing"):
        average_state_dicts([a, {"w": a["w"]}])
    with pytest.raises(WARMInitError, match="non-float buffer `i`"):
        average_state_dicts([a, {"w": a["w"], "i": torch.tensor([1, 3])}])
    with pytest.raises(WARMInitError, match="NaN"):
        average_state_dicts([a, {"w": torch.tensor([float("nan"), 0.0]), "i": a["i"]}])


def test_different_inits_are_refused():
    x, y = tiny_rm(0), tiny_rm(1)
    d = init_distances([x.state_dict(), y.state_dict()])[1]
    assert 1.2 < d < 1.6  # independent inits: ~sqrt(2)
    with pytest.raises(WARMInitError, match="fine-tuned from one init"):
        warm_average([x, y])
    warm_average([x, y], check_init=False)  # explicit opt-out works
    for bad in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_init_distance must be a finite number > 0"):
            warm_average([x, y], max_init_distance=bad)


def test_merge_cli(members, capsys):
    from mmreward.text.reward_model import RewardModel

    ms, _, root = members
    out = str(root / "merged")
    assert merge_main([p for _, p, _ in ms] + ["--weights", "1", "1", "2", "--out", out]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == out
    merged = RewardModel.from_pretrained(out)
    want = warm_average([m for m, _, _ in ms], [0.25, 0.25, 0.5])
    items = [{"prompt": "q", "response": "w1 w2"}, {"prompt": "q", "response": "w5 w0 w7"}]
    assert torch.allclose(merged.score(items), want.score(items), atol=1e-5)
    other = str(root / "other")
    tiny_rm(5).save_pretrained(other)
    from mmreward.cli import main as mmreward_main

    assert mmreward_main(["text", "merge", ms[0][1], other, "--out", str(root / "bad")]) == 2
    assert "one init" in capsys.readouterr().err and not os.path.exists(root / "bad")
    assert mmreward_main(["text", "merge", ms[0][1], "--out", out]) == 2


def test_members_that_read_inputs_differently_are_refused():
    """Same-shaped weights average without error, so a member with another max_length / pooling /
    input format, or another tokenizer of the same size, would merge into a model that reads inputs
    as member 0 only: each is refused, naming the setting and both values."""
    import dataclasses

    from tokenizers import Tokenizer, models, pre_tokenizers

    base = tiny_rm(0)
    for setting, value in (("max_length", 16), ("pooling", "last"), ("input_format", "joined")):
        other = copy.deepcopy(base)
        if getattr(other.config, setting) == value:
            value = {"input_format": "pair"}[setting]
        other.config = dataclasses.replace(other.config, **{setting: value})
        with pytest.raises(WARMInitError, match=f"{setting}={value!r} but model 0 with {setting}="):
            warm_average([base, other])
    shuffled = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS[::-1])}  # same size
    tk = Tokenizer(models.WordLevel(shuffled, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    other = copy.deepcopy(base)
    other.tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]",
                                                           cls_token="[CLS]", sep_token="[SEP]")
    with pytest.raises(WARMInitError, match="model 1 has another tokenizer than model 0"):
        warm_average([base, other])
    warm_average([base, copy.deepcopy(base)])  # members that read alike still merge


def test_merge_into_a_member_folder_is_refused(tmp_path, capsys):
    """``mmreward text merge a b --out a`` used to overwrite member a with the average (the input was lost)."""
    from mmreward.core.cli_config import run_cli

    init = tiny_rm(0)
    for m in range(2):
        rm = copy.deepcopy(init)
        with torch.no_grad():
            for p in rm.parameters():
                p.add_(0.01 * torch.randn_like(p))
        rm.save_pretrained(str(tmp_path / f"rm{m}"))
    before = (tmp_path / "rm0" / "model.safetensors").read_bytes()
    for out in (tmp_path / "rm0", str(tmp_path / "rm0") + "/", tmp_path / "x" / ".." / "rm0"):
        assert run_cli("mmreward text merge", merge_main, [str(tmp_path / "rm0"), str(tmp_path / "rm1"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "the output folder" in err and "the merged model would replace it" in err and err.count("\n") == 1
    assert (tmp_path / "rm0" / "model.safetensors").read_bytes() == before
    assert merge_main([str(tmp_path / "rm0"), str(tmp_path / "rm1"), "--out", str(tmp_path / "avg")]) == 0
