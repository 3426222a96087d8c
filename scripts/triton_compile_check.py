"""Ahead-of-time compile check of mmreward's Triton kernels for a real GPU target, without a GPU.

The Triton interpreter (TRITON_INTERPRET=1, what the CPU test suite uses) accepts code that the real
compiler rejects. This script compiles every kernel of ``mmreward/ops/triton/*.py`` for a CUDA target
(default sm_90, H100) all the way to a cubin (TTIR -> TTGIR -> LLIR -> PTX -> ptxas), on CPU tensors:

* Triton's active driver is replaced by a fake CUDA driver whose ``get_current_target()`` is the
  target, whose module loader only reads the cubin's resource usage (``cuobjdump -res-usage``: the
  registers bound the threads per block, as ``cuModuleLoad`` would) and whose launcher does nothing
  but check the grid against the CUDA limits;
* every op of ``torch.ops.mmreward_triton`` (forward and ``_backward`` ops) runs on its sample inputs
  (:func:`mmreward.ops.library.sample_inputs`, the arguments the op tests use: every option that
  selects different constexprs, odd shapes) in fp32 / bf16 / fp64, on CPU tensors, so each
  ``kernel[grid](...)`` of the real launch wrappers JIT-compiles exactly the specialisation a GPU
  run would request. Outputs are garbage (no kernel runs): only compilation is checked.

Every compile is recorded (``triton.compiler.compile`` is wrapped). The run fails (exit 1) if a case
raised, a compile failed, a compiled kernel has no cubin, or a ``@triton.jit`` function of those
modules was never compiled (launched kernels directly; helpers through a compiled kernel that calls
them). Must run WITHOUT ``TRITON_INTERPRET`` (before anything imports triton); use a fresh
``TRITON_CACHE_DIR`` to force real compiles (the cache key includes the target either way).

    env -u TRITON_INTERPRET TRITON_CACHE_DIR=$(mktemp -d) python scripts/triton_compile_check.py \
        [--arch 90] [--full] [--json report.json] [--only pairwise,codebook]

``--full`` adds fp16.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback

FAMILIES = ("pairwise", "step_reward", "codebook")
H100_MAX_SHARED = 232448  # bytes of shared memory per block on sm_90 (cudaDevAttrMaxSharedMemoryPerBlockOptin)
GRID_LIMITS = (2**31 - 1, 65535, 65535)


def _die(msg: str, code: int = 2):
    print(f"triton_compile_check: {msg}", file=sys.stderr)
    sys.exit(code)


# ------------------------------------------------------------------------------------------------
# fake driver
# ------------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self):
        self.compiled = []  # one dict per compiled specialisation
        self.compile_errors = []
        self.launches = 0
        self.launch_errors = []
        self.case = None


def _cuobjdump():
    import triton

    p = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return p if os.access(p, os.X_OK) else None


def _resource_usage(cubin: bytes):
    """{'REG': .., 'STACK': .., 'SHARED': .., 'LOCAL': ..} of the cubin's kernel, or {} without cuobjdump."""
    tool = _cuobjdump()
    if tool is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        out = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True, timeout=60).stdout
    finally:
        os.unlink(path)
    m = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)", out)
    if not m:
        return {}
    return dict(zip(("REG", "STACK", "SHARED", "LOCAL"), map(int, m.groups())))


