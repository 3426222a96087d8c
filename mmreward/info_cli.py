"""``mmreward info``: what a model folder (or shipped name, run folder, hub id) holds, before scoring with it.

    mmreward info runs/rm                   # layout / model type, files, manifest check: nothing is loaded
    mmreward info Skywork-Reward-V2 --load  # also load it: input type and fields, parameters, dtype, config
    mmreward info metaworld-64 --json

Without ``--load`` only file names, sizes and JSON are read (of a hub id, only its JSON and tokenizer
files are fetched), so it is instant on a 70B checkpoint and says which reader ``mmreward.load``
would use, or why none fits.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional, Sequence

from mmreward.core.cli_config import CLIParser, json_text


def _files(folder: str) -> tuple[int, int, list[str]]:
    """(files, bytes, links to missing files) below ``folder``: a hub snapshot links each file to a
    blob, and a download that stopped leaves links to blobs that are not there."""
    count = total = 0
    dangling = []
    for root, _, names in os.walk(folder):
        for n in names:
            path = os.path.join(root, n)
            if os.path.islink(path) and not os.path.exists(path):
                dangling.append(os.path.relpath(path, folder))
                continue
            count += 1
            total += os.path.getsize(path)
    return count, total, sorted(dangling)


def _size(nbytes: float) -> str:
    if nbytes < 1024:
        return f"{nbytes:.0f} B"
    for unit in ("KB", "MB"):
        nbytes /= 1024
        if nbytes < 1024:
            return f"{nbytes:.1f} {unit}"
    return f"{nbytes / 1024:.1f} GB"


def _has_parts(model: Any) -> bool:
    """Whether ``score_parts`` gives per-step / per-frame scores (the base class's raises)."""
    from mmreward.core.model import RewardScorer

    return isinstance(model, RewardScorer) and type(model)._score_parts is not RewardScorer._score_parts


def _fetched(path: Any) -> bool:
    """Whether :func:`mmreward.registry.resolve_folder` reads ``path`` as a hub id (not a local folder, a
    run folder or a shipped name)."""
    from mmreward.registry import _shipped

    local = os.path.expanduser(os.fsdecode(os.fspath(path)))
    return not os.path.isdir(local) and not _shipped(local)


def _check_required_files(folder: str, cls: Any) -> None:
    """CheckpointError naming the first file ``cls`` would read (its weights) that ``folder`` lacks: a
    folder copied without its ``model.safetensors`` must not be reported as fine."""
    from mmreward.core.folders import CheckpointError
    from mmreward.core.model import read_config

    required = getattr(cls, "required_files", None)
    if required is None:
        return
    body = read_config(folder)
    for entry in required(body):
        choices = (entry,) if isinstance(entry, str) else tuple(entry)
        for rel in choices:
            path = os.path.join(folder, rel)
            if os.path.islink(path) and not os.path.exists(path):
                raise CheckpointError(f"{path} is a link to {os.readlink(path)}, which does not exist: a download or "
                                      "copy that did not finish; fetch the file again")
        if not any(os.path.isfile(os.path.join(folder, rel)) for rel in choices):
            what = f"no {choices[0]}" if len(choices) == 1 else f"none of {', '.join(choices)}"
            raise CheckpointError(f"{folder} has {what}, which loading reads: the folder was copied or downloaded "
                                  "in part; copy the whole saved folder")


def describe_folder(path: str, load: bool = False, device: str = "cpu") -> dict[str, Any]:
    """What ``path`` holds (see the module docstring): a JSON-able dict."""
    from mmreward.core.folders import read_manifest, verify_folder
    from mmreward.core.checkpoint import unfinished_run_note
    from mmreward.core.model import Pretrained, check_finite_weights
    from mmreward.core.extras import needs_extra
    from mmreward.registry import LAYOUTS, MODEL_TYPES, detect, extra_of, resolve_folder

    folder = resolve_folder(path, weights=load)
    # a run continued past its model/ (running, or killed); detect() names a snapshot or an unfinished run
    note = unfinished_run_note(path) if os.path.isdir(os.path.expanduser(os.fsdecode(os.fspath(path)))) else None
    files, nbytes, dangling = _files(folder)
    with needs_extra(what=folder):
        what, loader = detect(folder)  # LoadError (one line) when nothing reads it
    # a package the reader needs that is not installed: one error naming the extra of this model type
    # (transformers for a text RM: 'mmreward[text]'), not Python's bare "No module named 'transformers'"
    reader_needs = lambda: needs_extra(extra_of(what), what=f"{what} ({folder})")  # noqa: E731
    layout = next((x for x in LAYOUTS if x.name == what), None)
    out: dict[str, Any] = {
        "path": path, "folder": folder, "files": files, "bytes": nbytes,
        "kind": "mmreward model" if what in MODEL_TYPES else "published layout", "reads_as": what,
        "description": layout.description if layout else f"{getattr(loader, '__self__', loader).__name__}, saved by mmreward",
    }
    if dangling:
        out["missing_files"] = dangling
    if note is not None:
        out["note"] = note
    if not load and _fetched(path):
        # a hub id without --load: only its JSON and tokenizer files were fetched, so the weights are absent
        # here by design; --load fetches them and checks the folder
        if read_manifest(folder) is not None:
            out["manifest"] = "not checked: the weights were not fetched (--load fetches and checks them)"
    elif read_manifest(folder) is not None:
        verify_folder(folder)  # sizes of every listed file: a damaged folder is one error here
        out["manifest"] = "every listed file present at its recorded size"
    elif what in MODEL_TYPES:  # no manifest lists the files: the weights loading reads must be there
        _check_required_files(folder, getattr(loader, "__self__", None))
    elif layout is not None and layout.transformers_weights and not dangling:  # (a dangling link is listed)
        from mmreward.core.folders import CheckpointError
        from mmreward.core.weights import weight_names

        if weight_names(folder) is None:
            raise CheckpointError(f"{folder} has no weights (model.safetensors, model.safetensors.index.json + its "
                                  f"shards, or pytorch_model.bin), which loading the {what} layout reads: the folder "
                                  "was copied or downloaded in part; copy the whole folder")
    if what == "transformers-sequence-classifier" and not dangling:
        # JSON and tensor names / shapes only: a model_type transformers lacks, 2+ labels, a base model
        # without its head are named here, not reported as readable and refused by --load / mmreward.load
        from mmreward.text.layouts import check_sequence_classifier_folder, classifier_config

        with reader_needs():
            (classifier_config if not load and _fetched(path) else check_sequence_classifier_folder)(folder)
    if what == "peft-lora-adapter":
        from mmreward.text.peft_adapters import adapter_summary

        out["adapter"] = adapter_summary(folder)  # an adapter mmreward cannot fold is refused here, with the reason
    if not load:
        return out
    with reader_needs():
        model = loader(folder, device=device, dtype=None)
    owner = getattr(loader, "__self__", None)
    if not (isinstance(owner, type) and issubclass(owner, Pretrained)):  # as mmreward.load refuses it
        check_finite_weights(model, folder)
    params = sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else None
    first = next(model.parameters(), None) if params else None
    by_dtype: dict[str, int] = {}  # a bf16 backbone under an fp32 head holds two
    for p in (model.parameters() if params else ()):
        name = str(p.dtype).removeprefix("torch.")
        by_dtype[name] = by_dtype.get(name, 0) + p.numel()
    types = list(getattr(model, "input_types", ()))
    config = getattr(model, "config", None)
    out.update({
        "model_class": f"{type(model).__module__}.{type(model).__name__}", "model_type": getattr(model, "model_type", None),
        "input_types": {t.__name__: [f.name for f in dataclasses.fields(t)] for t in types},
        "parameters": params, "dtype": max(by_dtype, key=by_dtype.get) if by_dtype else None,  # most parameters
        "dtypes": by_dtype,
        "device": str(first.device) if first is not None else None,
        "per_step_scores": _has_parts(model),
        "config": {k: v for k, v in dataclasses.asdict(config).items() if not isinstance(v, dict)}
        if dataclasses.is_dataclass(config) else None,
    })
    return out


def _print(info: dict[str, Any]) -> None:
    print(f"{info['path']}: {info['kind']} read as {info['reads_as']!r}"
          + (f" — {info['description']}" if info.get("description") else ""))
    print(f"  folder   {info['folder']} ({info['files']} files, {_size(info['bytes'])})")
    if "manifest" in info:
        print(f"  manifest {info['manifest']}")
    if "note" in info:
        print(f"  note     {info['note']}")
    for name in info.get("missing_files", ()):
        print(f"  missing  {name}: a link to a file that is not there (a download that did not finish)")
    adapter = info.get("adapter")
    if adapter:
        scale = "α/√r" if adapter["use_rslora"] else "α/r"
        print(f"  adapter  {'DoRA' if adapter.get('use_dora') else 'LoRA'} {adapter['task_type']}, r {adapter['r']}, α {adapter['lora_alpha']} (scale {scale}), "
              f"targets {adapter['target_modules']}")
        print(f"  base     {adapter['base_model']!r}: {adapter['base_model_here']}")
    if "model_class" not in info:
        print("  (--load for its input type, parameters and settings)")
        return
    print(f"  class    {info['model_class']} (model_type {info['model_type']!r})")
    for name, fields in info["input_types"].items():
        print(f"  input    {name}({', '.join(fields)})")
    if info["parameters"] is not None:
        others = ", ".join(f"{n:,} {t}" for t, n in info["dtypes"].items() if t != info["dtype"])
        print(f"  weights  {info['parameters']:,} parameters, {info['dtype']}{f' ({others})' if others else ''} "
              f"on {info['device']}")
    print(f"  scores   one per input{' (score_parts: one per step / frame)' if info['per_step_scores'] else ''}")
    for k, v in (info.get("config") or {}).items():
        text = json.dumps(v) if not isinstance(v, str) else repr(v)
        print(f"  config   {k} = {text[:100]}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = CLIParser(prog="mmreward info", description="what a model folder holds and how mmreward reads it")
    p.add_argument("model", help="model folder, training run, shipped name or hub id")
    p.add_argument("--load", action="store_true", help="also load it: input type, parameters, dtype, settings")
    p.add_argument("--device", default=None, help="device for --load (cpu, cuda, cuda:N, auto; default: cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.device is not None and not args.load:  # nothing is loaded without --load: it was silently ignored
        p.error(f"--device {args.device} is where --load puts the model: add --load, or drop --device")
    args.device = args.device or "cpu"
    info = describe_folder(args.model, load=args.load, device=args.device)
    if args.json:
        print(json_text(info, default=str))  # a config value of inf is null, not the non-JSON Infinity
    else:
        _print(info)
    return 0


__all__ = ["describe_folder", "main"]
