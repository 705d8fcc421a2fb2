"""Root conftest: keep doctest collection away from modules whose optional library is missing."""

import importlib.util

#: Package paths whose doctests need an optional library (an extra), and that library.
OPTIONAL = {
    "anyoptim/engines/cupy": "cupy",
    "anyoptim/lesson/plots.py": "matplotlib",
    "anyoptim/sklearn": "sklearn",
    "anyoptim/checkpoint": "safetensors",
    "anyoptim/distributed": "mpi4py",
    "anyoptim/nn/jitted.py": "jax",
    "anyoptim/optimizers/traced.py": "jax",
}

collect_ignore = [path for path, library in OPTIONAL.items() if importlib.util.find_spec(library) is None]
