"""anyoptim on JAX under ``jax.jit``: its Adam step beside optax's, and ``anyoptim compare --backend jax`` beside NumPy.

    python benchmarks/jax_jit.py --json bench-jax.json            # ~2 minutes on a quiet CPU
    python benchmarks/jax_jit.py --quick --skip-compare            # a short look at the steps only
    PYTHONPATH=. python benchmarks/jax_jit.py --skip-compare       # this checkout's anyoptim, not the installed one

An installed anyoptim (an editable install of another checkout, say) comes first: the JSON's ``anyoptim`` says
which one ran, and ``PYTHONPATH=.`` from a checkout's root times that checkout.

Steps: ``jax.jit(opt.step, donate_argnums=(0, 2))`` of ``anyoptim.Adam(1e-3)`` and the same jit of optax's
``adam(1e-3)`` update plus ``apply_updates`` (float32), on one tensor of 2^23 parameters and on the lesson's
2-5-2-1 MLP (six tensors, 30 parameters), each the best of several timings of many steps
(``harness.time_per_step``), the device synchronised before each clock read.  JAX is pinned to one CPU thread
(``harness.pin_threads``).  ``compare``: the lesson's command line (``python -m anyoptim compare --no-plots``) run in
a fresh process per backend, its "total training time" (the seven runs' ``fit``, compilation included) and the
process's wall time.  See ``benchmarks/README.md`` for results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import anyoptim
except ImportError:  # run from a checkout without installing: the package is one folder up
    sys.path.insert(0, str(HERE.parent))

import harness  # noqa: E402

import anyoptim  # noqa: E402  (the installed one, or this checkout's)

#: The two workloads of the step benchmark (harness.py's, on the CPU): 2^23 parameters, and the lesson's MLP.
WORKLOADS = {
    w.name: w.shapes
    for w in harness.workloads("numpy", quick=False)
    if w.name in ("adam-1-tensor", "adam-mlp-6-tensors")
}


def step_times(quick: bool) -> list[dict]:
    """Seconds per jitted Adam step of anyoptim and optax on each workload."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import anyoptim

    timing = {"min_time": 0.05, "repeats": 2} if quick else {"min_time": 0.25, "repeats": 5}
    rows = []
    for name, shapes in WORKLOADS.items():
        rng = np.random.default_rng(0)
        host = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
        grads = {
            f"p{i}": jnp.asarray(0.01 * rng.normal(size=shape).astype(np.float32)) for i, shape in enumerate(shapes)
        }
        times = {}
        for library in ("anyoptim", "optax"):
            params = {f"p{i}": jnp.asarray(value) for i, value in enumerate(host)}
            if library == "anyoptim":
                optimizer = anyoptim.Adam(1e-3)
                update, state = jax.jit(optimizer.step, donate_argnums=(0, 2)), optimizer.init(params)
            else:
                transform = optax.adam(1e-3)

                def apply(params, grads, state, transform=transform):
                    updates, state = transform.update(grads, state, params)
                    return optax.apply_updates(params, updates), state

                update, state = jax.jit(apply, donate_argnums=(0, 2)), transform.init(params)
            box = [params, state]

            def step(box=box, update=update, grads=grads) -> None:
                box[0], box[1] = update(box[0], grads, box[1])

            times[library] = harness.time_per_step(step, lambda box=box: jax.block_until_ready(box[0]), **timing)
        rows.append(
            {
                "workload": name,
                "parameters": int(sum(np.prod(shape) for shape in shapes)),
                "anyoptim_s": times["anyoptim"],
                "optax_s": times["optax"],
                "ratio": times["anyoptim"] / times["optax"],
            }
        )
    return rows


def compare_times(epochs: int) -> list[dict]:
    """``anyoptim compare`` on NumPy and on JAX, each in a fresh process: its total training time and wall time.

    JAX runs twice more with JAX's persistent compilation cache in a new folder: the first run fills it, the
    second finds every program compiled (what a user who sets ``JAX_COMPILATION_CACHE_DIR`` sees from then on).
    """
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        cached = {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
        runs = [("numpy", "", {}), ("jax", "", {}), ("jax", "cache filled", cached), ("jax", "cache warm", cached)]
        for backend, note, env in runs:
            command = [sys.executable, "-m", "anyoptim", "compare", "--backend", backend, "--epochs", str(epochs)]
            start = time.perf_counter()
            done = subprocess.run(
                [*command, "--no-plots"],
                capture_output=True,
                text=True,
                check=True,
                cwd=HERE.parent,
                env={**os.environ, **env},
            )
            wall = time.perf_counter() - start
            training = float(re.search(r"total training time: ([0-9.]+) s", done.stdout).group(1))
            rows.append({"backend": backend, "note": note, "epochs": epochs, "training_s": training, "process_s": wall})
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timings")
    parser.add_argument("--epochs", type=int, default=5000, help="epochs of anyoptim compare (default 5000)")
    parser.add_argument("--skip-compare", action="store_true", help="time the steps only")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    notes = harness.pin_threads("numpy")  # one CPU thread for XLA, set before JAX is imported
    import jax

    result = {
        "machine": harness.Device("numpy").name,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "anyoptim": str(Path(anyoptim.__file__).parent),
        "notes": notes,
        "steps": step_times(args.quick),
        "compare": [] if args.skip_compare else compare_times(args.epochs),
    }
    for row in result["steps"]:
        print(
            f"{row['workload']:<20} anyoptim {row['anyoptim_s'] * 1e6:10.1f} us   optax {row['optax_s'] * 1e6:10.1f} us"
            f"   anyoptim / optax {row['ratio']:.2f}"
        )
    for row in result["compare"]:
        print(
            f"anyoptim compare --backend {row['backend']:<5} {row['training_s']:6.1f} s training, "
            f"{row['process_s']:6.1f} s process ({row['epochs']} epochs) {row['note']}"
        )
    if result["compare"]:
        numpy = result["compare"][0]["training_s"]
        for row in result["compare"][1:]:
            print(f"jax / numpy training time ({row['note'] or 'no cache'}): {row['training_s'] / numpy:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    raise SystemExit(main(sys.argv[1:]))
