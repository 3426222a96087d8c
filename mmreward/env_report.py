"""`python -m mmreward.env_report`: versions and live backends — the first thing a bug report needs."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys

from mmreward.core.cli_config import CLIParser

OPTIONAL = ("numpy", "triton", "transformers", "tokenizers", "datasets", "diffusers", "safetensors",
            "gymnasium", "mujoco", "metaworld", "gymnasium-robotics", "opencv-python", "tensorboard",
            "matplotlib", "ninja",
            # the serve / vision / published / robotics extras' packages too: a report without them could not
            # tell why `mmreward serve` or an image scorer failed
            "pillow", "imageio", "scipy", "jinja2", "pyarrow", "fastapi", "uvicorn", "httpx", "aiohttp", "trl", "ray")

EXTRAS = ("text", "vision", "published", "robotics", "serve", "serve-ray", "triton")


def extras_status() -> dict:
    """``{extra: "ok" | "missing a, b"}``: which ``pip install 'mmreward[extra]'`` sets are complete here
    (whether each package can be imported, as the commands will try)."""
    from mmreward.core.extras import INCLUDES, PACKAGES, installed

    def members(extra: str) -> list[tuple[str, str]]:
        own = [(module, dist) for module, (dist, extras) in PACKAGES.items() if extra in extras]
        return own + [m for inner in INCLUDES.get(extra, ()) for m in members(inner)]

    status = {}
    for extra in EXTRAS:
        missing = sorted({dist for module, dist in members(extra) if not installed(module)})
        status[extra] = "ok" if not missing else "missing " + ", ".join(missing)
    return status


def _version(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect() -> dict:
    import torch

    from mmreward import __version__
    from mmreward.ops import _backend

    report = {
        "mmreward": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "packages": {name: _version(name) for name in OPTIONAL},
        "extras": extras_status(),
        "extension": {"loaded": _backend.extension_loaded(), "error": _backend.extension_error()},
        "env": {k: os.environ.get(k) for k in ("MMREWARD_BACKEND", "TRITON_INTERPRET", "MMREWARD_CHECK_FINITE",
                                               "MMREWARD_CPU_BUFFER_CACHE_MB")},
    }
    if _backend.extension_loaded():
        info = torch.ops.mmreward.ext_info()
        report["extension"]["build"] = dict(kv.split("=", 1) for kv in info.split(";"))
        ops = sorted(
            name.split("::", 1)[1]
            for name in torch._C._dispatch_get_all_op_names()
            if name.startswith("mmreward::") and name.split("::", 1)[1] not in _backend.UTILITY_OPS
        )
        report["extension"]["ops"] = {
            op: [k for k in ("CPU", "CUDA") if torch._C._dispatch_has_kernel_for_dispatch_key(f"mmreward::{op}", k)]
            for op in ops
        }
    report["backends"] = {
        "reference": "live",
        "cpp": "live" if _backend.extension_loaded() else f"unavailable: {_backend.extension_error()}",
        "cuda": (
            "live" if _backend.extension_loaded() and "cuda=1" in torch.ops.mmreward.ext_info() and torch.cuda.is_available()
            else "unavailable: " + ("no CUDA device" if not torch.cuda.is_available() else "extension built without CUDA")
        ),
        "triton": (
            "unavailable: triton not installed" if not _backend.triton_installed()
            else f"unavailable: its ops use the extension's schemas ({_backend.extension_error()})"
            if not _backend.extension_loaded()
            else "live" if torch.cuda.is_available()
            else "interpreter only (TRITON_INTERPRET=1, CPU tensors)" if _backend.triton_interpret()
            else "installed; needs a CUDA device (or TRITON_INTERPRET=1)"
        ),
    }
    return report


def format_report(r: dict) -> str:
    lines = ["mmreward environment report", "=" * 28]
    for key in ("mmreward", "python", "platform", "cpu_count", "torch", "torch_cuda", "cuda_available", "gpu", "torch_threads"):
        lines.append(f"{key:<16} {r[key]}")
    lines.append("packages:")
    for name, ver in r["packages"].items():
        lines.append(f"  {name:<18} {ver or '-'}")
    lines.append("extras (pip install 'mmreward[extra]'):")
    for name, state in r.get("extras", {}).items():
        lines.append(f"  {name:<18} {state}")
    lines.append("backends:")
    for name, state in r["backends"].items():
        lines.append(f"  {name:<10} {state}")
    ext = r["extension"]
    if ext.get("build"):
        lines.append("extension build: " + ", ".join(f"{k}={v}" for k, v in ext["build"].items()))
    if ext.get("ops"):
        lines.append("compiled ops:")
        for op, keys in ext["ops"].items():
            lines.append(f"  {op:<36} {'+'.join(keys) or 'schema only'}")
    set_env = {k: v for k, v in r["env"].items() if v is not None}
    if set_env:
        lines.append("env: " + ", ".join(f"{k}={v}" for k, v in set_env.items()))
    return "\n".join(lines)


def main(argv=None, prog: str = "python -m mmreward.env_report") -> int:
    parser = CLIParser(prog=prog, description=__doc__)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args(argv)
    report = collect()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
