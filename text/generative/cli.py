"""Run a generative judge over preference pairs from the command line (same code path as the Python API).

    python -m mmreward.text.generative.cli rm_r1 --model path/to/causal-lm --data pairs.jsonl --limit 8 \\
        --max-new-tokens 256 --out verdicts.json
    python -m mmreward.text.generative.cli genrm --model folder --gguf-file model.Q4_1.gguf --data rm-bench/chat.json

The first argument is the method (genrm, gram, rm_r1, grm, reward_anything, critic_rm); the method's
flags map one to one onto its config dataclass (``--max-new-tokens`` → ``RMR1Config.max_new_tokens``).
Rows are ``{prompt, chosen, rejected}`` (.json / .jsonl / .parquet / saved datasets folder); RM-Bench
items (lists of 3 responses) use their first, concise, style. ``--model`` is a causal LM folder (or
hub id, or a GGUF file inside a folder) or a saved judge folder (its LM is used; ``critic_rm`` also
takes its reward head, and needs one: a Critic-RM folder or a ``ScalarHeadLM`` folder). Output:
accuracy (ties / no verdict ½), order-swapped accuracies and swap-consistency, parse metrics where
the judge generates, and per-row P(chosen ≻ rejected). The ``train-*`` commands save judge folders
(``save_pretrained``) that ``mmreward.load`` opens.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from typing import Any, Callable, Optional, Sequence

from mmreward.core.cli_config import _one_line, add_split_options, check_split_sources
from mmreward.core.folders import CheckpointError, local_path_only

_USER_ERRORS = (OSError, ValueError, TypeError, CheckpointError)  # one line on stderr, exit 2

# config fields that judging never reads (training losses, GenRM-CoT's sampling: `judge` scores the direct
# verifier): not offered by `text judge`, where they were silently ignored (the train-* commands keep them)
JUDGE_UNUSED = {"genrm": ("lam", "cot_instruction", "num_rationales", "max_new_tokens", "temperature", "seed"),
                "gram": ("label_smoothing",), "critic_rm": ("lam_start", "lam_end")}

METHODS = {  # method -> (module, judge class, config class)
    "genrm": ("genrm", "GenRM", "GenRMConfig"),
    "gram": ("gram", "GRAM", "GRAMConfig"),
    "rm_r1": ("rm_r1", "RMR1Judge", "RMR1Config"),
    "grm": ("grm", "GRMJudge", "GRMConfig"),
    "reward_anything": ("reward_anything", "RewardAnythingJudge", "RewardAnythingConfig"),
    "critic_rm": ("critic_rm", "CriticRM", "CriticRMConfig"),
}


def _field_choices(config_cls: type) -> dict:
    """The allowed values a config field declares (``metadata["choices"]``, e.g. prompt templates)."""
    return {f.name: f.metadata["choices"] for f in dataclasses.fields(config_cls) if "choices" in f.metadata}


def _user_error(prog: str, e: BaseException) -> int:
    """Bad input: one line on stderr and exit status 2 (transformers' messages span lines); the
    traceback only with ``MMREWARD_DEBUG=1``, as in every other command."""
    if os.environ.get("MMREWARD_DEBUG") == "1":
        raise e
    print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
    return 2


def _one_turn(value: Any) -> Any:
    """The text of a row field: a string; a conversation of one turn (TRL's conversational rows,
    ``[{"role": "assistant", "content": ...}]``) gives its content; a list of strings (RM-Bench's
    three styles) its first one. Anything else is returned as it is (and refused by the caller)."""
    if isinstance(value, list) and value:
        if isinstance(value[0], dict):
            return value[0].get("content") if len(value) == 1 else value
        return value[0]
    return value


def pair_row(r: Any, where: str) -> dict:
    """One ``{prompt, chosen, rejected}`` row as text (a one-turn conversation: its content; RM-Bench's
    three styles: the first), as the CLI reads ``--data`` and :func:`run` reads its rows."""
    from ..data import drop_repeated_prompt

    if not isinstance(r, dict) or not all(k in r for k in ("prompt", "chosen", "rejected")):
        raise ValueError(f"{where} needs 'prompt', 'chosen', 'rejected'")
    prompt = _one_turn(r["prompt"])
    c, j = (_one_turn(drop_repeated_prompt(r["prompt"], r[k])) for k in ("chosen", "rejected"))
    if not all(isinstance(x, str) for x in (prompt, c, j)):
        raise ValueError(f"{where}: prompt / chosen / rejected must be text (or one chat turn)")
    return {"prompt": prompt, "chosen": c, "rejected": j}


def load_rows(path: str, limit: int = 0, split: Optional[str] = None) -> list[dict]:
    """Preference rows ``{prompt, chosen, rejected}`` of ``path`` (``split``: one split of a saved
    DatasetDict / a .json object of lists); the first ``limit`` only when > 0."""
    from ..eval.rewardbench import read_rows

    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer >= 0 (0: all rows), got {limit!r}")
    rows = []
    for i, r in enumerate(read_rows(path, split)):
        rows.append(pair_row(r, f"{path}: row {i}"))
        if limit and len(rows) == limit:
            break
    if not rows:
        raise ValueError(f"{path}: no rows" + (f" in split {split!r}" if split else ""))
    return rows


def _records(path: str, flag: str, split: Optional[str] = None) -> list:
    """The rows of ``path`` (``--data`` / ``--eval-data`` / ``--solutions``); an empty file is an error
    naming the flag, not a silently skipped evaluation (or a "no rows" after the model has loaded)."""
    from mmreward.core.data import read_records

    rows = read_records(path, split=split)
    if not rows:
        raise ValueError(f"{flag} {path}: no rows" + (f" in split {split!r}" if split else ""))
    return rows


def _start_training(args: argparse.Namespace, output_dir: str) -> str:
    """Checks every ``train-*`` command makes before a model loads: the device (a CUDA request on a
    machine without one failed in ``.to()`` as an unexpected error) and the ``--out`` run folder (a file,
    or the ``--model`` folder itself, failed or mixed the run into the model only after loading it).
    Returns the device to use."""
    from mmreward.core.cli_config import check_output_folder
    from mmreward.core.device import resolve_device

    device = str(resolve_device(args.device))
    check_output_folder(output_dir, "--out", [(f"--{flag.replace('_', '-')}", getattr(args, flag, None))
                                              for flag in ("model", "judge_model")])
    return device


def _judge_type(folder: str) -> Optional[str]:
    """The method of a judge folder written by ``save_pretrained``, or None (any other folder)."""
    from mmreward.core.model import read_config

    if not os.path.isfile(os.path.join(folder, "config.json")):
        return None
    model_type = read_config(folder).get("model_type")
    return model_type if model_type in METHODS else None


def _holds_model(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json")) or os.path.isdir(os.path.join(folder, "backbone"))


def model_folder(model: str, flag: str = "--model") -> str:
    """``model`` as a local folder when it names one (``~`` expanded; a ``train-*`` run folder stands for its
    ``model/``, as in every other command), else as given: a hub id. A local path that is not there
    (``./runs/x``, ``runs/a/b``) or a file is an error naming the flag; transformers read it as a malformed
    hub id ("Repo id must use alphanumeric chars ...")."""
    path = os.path.expanduser(os.fspath(model))
    if os.path.isdir(path):
        from mmreward.core.checkpoint import run_folder_problem

        problem = run_folder_problem(path)  # a snapshot / unfinished run: what to open or run instead
        if problem is not None:
            raise ValueError(f"{flag} {problem}")
        inner = os.path.join(path, "model")
        return inner if not _holds_model(path) and _holds_model(inner) else path
    if os.path.exists(path):
        hint = " (a GGUF file: give its folder as the model and its name with --gguf-file)" if path.endswith(".gguf") else ""
        raise ValueError(f"{flag} {model} is a file, not a model folder{hint}")
    if local_path_only(path):
        raise FileNotFoundError(f"{flag} {model}: no such model folder")
    return path


def _check_gguf(folder: str, gguf_file: Optional[str], flag: str = "--model") -> None:
    """A local folder's GGUF setup, checked before transformers reads it: a ``--gguf-file`` that is not in the
    folder (transformers: "... Checkout 'https://huggingface.co//local/path/tree/main'"), a folder holding only
    GGUF files given without ``--gguf-file`` ("Unrecognized model ... Should have a `model_type` key"), and the
    ``gguf`` package missing (an ImportError after the command had started)."""
    import importlib.util

    local = os.path.isdir(folder)
    ggufs = sorted(f for f in os.listdir(folder) if f.endswith(".gguf")) if local else []
    if not gguf_file:
        if local and ggufs and not _holds_model(folder):
            raise ValueError(f"{flag} {folder} has no config.json but holds GGUF file(s) {ggufs[:5]}: name the one to "
                             f"load with --gguf-file (e.g. --gguf-file {ggufs[0]})")
        return
    if local and not os.path.isfile(os.path.join(folder, gguf_file)):
        raise FileNotFoundError(f"--gguf-file {gguf_file}: no such file in {flag} {folder} (GGUF files there: "
                                f"{ggufs[:5] if ggufs else 'none'})")
    if importlib.util.find_spec("gguf") is None:
        raise ValueError(f"--gguf-file {gguf_file}: reading a GGUF file needs the `gguf` package "
                         "(pip install 'gguf>=0.10.0'), which is not installed")


def load_model(method: str, model: str, gguf_file: Optional[str], device: str, flag: str = "--model",
               dtype: Optional[str] = None):
    """``(model, tokenizer)`` for ``method``: a causal LM (``critic_rm``: a ``ScalarHeadLM``) from a
    causal LM folder / hub id / GGUF file, a saved judge folder (or the ``train-*`` run folder holding it),
    or (``critic_rm``) a ScalarHeadLM folder. Errors name ``flag``. ``dtype`` (fp32 / bf16 / fp16) casts
    the language model for judging (a reward head keeps its own dtype); None loads it as saved."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmreward.core.device import resolve_dtype

    from .heads import ScalarHeadLM

    torch_dtype = resolve_dtype(dtype)  # a bad name is refused before anything loads
    model = model_folder(model, flag)
    if method == "critic_rm" and gguf_file:  # it reads a saved Critic-RM / ScalarHeadLM folder, never a GGUF file
        raise ValueError("--gguf-file is not read by critic_rm, which judges with a Critic-RM folder (save_pretrained "
                         "of train-critic-rm) or a ScalarHeadLM folder: leave --gguf-file out")
    if method != "critic_rm":
        _check_gguf(model, gguf_file, flag)
    if not gguf_file:
        from mmreward.registry import refuse_mmreward_model

        refuse_mmreward_model(flag, model, tuple(METHODS), "a causal LM (a folder or a hub id) or a judge folder "
                              "saved by train-genrm / train-gram / train-critic-rm")
    saved = None if gguf_file else _judge_type(model)
    if saved is not None:
        if method == "critic_rm" and saved != "critic_rm":
            raise ValueError(f"{model} holds a {saved} judge, which has no reward head for critic_rm")
        import mmreward

        judge = mmreward.load(model, device=device, dtype=dtype)
        return (judge.model if method == "critic_rm" else judge.causal_lm), judge.tokenizer
    if method == "critic_rm":
        if not os.path.isdir(os.path.join(model, "backbone")):
            raise ValueError(f"{model}: critic_rm needs a Critic-RM folder (save_pretrained) or a ScalarHeadLM "
                             "folder (backbone/ + head/)")
        m = ScalarHeadLM.from_pretrained(model, device=device)
        if torch_dtype is not None:
            m.backbone.to(torch_dtype)
        return m, AutoTokenizer.from_pretrained(os.path.join(model, "backbone"), trust_remote_code=False)
    from ..peft_adapters import is_peft_adapter

    if not gguf_file and os.path.isdir(model) and is_peft_adapter(model, None):
        # a judge fine-tuned as a LoRA adapter (SFTTrainer + peft_config): folded into its base, without peft
        from ..peft_adapters import load_causal_lm_adapter

        lm, tokenizer = load_causal_lm_adapter(model, dtype=torch_dtype)
        return lm.to(device).eval(), tokenizer
    kw = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        lm = AutoModelForCausalLM.from_pretrained(model, **kw, **_dtype_kwarg(torch_dtype), trust_remote_code=False)
    except OSError as e:
        if os.path.isdir(model):
            raise
        raise OSError(f"{flag} {model} is not a local folder, and as a hub id: {e}") from e
    return lm.to(device).eval(), AutoTokenizer.from_pretrained(model, **kw, trust_remote_code=False)


def _dtype_kwarg(dtype: Any) -> dict:
    """``from_pretrained``'s dtype argument: ``dtype`` from transformers 4.56, ``torch_dtype`` before."""
    if dtype is None:
        return {}
    import transformers
    from packaging.version import Version

    return {"dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype": dtype}


def _same_vocab(a: Any, b: Any) -> bool:
    return a.get_vocab() == b.get_vocab()


def load_meta_rm(folder: str, judge_tokenizer: Any, device: str = "cpu") -> Any:
    """A meta-RM (``ScalarHeadLM`` folder). It reads the judge's tokens, so its tokenizer must be the judge's."""
    from transformers import AutoTokenizer

    from .heads import ScalarHeadLM

    folder = model_folder(folder, "--meta-rm")
    if not os.path.isdir(os.path.join(folder, "backbone")):
        raise ValueError(f"{folder}: not a meta-RM folder (no backbone/); train one with `mmreward text train-meta-rm`")
    if not _same_vocab(AutoTokenizer.from_pretrained(os.path.join(folder, "backbone"), trust_remote_code=False), judge_tokenizer):
        raise ValueError(f"{folder}: the meta-RM was trained with another tokenizer than the judge's")
    return ScalarHeadLM.from_pretrained(folder, device=device).eval()


def _check_meta_flags(config: Any, meta_rm: Optional[str]) -> None:
    """``judge grm``: ``--k-meta`` and ``--meta-rm`` go together (checked before the judge loads): a
    meta-RM with ``--k-meta 0`` was loaded and silently never used; the others failed after loading."""
    k = config.k_meta  # k_meta <= num_samples: GRMConfig checks it
    if k and not meta_rm:
        raise ValueError(f"--k-meta {k} needs --meta-rm FOLDER (from `mmreward text train-meta-rm`) to rank the "
                         "judgements")
    if meta_rm and not k:
        raise ValueError(f"--meta-rm {meta_rm} is used only with --k-meta K > 0 (the top K of --num-samples "
                         "judgements by meta-RM score vote); without it every judgement votes")
    if meta_rm and not os.path.isdir(os.path.join(model_folder(meta_rm, "--meta-rm"), "backbone")):
        raise ValueError(f"{meta_rm}: not a meta-RM folder (no backbone/); train one with `mmreward text train-meta-rm`")


def run(method: str, config: Any, model: Any, tokenizer: Any, rows: Sequence[dict], swap: bool = True,
        meta_rm: Any = None, progress: bool = False) -> dict:
    """Judge ``rows`` with ``method`` (the CLI's whole job, usable from Python; ``meta_rm``: grm only);
    ``progress``: a bar on stderr counting the verdicts (each row's two with ``swap``) as the judge's prompts are
    read, the judge's one call left whole (cut in pieces, a sampling judge would draw other samples)."""
    from .position import evaluate_pairs_with_judge

    if not isinstance(method, str) or method.replace("-", "_") not in METHODS:  # was a bare KeyError
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    method = method.replace("-", "_")  # rm-r1, critic-rm: the CLI's aliases
    mod, cls, cfg = METHODS[method]
    config_cls = getattr(importlib.import_module(f"{__package__}.{mod}"), cfg)
    if config is not None and not isinstance(config, config_cls):  # was an AttributeError deep in the judge
        raise TypeError(f"the {method} judge takes a {cfg} (or None), got {type(config).__name__}")
    if isinstance(rows, (dict, str, bytes)) or not hasattr(rows, "__iter__"):  # a dict's keys would be the rows
        raise TypeError(f"rows must be a list of {{prompt, chosen, rejected}} rows, got {type(rows).__name__}"
                        + ("; wrap a single row in a list" if isinstance(rows, dict) else ""))
    rows = [pair_row(r, f"row {i}") for i, r in enumerate(rows)]  # what load_rows makes of a --data file
    extra = {"meta_rm": meta_rm} if meta_rm is not None else {}
    if extra and method != "grm":
        raise ValueError(f"meta_rm is for the grm judge, not {method}")
    judge = getattr(importlib.import_module(f"{__package__}.{mod}"), cls)(model, tokenizer, config, **extra)
    per_row = []

    def recording(prompts, first, second):
        p = judge.judge(prompts, first, second)
        per_row.append(p.double().tolist())
        return p

    if progress:
        from tqdm.auto import tqdm

        from .runner import bar_progress

        bar = tqdm(total=len(rows) * (2 if swap else 1), desc="judging", unit="verdict", dynamic_ncols=True,
                   file=sys.stderr)
        try:
            with bar_progress(bar, bar.total):
                out = evaluate_pairs_with_judge(recording, rows, swap=swap)
        finally:
            bar.close()
    else:
        out = evaluate_pairs_with_judge(recording, rows, swap=swap)
    if hasattr(judge, "metrics"):
        out["parse"] = judge.metrics()
    p = per_row[0]
    n = len(rows)
    out["p_chosen_first"] = p[:n]
    if swap:
        out["p_chosen_second"] = [1.0 - x for x in p[n:]]
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    from mmreward.core.cli_config import (CLIParser, add_config_options, check_output_file, config_from_args,
                                          output_path)
    from mmreward.core.device import resolve_device

    ap = CLIParser(prog="mmreward text judge", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="method", required=True)
    for name, (mod, _, cfg) in METHODS.items():
        # critic-rm etc. as well: the train-* commands spell the methods with hyphens (train-critic-rm)
        p = sub.add_parser(name, aliases=[name.replace("_", "-")] if "_" in name else [], help=f"{name} judge")
        p.add_argument("--model", required=True, help="causal LM folder or saved judge folder "
                                                      "(critic_rm: a Critic-RM or ScalarHeadLM folder)")
        p.add_argument("--gguf-file", help="GGUF file name inside --model")
        p.add_argument("--data", required=True, help="preference rows {prompt, chosen, rejected}")
        add_split_options(p, "--data")
        p.add_argument("--limit", type=int, default=0, help="first N rows only (0: all)")
        p.add_argument("--swap", action=argparse.BooleanOptionalAction, default=True, help="judge both orders")
        p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
        p.add_argument("--dtype", default=None, help="cast the language model: fp32 | bf16 | fp16 (default: as saved)")
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="a progress bar on stderr (default: when stderr is a terminal)")
        p.add_argument("--out", dest="output", type=output_path, help="write the result JSON here")
        p.add_argument("--output", dest="output", type=output_path, help=argparse.SUPPRESS)
        if name == "grm":
            p.add_argument("--meta-rm", help="meta-RM folder from `mmreward text train-meta-rm` (with --k-meta)")
        config_cls = getattr(importlib.import_module(f"{__package__}.{mod}"), cfg)
        add_config_options(p, config_cls, choices=_field_choices(config_cls), skip=JUDGE_UNUSED.get(name, ()))
    args = ap.parse_args(argv)
    args.method = args.method.replace("-", "_")  # an alias (critic-rm) is the method (critic_rm)
    mod, _, cfg = METHODS[args.method]
    try:
        config = config_from_args(getattr(importlib.import_module(f"{__package__}.{mod}"), cfg), args,
                                  skip=JUDGE_UNUSED.get(args.method, ()))
        if args.limit < 0:  # argparse takes -1; it must not read as "all rows"
            raise ValueError(f"--limit must be >= 0 (0: all rows), got {args.limit}")
        if args.output and os.path.isdir(args.output):  # checked now, not after every row is judged
            raise ValueError(f"--out {args.output} is a folder: give the path of the result JSON file")
        # an existing file of a judge folder (its config.json, manifest.json, lm/…) would be replaced
        check_output_file(args.output, "--out", [("--data", args.data)],
                          folders=[("--model", args.model), ("--meta-rm", getattr(args, "meta_rm", None))])
        device = str(resolve_device(args.device))  # before loading: .to("cuda") failed as an unexpected error
        if args.method == "grm":
            _check_meta_flags(config, args.meta_rm)
        rows = load_rows(args.data, args.limit, args.split)
        model, tok = load_model(args.method, args.model, args.gguf_file, device, dtype=args.dtype)
        meta = load_meta_rm(args.meta_rm, tok, device) if getattr(args, "meta_rm", None) else None
        res = run(args.method, config, model, tok, rows, swap=args.swap, meta_rm=meta,
                  progress=sys.stderr.isatty() if args.progress is None else args.progress)
    except _USER_ERRORS as e:
        return _user_error("mmreward text judge", e)
    from mmreward.core.cli_config import json_text

    # json_text: a judge's NaN probability (a diverged or overflowing LM) is null, not NaN, which is not JSON
    summary = {k: v for k, v in res.items() if not k.startswith("p_")}
    print(json_text(summary, indent=1))
    parse = res.get("parse")
    if isinstance(parse, dict) and parse.get("n_parsed", 0) < parse.get("n", 0):
        # an unparsed verdict counts as a tie (0.5): say so, or a 0.5 accuracy of unread outputs passes for a result
        print(f"mmreward text judge: warning: {parse['n'] - parse['n_parsed']} of {parse['n']} judge outputs had no "
              "verdict (scored 0.5, as ties); see \"parse\" → \"reasons\" (raise --max-new-tokens if cut off)",
              file=sys.stderr)
    if args.output:
        from mmreward.core.checkpoint import atomic_write_text

        atomic_write_text(args.output, json_text({"method": args.method, **res}, indent=1))
    return 0


