"""Float32 step on 2^23 parameters, before/after engines.muladd (issue 11): run it against two checkouts.

    for c in /work/main . /work/main .; do PYTHONPATH=$c python benchmarks/muladd_step.py; done

The NumPy engine's compiled kernels (on a CPU with AVX2 and FMA: the variant whose muladd is one ``vfmadd``).
``ANYOPTIM_NUMPY_KERNELS=ufunc`` in the environment times the ufunc plan instead (no C compiler).  Best of 5 x 10
steps; results in benchmarks/README.md.
"""

import os
import time

import numpy as np

import anyoptim

print(anyoptim.__file__, os.environ.get("ANYOPTIM_NUMPY_KERNELS", "auto"))
for name, make in [
    ("sgd", lambda: anyoptim.SGD(0.1)),
    ("heavy", lambda: anyoptim.Momentum(0.1, beta=0.9, form="heavy_ball")),
    ("nesterov", lambda: anyoptim.Momentum(0.1, beta=0.9, form="heavy_ball", nesterov=True)),
    ("adam", lambda: anyoptim.Adam(1e-3)),
    ("adamw", lambda: anyoptim.AdamW(1e-3, weight_decay=0.01)),
]:
    p = {"w": np.random.default_rng(0).standard_normal(2**23).astype(np.float32)}
    g = {"w": np.full(2**23, 0.01, np.float32)}
    o = make()
    s = o.init(p)
    for _ in range(3):
        p, s = o.step(p, g, s)
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(10):
            p, s = o.step(p, g, s)
        best = min(best, (time.perf_counter() - t) / 10)
    print(f"{name:9s} {best * 1e3:6.2f} ms")
