"""The CuPy engine: the traced program as one fused CUDA kernel per step, and CUDA-graph capture."""

from .capture import GraphedStep, capturing, matmul
from .engine import CupyEngine

__all__ = ["CupyEngine", "GraphedStep", "capturing", "matmul"]
