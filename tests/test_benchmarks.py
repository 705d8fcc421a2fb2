"""The benchmark harness (``benchmarks/``, outside the wheel) runs from a checkout."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import harness as bench


def test_the_benchmark_times_a_workload_and_writes_json(tmp_path, capsys) -> None:
    """A short run of ``benchmarks/step.py`` on the CPU: rows with times, ratios, bandwidth fractions, JSON."""
    target = tmp_path / "bench.json"
    status = bench.main(["--backend", "numpy", "--quick", "--only", "adam-mlp", "--json", str(target)])
    assert status == 0
    result = json.loads(target.read_text())
    rows = {row["implementation"]: row for row in result["rows"]}
    assert {"anyoptim fused, flat", "anyoptim fused, per tensor", "anyoptim generic, flat"} <= set(rows)
    for row in rows.values():
        assert row["error"] is None and row["seconds"] > 0
        assert row["bytes_moved"] == 28 * 30  # Adam: 28 B per float32 parameter, 30 parameters
        assert row["bandwidth_fraction"] is not None
    assert result["meta"]["bandwidth_bytes_per_second"] > 0
    printed = capsys.readouterr().out
    assert "adam-mlp-6-tensors" in printed and "anyoptim fused, flat" in printed


def test_the_benchmark_reports_a_failing_implementation_as_a_row() -> None:
    workload = bench.Workload("adam-mlp-6-tensors", "adam", bench._mlp_shapes(bench.LESSON_DIMS))

    def broken():
        raise RuntimeError("no such library")

    row = bench._measure(bench.Device("numpy"), workload, "broken", broken, min_time=0.001, repeats=1)
    assert row.seconds is None and row.error == "RuntimeError: no such library"
    assert "error" in bench._table_line(row)


def test_the_end_to_end_run_compares_fit_with_the_lessons_code() -> None:
    rows = bench._end_to_end(epochs=3, repeats=1)
    assert [row.implementation for row in rows] == ["lesson NumPy code", "anyoptim.fit"]
    assert all(row.error is None and row.seconds > 0 for row in rows)
    assert rows[0].ratio == 1.0 and rows[1].ratio == rows[1].seconds / rows[0].seconds


def test_bad_benchmark_arguments_are_usage_errors(capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        bench.main(["--compare", "tensorflow"])
    assert raised.value.code == 2
    assert "unknown libraries tensorflow" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--only", "nosuch"], "--only: no workload named nosuch"),
        (["--only", ","], "--only: no workload named (none)"),
        (["--backend", "cupy"], "--backend cupy: backend 'cupy' needs a CUDA GPU"),
    ],
)
def test_bad_benchmark_arguments_are_one_line_and_status_2(argv, message, capsys, monkeypatch) -> None:
    """Two usage lines and the error; ``--only nosuch`` printed an empty table and exited 0; no GPU: a CUDA error."""
    if argv[0] == "--backend":  # as on a machine without a GPU, even where this one has one
        from anyoptim.lesson import backends

        def no_gpu(name: str) -> None:
            raise backends.ExperimentError("backend 'cupy' needs a CUDA GPU, and this machine has none")

        monkeypatch.setattr(backends, "load_backend", no_gpu)
    with pytest.raises(SystemExit) as raised:
        bench.main(argv)
    assert raised.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err


def test_a_library_to_compare_that_is_not_installed_is_a_usage_error(capsys, monkeypatch) -> None:
    """``--compare torch`` without torch printed error rows and exited 0."""
    find_spec = bench.importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None if name == "torch" else find_spec(name))
    with pytest.raises(SystemExit) as raised:
        bench.main(["--compare", "torch", "--only", "adam-mlp"])
    assert raised.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "python benchmarks/step.py: error: --compare torch: torch is not installed (see --help)"
    )
