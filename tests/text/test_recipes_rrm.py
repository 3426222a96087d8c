"""RRM augmentation: structure of the 8 triplets + 6 ties, seeding, filtering, and that it beats plain
BT on held-out data when the training set has a planted length artifact."""
import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.text.recipes.rrm import RRMConfig, filter_augmented, rrm_augment, rrm_dataset, tie_mask

NT = 16  # topics / answers in the synthetic task (4 pairs per prompt in the 64 training pairs)
WORDS = [f"t{i}" for i in range(NT)] + [f"a{i}" for i in range(NT)] + ["x", "q"]


def pairs(n):
    return [{"prompt": f"p{i}", "chosen": f"w{i}", "rejected": f"l{i}", "margin": 1.0} for i in range(n)]


def test_augment_structure_and_seed():
    data = pairs(5)
    rows = rrm_augment(data, RRMConfig(seed=3))
    assert len(rows) == 5 * (1 + 8 + 6)
    assert rows == rrm_augment(data, RRMConfig(seed=3)) and rows != rrm_augment(data, RRMConfig(seed=4))
    for i in range(5):
        block = rows[i * 15:(i + 1) * 15]
        orig, trip, ties = block[0], block[1:9], block[9:]
        assert orig == {"prompt": f"p{i}", "chosen": f"w{i}", "rejected": f"l{i}", "tie": False, "rrm": "original", "margin": 1.0}
        assert all(r["prompt"] == f"p{i}" for r in block)
        foreign = {r["rejected"] for r in trip}
        js = {s[1:] for s in foreign}
        assert len(foreign) == 4 and len(js) == 2 and str(i) not in js  # both responses of two other examples
        assert foreign == {f"{k}{j}" for j in js for k in "wl"}
        assert sorted(r["chosen"] for r in trip) == [f"l{i}"] * 4 + [f"w{i}"] * 4
        assert all(r["tie"] and r["rrm"] == "tie" for r in ties) and not any(r["tie"] for r in trip)
        assert {frozenset((r["chosen"], r["rejected"])) for r in ties} == {frozenset(p) for p in
                                                                          __import__("itertools").combinations(foreign, 2)}
    assert tie_mask(rows).sum() == 30
    assert len(rrm_augment(data, RRMConfig(include_original=False, ties=False))) == 40


def test_augment_errors():
    with pytest.raises(ValueError, match="at least 3"):
        rrm_augment(pairs(2))
    with pytest.raises(ValueError, match="row 1 has no `rejected`"):
        rrm_augment([{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}, {}])
    with pytest.raises(ValueError, match="no scorer"):
        rrm_dataset(pairs(3), RRMConfig(filter_threshold=0.5))


def test_filter_drops_solved_rows_only():
    rows = rrm_augment(pairs(4), RRMConfig(seed=0))

    def scorer(prompts, responses):  # own responses score 1, foreign 0: every triplet solved by margin 1
        return torch.tensor([1.0 if r[1:] == p[1:] else 0.0 for p, r in zip(prompts, responses)])

    kept = filter_augmented(rows, scorer, threshold=0.5)
    # triplets (margin 1 > 0.5) and ties (|0 - 0| < 0.5) are all solved; originals (margin 0) stay
    assert [r["rrm"] for r in kept] == ["original"] * 4
    assert len(filter_augmented(rows, scorer, threshold=2.0)) == 4 + 4 * 8  # ties still solved, triplets not


# --------------------------------------------------------------------------- learning
def tokenizer():
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]")


def artifact_pairs(n, rng, chosen_longer):
    """Prompt "q tX"; the right answer is aX, a wrong one aZ, each padded with filler words x.
    chosen_longer=True plants the artifact (chosen 1-3 words longer); False reverses it."""
    rows = []
    for _ in range(n):
        X = rng.randrange(NT)
        Z = rng.choice([z for z in range(NT) if z != X])
        short = rng.randint(0, 5)
        long_ = short + rng.randint(1, 3)
        lc, lr = (long_, short) if chosen_longer else (short, long_)
        rows.append({"prompt": f"q t{X}", "chosen": f"a{X}" + " x" * lc, "rejected": f"a{Z}" + " x" * lr})
    return rows


@pytest.mark.learning
def test_rrm_beats_bt_on_planted_length_artifact(tmp_path):
    transformers = pytest.importorskip("transformers")
    from mmreward.text.reward_model import RewardModel
    from mmreward.text.train import RewardTrainConfig, evaluate_pairs, train_reward_model

    rng = random.Random(0)
    train, test = artifact_pairs(64, rng, True), artifact_pairs(200, rng, False)
    acc = {}
    for name, data in (("bt", train), ("rrm", rrm_augment(train, RRMConfig(seed=0)))):
        torch.manual_seed(0)
        cfg = transformers.BertConfig(vocab_size=len(WORDS) + 4, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=32)
        rm = RewardModel.from_backbone(cfg, tokenizer=tokenizer())
        tc = RewardTrainConfig(output_dir=str(tmp_path / name), max_steps=100, batch_size=16, lr=3e-3, warmup_steps=10,
                               progress=False, tensorboard=False, plot=False, resume=False, log_every=0)
        train_reward_model(rm, data, None, tc)
        acc[name] = evaluate_pairs(rm, test)["accuracy"]
    # BT learns "longer is better" (held-out, where chosen is shorter: 0-2.5%); RRM's ties and
    # non-contextual triplets make length uninformative, so it learns some of the real signal
    # (data seeds 0 / 1 / 2, model seed 0: 72.5 / 40.5 / 23 %; BT 2 / 0 / 1.5 %)
    assert acc["bt"] < 0.1, acc
    assert acc["rrm"] > acc["bt"] + 0.15, acc


def test_foreign_responses_answer_another_prompt():
    """Data with several pairs per prompt: the two foreign examples used to be drawn among all other rows, so a
    response to the *same* prompt became a "non-contextual" negative (the own rejected response preferred over
    the prompt's chosen one) and ties paired a prompt's own chosen and rejected responses."""
    rows = [{"prompt": f"p{i // 3}", "chosen": f"w{i}", "rejected": f"l{i}"} for i in range(12)]  # 3 pairs per prompt
    for seed in range(5):
        out = rrm_augment(rows, RRMConfig(seed=seed))
        for r in out:
            if r["rrm"] == "original":
                continue
            for side in ("chosen", "rejected") if r["rrm"] == "tie" else ("rejected",):
                owner = int(r[side][1:]) // 3  # the prompt this response answers
                assert f"p{owner}" != r["prompt"], (seed, r)
    # message-list prompts are compared by value
    chat = [{"prompt": [{"role": "user", "content": f"q{i % 2}"}], "chosen": f"w{i}", "rejected": f"l{i}"}
            for i in range(6)]
    for r in rrm_augment(chat, RRMConfig(seed=1, include_original=False, triplets=False)):
        assert all(int(r[side][1:]) % 2 != int(r["prompt"][0]["content"][1:]) for side in ("chosen", "rejected")), r
    with pytest.raises(ValueError, match=r"row 0.s prompt is shared by 3 of the 4 rows: its non-contextual rows need "
                                         r"two examples with another prompt"):
        rrm_augment([{"prompt": "a" if i < 3 else "b", "chosen": f"w{i}", "rejected": f"l{i}"} for i in range(4)])
    with pytest.raises(ValueError, match="all off"):
        rrm_augment(rows, RRMConfig(include_original=False, triplets=False, ties=False))
