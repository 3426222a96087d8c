"""The across-seed RL summary: means over the frames every seed evaluated, first-success frames,
success AUC, key fallbacks between files, and a clear error for a group no file holds."""
import json
import math

import pytest
from helpers import load_script


def _mod():
    return load_script("benchmarks/summarize_rl_seeds.py")


def _result(path, seed, runs):
    path.write_text(json.dumps({"task": "metaworld/button-press-v3", "seed": seed, "runs": runs}))
    return str(path)


def test_means_over_common_frames_and_key_fallback(tmp_path):
    m = _mod()
    a = _result(tmp_path / "s1.json", 1, {
        "sparse": {"frames": [0, 10, 20, 30], "success_rate": [0.0, 0.0, 0.4, 1.0], "episode_return": [1, 2, 3, 4]},
        "DR paper": {"frames": [0, 10, 20, 30], "success_rate": [0.0, 0.8, 0.0, 0.0], "episode_return": [1, 1, 1, 1]},
    })
    b = _result(tmp_path / "s2.json", 2, {  # shorter run, other key for the DR setting
        "sparse": {"frames": [0, 10, 20], "success_rate": [0.0, 0.0, 0.0], "episode_return": [3, 4, 5]},
        "diffusion-relative": {"frames": [0, 10, 20], "success_rate": [0.0, 0.2, 0.6], "episode_return": [5, 5, 5]},
    })
    out = tmp_path / "sum.json"
    assert m.main(["--json", a, b, "--group", "sparse::sparse", "--group", "DR::DR paper|diffusion-relative",
                   "--save", str(out)]) == 0
    s = json.loads(out.read_text())["summary"]
    assert s["sparse"]["frames"] == [0, 10, 20]  # 30 only in seed 1
    assert s["sparse"]["mean_success"] == pytest.approx([0.0, 0.0, 0.2])
    assert s["sparse"]["mean_return"] == pytest.approx([2.0, 3.0, 4.0])
    assert s["sparse"]["seeds_with_success"] == 1 and s["sparse"]["mean_first_success_frame"] == 20
    assert s["DR"]["seeds"] == [1, 2]
    assert s["DR"]["mean_success"] == pytest.approx([0.0, 0.5, 0.3])
    assert s["DR"]["mean_first_success_frame"] == 10
    # trapezoid AUC over [0, 20] / 20: seed 1 (0.8·10/2 + 0.8·10/2)/20 = 0.4, seed 2 (0.1·10 + 0.4·10)/20 = 0.25
    assert s["DR"]["mean_success_auc"] == pytest.approx((0.4 + 0.25) / 2)
    # KEY@TEXT: one run key, two settings told apart by the file name
    c = _result(tmp_path / "s1_scale10.json", 1, {
        "diffusion-relative": {"frames": [0, 10, 20], "success_rate": [0.0, 1.0, 1.0], "episode_return": [9, 9, 9]}})
    assert m.main(["--json", a, b, c, "--group", "DR::DR paper|diffusion-relative@s2",
                   "--group", "DR x10::diffusion-relative@scale10", "--save", str(out)]) == 0
    s = json.loads(out.read_text())["summary"]
    assert s["DR"]["seeds"] == [1, 2] and s["DR x10"]["seeds"] == [1]
    assert s["DR x10"]["mean_success"] == pytest.approx([0.0, 1.0, 1.0])


def test_paired_sign_flip_comparison(tmp_path):
    m = _mod()
    assert m.sign_flip_p([1.0, 1.0, 1.0]) == pytest.approx(2 / 8)  # only all-plus / all-minus reach |3|
    assert m.sign_flip_p([1.0, -1.0]) == pytest.approx(1.0)
    assert m.sign_flip_p([2.0, 1.0, 1.0, 1.0]) == pytest.approx(2 / 16)  # any flip lowers |sum| = 5
    files = []
    for seed, (base_ret, other_ret) in enumerate([(10, 20), (30, 35), (5, 5)], start=1):
        files.append(_result(tmp_path / f"s{seed}.json", seed, {
            "sparse": {"frames": [0, 10], "success_rate": [0.0, 0.0], "episode_return": [0, base_ret]},
            "DR": {"frames": [0, 10], "success_rate": [0.0, 0.2 * seed], "episode_return": [0, other_ret]}}))
    out = tmp_path / "sum.json"
    assert m.main(["--json", *files, "--group", "sparse::sparse", "--group", "DR::DR", "--save", str(out)]) == 0
    c = json.loads(out.read_text())["paired"]["DR vs sparse"]
    assert c["seeds"] == [1, 2, 3]
    assert c["final_return"]["diffs"] == [10, 5, 0] and c["final_return"]["mean_diff"] == pytest.approx(5.0)
    assert c["return_auc"]["diffs"] == pytest.approx([5.0, 2.5, 0.0])  # mean of a line from 0 to the final value
    # diffs (10, 5, 0): sign patterns with |sum| ≥ 15 are (+,+,±) and (−,−,±): 4 of 8
    assert c["final_return"]["p_two_sided"] == pytest.approx(0.5)
    assert c["final_success"]["diffs"] == pytest.approx([0.2, 0.4, 0.6])
    # t-interval of the mean of (10, 5, 0): 5 ± t(0.975, 2) · 5 / √3 = 5 ± 4.303 · 2.887
    lo, hi = c["final_return"]["ci95"]
    assert lo == pytest.approx(5 - 12.4212, abs=1e-3) and hi == pytest.approx(5 + 12.4212, abs=1e-3)
    assert all(math.isnan(x) for x in m.t_interval([1.0]))  # one seed: no spread, no interval


def test_final_success_pooled_over_seeds_with_wilson_interval(tmp_path):
    m = _mod()
    files = []
    for seed, final in ((1, 0.4), (2, 1.0)):
        path = tmp_path / f"s{seed}.json"
        path.write_text(json.dumps({"task": "adroit/door", "seed": seed, "eval_episodes": 5, "runs": {
            "sparse": {"frames": [0, 10], "success_rate": [0.0, final], "episode_return": [0, 1]}}}))
        files.append(str(path))
    out = tmp_path / "sum.json"
    assert m.main(["--json", *files, "--group", "sparse::sparse", "--save", str(out)]) == 0
    pooled = json.loads(out.read_text())["summary"]["sparse"]["final_success_pooled"]
    assert pooled["successes"] == 7 and pooled["episodes"] == 10 and pooled["rate"] == pytest.approx(0.7)
    lo, hi = pooled["wilson95"]
    assert lo == pytest.approx(0.3968, abs=1e-3) and hi == pytest.approx(0.8922, abs=1e-3)


def test_errors(tmp_path):
    m = _mod()
    a = _result(tmp_path / "s1.json", 1, {"sparse": {"frames": [0, 10], "success_rate": [0, 0], "episode_return": [0, 0]}})
    with pytest.raises(SystemExit):
        m.main(["--json", a, "--group", "DR::missing"])
    with pytest.raises(SystemExit):
        m.main(["--json", a, "--group", "no separator"])