def train_genrm_main(argv: Optional[Sequence[str]] = None) -> int:
    """``mmreward text train-genrm``: fine-tune a causal LM as a GenRM verifier with :func:`train_genrm`."""
    from mmreward.core.cli_config import CLIParser, add_config_options, config_from_args
    from mmreward.core.trainer import TrainConfig

    from .genrm import GenRM, GenRMConfig, _verification_rows, evaluate_genrm, train_genrm

    ap = CLIParser(prog="mmreward text train-genrm",
                   description="fine-tune a causal LM as a GenRM verifier (Yes / No + λ·SFT on solutions)")
    ap.add_argument("--model", required=True, help="causal LM folder (or hub id) with a chat template")
    ap.add_argument("--gguf-file", help="GGUF file name inside --model")
    ap.add_argument("--data", required=True, help="verification rows {prompt, response, correct} (.jsonl / .json)")
    ap.add_argument("--eval-data", help="held-out verification rows: accuracy / ECE / Brier")
    ap.add_argument("--solutions", help="rows {prompt, response} of correct answers for the λ term "
                                        "(default: the correct rows of --data)")
    add_split_options(ap, "--data", "--eval-data", "--solutions")
    ap.add_argument("--no-balance", dest="balance", action="store_false",
                    help="do not repeat the rarer verdict to balance Yes / No")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    # GenRMConfig's batch_size / seed are for scoring and sampling; here the training ones apply
    add_config_options(ap.add_argument_group("GenRM"), GenRMConfig, skip=("batch_size", "seed"))
    add_config_options(ap.add_argument_group("training"), TrainConfig)
    args = ap.parse_args(argv)

    def work():
        config = config_from_args(GenRMConfig, args, skip=("batch_size", "seed"))
        tcfg = config_from_args(TrainConfig, args)
        check_split_sources(args, "--eval-data", "--solutions")
        device = _start_training(args, tcfg.output_dir)
        rows = _records(args.data, "--data", args.split)
        eval_rows = _records(args.eval_data, "--eval-data", args.eval_split) if args.eval_data else None
        sols = _records(args.solutions, "--solutions", args.solutions_split) if args.solutions else None
        for flag, path, given in (("--data", args.data, rows), ("--eval-data", args.eval_data, eval_rows)):
            if given:  # malformed rows are named now, not after the model has loaded
                _verification_rows(given, f"{flag} {path}:")
        model, tok = load_model("genrm", args.model, args.gguf_file, device)
        genrm = GenRM(model, tok, config)
        before = evaluate_genrm(genrm, eval_rows) if eval_rows else None
        hist = train_genrm(genrm, rows, tcfg, eval_rows=eval_rows, solutions=sols, balance=args.balance)
        return hist, before, tcfg.output_dir, genrm.save_pretrained

    return _run_training("mmreward text train-genrm", work)


