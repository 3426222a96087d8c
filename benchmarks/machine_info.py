"""What a benchmark's figures were measured on: the CPU model (``platform.processor()`` is empty on
Linux, so it is read from ``/proc/cpuinfo``), logical CPUs, OS, torch, threads and the load average,
so that every results file states its machine and load instead of a prose claim.

    from machine_info import machine   # benchmarks/ is on sys.path when a benchmark runs as a script
    out["machine"] = machine()         # call it again after the timed part: {"load_average": ...} moves
"""
from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name (e.g. ``AMD EPYC 9R14 96-Core Processor``), or the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """The 1 / 5 / 15-minute load averages, or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine(threads: int | None = None, device: str | None = None) -> dict:
    """CPU model, logical CPUs, platform, Python / torch versions, torch threads, device and load."""
    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = threads if threads is not None else torch.get_num_threads()
        if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    except ImportError:
        info["threads"] = threads
    if device is not None:
        info["device"] = str(device)
    info["load_average"] = load_average()
    return info
