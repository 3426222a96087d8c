"""Every Triton kernel of mmreward/ops/triton/*.py compiles for a real GPU target (sm_90, H100),
without a GPU.

The rest of the suite runs the Triton kernels in the interpreter (TRITON_INTERPRET=1, conftest.py),
which accepts code the real compiler rejects (non-constexpr globals, shapes or dtypes the compiler
refuses, ...). This test runs ``scripts/triton_compile_check.py`` in a subprocess WITHOUT
TRITON_INTERPRET and with a fresh TRITON_CACHE_DIR: it installs a fake CUDA driver (target sm_90,
no-op launcher) and runs every ``torch.ops.mmreward_triton`` op (forward and backward) on CPU
tensors on its sample inputs (``mmreward.ops.library.sample_inputs``, which the op tests use too:
every option that selects different constexprs, odd shapes; fp32 / bf16 / fp64), so every
``kernel[grid](...)`` compiles the specialisation a GPU run would request down to a cubin
(TTIR -> TTGIR -> LLIR -> PTX -> ptxas). Asserts: no case / compile error, each compile produced PTX
and a cubin, and every ``@triton.jit`` function in those modules (found here independently, from
the source) was compiled: launched kernels directly, helpers inlined into a compiled kernel.
"""
import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mmreward

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "triton_compile_check.py"
TRITON_DIR = Path(mmreward.__file__).resolve().parent / "ops" / "triton"
TIMEOUT_S = 900  # ~2 min on an idle 2-core VM; generous for a loaded one


def _skip_reason():
    spec = importlib.util.find_spec("triton")
    if spec is None or spec.origin is None:
        return "triton is not installed"
    tdir = Path(spec.origin).parent
    if not (tdir / "backends" / "nvidia" / "compiler.py").exists():
        return "triton has no NVIDIA backend"
    bindir = tdir / "backends" / "nvidia" / "bin"
    if not any(os.access(bindir / p, os.X_OK) for p in ("ptxas", "ptxas-blackwell")):
        import shutil

        if shutil.which("ptxas") is None:
            return f"no ptxas (looked in {bindir} and on PATH): cannot build cubins"
    return None


def _jit_functions_in_source():
    """'module:name' of every @triton.jit / @triton.jit(...) / @jit function in mmreward/ops/triton/*.py."""
    out = set()
    for path in sorted(TRITON_DIR.glob("*.py")):
        mod = f"mmreward.ops.triton.{path.stem}"
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for d in node.decorator_list:
                d = d.func if isinstance(d, ast.Call) else d
                name = d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", "")
                if name == "jit":
                    out.add(f"{mod}:{node.name}")
    return out


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_every_triton_kernel_compiles_for_sm90(tmp_path):
    report_path = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton_cache")  # fresh: every kernel really compiles
    env["TRITON_DEFAULT_FP_FUSION"] = env.get("TRITON_DEFAULT_FP_FUSION", "1")
    env["OMP_NUM_THREADS"] = "1"  # tiny tensors; keep the CPU for the compiler
    # the subprocess must check the same mmreward this process imported
    pkg_parent = str(Path(mmreward.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in [env.get("PYTHONPATH")] if p])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--arch", "90", "--json", str(report_path)],
            env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or b"")[-4000:]
        pytest.fail(f"compile check timed out after {TIMEOUT_S}s; output tail:\n{tail}")
    elapsed = time.perf_counter() - t0
    print(proc.stdout)
    print(f"[compile check subprocess: {elapsed:.1f}s, rc={proc.returncode}]")
    assert report_path.exists(), f"no report (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    report = json.loads(report_path.read_text())

    errors = [f"{e['kernel']} ({e['case']}): {e['error'][-1500:]}" for e in report["compile_errors"]]
    assert not errors, "kernels failed to compile for sm_90:\n\n" + "\n\n".join(errors)
    case_errors = [f"{e['case']}: {e['traceback'][-1500:]}" for e in report["case_errors"]]
    assert not case_errors, "cases failed:\n\n" + "\n\n".join(case_errors)
    assert not report["launch_errors"], report["launch_errors"]

    assert report["target"] == "cuda:sm_90"
    compiled = report["compiled"]
    assert compiled, "nothing was compiled"
    for c in compiled:
        assert c["target"] == "cuda:sm_90", c
        assert {"ttir", "ttgir", "llir", "ptx", "cubin"} <= set(c["stages"]), (c["kernel"], c["stages"])
        assert c["ptx_bytes"] > 0 and c["cubin_bytes"] > 0, c

    in_source = _jit_functions_in_source()
    assert in_source, f"no @triton.jit functions found under {TRITON_DIR}"
    assert in_source == set(report["kernels"]) | set(report["helpers"]), (
        "the check's kernel list differs from the @triton.jit functions in the source",
        sorted(in_source ^ (set(report["kernels"]) | set(report["helpers"]))),
    )
    compiled_kernels = {c["kernel"] for c in compiled}
    never = sorted(set(report["kernels"]) - compiled_kernels)
    assert not never, f"kernels never compiled (add a case to scripts/triton_compile_check.py): {never}"
    assert not report["missing_helpers"], f"helpers not reached by any compiled kernel: {report['missing_helpers']}"
    assert report["ok"], report["problems"]
    assert proc.returncode == 0, proc.stderr[-3000:]