def _run_training(prog: str, work: Callable[[], tuple]) -> int:
    """The tail every ``train-*`` command shares: ``work()`` → ``(history, held-out figures before or None,
    output dir, save(folder))``; bad input → one line on stderr and exit code 2, nothing saved."""
    from mmreward.core.cli_config import print_training_summary

    try:
        hist, before, output_dir, save = work()
    except _USER_ERRORS as e:
        return _user_error(prog, e)
    from mmreward.core.train import end_distributed, is_main_process

    folder = os.path.join(output_dir, "model")
    if is_main_process():  # under torchrun one rank writes the folder (two swapping it raced)
        save(folder)
        print_training_summary(hist, before, folder)
    end_distributed()  # the other ranks end after the model is written
    return 0


def _scalar_head_lm(model: str, gguf_file: Optional[str], device: str, seed: int) -> tuple[Any, Any, Any]:
    """``(ScalarHeadLM, tokenizer, the causal LM when its head is new else None)``: a saved Critic-RM or
    ScalarHeadLM folder's, or a causal LM with a new head initialised from ``seed``."""
    import torch

    from .heads import ScalarHeadLM

    model = model_folder(model)
    if os.path.isdir(os.path.join(model, "backbone")) or _judge_type(model) == "critic_rm":
        m, tok = load_model("critic_rm", model, None, device)
        return m, tok, None
    lm, tok = load_model("genrm", model, gguf_file, device)
    torch.manual_seed(seed)  # the new head's initialisation follows --seed
    return ScalarHeadLM(lm).to(device), tok, lm


