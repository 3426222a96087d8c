"""The reward-quality benchmark's metrics (Spearman, ROC-AUC, progress ρ) against values worked out by
hand, and its progress-probe episodes (expert for k steps, then holding still) on a real Meta-World env."""
import importlib.util
import math
import os
import shutil

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_dr_quality", os.path.join(
        ROOT, "benchmarks", "bench_diffusion_reward_quality.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rank_metrics_exact():
    b = _bench()
    np.testing.assert_array_equal(b.rankdata([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0])
    assert b.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert b.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(b.spearman([1, 1, 1], [1, 2, 3]))  # constant scores: undefined, not 0
    # positives 0.9, 0.4; negatives 0.5, 0.1: 3 of 4 pairs ordered -> 0.75
    assert b.roc_auc([0.9, 0.4, 0.5, 0.1], [True, True, False, False]) == pytest.approx(0.75)
    assert b.roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # ties count 1/2
    assert math.isnan(b.roc_auc([1.0, 2.0], [True, True]))


def test_progress_scale_selection_uses_validation_episodes_only(tmp_path):
    """Synthetic per-episode scores with a known answer: the video-model score orders the noise groups
    but barely tells success within a group, the progress score is exactly the success flag. β = 0
    misses the success-AUC goal (0.625); any β ≥ 1 ranks every success above every failure, so β = 1
    and 3 tie and the smaller is chosen. The test split's figures come only from episodes 2 and 3."""
    import json
    import sys

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import select_progress_scale as sel
    finally:
        sys.path.pop(0)
    eps = []
    for task in ("a-v3", "b-v3", "held-v3"):
        for noise in (0.0, 0.3, 0.6, 1.0):
            for i in range(4):
                success = i in (0, 2)  # one success and one failure per group in each split
                eps.append({"task": task, "policy": "noisy", "noise": noise, "file": f"{task}_n{noise}_{i:04d}.npz",
                            "success": success, "learned": -noise - 0.01 * i, "prog": float(success),
                            "frame_diff": 0.0, "nn": -noise})
        for i in range(4):
            eps.append({"task": task, "policy": "random", "noise": 0.0, "file": f"{task}_random_{i:04d}.npz",
                        "success": False, "learned": -5.0, "prog": 0.0, "frame_diff": 0.0, "nn": -5.0})
    src = tmp_path / "bench.json"
    src.write_text(json.dumps({"setup": {"train_tasks": ["a-v3", "b-v3"], "heldout_tasks": ["held-v3"]},
                               "episodes": eps}))
    out = tmp_path / "sel.json"
    assert sel.main(["--json", str(src), "--learned", "learned", "--progress", "prog", "--baseline", "nn",
                     "--grid", "0,1,3", "--val-episodes", "2", "--bootstrap", "20", "--save", str(out)]) == 0
    res = json.loads(out.read_text())
    assert not sel.meets_goals(res["validation_sweep"]["0"]) and res["chosen_beta"] == 1.0
    test = res["test"]["combined_beta1"]["train_tasks"]
    # test split: per group one success (i = 2) and one failure (i = 3) -> progress tells them apart
    assert test["success_auc_mean"] == pytest.approx(1.0)
    assert res["test"]["nn"]["train_tasks"]["success_auc_mean"] == pytest.approx(0.5)
    assert res["bootstrap_vs_baseline"]["combined_beta1"]["success_auc_mean"]["p_better"] == pytest.approx(1.0)
    with pytest.raises(SystemExit, match="empty split"):
        sel.main(["--json", str(src), "--learned", "learned", "--progress", "prog", "--val-episodes", "9"])


def test_pooled_comparison_averages_sets_and_refuses_overlap(tmp_path):
    """Two evaluation sets with known per-set Spearman ρ: in set A the learned score orders the four
    noise groups perfectly (ρ = −0.976 with 2 episodes per group: the σ ties cap it) and the
    baseline is reversed within groups only; in set B the learned score is anti-ordered. The pooled ρ
    is the mean of the two sets' figures, the bootstrap sees both, and a set given twice is refused."""
    import json
    import sys

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import compare_reward_runs as cmp
    finally:
        sys.path.pop(0)

    def write(name, seed, sign):
        eps = []
        for task in ("a-v3", "held-v3"):
            for noise in (0.0, 0.3, 0.6, 1.0):
                for i in range(2):
                    eps.append({"task": task, "policy": "noisy", "noise": noise, "file": f"{task}_n{noise}_seed{seed}_{i:04d}.npz",
                                "success": i == 0, "env_return": 1.0, "learned": sign * -noise + 0.01 * (i == 0),
                                "nn": -noise + 0.01 * i})
            for i in range(2):
                eps.append({"task": task, "policy": "random", "noise": 0.0, "file": f"{task}_random_seed{seed}_{i:04d}.npz",
                            "success": False, "env_return": 0.0, "learned": -5.0, "nn": -5.0})
        p = tmp_path / name
        p.write_text(json.dumps({"setup": {"train_tasks": ["a-v3"], "heldout_tasks": ["held-v3"], "eval_seed": seed},
                                 "episodes": eps}))
        return str(p)

    a, b = write("a.json", 1000, 1.0), write("b.json", 3000, -1.0)
    out = tmp_path / "pooled.json"
    assert cmp.main([a, b, "--baseline", "nn", "--bootstrap", "10", "--save", str(out)]) == 0
    res = json.loads(out.read_text())
    per_set = res["pooled"]["learned"]["spearman_noise_mean_per_set"]
    assert per_set[0] == pytest.approx(-0.976, abs=1e-3) and per_set[1] == pytest.approx(0.976, abs=1e-3)
    assert res["pooled"]["learned"]["train_tasks"]["spearman_noise_mean"] == pytest.approx(0.0, abs=1e-9)
    per_task = res["pooled"]["learned"]["spearman_noise_per_task"]  # every task, one figure per set
    assert per_task["a-v3"] == pytest.approx(per_set, abs=1e-9) and per_task["held-v3"] == pytest.approx(per_set, abs=1e-9)
    # success: the learned score puts each group's success first in both sets; nn puts it last
    assert res["pooled"]["learned"]["train_tasks"]["success_auc_mean"] > res["pooled"]["nn"]["train_tasks"]["success_auc_mean"]
    assert res["bootstrap_vs_baseline"]["learned"]["train_tasks/spearman_noise_mean"]["p_better"] == 0.0
    # index ranges select episodes; an empty range and a repeated set are refused
    assert cmp.main([a + "@1:", b + "@:1", "--baseline", "nn", "--bootstrap", "0"]) == 0
    with pytest.raises(SystemExit, match="no episodes"):
        cmp.main([a + "@5:", "--baseline", "nn", "--bootstrap", "0"])
    with pytest.raises(SystemExit, match="disjoint"):
        cmp.main([a, a, "--baseline", "nn", "--bootstrap", "0"])
    with pytest.raises(SystemExit, match="not scored"):
        cmp.main([a, "--methods", "missing", "--baseline", "nn", "--bootstrap", "0"])
    # --merge: another run of the same episodes joins as PREFIX:method and can be the baseline
    a2 = write("a2.json", 1000, -1.0)  # same episodes as a, anti-ordered learned score
    out2 = tmp_path / "merged.json"
    assert cmp.main([a, "--merge", f"old={a2}", "--methods", "learned", "--baseline", "old:learned",
                     "--bootstrap", "10", "--save", str(out2)]) == 0
    res2 = json.loads(out2.read_text())
    assert res2["pooled"]["learned"]["spearman_noise_mean_per_set"][0] == pytest.approx(-0.976, abs=1e-3)
    diff = res2["bootstrap_vs_baseline"]["learned"]["train_tasks/spearman_noise_mean"]  # ≈ −0.976 − 0.976
    assert diff["high"] < -1.5 and diff["p_better"] == 1.0
    with pytest.raises(SystemExit, match="same episodes"):
        cmp.main([a, "--merge", f"old={b}", "--baseline", "nn", "--bootstrap", "0"])
    with pytest.raises(SystemExit, match="one spec per set"):
        cmp.main([a, b, "--merge", f"old={a2}", "--baseline", "nn", "--bootstrap", "0"])
    # --combine: weighted sums of episode scores, from this run and a merged one; reported even when
    # --methods names others, bad specs refused
    out3 = tmp_path / "combined.json"
    assert cmp.main([a, "--merge", f"old={a2}", "--methods", "nn", "--combine", "flat=learned,1*old:learned",
                     "--combine", "back=-2*learned", "--baseline", "nn", "--bootstrap", "0", "--save", str(out3)]) == 0
    res3 = json.loads(out3.read_text())["pooled"]
    assert res3["back"]["spearman_noise_mean_per_set"][0] == pytest.approx(0.976, abs=1e-3)
    # learned + old:learned cancels the noise order, leaving the within-group success offset only
    assert abs(res3["flat"]["spearman_noise_mean_per_set"][0]) < 0.3
    for bad, match in (("flat", "NAME=KEY"), ("x=two*learned", "not a weight"), ("x=learned,nope", "not scored")):
        with pytest.raises(SystemExit, match=match):
            cmp.main([a, "--combine", bad, "--baseline", "nn", "--bootstrap", "0"])


def test_exploit_check_counts_tasks_where_random_beats_both_exploits():
    import sys

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import compare_reward_runs as cmp
    finally:
        sys.path.pop(0)
    scores = {"pass-v3": {"random": -1.0, "frozen_start": -3.0, "hover": -2.0},
              "hover-wins-v3": {"random": -1.0, "frozen_start": -3.0, "hover": -0.5},
              "frozen-wins-v3": {"random": -1.0, "frozen_start": 0.0, "hover": -2.0}}
    eps = [{"task": t, "policy": g, "r": v + d} for t, groups in scores.items() for g, v in groups.items() for d in (-0.1, 0.1)]
    eps += [{"task": "no-exploits-v3", "policy": "random", "r": 0.0}]
    assert cmp.exploit_tasks(eps, "r", list(scores) + ["no-exploits-v3"]) == ["pass-v3"]


def test_progress_spearman_rewards_getting_further():
    b = _bench()
    ks = list(b.HOLD_STEPS) * 2
    rising = [{"hold_after": k, "r": np.full(5, k / 10.0)} for k in ks]
    flat_late = [{"hold_after": k, "r": np.full(5, -abs(k - 10) / 10.0)} for k in ks]  # best at k = 10
    assert b.score_progress(rising, "r")["progress_spearman"] == pytest.approx(1.0)
    assert b.score_progress(flat_late, "r")["progress_spearman"] < 0
    assert math.isnan(b.score_progress([], "r")["progress_spearman"])
    s = b.summarise({"a": {"spearman_noise": -0.5, "success_auc": 0.7, "expert_vs_random_auc": 1.0,
                           "progress_spearman": 0.4},
                     "b": {"spearman_noise": -0.7, "success_auc": float("nan"), "expert_vs_random_auc": 0.9,
                           "progress_spearman": 0.2}}, ["a", "b"])
    assert s["progress_spearman_mean"] == pytest.approx(0.3)
    assert s["success_auc_mean"] == pytest.approx(0.7)  # NaN tasks are left out of the mean


def test_probe_episodes_hold_still(tmp_path):
    pytest.importorskip("metaworld")
    from mmreward.robotics.envs.base import setup_mujoco_gl

    setup_mujoco_gl()
    b = _bench()
    job = dict(kind="probe", task="drawer-open-v3", seeds=[2000], out=str(tmp_path / "probe"), size=32,
               action_repeat=2, max_steps=16)
    b._probe_job(job)
    eps = {e["hold_after"]: e for e in b.load_probes([job])}
    assert sorted(eps) == sorted(b.HOLD_STEPS)
    for k, e in eps.items():
        assert e["frames"].shape == (17, 32, 32, 3)
    # k = 0: the arm never moves, so the last frames are (nearly) identical; the full expert moves
    still = np.abs(eps[0]["frames"][-1].astype(int) - eps[0]["frames"][-2]).mean()
    moving = np.abs(eps[70]["frames"][6].astype(int) - eps[70]["frames"][5]).mean()
    assert still < 0.5 < moving
    # k = 10: the first 10 steps are the expert's, the rest hold: same frames as the full expert up to 10
    np.testing.assert_array_equal(eps[10]["frames"][:11], eps[70]["frames"][:11])
    assert np.abs(eps[10]["frames"][-1].astype(int) - eps[10]["frames"][-2]).mean() < 0.5
    b._probe_job(job)  # cached: no new files
    assert len(os.listdir(job["out"])) == len(b.HOLD_STEPS)


def test_quick_run_with_progress_ranker_saves_the_combined_model(tmp_path):
    """The whole benchmark at --quick sizes (real Meta-World episodes, ~2 min): both learned rewards
    get goals and baseline comparisons, and --save-pretrained writes the model with its ranker."""
    pytest.importorskip("metaworld")
    import json

    import torch

    from mmreward.robotics.envs.base import setup_mujoco_gl
    from mmreward.robotics.reward import DiffusionReward

    setup_mujoco_gl()
    b = _bench()
    saved, js = str(tmp_path / "saved"), str(tmp_path / "q.json")
    assert b.main(["--quick", "--work", str(tmp_path / "work"), "--json", js, "--plot", str(tmp_path / "q.png"),
                   "--workers", "1", "--threads", "1", "--estimator", "relative_likelihood", "--also-estimator", "",
                   "--progress-steps", "60", "--save-pretrained", saved]) == 0
    doc = json.load(open(js.replace(".json", "_quick.json")))
    motion = [f"+motion{lam:g}" for lam in b.MOTION_SCALES]
    keys = {"dr_relative_likelihood" + tail for tail in ["", "+progress"] + motion + [f"+progress{m}" for m in motion]}
    keys |= {f"dr_relative_likelihood+progress{m}+disp{d:g}" for m in [""] + motion for d in b.DISPLACEMENT_SCALES}
    assert set(doc["goals"]) == keys and set(doc["beats_baselines"]) == keys
    assert {"progress", "frame_diff", "nn_expert"} <= set(doc["results"])
    assert {e["policy"] for e in doc["episodes"]} == {"noisy", "random", "hover", "frozen_start", "frozen_final", "reversed"}
    for key in ("dr_relative_likelihood", "nn_expert"):  # time reversal and exploit figures for every method
        row = doc["results"][key]["per_task"]["door-open-v3"]
        assert 0 <= row["forward_vs_reversed_auc"] <= 1 and 0 <= row["random_vs_frozen_start_auc"] <= 1
        assert 0 <= row["random_vs_hover_auc"] <= 1
    ep = doc["episodes"][0]
    # the combined score is the sum of the two standardised terms (β = 1), episode means included
    assert ep["dr_relative_likelihood+progress"] == pytest.approx(ep["dr_relative_likelihood"] + ep["progress"], abs=1e-4)
    for e in doc["episodes"]:  # the motion deficit only ever subtracts, more with a larger λ
        assert e["dr_relative_likelihood+motion1"] <= e["dr_relative_likelihood"] + 1e-6
        assert e["dr_relative_likelihood+motion4"] <= e["dr_relative_likelihood+motion1"] + 1e-6
        # the displacement only ever adds; a frozen robot (its first frame repeated) gets none of it
        assert e["dr_relative_likelihood+progress+disp1"] >= e["dr_relative_likelihood+progress"] - 1e-6
        if e["policy"] == "frozen_start":
            assert e["dr_relative_likelihood+progress+disp4"] == pytest.approx(e["dr_relative_likelihood+progress"], abs=1e-5)
    model = DiffusionReward.from_pretrained(saved)
    assert model.progress is not None and model.config.progress_scale == 1.0
    frames = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8)
    assert torch.isfinite(model(frames)).all()
    # scoring the saved model again (--pretrained) reproduces its figures and reports its own sizes
    js2 = str(tmp_path / "p.json")
    assert b.main(["--quick", "--work", str(tmp_path / "work"), "--json", js2, "--plot", str(tmp_path / "p.png"),
                   "--workers", "1", "--threads", "1", "--estimator", "relative_likelihood", "--also-estimator", "",
                   "--progress-steps", "60", "--pretrained", saved, "--video-history", "5"]) == 0
    doc2 = json.load(open(js2.replace(".json", "_quick.json")))
    assert doc2["setup"]["pretrained"] == saved
    assert doc2["setup"]["video_history"] == model.video.config.num_history != 5
    def scores(d):
        return {(e["task"], e["file"]): e["dr_relative_likelihood"] for e in d["episodes"]}

    assert len(scores(doc)) == len(doc["episodes"]) and scores(doc2) == pytest.approx(scores(doc), abs=1e-5)

    # the saved model carries goal statistics; the goal-transfer benchmark on this run's episodes adds
    # γ·(−G/s_G) to its Diffusion Reward scores, and a rerun with the same settings reuses its goal scores
    assert int(model.goal_statistics[1]) == int(model.statistics[2]) > 0  # fitted on the same training frames
    spec = importlib.util.spec_from_file_location("bench_goal_transfer", os.path.join(
        os.path.dirname(__file__), "..", "..", "benchmarks", "bench_goal_transfer.py"))
    g = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g)
    quick_json = js.replace(".json", "_quick.json")
    argv = ["--work", str(tmp_path / "work_quick"), "--dr-json", quick_json, "--model", saved, "--goal-demos", "2",
            "--steps", "20", "--all-demos", "--workers", "1", "--threads", "1"]
    assert g.main(argv) == 0
    out = json.load(open(quick_json.replace(".json", "_goal.json")))
    for e in out["episodes"]:
        assert e["goal_tokens"] <= 0
        assert e["dr_relative_likelihood+goal8"] == pytest.approx(e["dr_relative_likelihood"] + 8 * e["goal_tokens"], abs=1e-4)
    assert {"goal_progress", "goal_pixels", "nn_goal_demos", "dr_relative_likelihood+progress+motion3+goal4"} <= set(
        out["results"])
    assert g.main(argv) == 0  # reuses the goal scores: identical output
    again = json.load(open(quick_json.replace(".json", "_goal.json")))
    assert again["episodes"] == out["episodes"] and again["timings"]["score_s"] < out["timings"]["score_s"]
    # --keys adds the goal term to other rules of the JSON (here the quality run's + displacement rule)
    key = "dr_relative_likelihood+progress+disp4"
    assert g.main(argv + ["--keys", key, "--goal-scales", "4", "--out-suffix", "_goal_disp"]) == 0
    keyed = json.load(open(quick_json.replace(".json", "_goal_disp.json")))
    native = {(e["task"], e["file"]): e for e in doc["episodes"]}
    for e in keyed["episodes"]:
        assert e[f"{key}+goal4"] == pytest.approx(native[(e["task"], e["file"])][key] + 4 * e["goal_tokens"], abs=1e-4)
    assert "dr_relative_likelihood+goal4" not in keyed["results"]

    # the displacement benchmark on the same run (its codec retrained in a fresh folder from the same
    # seeds, its episodes checked) gives the same KEY+dispδ scores the quality run computed itself
    spec = importlib.util.spec_from_file_location("bench_displacement", os.path.join(
        os.path.dirname(__file__), "..", "..", "benchmarks", "bench_displacement.py"))
    dmod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dmod)
    shutil.copytree(tmp_path / "work_quick" / "data", tmp_path / "fresh" / "data")
    assert dmod.main(["--work", str(tmp_path / "fresh"), "--dr-json", quick_json, "--workers", "1", "--threads", "1"]) == 0
    reused = json.load(open(quick_json.replace(".json", "_displacement.json")))
    native = {(e["task"], e["file"]): e for e in doc["episodes"]}
    for e in reused["episodes"]:
        for d in b.DISPLACEMENT_SCALES:
            key = f"dr_relative_likelihood+progress+disp{d:g}"
            assert e[key] == pytest.approx(native[(e["task"], e["file"])][key], abs=1e-4)
    assert reused["statistics"]["displacement_std"] == pytest.approx(
        float(DiffusionReward.from_pretrained(saved).displacement_statistics[0]), rel=1e-6)
    # --model takes the saved model's codec (no training); --caps bounds each frame's P/s_P before the mean
    assert dmod.main(["--work", str(tmp_path / "fresh"), "--dr-json", quick_json, "--model", saved, "--scales", "4",
                      "--caps", "0.5", "--keys", "dr_relative_likelihood", "--out-suffix", "_cap",
                      "--workers", "1", "--threads", "1"]) == 0
    cap = json.load(open(quick_json.replace(".json", "_cap.json")))
    assert cap["setup"]["caps"] == [0.5] and cap["setup"]["model"] == saved
    for e in cap["episodes"]:
        assert e["displacement_cap0.5"] <= min(e["displacement"], 0.5) + 1e-9
        assert e["dr_relative_likelihood+disp4cap0.5"] == pytest.approx(
            e["dr_relative_likelihood"] + 4 * e["displacement_cap0.5"], abs=1e-9)
    assert any(e["displacement_cap0.5"] < e["displacement"] for e in cap["episodes"])  # the cap binds somewhere

    # the motion-consistency benchmark: no model, s_C fitted on the training episodes as the quality run's
    # fit_statistics did (the same std as the saved model's), added to any rule of the JSON, here the capped one
    spec = importlib.util.spec_from_file_location("bench_consistency", os.path.join(
        os.path.dirname(__file__), "..", "..", "benchmarks", "bench_consistency.py"))
    cmod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cmod)
    capped_json = quick_json.replace(".json", "_cap.json")
    assert cmod.main(["--work", str(tmp_path / "fresh"), "--dr-json", capped_json, "--scales", "2",
                      "--keys", "dr_relative_likelihood+disp4cap0.5", "--workers", "1", "--threads", "1"]) == 0
    cons = json.load(open(capped_json.replace(".json", "_consistency.json")))
    saved_model = DiffusionReward.from_pretrained(saved)
    assert cons["statistics"]["consistency_std"] == pytest.approx(float(saved_model.consistency_statistics[0]), rel=1e-9)
    assert cons["statistics"]["frame_skip"] == saved_model.video.config.frame_skip
    native = {(e["task"], e["file"]): e for e in cap["episodes"]}
    for e in cons["episodes"]:
        base = native[(e["task"], e["file"])]["dr_relative_likelihood+disp4cap0.5"]
        assert e["dr_relative_likelihood+disp4cap0.5+cons2"] == pytest.approx(base + 2 * e["consistency"], abs=1e-9)
    frozen = [e["consistency"] for e in cons["episodes"] if e["policy"] in ("frozen_start", "frozen_final")]
    assert frozen and max(abs(c) for c in frozen) == 0.0  # a robot that never moves has no consistency to score
    assert {"consistency", "dr_relative_likelihood+disp4cap0.5+cons2"} <= set(cons["results"])
    with pytest.raises(SystemExit):
        cmod.main(["--dr-json", capped_json, "--grid", "0"])