def install_fake_driver(arch: int, rec: Recorder):
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase
    from triton.runtime.driver import driver

    try:
        from triton.backends.nvidia.driver import ty_to_cpp
    except ImportError:  # pragma: no cover
        ty_to_cpp = None

    class Utils:
        def get_device_properties(self, device):
            return {"max_shared_mem": H100_MAX_SHARED, "multiprocessor_count": 132, "max_num_regs": 65536,
                    "warpSize": 32, "sm_clock_rate": 1980000, "mem_clock_rate": 2619000, "mem_bus_width": 5120}

        def load_binary(self, name, kernel, shared, device):
            # what cuModuleLoadData + cuFuncGetAttribute would report: registers bound the block size
            # (65536 registers per SM, allocated per thread in units of 8)
            usage = _resource_usage(kernel)
            regs = usage.get("REG", 0)
            max_threads = 1024 if regs == 0 else min(1024, 65536 // (((regs + 7) // 8) * 8 * 32) * 32)
            spills = usage.get("LOCAL", 0)
            if rec.compiled and rec.compiled[-1]["name"] == name and "regs" not in rec.compiled[-1]:
                rec.compiled[-1].update(regs=regs, local_bytes=spills, stack_bytes=usage.get("STACK", 0),
                                        max_threads=max_threads)
            return 1, 1, regs, spills, max_threads

        def unload_module(self, module):
            pass

    class Launcher:
        def __init__(self, src, metadata):
            self.name = metadata.name

        def __call__(self, gridX, gridY, gridZ, stream, function, *rest):
            rec.launches += 1
            for g, lim, ax in zip((gridX, gridY, gridZ), GRID_LIMITS, "xyz"):
                if not (isinstance(g, int) and 0 <= g <= lim):
                    rec.launch_errors.append({"case": rec.case, "kernel": self.name,
                                              "error": f"grid.{ax} = {g!r} outside [0, {lim}]"})

    class FakeCudaDriver(DriverBase):
        def __init__(self):
            self.utils = Utils()
            self.launcher_cls = Launcher

        @classmethod
        def is_active(cls):
            return True

        def map_python_to_cpp_type(self, ty):
            return ty_to_cpp(ty) if ty_to_cpp else ty

        def get_current_target(self):
            return GPUTarget("cuda", arch, 32)

        def get_active_torch_device(self):
            return torch.device("cpu")

        def get_device_interface(self):
            return torch.cuda

        def get_benchmarker(self):
            raise RuntimeError("fake driver: nothing can be benchmarked (autotuning needs a GPU)")

        def get_current_device(self):
            return 0

        def set_current_device(self, device):
            pass

        def get_current_stream(self, device=None):
            return 0

        def get_device_capability(self, device=None):
            return divmod(arch, 10)

    driver.set_active(FakeCudaDriver())


def install_compile_recorder(rec: Recorder):
    import triton.compiler as tc

    orig = tc.compile

    def compile(src, target=None, options=None, _env_vars=None):
        fn = getattr(src, "fn", None)
        kname = f"{fn.module}:{fn.__name__}" if fn is not None else str(src)
        names = list(fn.arg_names) if fn is not None else []
        consts = {names[k[0]] if len(k) == 1 and k[0] < len(names) else str(k): _plain(v)
                  for k, v in getattr(src, "constants", {}).items()}
        sig = {k: v for k, v in getattr(src, "signature", {}).items() if v != "constexpr"}
        div16 = [names[k[0]] for k, v in getattr(src, "attrs", {}).items()
                 if len(k) == 1 and k[0] < len(names) and any("divisibility" in str(a) for a in v)]
        t0 = time.perf_counter()
        try:
            k = orig(src, target=target, options=options, _env_vars=_env_vars)
        except Exception as e:
            rec.compile_errors.append({"case": rec.case, "kernel": kname, "signature": sig, "constexprs": consts,
                                       "error": f"{type(e).__name__}: {e}"[-6000:]})
            raise
        asm = k.asm
        rec.compiled.append({
            "kernel": kname, "name": k.name, "case": rec.case, "signature": sig, "constexprs": consts,
            "div16": div16, "target": f"{k.metadata.target.backend}:sm_{k.metadata.target.arch}",
            "num_warps": k.metadata.num_warps, "shared": k.metadata.shared,
            "stages": sorted(asm.keys()), "ptx_bytes": len(asm.get("ptx", "")), "cubin_bytes": len(asm.get("cubin", b"")),
            "seconds": round(time.perf_counter() - t0, 3),
        })
        return k

    tc.compile = compile


def _plain(v):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


# ------------------------------------------------------------------------------------------------
# kernels defined in mmreward/ops/triton/*.py
# ------------------------------------------------------------------------------------------------
def jit_functions():
    """{'module:name': JITFunction} of every @triton.jit function defined in mmreward/ops/triton/*.py."""
    from triton.runtime.jit import JITFunction

    import mmreward.ops.triton as pkg

    out = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for name, obj in vars(mod).items():
            if isinstance(obj, JITFunction) and obj.module == mod.__name__:
                out[f"{mod.__name__}:{obj.__name__}"] = obj
    return out


def callees(jf, all_jit):
    """Names ('module:name') of the @triton.jit functions of `all_jit` that `jf` calls directly."""
    mod = sys.modules[jf.module]
    tree = ast.parse(textwrap.dedent(inspect.getsource(jf.fn)))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            obj = getattr(mod, node.func.id, None)
            key = f"{getattr(obj, 'module', '')}:{getattr(obj, '__name__', '')}"
            if key in all_jit:
                found.add(key)
    return found


# ------------------------------------------------------------------------------------------------
# cases: every op of the library on its sample inputs (mmreward.ops.library.sample_inputs: the same
# arguments the op tests run, chosen to reach every option the kernels specialise on)
# ------------------------------------------------------------------------------------------------
def cases(full: bool, families=FAMILIES):
    import torch

    from mmreward.ops import _dispatch
    from mmreward.ops.library import OPS, sample_inputs

    dtypes = [torch.float32, torch.bfloat16, torch.float64] + ([torch.float16] if full else [])
    out = []
    for name, spec in sorted(OPS.items()):
        if spec.family not in families:
            continue
        _dispatch._load_triton_kernels(spec.family)  # registers the family's kernels
        op = getattr(torch.ops.mmreward_triton, name).default
        for dt in dtypes:
            for i, args in enumerate(sample_inputs(name, dt)):
                def run(op=op, args=args):
                    with torch.no_grad():  # forward and backward kernels are compiled from their own ops
                        op(*args)

                out.append((spec.family, f"{name}[{str(dt).replace('torch.', '')}, sample {i}]", run))
    return out


# ------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (default 90: H100)")
    ap.add_argument("--full", action="store_true", help="more dtypes, shapes and option combinations")
    ap.add_argument("--only", default="", help=f"comma-separated families of {FAMILIES}")
    ap.add_argument("--json", default="", help="write the report here")
    ap.add_argument("--quiet", action="store_true", help="no per-specialisation lines")
    args = ap.parse_args(argv)

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        _die("TRITON_INTERPRET is set: the kernels would be interpreted, not compiled (unset it)")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, without its warning
    try:
        import torch
        import triton
    except ImportError as e:
        _die(f"cannot import torch / triton: {e}", 3)
    if torch.cuda.is_available():
        print("note: a CUDA GPU is present; the fake driver still compiles for the requested target")
    import triton.backends

    if "nvidia" not in triton.backends.backends:
        _die("triton has no NVIDIA backend", 3)
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    ptxas = [p for p in ("ptxas", "ptxas-blackwell") if os.access(os.path.join(bindir, p), os.X_OK)]
    if not ptxas and shutil.which("ptxas") is None:
        _die(f"no ptxas in {bindir} or on PATH", 3)

    rec = Recorder()
    install_fake_driver(args.arch, rec)
    install_compile_recorder(rec)

    only = [f for f in args.only.split(",") if f] or list(FAMILIES)
    for f in only:
        if f not in FAMILIES:
            _die(f"unknown family {f!r}; choose from {FAMILIES}")

    case_errors = []
    t0 = time.perf_counter()
    todo = cases(args.full, only)
    import mmreward

    print(f"mmreward from {os.path.dirname(mmreward.__file__)}")
    print(f"triton {triton.__version__}, torch {torch.__version__}, target cuda:sm_{args.arch}, "
          f"ptxas {', '.join(ptxas) or shutil.which('ptxas')}, {len(todo)} cases"
          f"{' (--full)' if args.full else ''}, TRITON_CACHE_DIR={os.environ.get('TRITON_CACHE_DIR', '(default)')}")
    for family, name, fn in todo:
        rec.case = name
        n0 = len(rec.compiled)
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            tb = traceback.format_exc()
            case_errors.append({"case": name, "error": f"{type(e).__name__}: {e}"[-6000:], "traceback": tb[-4000:]})
            print(f"FAIL  {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
            continue
        if not args.quiet:
            for c in rec.compiled[n0:]:
                cx = ", ".join(f"{k}={v}" for k, v in c["constexprs"].items())
                ptrs = ",".join(sorted({v[1:] for v in c["signature"].values() if v.startswith("*")}))
                print(f"  ok  {c['kernel'].split('.')[-1]:<34} [{cx}] ptrs={ptrs} regs={c.get('regs', '?')} "
                      f"stack={c.get('stack_bytes', '?')}B {c['seconds']:.2f}s")
    elapsed = time.perf_counter() - t0

    # coverage: launched kernels must have compiled; helpers must be called by a compiled kernel
    # (shared modules, `_common`, belong to every family)
    all_jit = {k: v for k, v in jit_functions().items()
               if k.split(":")[0].rsplit(".", 1)[-1] in only or k.split(":")[0].rsplit(".", 1)[-1].startswith("_")}
    calls = {k: callees(v, all_jit) for k, v in all_jit.items()}
    helpers = set().union(*calls.values()) if calls else set()
    compiled_names = {c["kernel"] for c in rec.compiled}
    reached = set()
    stack = [k for k in compiled_names if k in all_jit]
    while stack:
        k = stack.pop()
        if k in reached:
            continue
        reached.add(k)
        stack.extend(calls.get(k, ()))
    kernels = sorted(k for k in all_jit if k not in helpers)
    missing = sorted(k for k in kernels if k not in compiled_names)
    missing_helpers = sorted(k for k in helpers if k not in reached)
    no_cubin = [c for c in rec.compiled if c["cubin_bytes"] == 0 or "ptx" not in c["stages"]]
    spilling = [c for c in rec.compiled if c.get("local_bytes") or c.get("stack_bytes")]

    per_kernel = {}
    for c in rec.compiled:
        per_kernel.setdefault(c["kernel"], []).append(c)
    print(f"\n{len(rec.compiled)} specialisations of {len(per_kernel)} kernels compiled for cuda:sm_{args.arch} "
          f"in {elapsed:.1f}s ({rec.launches} no-op launches):")
    for k in kernels:
        cs = per_kernel.get(k, [])
        regs = [c.get("regs", 0) for c in cs]
        print(f"  {k:<58} {len(cs):3d} specialisation(s)" + (f", regs {min(regs)}-{max(regs)}" if cs else ", NONE"))
        seen = {}
        for c in cs:
            for n, v in c["constexprs"].items():
                seen.setdefault(n, set()).add(str(v))
            seen.setdefault("ptrs", set()).update(v[1:] for v in c["signature"].values() if v.startswith("*"))
        if seen:
            print("      " + "; ".join(f"{n}: {'/'.join(sorted(vs))}" for n, vs in seen.items()))
    for k in sorted(helpers):
        print(f"  {k:<58} helper, {'inlined into a compiled kernel' if k in reached else 'NOT REACHED'}")
    if spilling:
        print(f"note (performance, not an error): {len(spilling)} specialisation(s) spill registers "
              f"(cuobjdump STACK / LOCAL > 0):")
        for c in spilling:
            ptrs = ",".join(sorted({v[1:] for v in c["signature"].values() if v.startswith("*")}))
            print(f"  {c['kernel'].split('.')[-1]:<34} stack={c.get('stack_bytes')}B local={c['local_bytes']}B "
                  f"regs={c.get('regs')} ptrs={ptrs} {c['constexprs']}")

    problems = []
    if case_errors:
        problems.append(f"{len(case_errors)} case(s) failed")
    if rec.compile_errors:
        problems.append(f"{len(rec.compile_errors)} compile error(s)")
    if rec.launch_errors:
        problems.append(f"{len(rec.launch_errors)} launch check(s) failed")
    if missing:
        problems.append(f"kernels never compiled: {missing}")
    if missing_helpers:
        problems.append(f"helpers never compiled: {missing_helpers}")
    if no_cubin:
        problems.append(f"{len(no_cubin)} compile(s) without ptx/cubin")
    for e in rec.compile_errors:
        print(f"\nCOMPILE ERROR in {e['kernel']} (case {e['case']}), constexprs {e['constexprs']}, "
              f"signature {e['signature']}:\n{e['error'][-3000:]}")
    for e in case_errors:
        if not any(c["case"] == e["case"] for c in rec.compile_errors):
            print(f"\nCASE ERROR {e['case']}:\n{e['traceback']}")
    for e in rec.launch_errors:
        print(f"LAUNCH ERROR {e}")

    report = {
        "ok": not problems, "problems": problems, "target": f"cuda:sm_{args.arch}", "triton": triton.__version__,
        "torch": torch.__version__, "full": args.full, "families": only, "seconds": round(elapsed, 1),
        "cases": len(todo), "launches": rec.launches, "kernels": kernels, "helpers": sorted(helpers),
        "missing_kernels": missing, "missing_helpers": missing_helpers, "compiled": rec.compiled,
        "compile_errors": rec.compile_errors, "case_errors": case_errors, "launch_errors": rec.launch_errors,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print("\nOK" if not problems else "\nFAILED: " + "; ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
