"""A TRL user's text-RM workflow pushed at its edges: in-memory data as `datasets` / pandas give it,
a max_length the backbone cannot read, identical inputs in one scoring call."""
import pytest
import torch

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from text_rm_fixtures import bert_config, word_tokenizer  # noqa: E402

from mmreward.core.data import DataError  # noqa: E402
from mmreward.core.inputs import TextPair  # noqa: E402
from mmreward.text import RewardModel, RewardTrainConfig, evaluate_pairs, train_reward_model  # noqa: E402
from mmreward.text.data import load_preference_pairs  # noqa: E402

ROWS = [{"prompt": "what is two plus three", "chosen": "five", "rejected": "six", "margin": 1.0},
        {"prompt": "say a", "chosen": "a", "rejected": "b", "margin": None}]


def _rm(**kw):
    torch.manual_seed(0)
    return RewardModel.from_backbone(bert_config(), tokenizer=word_tokenizer(pair=True), **kw)


def test_max_length_past_the_backbone_positions_is_refused_before_training(tmp_path):
    # the tiny BERT reads 64 positions: a model trained with max_length=100 used to be saved promising to cut
    # at 100, then refused every input of 65..100 tokens when scored
    rm = _rm()
    before = rm.config.max_length
    cfg = RewardTrainConfig(output_dir=str(tmp_path / "run"), max_steps=1, batch_size=2, max_length=100,
                            progress=False)
    with pytest.raises(ValueError, match=r"max_length \(--max-length\) 100 is more than the 64 positions the "
                                         r"BertModel backbone reads"):
        train_reward_model(rm, [{k: v for k, v in r.items() if k != "margin"} for r in ROWS], config=cfg)
    assert rm.config.max_length == before and not (tmp_path / "run" / "model").exists()
    rm.check_max_length(64)  # the limit itself is fine


def test_identical_inputs_in_one_call_are_scored_once_and_score_alike():
    rm = _rm()
    seen = []
    forward = rm.forward

    def spy(input_ids, *a, **k):
        seen.append(input_ids.shape[0])
        return forward(input_ids, *a, **k)

    rm.forward = spy
    x, y = TextPair("say a", "a b c"), TextPair("say a", "b")
    s = rm.score([x, y, x, x], batch_size=1)
    assert sum(seen) == 2 and s[0] == s[2] == s[3] and s[0] != s[1]


def test_a_pair_with_equal_chosen_and_rejected_counts_as_wrong_as_its_warning_says():
    # scored in two batches the two equal inputs could differ in the last bit and count as right by chance
    rm = _rm()
    rows = [{"prompt": "say a", "chosen": "a", "rejected": "a"},
            {"prompt": "what is two plus three", "chosen": "five six seven", "rejected": "two"}]
    with pytest.warns(UserWarning, match="always counts as wrong"):
        m = evaluate_pairs(rm, rows, batch_size=1)
    assert m["n"] == 2 and m["accuracy"] in (0.0, 0.5)
    with pytest.warns(UserWarning):
        one = evaluate_pairs(rm, rows[:1])
    assert one["accuracy"] == 0.0 and one["reward_gap"] == 0.0


def test_a_datasets_dataset_dict_needs_one_split_and_a_window_works(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                               "test": datasets.Dataset.from_list(ROWS[:1])})
    # used to be "expected a list of dicts or a path, got a single dict", also with split= given
    with pytest.raises(DataError, match=r"DatasetDict holds splits \['train', 'test'\]: pass one split"):
        load_preference_pairs(dd)
    assert [p.chosen for p in load_preference_pairs(dd, split="test")] == ["five"]
    assert [p.chosen for p in load_preference_pairs(dd, split="train[1:]")] == ["a"]
    with pytest.raises(DataError, match=r"no split 'validation'; it has \['train', 'test'\]"):
        load_preference_pairs(dd, split="validation")
    rm = _rm()
    with pytest.raises(DataError, match=r"^train_pairs: the DatasetDict holds splits"):
        train_reward_model(rm, dd, config=RewardTrainConfig(output_dir=str(tmp_path / "run"), max_steps=1))
    one = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)})
    assert len(load_preference_pairs(one)) == 2


def test_a_pandas_dataframe_gives_its_rows_with_empty_cells_as_missing():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(ROWS)  # the second margin is NaN in the frame: pandas' empty cell
    pairs = load_preference_pairs(df)  # used to be "row 0 must be a dict, got str" (the column names)
    assert [(p.prompt, p.chosen, p.rejected, p.margin) for p in pairs] == [
        ("what is two plus three", "five", "six", 1.0), ("say a", "a", "b", None)]


def _conv(q, a):
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


IMPLICIT = [{"chosen": _conv(f"question {i}", f"good {i}"), "rejected": _conv(f"question {i}", f"bad {i}")}
            for i in range(4)]