def test_adroit_jobs_use_the_trained_expert_and_hold_the_hand(tmp_path):
    """Adroit has no scripted expert: the data jobs act with a trained policy (--expert-model), the
    probes hold the hand with its servo targets and the hover episodes jitter around the start pose."""
    pytest.importorskip("gymnasium_robotics")
    import torch

    from mmreward.robotics.envs.base import setup_mujoco_gl
    from mmreward.robotics.rl.policy import StatePolicy, StatePolicyConfig

    setup_mujoco_gl()
    b = _bench()
    torch.manual_seed(0)
    policy = StatePolicy(StatePolicyConfig(task="adroit-door", obs_dim=39, action_dim=28, hidden_dim=16,
                                           action_repeat=2))
    policy.save_pretrained(str(tmp_path / "expert"))
    assert b.parse_expert_models(str(tmp_path / "expert"), ["adroit-door", "door-open-v3"]) == {
        "adroit-door": str(tmp_path / "expert")}
    assert b.parse_expert_models("adroit-door=x,adroit-pen=y", []) == {"adroit-door": "x", "adroit-pen": "y"}
    with pytest.raises(ValueError, match="TASK=FOLDER"):
        b.parse_expert_models("adroit-door=x,oops", [])
    common = dict(size=32, action_repeat=2, max_steps=8, expert_model=str(tmp_path / "expert"))
    probe = dict(kind="probe", task="adroit-door", seeds=[2000], out=str(tmp_path / "probe"), **common)
    b._probe_job(probe)
    eps = {e["hold_after"]: e for e in b.load_probes([probe])}
    np.testing.assert_array_equal(eps[0]["frames"][:1], eps[70]["frames"][:1])
    assert not np.array_equal(eps[0]["frames"], eps[70]["frames"])  # the policy acts, holding does not
    expert = dict(kind="eval", task="adroit-door", policy="noisy", noise=0.0, episodes=1, seed=1000,
                  out=str(tmp_path / "noisy0"), **common)
    b._collect_job(expert)
    from mmreward.robotics.data.episodes import read_manifest

    (entry,) = read_manifest(expert["out"])
    assert entry["expert_model"] == os.path.abspath(tmp_path / "expert") and entry["policy"] == "noisy"
    exploit = dict(kind="exploit", task="adroit-door", policy="exploit", noise=0.0, episodes=1, seed=1000,
                   expert_dir=expert["out"], out=str(tmp_path / "exploit"), **common)
    b._exploit_job(exploit)
    got = {e["policy"]: e["frames"] for e in b.load_jobs([exploit], ("exploit",))}
    assert sorted(got) == sorted(b.EXPLOITS + ("reversed",))
    hover_motion = np.abs(np.diff(got["hover"].astype(int), axis=0)).mean()
    random = dict(kind="eval", task="adroit-door", policy="random", noise=0.0, episodes=1, seed=1000,
                  out=str(tmp_path / "random"), **common)
    b._collect_job(random)
    random_motion = np.abs(np.diff(b.load_jobs([random], ("eval",))[0]["frames"].astype(int), axis=0)).mean()
    assert 0 < hover_motion < random_motion
