#!/usr/bin/env bash
# The whole GPU check of anyoptim, in one run, from the repository root of a CUDA machine:
#
#     bash benchmarks/gpu_check.sh          # results under $OUT (default ./gpu-out)
#     bash benchmarks/gpu_check.sh quick    # a re-check in under 150 s: the CuPy engine's GPU tests (75 s at
#                                           # most), then the one-tensor and MLP-step workloads of the benchmark
#                                           # with --quick timings (60 s at most); env.txt has the card only
#
# The GPU machines are offline and lack array-api-compat and array-api-strict: bring their wheels in .whl/
# (see ../shared/GPU.md).  Each part is guarded (its own time limit, its own log), so one failure does not stop
# the others; summary.txt lists every part's exit status.  Worst case about 8 minutes (the sum of the limits), typically less.
#
#   env.txt           card, driver, versions, and a smoke run: one fused step, its kernel source, a graph replay
#   engine-tests.txt  pytest -m gpu tests/test_cupy_engine.py tests/test_cupy_capture.py (the CuPy engine: agreement, launches, memory, graphs)
#   bench.txt/.json   benchmarks/step.py --backend cupy --compare torch,optax
#   torch-cuda.txt    pytest -m gpu tests/test_torch_cuda.py (torch CUDA tensors through DLPack views, in place, vs
#                     torch.optim; float16/bfloat16) and benchmarks/torch_step.py --device cuda --quick
#   gpu-tests.txt     every other GPU-marked test (the cupy backend of the shared test suite)
#   summary.txt       exit status of each part

set -u
MODE="${1:-full}"
case "$MODE" in
    full | quick) ;;
    *)
        echo "usage: bash benchmarks/gpu_check.sh [quick]" >&2
        exit 2
        ;;
esac
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

note() { echo "$*" | tee -a "$SUMMARY"; }

# part NAME SECONDS LOGFILE COMMAND...: run with a time limit, log stdout and stderr, record the exit status.
part() {
    local name="$1" seconds="$2" log="$3"
    shift 3
    local start=$SECONDS
    echo "=== $name (limit ${seconds}s): $*" >>"$log"
    timeout -k 10 "$seconds" "$@" >>"$log" 2>&1
    local status=$?
    note "$name: exit $status after $((SECONDS - start))s$([ $status -eq 124 ] && echo ' (time limit)')"
}

# ---------------------------------------------------------------- environment
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >>"$OUT/env.txt" 2>&1 \
        || note "installing .whl/ failed (see env.txt)"
else
    note "no .whl/ directory: array-api-compat and array-api-strict must already be installed"
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export HYPOTHESIS_PROFILE=ci

if [ "$MODE" = quick ]; then
    {
        echo "date: $(date -u +%FT%TZ), mode: quick"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    } >>"$OUT/env.txt" 2>&1
    # Each limit is the most that part may take; together with the setup they stay under 150 s.
    part "engine tests" 75 "$OUT/engine-tests.txt" \
        python3 -m pytest -q -m gpu -p no:cacheprovider -rfEsx --durations=10 tests/test_cupy_engine.py tests/test_cupy_capture.py
    part "benchmark" 60 "$OUT/bench.txt" \
        python3 benchmarks/step.py --backend cupy --compare torch,optax --quick \
        --only adam-1-tensor,rmsprop-1-tensor,momentum-1-tensor,adam-mlp-6-tensors --json "$OUT/bench.json"
    note "done (quick) after ${SECONDS}s; logs in $OUT"
    exit 0
fi

{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
    python3 - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "cupy", "array_api_compat", "array_api_strict", "torch", "jax", "optax", "hypothesis", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as error:  # noqa: BLE001 - report and go on
        print(f"{name}: not importable ({error})")
try:
    import cupy
    print("cuda runtime", cupy.cuda.runtime.runtimeGetVersion(), "driver", cupy.cuda.runtime.driverGetVersion())
except Exception as error:  # noqa: BLE001
    print("cupy cuda:", error)
EOF
} >>"$OUT/env.txt" 2>&1

# ---------------------------------------------------------------- 1. smoke run (quick diagnosis if pytest cannot start)
cat >/tmp/anyoptim_smoke.py <<'EOF'
import time
import traceback

import numpy as np
import cupy
import anyoptim
from anyoptim.engines import select_engine
from anyoptim.engines.cupy import GraphedStep

xp = cupy
rng = np.random.default_rng(0)
shapes = {"W1": (2, 5), "b1": (5,), "W2": (5, 2), "b2": (2,), "W3": (2, 1), "b3": (1,)}


def tree(dtype):
    return {k: xp.asarray(rng.normal(size=s).astype(dtype)) for k, s in shapes.items()}


