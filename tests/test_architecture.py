"""The layering the docs promise: no import cycles, imports flow down (CLI / serve → domains → core →
ops), no domain imports another, and importing a package pulls in no heavy optional dependency."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"mmreward": "mmreward", "text": "mmreward.text", "vision": "mmreward.vision", "robotics": "mmreward.robotics"}
DOMAINS = ("mmreward.text", "mmreward.vision", "mmreward.robotics")


def _modules() -> dict[str, str]:
    mods = {}
    for folder, name in PACKAGES.items():
        base = os.path.join(ROOT, folder)
        for dirpath, _, files in os.walk(base):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), base)[:-3].replace(os.sep, ".")
                    if rel == "__init__":
                        mods[name] = os.path.join(dirpath, f)
                    else:
                        mods[f"{name}.{rel.removesuffix('.__init__')}"] = os.path.join(dirpath, f)
    return mods


def _import_graph() -> dict[str, set[str]]:
    """Module → project modules it imports (top-level and inside functions)."""
    mods = _modules()

    def owner(name: str) -> str:
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        deps = set()
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    pkg = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rsplit(".", 1)[0]
                    base = f"{pkg}.{node.module}" if node.module else pkg
                else:
                    base = node.module or ""
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                target = owner(n)
                # a package's own __init__ is implied by its submodules: not an edge
                if target and target != mod and not mod.startswith(target + "."):
                    deps.add(target)
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:  # left raised, later tests' "nested too deeply" requests parsed (tests/serve/test_serve_hardening.py)
        sys.setrecursionlimit(limit)
    return out


def test_no_import_cycles():
    assert _cycles(_import_graph()) == []


def _domain(mod: str) -> str:
    return next((d for d in DOMAINS if mod == d or mod.startswith(d + ".")), "")


def test_imports_flow_down():
    graph = _import_graph()
    bad = []
    for mod, deps in graph.items():
        for dep in deps:
            if mod.startswith(("mmreward.core", "mmreward.ops")) and (_domain(dep) or dep.startswith("mmreward.serve")):
                bad.append(f"{mod} -> {dep} (core / ops import no domain)")
            if mod.startswith("mmreward.ops") and dep.startswith("mmreward.core"):
                bad.append(f"{mod} -> {dep} (ops sit below core)")
            if _domain(mod) and _domain(dep) and _domain(mod) != _domain(dep):
                bad.append(f"{mod} -> {dep} (no domain imports another)")
    assert bad == []


@pytest.mark.parametrize("package", ["mmreward", "mmreward.text", "mmreward.vision", "mmreward.robotics",
                                     "mmreward.core", "mmreward.ops", "mmreward.registry"])
def test_importing_a_package_is_light(package):
    heavy = ["transformers", "cv2", "matplotlib", "mujoco", "gymnasium", "metaworld", "fastapi", "uvicorn", "aiohttp",
             "ray", "diffusers", "open_clip", "timm", "datasets", "tensorboard", "PIL"]
    code = (f"import sys, {package}\n"
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"import {package} pulled in: {out.stdout.strip()}"



def test_no_unused_imports_or_undefined_names():
    """pyflakes' checks (ruff's F rules) over the whole project: an undefined name fails only when its line
    runs; unused imports and variables hide mistakes."""
    pytest.importorskip("ruff")
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache", "--output-format",
                          "concise", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
