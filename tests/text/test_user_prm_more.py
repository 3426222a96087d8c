"""A math-reasoning researcher's PRM session: ProcessBench / TRL / PRM800K rows handed over as the DataFrame that
`pd.read_parquet` or `Dataset.to_pandas()` gives, best-of-N by the product of many step scores."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


def test_read_step_examples_takes_a_dataframe_read_back_from_parquet(tmp_path):
    """A DataFrame read from Parquet holds list columns as numpy arrays: every row was refused ("steps must be a
    non-empty list of steps ..., got array([...])")."""
    from mmreward.text.prm.data import read_step_examples

    rows = {
        "processbench": [{"id": "gsm8k-0", "problem": "3 +4", "steps": ["3+4=7", "7+1=8"], "label": -1},
                         {"id": "math-3", "problem": "3 +4", "steps": ["3+4=8"], "label": 0}],
        "trl": [{"prompt": "3 +4", "completions": ["3+4=7", "7+1=8"], "labels": [True, False]}],
        "prm800k": [{"problem": "3 +4", "steps": [{"text": "3+4=7", "rating": 1}, {"text": "7+1=9", "rating": -1}]}],
    }
    for name, records in rows.items():
        path = tmp_path / f"{name}.parquet"
        pd.DataFrame(records).to_parquet(path)
        frame = pd.read_parquet(path)
        assert any(type(v).__module__ == "numpy" for v in frame.iloc[0])  # what the user is handed
        got = read_step_examples(frame)
        want = read_step_examples(records)
        assert [(e.problem, e.steps, e.labels, e.first_error, e.subset) for e in got] == \
            [(e.problem, e.steps, e.labels, e.first_error, e.subset) for e in want], name


def test_best_of_n_by_product_ranks_long_solutions_whose_float32_product_underflows():
    """0.5 ** 300 and 0.6 ** 300 are both 0 in float32: the two samples tied and the first (worse) one won."""
    from mmreward.text.prm.search import best_of_n_search

    drawn = []

    def policy(problem, steps):
        if not steps:
            drawn.append("A" if not drawn else "B")
            return drawn[-1]
        return "x"

    evaluator = lambda problem, steps: 0.6 if steps[0] == "B" else 0.5  # noqa: E731
    result = best_of_n_search("q", policy, evaluator, 2, lambda p, s: len(s) >= 300, reduce="prod", max_depth=300)
    assert result.steps[0] == "B"


@pytest.mark.parametrize("thresholds", [0.5, "0.5"])
def test_processbench_sweep_names_a_single_threshold(thresholds):
    """tuple(0.5) failed as "'float' object is not iterable"; tuple("0.5") swept '0', '.', '5'."""
    import torch

    from mmreward.text.prm.eval import processbench_sweep

    with pytest.raises(TypeError, match=r"thresholds must be a list of numbers .* processbench_report"):
        processbench_sweep([torch.tensor([0.9, 0.1]), torch.tensor([0.9])], [1, -1], thresholds=thresholds)


def test_numpy_scalar_labels_are_read_as_numbers():
    """A first error from np.argmax (numpy int64) was refused as "label 1 must be -1 ... or 0..1"; a numpy float
    step label as not a float."""
    np = pytest.importorskip("numpy")
    from mmreward.text.prm.data import read_step_examples

    (e,) = read_step_examples([{"problem": "3 +4", "steps": ["3+4=7", "7+1=9"], "label": np.int64(1)}])
    assert (e.first_error, e.labels) == (1, [1.0, 0.0])
    (e,) = read_step_examples([{"prompt": "3 +4", "completions": ["3+4=7", "7+1=9"],
                                "labels": [np.bool_(True), np.float32(0.25)]}])
    assert e.labels == [1.0, 0.25]


def test_a_solution_with_only_neutral_steps_has_no_known_first_error():
    """A TRL row of None labels / a PRM800K row of 0 ratings (neutral='ignore') read as first_error -1, so ProcessBench
    counted it as a correct sample (as a ProcessBench row with per-step None labels is not: -2, unknown)."""
    from mmreward.text.prm.data import read_step_examples

    rows = [{"prompt": "3 +4", "completions": ["3+4=7", "7+1=8"], "labels": [None, None]},
            {"problem": "3 +4", "steps": [{"text": "3+4=7", "rating": 0}, {"text": "7+1=8", "rating": 0}]},
            {"problem": "3 +4", "steps": ["3+4=7", "7+1=8"], "labels": [None, None]}]
    assert [e.first_error for e in read_step_examples(rows)] == [-2, -2, -2]
    # a judged step still decides: all good is -1, neutral=good makes the 0 ratings good
    assert read_step_examples([{**rows[0], "labels": [True, None]}])[0].first_error == -1
    assert read_step_examples(rows[1:2], neutral="good")[0].first_error == -1


@pytest.mark.parametrize("name", ["qwen2.5-math-prm", "rlhflow-prm"])
def test_load_takes_aggregation_and_truncate_for_published_prm_folders(tmp_path, name):
    """`prm score --aggregation mean --truncate` set them on a published PRM, but mmreward.load(folder,
    aggregation="mean") (the mean RLHFlow's README ranks by) was refused: "they take no options besides device / dtype"."""
    import warnings

    import mmreward
    from test_prm_contract import FOLDER_NAMES, SOLUTIONS, WRITERS

    folder = str(tmp_path / FOLDER_NAMES.get(name, f"{name}-tiny"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        WRITERS[name](folder)
        plain, mean = mmreward.load(folder), mmreward.load(folder, aggregation="mean", truncate=True)
    assert (mean.config.aggregation, mean.config.truncate) == ("mean", True)
    parts = plain.score_parts(SOLUTIONS)
    assert [p.tolist() for p in mean.score_parts(SOLUTIONS)] == [p.tolist() for p in parts]
    assert mean.score(SOLUTIONS).tolist() == pytest.approx([float(p.mean()) for p in parts], abs=1e-6)
    with pytest.raises(ValueError, match=r"step_tag= is not an option of .* they take aggregation, truncate"):
        mmreward.load(folder, step_tag="x")  # the published input format stays fixed
