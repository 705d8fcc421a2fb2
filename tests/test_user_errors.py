"""Errors a new user meets first: each names the leaf and says what to pass instead."""

from __future__ import annotations

import numpy as np
import pytest

import anyoptim


def test_a_generator_of_parameters_is_refused_with_what_to_pass():
    with pytest.raises(TypeError, match=r"is a generator, not an array: pass a tree of arrays.*nest"):
        anyoptim.Adam().init(p for p in [np.zeros(2)])


def test_numpy_bfloat16_is_refused_naming_the_leaf_and_the_alternatives():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    params = {"w": np.zeros(2, dtype=ml_dtypes.bfloat16)}
    with pytest.raises(TypeError, match=r"params\['w'\] has dtype bfloat16.*NumPy has no bfloat16"):
        anyoptim.Adam().init(params)


def test_torch_module_parameters_passed_as_the_generator_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="nest"):
        anyoptim.SGD(0.1).init(torch.nn.Linear(2, 1).parameters())
