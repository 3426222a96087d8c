"""An RLHF researcher's sweep of ``mmreward text eval`` and the recipes: figures recomputed as the official
RM-Bench ``compute_accuracy`` / domain averaging do on the real RM-Bench data, RewardBench-layout files with
tie rows, WARM members whose backbones differ only in shape-neutral settings, and recipe configs given
wrong types. Fast: scorer callables and tiny models built from configs."""
import json
import os
import warnings

import numpy as np
import pytest
import torch

from mmreward.text.eval.rewardbench import evaluate_rewardbench
from mmreward.text.eval.rmbench import default_rmbench_dir, evaluate_rmbench, load_rmbench


def length_scorer(prompts, responses):
    return torch.tensor([float(len(r)) for r in responses])


def official_rmbench(items, sc, sr):
    """RM-Bench's ``compute_accuracy`` per domain (``domain.startswith(d)`` for chat / math / code / safety),
    then the mean of each figure over the domains present, as its final-result script does."""
    def compute_accuracy(idx):
        m = np.zeros((3, 3))
        for n in idx:
            for i in range(3):
                for j in range(3):
                    if sc[n][i] > sr[n][j]:
                        m[i][j] += 1
        m /= len(idx)
        return {"hard": np.sum(np.triu(m, 1)) / 3, "normal": np.mean(np.diag(m)), "easy": np.sum(np.tril(m, -1)) / 3}

    per = {}
    for d in ("chat", "math", "code", "safety"):
        idx = [n for n, it in enumerate(items) if it["domain"].startswith(d)]
        if idx:
            per[d] = compute_accuracy(idx)
    return per, {k: float(np.mean([v[k] for v in per.values()])) for k in ("easy", "normal", "hard")}


def test_real_rmbench_figures_equal_the_official_formulas():
    folder = default_rmbench_dir()
    if not os.path.isdir(folder):
        pytest.skip(f"RM-Bench data not found at {folder}")
    items = load_rmbench(folder)
    res = evaluate_rmbench(length_scorer, folder)
    per, overall = official_rmbench(items, res["scores_chosen"], res["scores_rejected"])
    assert res["overall_domains"] == list(per)
    for k in ("easy", "normal", "hard"):
        assert res["overall"][k] == pytest.approx(overall[k], abs=1e-12)
        for d, v in per.items():
            got = res["domains"][d][k] if d in res["domains"] else None
            if got is not None:
                assert got == pytest.approx(v[k], abs=1e-12)
    # one domain, and one row: the same formulas on the subset
    chat = evaluate_rmbench(length_scorer, folder, domains="chat")
    assert chat["overall"]["hard"] == pytest.approx(per["chat"]["hard"], abs=1e-12)
    one = evaluate_rmbench(length_scorer, items[:1])
    assert one["num_items"] == 1 and set(one["overall_domains"]) == {"chat"}


def test_rewardbench_tie_rows_are_left_out_not_counted_wrong(tmp_path):
    """A custom RewardBench-layout file with RRM tie rows (``tie: true`` / ``target: 0.5``): each was scored as a
    pair whose "chosen" must win, so the accuracy depended on which response of a tie was listed first."""
    rows = [{"prompt": "q1", "chosen": "a long good answer", "rejected": "bad", "subset": "alpacaeval-easy"},
            {"prompt": "q2", "chosen": "x", "rejected": "longer y", "subset": "alpacaeval-easy", "tie": True},
            {"prompt": "q3", "chosen": "x", "rejected": "longer z", "subset": "alpacaeval-easy", "target": 0.5},
            {"prompt": "q4", "chosen": "ok answer", "rejected": "no", "subset": "math-prm", "extra": [1, 2]}]
    path = tmp_path / "rb.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match="left out 2 tie row"):
        res = evaluate_rewardbench(length_scorer, str(path))
    assert res["num_pairs"] == 2 and res["accuracy"] == 1.0 and res["tie_rows_left_out"] == 2
    assert res["subsets"] == {"alpacaeval-easy": 1.0, "math-prm": 1.0}
    assert res["rows_scored"] == [0, 3] and len(res["scores_chosen"]) == 2  # the scores' rows in the caller's list
    with pytest.raises(ValueError, match=r"row 0: field 'target' must be 1 \(chosen preferred\) or 0.5"):
        evaluate_rewardbench(length_scorer, [{**rows[0], "target": 0.3}])  # as training refuses it
    with pytest.raises(ValueError, match="all 2 rows are tie rows"):
        evaluate_rewardbench(length_scorer, [rows[1], rows[2]])
    with pytest.raises(ValueError, match="row 0: field 'tie' must be true / false"):
        evaluate_rewardbench(length_scorer, [{**rows[0], "tie": "yes"}])
    # the CLI's --json carries the same figures
    from mmreward.text.eval.cli import EvalConfig, run_eval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = run_eval(EvalConfig(benchmark="rewardbench", data=str(path), progress=False), scorer=length_scorer)
    assert cli == res


def _tiny_rm(seed=0, **backbone_kw):
    pytest.importorskip("transformers")
    from text_rm_fixtures import bert_config, word_tokenizer

    from mmreward.text import RewardModel

    torch.manual_seed(seed)
    return RewardModel.from_backbone(bert_config(**backbone_kw), tokenizer=word_tokenizer(pair=True))


