"""The CuPy engine: the traced program as one fused CUDA kernel per step, and CUDA-graph capture."""

from .engine import CupyEngine, GraphedStep, capturing, matmul

__all__ = ["CupyEngine", "GraphedStep", "capturing", "matmul"]