def train_gram_main(argv: Optional[Sequence[str]] = None) -> int:
    """``mmreward text train-gram``: GRAM stage 1 (pair SFT) or stage 2 (the A / B judge) with :func:`train_gram`."""
    from mmreward.core.cli_config import CLIParser, add_config_options, config_from_args
    from mmreward.core.trainer import TrainConfig

    from .gram import GRAM, GRAMConfig, evaluate_gram, train_gram

    ap = CLIParser(prog="mmreward text train-gram",
                   description="GRAM: stage 1 pair SFT, then stage 2 the A / B judge (run stage 2 on "
                               "stage 1's model folder)")
    ap.add_argument("--model", required=True, help="causal LM folder (or hub id) with a chat template")
    ap.add_argument("--gguf-file", help="GGUF file name inside --model")
    ap.add_argument("--data", required=True, help="preference rows {prompt, chosen, rejected}")
    ap.add_argument("--eval-data", help="held-out preference rows: stage-1 loss, accuracy, swap consistency")
    add_split_options(ap, "--data", "--eval-data")
    ap.add_argument("--stage", type=int, choices=(1, 2), default=2, help="1: pair SFT (labels unused); 2: judge")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    add_config_options(ap.add_argument_group("GRAM"), GRAMConfig, skip=("batch_size",), choices=_field_choices(GRAMConfig))
    add_config_options(ap.add_argument_group("training"), TrainConfig)
    args = ap.parse_args(argv)

    def work():
        config = config_from_args(GRAMConfig, args, skip=("batch_size",))
        tcfg = config_from_args(TrainConfig, args)
        check_split_sources(args, "--eval-data")
        device = _start_training(args, tcfg.output_dir)
        rows = load_rows(args.data, split=args.split)
        eval_rows = load_rows(args.eval_data, split=args.eval_split) if args.eval_data else None
        model, tok = load_model("gram", args.model, args.gguf_file, device)
        gram = GRAM(model, tok, config)
        before = evaluate_gram(gram, eval_rows) if eval_rows else None
        hist = train_gram(gram, rows, tcfg, stage=args.stage, eval_rows=eval_rows)
        return hist, before, tcfg.output_dir, gram.save_pretrained

    return _run_training("mmreward text train-gram", work)