@pytest.mark.parametrize("kw", [{"hidden_act": "relu"}, {"layer_norm_eps": 1e-5}])
def test_warm_refuses_backbones_that_differ_in_a_shape_neutral_setting(kw):
    """Same keys, shapes and init, another activation / norm epsilon: averaged without a word into a model that
    computes with member 0's setting."""
    from mmreward.text.recipes.warm import WARMInitError, warm_average

    a, b = _tiny_rm(0), _tiny_rm(0, **kw)
    key = next(iter(kw))
    with pytest.raises(WARMInitError, match=f"backbone has {key}=.*not the same architecture"):
        warm_average([a, b])
    if key == "hidden_act":  # another architecture is named by its model type, not by some other key
        from text_rm_fixtures import llama_config, word_tokenizer

        from mmreward.text import RewardModel

        llama = RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer(pair=True), input_format="pair")
        with pytest.raises(WARMInitError, match="backbone has model_type='llama' but model 0's model_type='bert'"):
            warm_average([a, llama])
    # dropout (WARM diversifies it across members) and provenance keys do not count
    c = _tiny_rm(0, hidden_dropout_prob=0.0)
    c.config.backbone["_name_or_path"] = "elsewhere"
    merged = warm_average([a, c])
    assert merged.config.backbone["hidden_act"] == "gelu"


def test_recipe_configs_refuse_wrong_types(tmp_path):
    from mmreward.text.recipes import MergeConfig, RRMConfig, merge

    for kw in ({"seed": "0"}, {"seed": 1.5}, {"seed": True}):  # random.Random("0") drew other rows than seed 0
        with pytest.raises(TypeError, match="RRMConfig.seed must be an integer"):
            RRMConfig(**kw)
    with pytest.raises(TypeError, match="RRMConfig.include_original must be True or False"):
        RRMConfig(include_original="False")
    assert RRMConfig(seed=np.int64(3)).seed == 3
    out = str(tmp_path / "merged")
    with pytest.raises(TypeError, match="MergeConfig.members must be a list"):  # was "folder / is named twice"
        merge(MergeConfig(members="runs/rm_s0", out=out))
    with pytest.raises(TypeError, match="MergeConfig.check_init must be True or False"):
        merge(MergeConfig(members=["a", "b"], out=out, check_init="no"))
    with pytest.raises(TypeError, match="MergeConfig.max_init_distance must be a number"):
        merge(MergeConfig(members=["a", "b"], out=out, max_init_distance=True))
    assert not os.path.exists(out)


def test_raft_config_refuses_string_switches_and_an_unused_top_fraction():
    from mmreward.text.recipes import RaftConfig

    # overwrite="no" was truthy: the folder's earlier RAFT run was removed
    for name in ("overwrite", "tensorboard", "progress", "keep_snapshots"):
        with pytest.raises(TypeError, match=f"RaftConfig.{name} must be True or False"):
            RaftConfig(**{name: "no"})
    # top_fraction with the default best-per-prompt selection was silently unused
    with pytest.raises(ValueError, match="top_fraction applies to selection='top_fraction' only"):
        RaftConfig(top_fraction=0.5)
    assert RaftConfig(selection="top_fraction", top_fraction=0.5).top_fraction == 0.5


def test_rrm_dataset_refuses_a_scorer_it_would_not_use():
    """``rrm_dataset(pairs, scorer=current_rm)`` without ``filter_threshold`` returned every augmented row: the
    current RM given to filter with was silently unused."""
    from mmreward.text.recipes import RRMConfig, rrm_dataset

    pairs = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)]
    with pytest.raises(ValueError, match="a scorer was given but RRMConfig.filter_threshold is None"):
        rrm_dataset(pairs, RRMConfig(seed=0), scorer=length_scorer)
    assert len(rrm_dataset(pairs, RRMConfig(seed=0))) == 45
    kept = rrm_dataset(pairs, RRMConfig(seed=0, filter_threshold=0.0), scorer=length_scorer)
    assert 3 <= len(kept) < 45


def test_warm_merges_one_model_saved_by_another_transformers_version(tmp_path):
    """A member whose backbone config carries the keys transformers 4.x writes (max_length, num_beams, torchscript,
    use_bfloat16, ...) was refused ("backbone has max_length=20 but model 0's max_length=None: not the same
    architecture"): the configs are compared as the loaded models hold them, on the keys both have."""
    import mmreward
    from mmreward.text.recipes.warm import warm_average

    a = _tiny_rm(0)
    for name in ("a", "b"):
        a.save_pretrained(str(tmp_path / name))
    path = tmp_path / "b" / "config.json"
    body = json.loads(path.read_text())
    body["config"]["backbone"].update(max_length=20, num_beams=1, torchscript=False, use_bfloat16=False,
                                      pruned_heads={}, tie_encoder_decoder=False)
    path.write_text(json.dumps(body))
    os.remove(tmp_path / "b" / "manifest.json")  # the file was edited on purpose
    merged = warm_average([mmreward.load(tmp_path / "a"), mmreward.load(tmp_path / "b")])
    torch.testing.assert_close(merged.score([("q", "good")]), a.score([("q", "good")]))
