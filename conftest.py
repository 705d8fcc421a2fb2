"""Root conftest: keep doctest collection away from modules whose library is missing."""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("cupy") is None:
    collect_ignore.append("anyoptim/engines/cupy")
if importlib.util.find_spec("matplotlib") is None:
    collect_ignore.append("anyoptim/lesson/plots.py")
