"""Time one optimizer step of anyoptim beside torch.optim and optax: a thin wrapper of :mod:`anyoptim.bench`.

    python benchmarks/step.py --backend numpy --compare torch,optax --json bench-cpu.json
    python benchmarks/step.py --backend cupy --compare torch,optax --json bench-gpu.json [--quick]

``anyoptim bench`` runs the same thing.  See ``benchmarks/README.md`` for results.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import anyoptim.bench
except ImportError:  # run from a checkout without installing: the package is one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import anyoptim.bench

if __name__ == "__main__":
    raise SystemExit(anyoptim.bench.main(sys.argv[1:]))