def train_critic_rm_main(argv: Optional[Sequence[str]] = None) -> int:
    """``mmreward text train-critic-rm``: Critic-RM steps 1–3 — sample and filter critiques of preference
    pairs (or take rows that already carry them), then joint critique-LM + reward-head training."""
    from mmreward.core.checkpoint import atomic_write_text
    from mmreward.core.cli_config import CLIParser, add_config_options, config_from_args
    from mmreward.core.trainer import TrainConfig

    from .critic_rm import CRITIQUE_KEYS, CriticRM, CriticRMConfig, build_critique_rows, evaluate_critic_rm, \
        train_critic_rm

    ap = CLIParser(prog="mmreward text train-critic-rm",
                   description="Critic-RM: self-generated critiques, consistency filter, joint "
                               "critique-LM + Bradley-Terry training of a reward head")
    ap.add_argument("--model", required=True,
                    help="causal LM folder (a new reward head is added), a saved Critic-RM folder or a "
                         "ScalarHeadLM folder")
    ap.add_argument("--gguf-file", help="GGUF file name inside --model (causal LM only)")
    ap.add_argument("--data", required=True,
                    help="rows {prompt, chosen, rejected} (critiques are sampled and filtered here) or rows that "
                         "also carry critique_chosen / critique_rejected")
    ap.add_argument("--eval-data", help="held-out rows with critiques: joint loss, critique LM loss, pair accuracy")
    add_split_options(ap, "--data", "--eval-data")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    # CriticRMConfig's batch_size is for generation; its sampling seed follows the training --seed
    add_config_options(ap.add_argument_group("Critic-RM"), CriticRMConfig, skip=("batch_size", "seed"))
    add_config_options(ap.add_argument_group("training"), TrainConfig)
    args = ap.parse_args(argv)

    def work():
        tcfg = config_from_args(TrainConfig, args)
        config = config_from_args(CriticRMConfig, args, skip=("batch_size", "seed"))
        config.seed = tcfg.seed
        check_split_sources(args, "--eval-data")
        device = _start_training(args, tcfg.output_dir)
        rows = _records(args.data, "--data", args.split)
        eval_rows = _records(args.eval_data, "--eval-data", args.eval_split) if args.eval_data else None
        model, tok, _ = _scalar_head_lm(args.model, args.gguf_file, device, tcfg.seed)
        crm = CriticRM(model, tok, config)
        if rows and not all(isinstance(r, dict) and all(k in r for k in CRITIQUE_KEYS) for r in rows):
            rows, counts = build_critique_rows(crm, rows)
            print(json.dumps({"critiques": counts}))
            if not rows:
                raise ValueError(f"no pair kept a consistent critique ({counts['parse_rate']:.0%} of the critiques "
                                 "parsed a 'Score: x'): sample more (--num-critiques) or start from a model that follows "
                                 "the critique request")
            os.makedirs(tcfg.output_dir, exist_ok=True)
            atomic_write_text(os.path.join(tcfg.output_dir, "critique_rows.jsonl"),
                              "".join(json.dumps(r) + "\n" for r in rows))
        before = evaluate_critic_rm(crm, eval_rows) if eval_rows else None
        hist = train_critic_rm(crm, rows, tcfg, eval_rows=eval_rows)
        return hist, before, tcfg.output_dir, crm.save_pretrained

    return _run_training("mmreward text train-critic-rm", work)


