#!/usr/bin/env bash
# One prepared GPU session: build mmreward._C with its CUDA kernels against the machine's CUDA torch,
# run the op tests on the GPU (the `cuda` and Triton-on-GPU parametrisations), then the op and
# Diffusion Reward benchmarks on the GPU. Every phase has its own time limit, so a slow or failing
# phase does not cost the ones after it; logs and JSON go to $OUT (default gpu_out/).
#
#   OUT=/tmp/gpu bash scripts/gpu_check.sh            # on a machine with a CUDA GPU and CUDA torch
#
# Needs: python3 with a CUDA build of torch, triton, pytest (+ pytest-xdist), numpy, safetensors,
# tqdm, setuptools, wheel, ninja; nvcc matching torch's CUDA. Nothing is downloaded.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
unset TRITON_INTERPRET
PY=${PY:-python3}
t0=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - t0 ))s] $*"; }

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())"
nvcc --version | tail -1

stamp "build (pip install -e ., CUDA + C++ kernels)"
timeout "${BUILD_S:-200}" $PY -m pip install --no-build-isolation --no-deps --no-index -v -e . >"$OUT/build.log" 2>&1
rc=$?
stamp "build rc=$rc"
if [ $rc -ne 0 ] && grep -q "license" "$OUT/build.log"; then
  # setuptools < 77 cannot read a PEP 639 license string: retry with the table form
  stamp "retrying with license = {text = ...} (older setuptools)"
  sed -i 's/^license = "\(.*\)"/license = {text = "\1"}/' pyproject.toml
  timeout "${BUILD_S:-200}" $PY -m pip install --no-build-isolation --no-deps --no-index -v -e . >>"$OUT/build.log" 2>&1
  rc=$?
fi
if [ $rc -ne 0 ]; then
  # last resort: build the extension in place and import the source tree
  stamp "pip failed (rc=$rc); building in place"
  tail -30 "$OUT/build.log"
  timeout "${BUILD_S:-200}" $PY setup.py build_ext --inplace >>"$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; exit 1; }
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -c "import torch, mmreward._C; print(torch.ops.mmreward.ext_info())" || exit 1
$PY -m mmreward.env_report || true

stamp "op tests on the GPU"
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8" || echo "")
timeout "${TESTS_S:-180}" $PY -m pytest tests/ops tests/test_backend.py -q -p no:cacheprovider $XDIST -rfEs \
  --durations=10 >"$OUT/tests.log" 2>&1
stamp "tests rc=$?"
grep -E "passed|failed|error" "$OUT/tests.log" | tail -3
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -40
grep -c "^SKIPPED" "$OUT/tests.log" | sed 's/^/skipped lines: /'

# benchmarks, most informative first; the command's own time limit may cut the last ones
{
  stamp "bench_pairwise --overhead (default path vs eager at small batches, interleaved rounds)"
  timeout "${OVERHEAD_S:-60}" $PY benchmarks/bench_pairwise.py --device cuda --overhead --rounds 7 \
    --json "$OUT/bench_pairwise_overhead_cuda.json"
  stamp "bench_pairwise (eager vs the CUDA and Triton kernels)"
  timeout "${PAIRWISE_S:-90}" $PY benchmarks/bench_pairwise.py --device cuda --min-time 0.3 \
    --impls eager,cuda,triton --case-rounds 1 --json "$OUT/bench_pairwise_cuda.json"
  stamp "bench_codebook"
  timeout "${CODEBOOK_S:-60}" $PY benchmarks/bench_codebook.py --device cuda --json "$OUT/bench_codebook_cuda.json"
  stamp "bench_step_reward"
  timeout "${STEP_S:-60}" $PY benchmarks/bench_step_reward.py --device cuda --repeats 10 --baseline-repeats 3 \
    --json "$OUT/bench_step_reward_cuda.json"
  stamp "bench_diffusion_reward_speed"
  timeout "${DR_S:-80}" $PY benchmarks/bench_diffusion_reward_speed.py --device cuda --repeats 10 \
    --json "$OUT/bench_diffusion_reward_speed_cuda.json"
  stamp "bench_pairwise (eager vs torch.compile)"
  timeout "${COMPILE_S:-120}" $PY benchmarks/bench_pairwise.py --device cuda --min-time 0.3 \
    --impls eager,compile --case-rounds 1 --json "$OUT/bench_pairwise_compile_cuda.json"
  stamp "done"
} 2>&1 | tee "$OUT/bench.log"
