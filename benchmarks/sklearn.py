"""anyoptim's scikit-learn estimator beside scikit-learn's MLPClassifier and a plain torch loop (issue 13).

Four workloads, each trained by all three implementations with the same network, epochs, batch size, Adam
learning rate, L2 penalty ``alpha`` (on the weights only) and Glorot-uniform initialization, on a fixed
train/test split:

* ``digits``: scikit-learn's digits (1,797 x 64, standardized), 64-128-10, batch 64, 100 epochs, float64;
* ``breast-cancer``: scikit-learn's breast cancer (569 x 30, standardized), 30-16-1, batch 64, 200 epochs, float64;
* ``synthetic``: ``make_classification`` (50,000 training rows x 100 features, 5 classes, 10,000 test rows,
  ``random_state=0``), 100-256-256-5, batch 256, 20 epochs, float32;
* ``moons``: the lesson's 300 moons (noise 0.2) and 2,000 test points, 2-5-2-1, batch 64, learning rate 0.0007,
  5,000 epochs, float64.

The three implementations: ``anyoptim.sklearn.MLPClassifier`` (``optimizer="adam"``); scikit-learn's
``MLPClassifier(solver="adam", shuffle=True)``; and a plain torch loop (``nn.Sequential`` of ``Linear`` and
``ReLU``, ``torch.optim.Adam`` with ``weight_decay = alpha / batch_size`` on the weights, which is the gradient
of scikit-learn's penalty ``alpha / (2 n) * sum ||W||^2``, a ``randperm`` shuffle every epoch and
``BCEWithLogitsLoss`` / ``CrossEntropyLoss``).  The estimators run every epoch (``tol=0``,
``n_iter_no_change=max_iter``).  A run's time is the wall time of its whole ``fit`` (input checks included;
for torch: the epoch loop, with the data already tensors) divided by its epochs; every figure is the median
over ``--seeds`` seeds (initialization and shuffling), with the implementations' order rotated from seed to
seed, after one untimed warm-up fit of each.  Everything runs in this one process on one thread: the thread
variables are set before NumPy is imported, threadpoolctl limits the BLAS pools and ``torch.set_num_threads(1)``.

    python benchmarks/sklearn.py                    # ~3-5 minutes on a quiet 2-core machine
    python benchmarks/sklearn.py --quick            # a short check (~20 s)
    python benchmarks/sklearn.py --json bench-sklearn.json --only digits,moons
    python benchmarks/sklearn.py --inits --seeds 5   # test accuracy of init="glorot_uniform" vs "he" (no timing)
    OPENBLAS_CORETYPE=SkylakeX python benchmarks/sklearn.py   # NumPy's OpenBLAS with its AVX-512 kernels

``--inits`` trains only anyoptim's estimator, once with each initialization per seed, and prints the median and
range of the test accuracy.  ``OPENBLAS_CORETYPE`` must be set before Python starts (OpenBLAS reads it when NumPy
loads it); the report prints the kernels OpenBLAS chose.  OpenBLAS 0.3.31 does not know AMD's Zen 5 and falls
back to its Haswell (AVX2) kernels there (OpenMathLib/OpenBLAS#6029), which halves NumPy's (and so anyoptim's and
scikit-learn's) matrix products on such a machine; torch uses its own MKL.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# This file is named sklearn.py: drop its folder from the path so that ``import sklearn`` finds scikit-learn.
_here = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _here]

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_name] = "1"  # before NumPy (and torch) are imported

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import threadpoolctl  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits, make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SklearnMLP  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout's anyoptim when none is installed
import anyoptim  # noqa: E402
from anyoptim.sklearn import MLPClassifier as AnyoptimMLP  # noqa: E402

IMPLEMENTATIONS = ("anyoptim", "sklearn", "torch")
ALPHA = 1e-4


@dataclass
class Workload:
    name: str
    hidden: tuple[int, ...]
    batch: int
    epochs: int
    quick_epochs: int
    learning_rate: float
    dtype: type
    data: tuple  # X_train, X_test, y_train, y_test


def _standardized(X, y, dtype):
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train).astype(dtype), scaler.transform(X_test).astype(dtype), y_train, y_test


def workloads() -> list[Workload]:
    X, y = make_classification(
        n_samples=60_000, n_features=100, n_informative=20, n_classes=5, random_state=0, class_sep=1.0
    )
    X = X.astype(np.float32)
    synthetic = (X[:50_000], X[50_000:], y[:50_000], y[50_000:])
    X_moons, y_moons = anyoptim.datasets.make_moons(n_samples=300, noise=0.2, seed=3)
    X_moons_test, y_moons_test = anyoptim.datasets.make_moons(n_samples=2000, noise=0.2, seed=4)
    digits, cancer = load_digits(return_X_y=True), load_breast_cancer(return_X_y=True)
    return [
        Workload("digits", (128,), 64, 100, 10, 1e-3, np.float64, _standardized(*digits, np.float64)),
        Workload("breast-cancer", (16,), 64, 200, 20, 1e-3, np.float64, _standardized(*cancer, np.float64)),
        Workload("synthetic", (256, 256), 256, 20, 2, 1e-3, np.float32, synthetic),
        Workload("moons", (5, 2), 64, 5000, 300, 7e-4, np.float64, (X_moons, X_moons_test, y_moons, y_moons_test)),
    ]


def run_anyoptim(w: Workload, epochs: int, seed: int, init: str = "glorot_uniform") -> tuple[float, float]:
    X, X_test, y, y_test = w.data
    clf = AnyoptimMLP(
        w.hidden, optimizer="adam", learning_rate=w.learning_rate, alpha=ALPHA, batch_size=w.batch,
        max_iter=epochs, tol=0.0, n_iter_no_change=epochs, random_state=seed, init=init,
    )  # fmt: skip
    start = time.perf_counter()
    clf.fit(X, y)
    seconds = time.perf_counter() - start
    assert clf.n_iter_ == epochs, clf.n_iter_
    return seconds / epochs, float(clf.score(X_test, y_test))


def run_sklearn(w: Workload, epochs: int, seed: int) -> tuple[float, float]:
    X, X_test, y, y_test = w.data
    clf = SklearnMLP(
        w.hidden, solver="adam", learning_rate_init=w.learning_rate, alpha=ALPHA, batch_size=w.batch,
        max_iter=epochs, tol=0.0, n_iter_no_change=epochs, shuffle=True, random_state=seed,
    )  # fmt: skip
    start = time.perf_counter()
    clf.fit(X, y)
    seconds = time.perf_counter() - start
    assert clf.n_iter_ == epochs, clf.n_iter_
    return seconds / epochs, float(clf.score(X_test, y_test))


def run_torch(w: Workload, epochs: int, seed: int) -> tuple[float, float]:
    X, X_test, y, y_test = w.data
    dtype = torch.float32 if w.dtype == np.float32 else torch.float64
    classes = int(np.max(y)) + 1
    outputs = 1 if classes == 2 else classes
    torch.manual_seed(seed)
    dims = (X.shape[1], *w.hidden, outputs)
    layers: list[torch.nn.Module] = []
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(dims)):
        linear = torch.nn.Linear(fan_in, fan_out, dtype=dtype)
        bound = (6.0 / (fan_in + fan_out)) ** 0.5  # scikit-learn's Glorot uniform, weights and biases
        torch.nn.init.uniform_(linear.weight, -bound, bound)
        torch.nn.init.uniform_(linear.bias, -bound, bound)
        layers += [linear] if layer == len(dims) - 2 else [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers)
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    optimizer = torch.optim.Adam(
        [{"params": weights, "weight_decay": ALPHA / w.batch}, {"params": biases}], lr=w.learning_rate
    )
    if outputs == 1:
        loss_fn, target = torch.nn.BCEWithLogitsLoss(), torch.as_tensor(y, dtype=dtype).reshape(-1, 1)
    else:
        loss_fn, target = torch.nn.CrossEntropyLoss(), torch.as_tensor(y, dtype=torch.int64)
    inputs, n = torch.as_tensor(X), X.shape[0]
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n)
        for begin in range(0, n, w.batch):
            rows = order[begin : begin + w.batch]
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[rows]), target[rows])
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        z = model(torch.as_tensor(X_test))
        predicted = (z[:, 0] > 0).long() if outputs == 1 else z.argmax(dim=1)
    return seconds / epochs, float((predicted.numpy() == y_test).mean())


RUNNERS = {"anyoptim": run_anyoptim, "sklearn": run_sklearn, "torch": run_torch}


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "system": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "anyoptim": getattr(anyoptim, "__version__", "checkout"),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
        "threadpoolctl": threadpoolctl.__version__,
        "blas": [
            (p.get("internal_api"), p.get("version"), p.get("architecture")) for p in threadpoolctl.threadpool_info()
        ],
    }


def bench(w: Workload, epochs: int, seeds: int) -> dict:
    for name in IMPLEMENTATIONS:  # warm-up: compiled kernels, caches, first-call imports
        RUNNERS[name](w, 1, 0)
    runs: dict[str, list] = {name: [] for name in IMPLEMENTATIONS}
    for seed in range(seeds):
        order = IMPLEMENTATIONS[seed % 3 :] + IMPLEMENTATIONS[: seed % 3]
        for name in order:
            runs[name].append(RUNNERS[name](w, epochs, seed))
    result = {"epochs": epochs, "batch": w.batch, "hidden": list(w.hidden), "dtype": np.dtype(w.dtype).name}
    result["n_train"], result["n_features"] = w.data[0].shape
    for name, values in runs.items():
        times, accuracies = [t for t, _ in values], [a for _, a in values]
        result[name] = {
            "seconds_per_epoch": statistics.median(times),
            "accuracy": statistics.median(accuracies),
            "accuracy_range": [min(accuracies), max(accuracies)],
            "runs": values,
        }
    return result


INITS = ("glorot_uniform", "he")


def init_study(w: Workload, epochs: int, seeds: int) -> dict:
    """Test accuracy of anyoptim's estimator with each initialization: median and range over the seeds."""
    result = {"epochs": epochs, "batch": w.batch, "hidden": list(w.hidden), "dtype": np.dtype(w.dtype).name}
    for init in INITS:
        accuracies = [run_anyoptim(w, epochs, seed, init=init)[1] for seed in range(seeds)]
        result[init] = {"accuracy": statistics.median(accuracies), "accuracy_range": [min(accuracies), max(accuracies)]}
    return result