def train_meta_rm_main(argv: Optional[Sequence[str]] = None) -> int:
    """``mmreward text train-meta-rm``: the DeepSeek-GRM meta-RM — sample GRM judgements of preference pairs
    (or take rows that already carry them), label each by whether its verdict was right, and train a
    scalar head with BCE (:func:`train_meta_rm`). ``text judge grm --meta-rm FOLDER --k-meta K`` uses it."""
    from mmreward.core.checkpoint import atomic_write_text
    from mmreward.core.cli_config import CLIParser, add_config_options, config_from_args
    from mmreward.core.trainer import TrainConfig

    from .grm import GRMConfig, GRMJudge, build_meta_rm_rows, evaluate_meta_rm, train_meta_rm

    ap = CLIParser(prog="mmreward text train-meta-rm",
                   description="DeepSeek-GRM meta-RM: BCE on whether each sampled judgement was right")
    ap.add_argument("--model", required=True,
                    help="meta-RM backbone: causal LM folder (a new head is added) or a saved meta-RM folder")
    ap.add_argument("--gguf-file", help="GGUF file name inside --model (causal LM only)")
    ap.add_argument("--judge-model", help="the GRM judge that samples judgements of pairs (default: --model); "
                                          "it must use --model's tokenizer")
    ap.add_argument("--judge-gguf-file", help="GGUF file name inside --judge-model")
    ap.add_argument("--data", required=True, help="pairs {prompt, chosen, rejected} (judged here) or rows "
                                                  "{messages, judgement, correct}")
    ap.add_argument("--eval-data", help="held-out pairs or rows, as --data: BCE and accuracy")
    add_split_options(ap, "--data", "--eval-data")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    # GRMConfig's batch_size is for generation and k_meta for inference; its sampling seed follows --seed
    add_config_options(ap.add_argument_group("GRM judge (sampling)"), GRMConfig, skip=("batch_size", "seed", "k_meta"))
    add_config_options(ap.add_argument_group("training"), TrainConfig)
    args = ap.parse_args(argv)

    def work():
        tcfg = config_from_args(TrainConfig, args)
        gcfg = config_from_args(GRMConfig, args, skip=("batch_size", "seed", "k_meta"))
        gcfg.seed = tcfg.seed
        check_split_sources(args, "--eval-data")
        device = _start_training(args, tcfg.output_dir)
        given = {"train": _records(args.data, "--data", args.split),  # read before the models load
                 "eval": _records(args.eval_data, "--eval-data", args.eval_split) if args.eval_data else None}
        meta, tok, base = _scalar_head_lm(args.model, args.gguf_file, device, tcfg.seed)
        judge = None

        def meta_rows(path: str, what: str) -> list[dict]:
            nonlocal judge
            rows = given[what]
            if rows and all(isinstance(r, dict) and {"messages", "judgement", "correct"} <= r.keys() for r in rows):
                return rows
            if judge is None:
                if args.judge_model:
                    jm, jt = load_model("grm", args.judge_model, args.judge_gguf_file, device, "--judge-model")
                    if not _same_vocab(jt, tok):
                        raise ValueError(f"--judge-model {args.judge_model}: its tokenizer differs from --model's; the "
                                         "meta-RM reads the judge's tokens, so give it the judge's tokenizer")
                elif base is not None:
                    jm, jt = base, tok
                else:
                    raise ValueError("--model is a meta-RM folder: give --judge-model to judge the pairs")
                judge = GRMJudge(jm, jt, gcfg)
            from mmreward.core.model import eval_while_scoring

            with eval_while_scoring(meta):  # the judge may share the meta-RM's backbone: sample without dropout
                rows, counts = build_meta_rm_rows(judge, rows)
            print(json.dumps({what: counts}))
            if counts["correct_rate"] in (0.0, 1.0):
                raise ValueError(f"{path}: every sampled judgement was {'right' if counts['correct_rate'] else 'wrong'} "
                                 f"(parse rate {counts['parse_rate']:.0%}); the meta-RM needs both kinds: sample more "
                                 "(--num-samples, --temperature) or use harder / easier pairs")
            os.makedirs(tcfg.output_dir, exist_ok=True)
            atomic_write_text(os.path.join(tcfg.output_dir, f"{what}_meta_rows.jsonl"),
                              "".join(json.dumps(r) + "\n" for r in rows))
            return rows

        rows = meta_rows(args.data, "train")
        eval_rows = meta_rows(args.eval_data, "eval") if args.eval_data else None
        before = evaluate_meta_rm(meta, tok, eval_rows) if eval_rows else None
        hist = train_meta_rm(meta, tok, rows, tcfg, eval_rows=eval_rows)
        return hist, before, tcfg.output_dir, lambda folder: meta.save_pretrained(folder, tok)

    return _run_training("mmreward text train-meta-rm", work)


if __name__ == "__main__":
    raise SystemExit(main())
