"""`mmreward` command line. Each subcommand is a thin front for the Python API a user would call,
imported only when that subcommand runs (so `mmreward --help` stays fast and light).

Every command runs inside `core.cli_config.run_cli`: a user error is one line on stderr and exit 2.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, Optional, Sequence

from mmreward.core.cli_config import CLIParser

# name -> (module, function taking argv, one-line help)
COMMANDS = {
    "env": ("mmreward.cli", "env_main", "versions of python / torch / CUDA / triton … and the live op backends"),
    "ops": ("mmreward.cli", "ops_main", "list the fused ops and which backends can run them here"),
    "robotics": ("mmreward.robotics.cli", "main", "Diffusion Reward + DrQ-v2: collect, train-codec, train-video, train-progress, score, train-rl"),
    "text": ("mmreward.text.cli", "main", "text reward models: train, score, eval, merge (WARM), judge (generative RMs)"),
    "prm": ("mmreward.text.prm.cli", "main", "process reward models: train, score steps, PRM-guided search"),
    "vision": ("mmreward.vision.cli", "main", "vision reward models: train | train-vlm-rm | train-visual-prm | eval | colour-data"),
    "info": ("mmreward.info_cli", "main", "what a model folder holds and how mmreward reads it (--load: inputs, size)"),
    "score": ("mmreward.score_cli", "main", "score inputs (rows, images, videos, episodes) with any reward model folder"),
    "score-video": ("mmreward.vision.cli", "score_video_main", "score a video's frames against a prompt"),
    "serve": ("mmreward.serve.cli", "main", "serve any reward model over HTTP with dynamic batching (OpenRLHF / TRL)"),
}

# the extra whose packages a command group imports: a missing one is named with it (`mmreward score` / `info`
# name the extra of the model they load, see mmreward.registry.extra_of)
COMMAND_EXTRAS = {"text": "text", "prm": "text", "vision": "vision", "score-video": "vision", "robotics": "robotics",
                  "serve": "serve"}


def _required(name: str, argv: Sequence[str]) -> tuple[str, ...]:
    """Packages ``mmreward name argv`` imports whatever it is asked to do, checked before it starts: without
    them a training run would fail after reading its data, and ``serve`` after loading the model (uvicorn is
    imported only then). ``--help`` needs none of them."""
    if not argv or any(a in ("-h", "--help") for a in argv):
        return ()
    if name in ("text", "prm"):  # every text / PRM command builds or loads a transformers model
        return ("transformers", "tokenizers")
    if name == "serve":
        return ("fastapi",) + (("ray",) if "--ray" in argv else ("uvicorn",))  # Ray Serve runs its own HTTP server
    return ()


def _with_extras(name: str, command: Callable[[list[str]], Optional[int]]) -> Callable[[list[str]], Optional[int]]:
    """``command`` whose missing optional package is one line naming the extra to install (``mmreward text
    train: error: transformers is not installed: pip install 'mmreward[text]'``, exit 2), checked first for
    the packages the command always needs (:func:`_required`): Python's bare "No module named 'transformers'"
    said neither that it is optional nor what to install."""
    def run(argv: list[str]) -> Optional[int]:
        from mmreward.core.cli_config import _SUBCOMMAND
        from mmreward.core.extras import missing_extra, require

        extra = COMMAND_EXTRAS.get(name)
        try:
            require(*_required(name, argv), extra=extra)
            return command(argv)
        except ImportError as e:
            err = missing_extra(e, extra)  # also a domain's ImportError raised from the missing package
            if err is None and "pip install 'mmreward[" in str(e) and e.__cause__ is not None \
                    and missing_extra(e.__cause__) is not None:
                # a domain's own message naming the extra, raised from a package that really is missing (not from
                # a broken install of it): shown without the "ImportError:" prefix
                err = e
            if err is None or os.environ.get("MMREWARD_DEBUG") == "1":
                raise
            sub = _SUBCOMMAND.get() or (argv[0] if argv and name in ("text", "prm", "vision", "robotics")
                                        and not argv[0].startswith("-") else None)
            prog = f"mmreward {name}" + (f" {sub}" if sub else "")
            raise SystemExit(f"{prog}: error: {' '.join(str(err).split())}") from None

    return run


def env_main(argv: Optional[Sequence[str]] = None) -> int:
    from mmreward.env_report import main as env_report

    return env_report(argv, prog="mmreward env")  # its errors and --help name the command the user typed


def ops_main(argv: Optional[Sequence[str]] = None) -> int:
    import torch

    from mmreward.ops import _backend

    parser = CLIParser(prog="mmreward ops", description="fused ops and their backends")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | meta: which device's backends to list")
    args = parser.parse_args(argv)
    from mmreward.core.device import resolve_device

    device = resolve_device(args.device).type  # a CUDA request on a machine without one is an error, not a list
    names = sorted(
        n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names()
        if n.startswith("mmreward::") and n.split("::", 1)[1] not in _backend.UTILITY_OPS
    )
    if not names:
        why = _backend.extension_error() or "the extension defines no ops"
        print(f"no compiled ops ({why}); every op runs on the reference backend")
        return 0
    width = max(len(n) for n in names)
    for n in names:
        print(f"{n:<{width}}  {', '.join(_backend.available_backends(n, device))}")
    return 0


META_DEVICE_OK = ("env", "ops", "info")  # listing backends / describing a model without loading its weights


def _meta_device(argv: Sequence[str]) -> Optional[str]:
    """The ``--device`` value of ``argv`` when it names the meta device (shapes, no numbers), else None."""
    for i, word in enumerate(argv):
        value = argv[i + 1] if word == "--device" and i + 1 < len(argv) else \
            word.split("=", 1)[1] if word.startswith("--device=") else None
        if value is not None and value.strip().lower().split(":")[0] == "meta":
            return value
    return None


def _refusing_meta(name: str, command: Callable[[list[str]], Optional[int]]) -> Callable[[list[str]], Optional[int]]:
    """``command`` that first refuses ``--device meta``: scoring, training and serving on it failed as an
    *unexpected* error ("Tensor.item() cannot be called on meta tensors", exit 1), after a training run had
    made its output folder, and the server started, answering every request with an error."""
    def run(argv: list[str]) -> Optional[int]:
        value = _meta_device(argv) if name not in META_DEVICE_OK else None
        if value is not None:
            raise ValueError(f"--device {value}: the meta device holds tensor shapes but no numbers, so nothing can be "
                             f"scored, trained or served on it; use cpu, cuda, cuda:N or auto (`mmreward info --load "
                             f"--device meta` describes a model without reading its weights)")
        return command(argv)

    return run


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mmreward <command> [options]\n\ncommands:")
        width = max(map(len, COMMANDS))  # `score-video` is 11 characters: its help started a column late
        for name, (_, _, help_text) in COMMANDS.items():
            print(f"  {name:<{width}}  {help_text}")
        print("\n`mmreward <command> --help` for a command's options.")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from mmreward import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mmreward: error: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    from mmreward.core.cli_config import run_cli

    command = _with_extras(name, lambda a: getattr(importlib.import_module(module), func)(a))
    return run_cli(f"mmreward {name}", _refusing_meta(name, command), rest)


if __name__ == "__main__":
    sys.exit(main())
