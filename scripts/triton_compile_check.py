"""Ahead-of-time compile check of mmreward's Triton kernels for a real GPU target, without a GPU.

The Triton interpreter (TRITON_INTERPRET=1, what the CPU test suite uses) accepts code that the real
compiler rejects. This script compiles every kernel of ``mmreward/ops/triton/*.py`` for a CUDA target
(default sm_90, H100) all the way to a cubin (TTIR -> TTGIR -> LLIR -> PTX -> ptxas), on CPU tensors:

* Triton's active driver is replaced by a fake CUDA driver whose ``get_current_target()`` is the
  target, whose module loader only reads the cubin's resource usage (``cuobjdump -res-usage``: the
  registers bound the threads per block, as ``cuModuleLoad`` would) and whose launcher does nothing
  but check the grid against the CUDA limits;
* ``mmreward.ops._backend.triton_interpret`` is patched to True so the ``triton`` backend accepts CPU
  tensors, and the public ops (forward and backward, every option that selects different
  constexprs, fp32 / bf16 / fp64, odd shapes) run under ``use_backend("triton")``, so each
  ``kernel[grid](...)`` of the real launch wrappers JIT-compiles exactly the specialisation a GPU
  run would request. Outputs are garbage (no kernel runs): only compilation is checked.

Every compile is recorded (``triton.compiler.compile`` is wrapped). The run fails (exit 1) if a case
raised, a compile failed, a compiled kernel has no cubin, or a ``@triton.jit`` function of those
modules was never compiled (launched kernels directly; helpers through a compiled kernel that calls
them). Must run WITHOUT ``TRITON_INTERPRET`` (before anything imports triton); use a fresh
``TRITON_CACHE_DIR`` to force real compiles (the cache key includes the target either way).

    env -u TRITON_INTERPRET TRITON_CACHE_DIR=$(mktemp -d) python scripts/triton_compile_check.py \
        [--arch 90] [--full] [--json report.json] [--only pairwise,codebook]

``--full`` adds fp16, shapes that are multiples of 16 / equal to 1 (Triton specialises integer
arguments on divisibility by 16 and on == 1) and every option combination (several minutes).
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
# cases: the public ops (and the custom ops' backward entry points reached under torch.compile)
# ------------------------------------------------------------------------------------------------
def cases(full: bool):
    import torch

    import mmreward.ops as O

    T = torch.ops  # mmreward_triton::* is defined once a family's triton module is imported
    dtypes = [torch.float32, torch.bfloat16, torch.float64] + ([torch.float16] if full else [])
    # Triton specialises int args on == 1 and on divisibility by 16: odd sizes by default, both in --full
    sizes = [37, 64, 1] if full else [37]
    g = torch.Generator().manual_seed(0)

    def randn(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, generator=g).to(dtype).requires_grad_(grad)

    def bwd(out):
        (out.float() * torch.randn(out.shape, generator=g)).sum().backward()

    def tag(dt):
        return str(dt).replace("torch.", "")

    out = []

    def add(family, name, fn):
        out.append((family, name, fn))

    # ---------------------------------------------------------------- pairwise
    for dt in dtypes:
        for B in sizes:
            def pair_plain(dt=dt, B=B):
                O.pairwise_loss(randn(B, dtype=dt), randn(B, dtype=dt))

            def pair_grad_mean(dt=dt, B=B):
                rc, rr = randn(B, dtype=dt, grad=True), randn(B, dtype=dt, grad=True)
                tie = torch.rand(B, generator=g) < 0.3
                loss, _ = O.pairwise_loss_and_accuracy(rc, rr, margin=randn(B, dtype=dt), tie=tie,
                                                       label_smoothing=0.1, center_coef=0.01, reduction="mean")
                (2.0 * loss).backward()

            def pair_none(dt=dt, B=B):
                rc, rr = randn(B, dtype=dt, grad=True), randn(B, dtype=dt, grad=True)
                bwd(O.pairwise_loss(rc, rr, margin=0.5, reduction="none"))

            def pair_bwd_scalar(dt=dt, B=B):  # the backward op with a 0-d grad (torch.compile path)
                import mmreward.ops.triton.pairwise  # noqa: F401

                rc, rr = randn(B, dtype=dt), randn(B, dtype=dt)
                m = randn(B, dtype=dt).to(torch.float64 if dt == torch.float64 else torch.float32)
                acc = m.dtype
                T.mmreward_triton.pairwise_loss_backward(torch.tensor(1.5, dtype=acc), rc, rr, m,
                                                         torch.rand(B, generator=g) < 0.5, 0.0, 0.0, 1)

            add("pairwise", f"pairwise_loss[{tag(dt)},B={B}]", pair_plain)
            add("pairwise", f"pairwise_loss_and_accuracy+margin+tie+grad[{tag(dt)},B={B}]", pair_grad_mean)
            add("pairwise", f"pairwise_loss[none]+grad[{tag(dt)},B={B}]", pair_none)
            add("pairwise", f"pairwise_loss_backward[scalar grad][{tag(dt)},B={B}]", pair_bwd_scalar)

            for K in ([5, 1] + ([16] if full else [])):
                for red in (["mean", "none", "sum"] if full else ["mean"] if K != 1 else ["none"]):
                    def listwise(dt=dt, B=B, K=K, red=red):
                        r = randn(B, K, dtype=dt, grad=True)
                        ranks = torch.randint(-1, K, (B, K), generator=g)
                        bwd(O.listwise_loss(r, ranks, reduction=red))

                    add("pairwise", f"listwise_loss[{red}]+grad[{tag(dt)},B={B},K={K}]", listwise)

            H = 300  # > HEAD_BLOCK_H: two column blocks
            head_variants = [
                # (bias, margin, tie, reduction, grad of h, grad of w/b)
                (True, True, True, "mean", True, True),
                (False, False, False, "none", False, False),
                (True, False, False, "none", True, True),
                (False, True, False, "sum", False, True),
                (True, False, True, "mean", True, False),
            ]
            for (hb, hm, ht, red, gh, gwb) in head_variants:
                def head(dt=dt, B=B, hb=hb, hm=hm, ht=ht, red=red, gh=gh, gwb=gwb):
                    hc, hr = randn(B, H, dtype=dt, grad=gh), randn(B, H, dtype=dt, grad=gh)
                    w = randn(1, H, dtype=dt, grad=gwb)
                    b = randn(1, dtype=dt, grad=gwb) if hb else None
                    tie = (torch.rand(B, generator=g) < 0.3) if ht else None
                    loss = O.reward_head_pairwise_loss(hc, hr, w, b, margin=randn(B) if hm else None, tie=tie,
                                                       label_smoothing=0.05, center_coef=0.01, reduction=red)
                    if gh or gwb:
                        bwd(loss)

                add("pairwise", f"reward_head_pairwise_loss[b={hb},m={hm},tie={ht},{red},grad_h={gh},"
                                f"grad_wb={gwb}][{tag(dt)},B={B},H={H}]", head)

            def head_bwd_scalar(dt=dt, B=B):  # backward op with a 0-d grad (torch.compile path)
                import mmreward.ops.triton.pairwise  # noqa: F401

                hc, hr, w = randn(B, H, dtype=dt), randn(B, H, dtype=dt), randn(H, dtype=dt)
                acc = torch.float64 if dt == torch.float64 else torch.float32
                T.mmreward_triton.reward_head_pairwise_loss_backward(
                    torch.tensor(0.5, dtype=acc), hc, hr, w, torch.zeros((), dtype=acc), None, None, 0.0, 0.0, 1,
                    True, True)

            add("pairwise", f"reward_head_pairwise_loss_backward[scalar grad][{tag(dt)},B={B},H={H}]",
                head_bwd_scalar)

    # ---------------------------------------------------------------- step_reward
    for dt in dtypes:
        for n in sizes:
            Bq, Tq, H = 3, max(n, 2), (300 if n != 64 else 256)

            def mask_of(Bq, Tq):
                m = torch.rand(Bq, Tq, generator=g) < 0.4
                m[0, -1] = True
                return m

            def logits(dt=dt, Bq=Bq, Tq=Tq, H=H):
                h = randn(Bq, Tq, H, dtype=dt, grad=True)
                wg, wb = randn(H, dtype=dt, grad=True), randn(H, dtype=dt, grad=True)
                bwd(O.step_logits(h, wg, wb, b_good=randn(1, grad=True), b_bad=0.2, step_mask=mask_of(Bq, Tq)))

            def scores(dt=dt, Bq=Bq, Tq=Tq, H=H):
                h = randn(Bq * Tq, H, dtype=dt)
                O.step_scores(h, randn(H, dtype=dt), randn(H, dtype=dt), step_index=torch.tensor([0, 2, Bq * Tq - 1]))

            def bce(dt=dt, Bq=Bq, Tq=Tq, H=H):
                h = randn(Bq, Tq, H, dtype=dt)  # no grad of hidden: NEED_GH=False
                wg, wb = randn(H, dtype=dt, grad=True), randn(H, dtype=dt, grad=True)
                m = mask_of(Bq, Tq)
                labels = torch.rand(Bq, Tq, generator=g)
                labels[0, -1] = -100.0
                bwd(O.step_bce_loss(h, wg, wb, labels, step_mask=m, reduction="mean"))

            def value(dt=dt, Bq=Bq, Tq=Tq, H=H):
                h = randn(Bq, Tq, H, dtype=dt, grad=True)
                w = randn(H, dtype=dt, grad=True)
                bwd(O.step_value_loss(h, w, randn(Bq, Tq), 0.3, step_mask=mask_of(Bq, Tq), reduction="none"))

            def values_nobias(dt=dt, Bq=Bq, Tq=Tq, H=H):
                h = randn(Bq, Tq, H, dtype=dt, grad=True)
                bwd(O.step_values(h, randn(H, dtype=dt, grad=True), step_index=torch.tensor([[0, 0], [Bq - 1, Tq - 1]])))

            add("step_reward", f"step_logits+biases+grad[{tag(dt)},T={Tq},H={H}]", logits)
            add("step_reward", f"step_scores[{tag(dt)},T={Tq},H={H}]", scores)
            add("step_reward", f"step_bce_loss[mean]+grad_w[{tag(dt)},T={Tq},H={H}]", bce)
            add("step_reward", f"step_value_loss[none]+grad[{tag(dt)},T={Tq},H={H}]", value)
            add("step_reward", f"step_values[no bias]+grad[{tag(dt)},T={Tq},H={H}]", values_nobias)

            for red in ("mean", "none") + (("sum",) if full else ()):
                def pair(dt=dt, H=H, red=red, n=n):
                    S = max(n, 6)
                    h = randn(S, H, dtype=dt, grad=True)
                    grp = torch.arange(S) % 2
                    pol = torch.arange(S) % 3 == 0
                    bwd(O.step_pair_loss(h, randn(H, dtype=dt, grad=True), 0.1, step_index=torch.arange(S),
                                         step_group=grp, step_polarity=pol, reduction=red))

                add("step_reward", f"step_pair_loss[{red}]+grad[{tag(dt)},S={max(n, 6)}]", pair)

            def pair_bwd_noweight(dt=dt):  # reduce=True without weights: only reachable through the op
                import mmreward.ops.triton.step_reward  # noqa: F401

                acc = torch.float64 if dt == torch.float64 else torch.float32
                r = randn(7, dtype=acc)
                T.mmreward_triton.step_pair_loss_backward(torch.tensor(1.0, dtype=acc), r, torch.tensor([0, 1]),
                                                          torch.tensor([2, 3]), None, True)

            add("step_reward", f"step_pair_loss_backward[reduce, no weight][{tag(dt)}]", pair_bwd_noweight)

            lengths = torch.tensor([n, 0, 3, 2 * n + 1])

            for red in ("min", "prod", "logprod", "last", "mean", "max", "sum"):
                def seg(dt=dt, red=red, lengths=lengths):
                    v = torch.rand(int(lengths.sum()), generator=g).to(dt).requires_grad_(True)
                    bwd(O.segment_reduce(v, lengths, reduce=red, empty_value=0.5))

                add("step_reward", f"segment_reduce[{red}]+grad[{tag(dt)},n={n}]", seg)

            def first(dt=dt, lengths=lengths):
                O.first_below(torch.rand(int(lengths.sum()), generator=g).to(dt), lengths, threshold=0.3)

            def first_padded(dt=dt):
                v = torch.rand(4, n + 2, generator=g).to(dt)
                O.first_below(v, mask=torch.rand(4, n + 2, generator=g) < 0.7, threshold=0.3)

            add("step_reward", f"first_below[{tag(dt)},n={n}]", first)
            add("step_reward", f"first_below[padded][{tag(dt)},n={n}]", first_padded)
            combos = [(c, d) for c in (None, 0.4) for d in (False, True)] if full else [(None, False), (0.4, True)]
            for clip, delta in combos:
                def refine(dt=dt, clip=clip, delta=delta, lengths=lengths):
                    O.refine_process_rewards(torch.rand(int(lengths.sum()), generator=g).to(dt), lengths,
                                             clip=clip, delta=delta, gamma=0.9)

                add("step_reward", f"refine_process_rewards[clip={clip},delta={delta}][{tag(dt)},n={n}]", refine)

    # ---------------------------------------------------------------- codebook
    for dt in dtypes:
        for n in sizes:
            B, L = 2, (n if n != 1 else 1)
            for K in ([37, 1025] + ([16, 1] if full else [])):
                # layouts: [B, L, K] (class_dim=-1, codes contiguous: 16 x 256 tiles) and [B, K, L]
                # (class_dim=1, tokens contiguous: 64 x 32 tiles)
                for cd in (-1, 1):
                    shape = (B, L, K) if cd == -1 else (B, K, L)
                    masked = (K == 37) == (cd == 1) or full

                    def ent(dt=dt, shape=shape, cd=cd, masked=masked, B=B, L=L):
                        x = randn(*shape, dtype=dt, grad=True)
                        m = (torch.rand(B, L, generator=g) < 0.7) if masked else None
                        bwd(O.codebook_entropy(x, class_dim=cd, mask=m, reduction="mean"))

                    def nll(dt=dt, shape=shape, cd=cd, masked=masked, B=B, L=L, K=K):
                        x = randn(*shape, dtype=dt, grad=True)
                        m = (torch.rand(B, L, generator=g) < 0.7) if not masked else None
                        t = torch.randint(0, K, (B, L), generator=g)
                        bwd(O.codebook_nll(x, t, class_dim=cd, mask=m, reduction="sum"))

                    def kl(dt=dt, shape=shape, cd=cd, masked=masked, B=B, L=L):
                        a = torch.log_softmax(randn(*shape), dim=cd).to(dt).requires_grad_(True)
                        b = torch.log_softmax(randn(*shape), dim=cd).to(dt).requires_grad_(True)
                        m = (torch.rand(B, L, generator=g) < 0.7) if masked else None
                        bwd(O.categorical_kl(a, b, class_dim=cd, mask=m, reduction="none"))

                    def logcat(dt=dt, shape=shape, cd=cd, masked=masked, B=B, L=L):
                        a = torch.log_softmax(randn(*shape), dim=cd).to(dt).requires_grad_(True)
                        b = randn(*shape, dtype=dt, grad=True)
                        m = (torch.rand(B, L, generator=g) < 0.7) if not masked else None
                        bwd(O.log_categorical(a, b, class_dim=cd, mask=m))

                    sfx = f"[{tag(dt)},cd={cd},L={L},K={K}]"
                    add("codebook", f"codebook_entropy[mask={masked}]+grad{sfx}", ent)
                    add("codebook", f"codebook_nll[mask={not masked}]+grad{sfx}", nll)
                    add("codebook", f"categorical_kl[mask={masked}]+grad{sfx}", kl)
                    add("codebook", f"log_categorical[mask={not masked}]+grad{sfx}", logcat)

            def transposed(dt=dt, B=B, L=L):  # a [B, K, L] buffer viewed as [B, L, K]: sK != 1, sL == 1
                x = randn(B, 40, L, dtype=dt).transpose(1, 2).requires_grad_(True)
                bwd(O.codebook_entropy(x, class_dim=-1))

            add("codebook", f"codebook_entropy[transposed view]+grad[{tag(dt)},L={L},K=40]", transposed)
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
    from mmreward.ops import _backend

    _backend.triton_interpret = lambda: True  # let the triton backend take CPU tensors
    _backend._SELECTED.clear()

    only = [f for f in args.only.split(",") if f] or list(FAMILIES)
    for f in only:
        if f not in FAMILIES:
            _die(f"unknown family {f!r}; choose from {FAMILIES}")
    import mmreward.ops as O

    case_errors = []
    t0 = time.perf_counter()
    todo = [c for c in cases(args.full) if c[0] in only]
    import mmreward

    print(f"mmreward from {os.path.dirname(mmreward.__file__)}")
    print(f"triton {triton.__version__}, torch {torch.__version__}, target cuda:sm_{args.arch}, "
          f"ptxas {', '.join(ptxas) or shutil.which('ptxas')}, {len(todo)} cases"
          f"{' (--full)' if args.full else ''}, TRITON_CACHE_DIR={os.environ.get('TRITON_CACHE_DIR', '(default)')}")
    for family, name, fn in todo:
        rec.case = name
        n0 = len(rec.compiled)
        try:
            with O.use_backend("triton"):
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
    all_jit = {k: v for k, v in jit_functions().items() if k.split(":")[0].rsplit(".", 1)[-1] in only}
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