def init_table(results: dict) -> str:
    lines = ["| workload | epochs | " + " | ".join(f"{init} acc (range)" for init in INITS) + " |", "|---" * 4 + "|"]
    for name, r in results.items():
        cells = []
        for init in INITS:
            low, high = r[init]["accuracy_range"]
            cells.append(f"{r[init]['accuracy']:.3f} ({low:.3f}-{high:.3f})")
        lines.append(f"| {name} | {r['epochs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _time(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def table(results: dict) -> str:
    head = (
        "| workload | epochs | anyoptim /epoch | acc | sklearn /epoch | acc | torch /epoch | acc "
        "| any/sklearn (<= 0.5) | any/torch | acc diff vs sklearn (pts) |"
    )
    lines = [head, "|" + "---|" * 11]
    for name, r in results.items():
        a, s, t = r["anyoptim"], r["sklearn"], r["torch"]
        to_sklearn = a["seconds_per_epoch"] / s["seconds_per_epoch"]
        to_torch = a["seconds_per_epoch"] / t["seconds_per_epoch"]
        diff = 100 * (a["accuracy"] - s["accuracy"])
        torch_mark = " (<= 0.5)" if name == "synthetic" else ""
        lines.append(
            f"| {name} | {r['epochs']} | {_time(a['seconds_per_epoch'])} | {a['accuracy']:.3f} "
            f"| {_time(s['seconds_per_epoch'])} | {s['accuracy']:.3f} | {_time(t['seconds_per_epoch'])} "
            f"| {t['accuracy']:.3f} | {to_sklearn:.2f} {'met' if to_sklearn <= 0.5 else 'MISSED'} "
            f"| {to_torch:.2f}{torch_mark} | {diff:+.1f} {'met' if abs(diff) <= 0.5 else 'MISSED'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few epochs: a short check, not a measurement")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per implementation (default 3)")
    parser.add_argument("--only", help="comma-separated workloads (digits, breast-cancer, synthetic, moons)")
    parser.add_argument("--json", type=Path, help="write the results, machine and versions here")
    parser.add_argument("--inits", action="store_true", help="compare initializations' test accuracy (no timing)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)
    chosen = workloads()
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {w.name for w in chosen}
        if unknown:
            parser.error(f"unknown workloads {sorted(unknown)}")
        chosen = [w for w in chosen if w.name in wanted]
    info = {"machine": machine(), "versions": versions(), "quick": args.quick, "seeds": args.seeds}
    results = {}
    started = time.perf_counter()
    with threadpoolctl.threadpool_limits(1):
        for w in chosen:
            epochs = w.quick_epochs if args.quick else w.epochs
            results[w.name] = init_study(w, epochs, args.seeds) if args.inits else bench(w, epochs, args.seeds)
            print(f"{w.name}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    info["machine"]["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    info["wall_seconds"] = time.perf_counter() - started
    info["results"] = results
    m, v = info["machine"], info["versions"]
    print(f"{m['cpu']}, {m['cpus']} CPUs (one thread used), load average {m['load_average'][0]:.2f} before, "
          f"{m['load_average_after'][0]:.2f} after")  # fmt: skip
    print(", ".join(f"{k} {val}" for k, val in v.items() if k != "blas"))
    print("BLAS: " + ", ".join(f"{api} {version} ({arch} kernels)" for api, version, arch in v["blas"] if arch))
    print(init_table(results) if args.inits else table(results))
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