for dtype in ("float32", "float64"):
    try:
        params = anyoptim.flatten(tree(dtype))
        reference = {k: v.copy() for k, v in params.items()}
        grads = anyoptim.flatten({k: xp.asarray(rng.normal(size=v.shape).astype(dtype)) for k, v in params.items()})
        fused, generic = anyoptim.Adam(0.01, engine="fused"), anyoptim.Adam(0.01, engine="generic")
        s1, s2 = fused.init(params), generic.init(reference)
        for _ in range(5):
            params, s1 = fused.step(params, grads, s1)
            reference, s2 = generic.step(reference, grads, s2)
        worst = max(float(abs((params[k] - reference[k]) / reference[k]).max()) for k in params)
        print(f"{dtype}: fused vs generic Adam, 5 steps, worst relative difference {worst:.3g}")
    except Exception:
        traceback.print_exc()

try:
    engine = select_engine(cupy, "fused")
    for compiled in engine._compiled.values():
        for (dtype, on_device), (source, _) in compiled.kernels.items():
            if dtype == "float32" and not on_device:
                print(f"--- {source.name}({source.in_params}; {source.out_params})\n{source.body}")
                break
except Exception:
    traceback.print_exc()

try:
    params = anyoptim.flatten(tree("float32"))
    grads = anyoptim.flatten({k: xp.ones_like(v) for k, v in params.items()})
    optimizer = anyoptim.Adam(0.01)
    state = optimizer.init(params)
    for steps in (10, 1000):
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            params, state = optimizer.step(params, grads, state)
        cupy.cuda.Device().synchronize()
        print(f"eager fused Adam step, 6-tensor MLP, flat: {(time.perf_counter() - start) / steps * 1e6:.1f} us/step")
except Exception:
    traceback.print_exc()

try:
    from anyoptim.engines.cupy import matmul  # CuPy refuses cuBLAS (@) inside a capture

    def loss_and_grads(p, x, y):
        r = matmul(x, p["W"]) + p["b"] - y
        n = x.shape[0]
        return (r * r).sum() / n, {"W": matmul(x.T, r) * (2.0 / n), "b": r.sum(axis=0) * (2.0 / n)}

    p = anyoptim.flatten({"W": xp.asarray(rng.normal(size=(4, 3)).astype("float32")), "b": xp.zeros(3, "float32")})
    x = xp.asarray(rng.normal(size=(16, 4)).astype("float32"))
    y = xp.asarray(rng.normal(size=(16, 3)).astype("float32"))
    optimizer = anyoptim.Adam(0.05)
    step = GraphedStep(optimizer, p, optimizer.init(p), loss_and_grads, x, y)
    first = float(step())
    for _ in range(200):
        step()
    cupy.cuda.Device().synchronize()
    start = time.perf_counter()
    for _ in range(1000):
        step()
    cupy.cuda.Device().synchronize()
    elapsed = (time.perf_counter() - start) / 1000
    print(f"graph replay: loss {first:.4f} -> {float(step.loss):.4f}, count {step.state.count}, {elapsed * 1e6:.1f} us/step")
except Exception:
    traceback.print_exc()
EOF
part "smoke" 45 "$OUT/env.txt" python3 /tmp/anyoptim_smoke.py

# ---------------------------------------------------------------- 2. the CuPy engine's GPU tests
part "engine tests" 100 "$OUT/engine-tests.txt" \
    python3 -m pytest -q -m gpu -p no:cacheprovider -rfEsx --durations=10 tests/test_cupy_engine.py tests/test_cupy_capture.py

# ---------------------------------------------------------------- 3. the benchmark
if [ -f benchmarks/step.py ]; then
    part "benchmark" 150 "$OUT/bench.txt" \
        python3 benchmarks/step.py --backend cupy --compare torch,optax --json "$OUT/bench.json"
else
    note "benchmark: benchmarks/step.py not found"
fi

# ---------------------------------------------------------------- 4. torch CUDA tensors (never run on a GPU before)
part "torch cuda tests" 90 "$OUT/torch-cuda.txt" \
    python3 -m pytest -q -m gpu -p no:cacheprovider -rfEsx -x --durations=5 tests/test_torch_cuda.py
part "torch cuda benchmark" 45 "$OUT/torch-cuda.txt" python3 benchmarks/torch_step.py --device cuda --quick

# ---------------------------------------------------------------- 5. every other GPU-marked test
part "other gpu tests" 60 "$OUT/gpu-tests.txt" \
    python3 -m pytest -q -m gpu -p no:cacheprovider -rfEx --durations=10 tests \
    --ignore=tests/test_cupy_engine.py --ignore=tests/test_cupy_capture.py --ignore=tests/test_torch_cuda.py

note "done; logs in $OUT"