EXPLICIT = [{"prompt": r["chosen"][:1], "chosen": r["chosen"][1:], "rejected": r["rejected"][1:]} for r in IMPLICIT]


def test_recipes_read_trl_implicit_prompt_rows_as_training_does():
    # text_recipes.md: the recipes take "the TRL format that train_reward_model reads"; implicit-prompt rows used
    # to be refused ("row 0: `prompt` must be a string or a message list, got NoneType" / "row 0 has no `prompt`")
    from mmreward.text.recipes import RRMConfig, curate, decontaminate, pair_margins, rrm_augment

    seen = []

    def scorer(prompts, responses):
        seen.extend(zip(prompts, responses))
        return torch.tensor([float(len(r[-1]["content"])) + (0.5 if "good" in r[-1]["content"] else 0.0)
                             for r in responses])

    assert pair_margins(IMPLICIT, scorer).tolist() == pair_margins(EXPLICIT, scorer).tolist() == [1.5] * 4
    assert all(p == [{"role": "user", "content": "question 0"}] for p, r in seen if r[-1]["content"].endswith(" 0"))
    kept, removed = decontaminate(IMPLICIT, ["question 2"], n=2)
    assert removed == [2] and kept == [IMPLICIT[i] for i in (0, 1, 3)]  # the caller's own rows come back
    kept, report = curate(IMPLICIT, scorer=scorer, eval_texts=["question 3"])
    assert kept == IMPLICIT[:3] and report["after_decontamination"] == 3
    assert rrm_augment(IMPLICIT, RRMConfig(seed=0)) == rrm_augment(EXPLICIT, RRMConfig(seed=0))
    other = dict(IMPLICIT[1], rejected=_conv("another question", "bad"))
    with pytest.raises(DataError, match=r"rrm_augment: row 1: the chosen and rejected conversations differ before"):
        rrm_augment([IMPLICIT[0], other, IMPLICIT[2]])
    with pytest.raises(ValueError, match=r"pair_margins: row 0: `prompt` must be .* got NoneType \(a row without"):
        pair_margins([{"chosen": "Human: hi Assistant: yo", "rejected": "Human: hi Assistant: no"}], scorer)


def test_rewardbench_and_rmbench_take_the_in_memory_datasets_load_dataset_returns():
    # load_dataset("allenai/reward-bench") is a DatasetDict (raw / filtered): it used to be refused as "a list
    # of rows", and split= as "a split of a data path, not of a list of rows"; a DataFrame as "row 0 is a str"
    datasets = pytest.importorskip("datasets")
    pd = pytest.importorskip("pandas")
    from mmreward.text.eval import evaluate_rewardbench, evaluate_rmbench

    def longer(prompts, responses):
        return torch.tensor([float(len(r)) for r in responses])

    rows = [{"prompt": "p", "chosen": "a long answer", "rejected": "no", "subset": "alpacaeval-easy"},
            {"prompt": "q", "chosen": "no", "rejected": "a long answer", "subset": "alpacaeval-easy"}]
    dd = datasets.DatasetDict({"raw": datasets.Dataset.from_list(rows), "filtered": datasets.Dataset.from_list(rows[:1])})
    assert evaluate_rewardbench(longer, dd, split="filtered")["accuracy"] == 1.0
    assert evaluate_rewardbench(longer, dd, split="raw")["accuracy"] == 0.5
    with pytest.raises(DataError, match=r"DatasetDict holds splits \['raw', 'filtered'\]: pass one split"):
        evaluate_rewardbench(longer, dd)
    assert evaluate_rewardbench(longer, pd.DataFrame(rows))["accuracy"] == 0.5
    item = {"prompt": "p", "chosen": ["aaa", "aaaa", "aaaaa"], "rejected": ["a", "aa", "aaaaaa"], "domain": "chat"}
    by_list = evaluate_rmbench(longer, [item])
    assert evaluate_rmbench(longer, pd.DataFrame([item]))["overall"] == by_list["overall"]
    assert evaluate_rmbench(longer, datasets.DatasetDict({"train": datasets.Dataset.from_list([item])}))["overall"] \
        == by_list["overall"]


def test_epochs_and_max_steps_together_are_refused_not_silently_replaced(tmp_path):
    # `--epochs 1 --max-steps 2` used to train epochs' number of steps, the asked 2 dropped without a word
    rm = _rm()
    rows = [{"prompt": "say a", "chosen": "a", "rejected": "b"}] * 8
    cfg = RewardTrainConfig(output_dir=str(tmp_path / "run"), epochs=1, max_steps=2, batch_size=2, progress=False)
    with pytest.raises(ValueError, match=r"both epochs \(1\) and max_steps \(2\) are set.*give one of them"):
        train_reward_model(rm, rows, config=cfg)
    assert not (tmp_path / "run").exists()
