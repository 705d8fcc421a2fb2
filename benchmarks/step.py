"""Time one optimizer step of anyoptim beside torch.optim and optax (the harness is ``harness.py`` beside this).

    python benchmarks/step.py --backend numpy --compare torch,optax --json bench-cpu.json
    python benchmarks/step.py --backend cupy --compare torch,optax --json bench-gpu.json [--quick]

See ``benchmarks/README.md`` for results.  anyoptim is imported from the
installed package, or from the checkout this folder sits in.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import anyoptim  # noqa: F401
except ImportError:  # run from a checkout without installing: the package is one folder up
    sys.path.insert(0, str(HERE.parent))

import harness  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(harness.main(sys.argv[1:]))
