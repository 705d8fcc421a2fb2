"""``anyoptim train`` on real files, and ``anyoptim compare --seeds``: each mistake a one-line error, exit 2."""

from __future__ import annotations

import numpy as np
import pytest

from anyoptim.checkpoint import read_info
from anyoptim.lesson.cli import main
from anyoptim.lesson.compare import COMPARISON_RUNS, ComparisonRow
from anyoptim.lesson.problem import lesson_problem
from anyoptim.lesson.seeds import SEED_COLUMNS, run_seeds, seed_list, spread, summarize, table_rows
from anyoptim.lesson.tables import detect_delimiter, encode_labels, read_table
from anyoptim.lesson.training import build_schedule, run_training

RNG = np.random.default_rng(0)
X = RNG.normal(size=(80, 3))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)


def _write(path, rows, delimiter=",", header=None):
    lines = [] if header is None else [delimiter.join(header)]
    lines += [delimiter.join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _features(i):
    return [f"{v:.5g}" for v in X[i]]


def _train(capsys, *args):
    status = main(["train", "--epochs", "30", "--learning-rate", "0.05", "--no-plots", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _one_line_error(capsys, *args):
    status, out, err = _train(capsys, *args)
    assert status == 2, out
    assert err.startswith("anyoptim: error: ") and err.count("\n") == 1, err
    return err


# --------------------------------------------------------------------------- the files


def test_label_in_the_first_column_errs_with_the_fix_then_trains_with_it(tmp_path, capsys):
    data = _write(tmp_path / "first.csv", [[Y[i], *_features(i)] for i in range(80)], header=["label", "a", "b", "c"])
    err = _one_line_error(capsys, "--data", data)
    assert "--label-column 0" in err and "--task regression" in err
    for column in ("0", "label", "-4"):
        status, out, _ = _train(capsys, "--data", data, "--label-column", column)
        assert status == 0 and "labels in 'label' (column 0); 3 features" in out


def test_a_semicolon_file_is_detected(tmp_path, capsys):
    data = _write(tmp_path / "semi.csv", [[*_features(i), Y[i]] for i in range(80)], delimiter=";")
    status, out, _ = _train(capsys, "--data", data)
    assert status == 0 and "delimiter ';', no header line" in out
    status, out, _ = _train(capsys, "--data", data, "--delimiter", "semicolon")
    assert status == 0
    err = _one_line_error(capsys, "--data", data, "--delimiter", ",")
    assert "--delimiter" in err


def test_a_real_valued_target_hints_at_regression_and_trains_with_it(tmp_path, capsys):
    target = X @ np.array([1.0, 2.0, -0.5])
    data = _write(tmp_path / "reg.csv", [[*_features(i), f"{target[i]:.5g}"] for i in range(80)])
    err = _one_line_error(capsys, "--data", data)
    assert "--task regression" in err and "--output identity" in err
    status, out, _ = _train(capsys, "--data", data, "--task", "regression", "--validation-fraction", "0.25")
    assert status == 0 and "identity" in out and "validation (20 held-out examples): cost" in out
    status, out, _ = _train(capsys, "--data", data, "--output", "identity")
    assert status == 0 and "identity" in out
    err = _one_line_error(capsys, "--data", data, "--task", "regression", "--output", "softmax")
    assert "drop --output" in err


def test_labels_one_and_two_are_two_classes_and_the_mapping_is_printed_and_saved(tmp_path, capsys):
    pytest.importorskip("safetensors")  # --save: the checkpoint extra
    data = _write(tmp_path / "onetwo.csv", [[*_features(i), Y[i] + 1] for i in range(80)])
    model = tmp_path / "model.safetensors"
    status, out, _ = _train(capsys, "--data", data, "--save", str(model))
    assert status == 0 and "labels -> classes: 1 -> 0, 2 -> 1" in out and "3,5,2,1 (relu, sigmoid)" in out
    assert read_info(model).extra["labels"] == {"classes": [1, 2]}
    assert main(["predict", "--model", str(model), "--data", data]) == 0
    assert set(capsys.readouterr().out.split()) <= {"1", "2"}


def test_a_text_label_column_with_a_header_becomes_classes(tmp_path, capsys):
    pytest.importorskip("safetensors")  # --save: the checkpoint extra
    names = np.array(["setosa", "virginica", "versicolor"])
    labels = names[(X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)]
    rows = [[*_features(i), labels[i]] for i in range(80)]
    data = _write(tmp_path / "text.csv", rows, header=["x1", "x2", "x3", "species"])
    model = tmp_path / "model.safetensors"
    status, out, _ = _train(capsys, "--data", data, "--save", str(model))
    assert status == 0 and "labels in 'species' (column 3)" in out
    assert "'setosa' -> 0, 'versicolor' -> 1, 'virginica' -> 2" in out and "3,5,2,3 (relu, softmax)" in out
    assert main(["predict", "--model", str(model), "--data", data]) == 0
    assert set(capsys.readouterr().out.split()) <= set(names)
    # the same file without its header, the labels first, tab-separated
    data = _write(tmp_path / "text.tsv.csv", [[r[-1], *r[:-1]] for r in rows], delimiter="\t")
    err = _one_line_error(capsys, "--data", data)
    assert "--label-column 0" in err
    status, out, _ = _train(capsys, "--data", data, "--label-column", "0")
    assert status == 0 and "delimiter 'tab', no header line, labels in column 0" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--label-column", "species"], "no column named 'species'"),
        (["--label-column", "7"], "out of range for 4 columns"),
        (["--schedule", "exponential:2"], "unknown schedule"),
        (["--schedule", "nope"], "unknown schedule"),
        (["--validation-fraction", "1"], "must be a number in [0, 1)"),
        (["--weight-decay", "-1"], "must be a finite number >= 0"),
        (["--delimiter", "ab"], "must be one character"),
        (["--no-header"], "is not a finite number (is the first line a header? pass --header)"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    data = _write(tmp_path / "d.csv", [[*_features(i), Y[i]] for i in range(80)], header=["a", "b", "c", "y"])
    assert message in _one_line_error(capsys, "--data", data, *args)


def test_a_one_column_or_ambiguous_file_asks_for_the_delimiter(tmp_path, capsys):
    data = _write(tmp_path / "one.csv", [[f"{X[i, 0]:.4g}"] for i in range(10)])
    assert "--delimiter" in _one_line_error(capsys, "--data", data)
    with pytest.raises(ValueError, match="could be separated by ',' or ';'"):
        detect_delimiter(["a,b;c", "x,y;z"])
    assert detect_delimiter(["a;b,c", "1;2.5", "3;4"]) == ";"  # the header's comma does not fit every line
    with pytest.raises(ValueError, match="pass --delimiter to choose"):
        detect_delimiter(["x;y,z", "1;2,3", "4;5,6"])  # a decimal comma or a field separator: not guessed


def test_schedule_and_weight_decay_reach_the_optimizer(tmp_path):
    data = _write(tmp_path / "d.csv", [[*_features(i), Y[i]] for i in range(80)])
    run = run_training(data=data, epochs=4, schedule="cosine", weight_decay=0.01, progress=False)
    assert run.optimizer.weight_decay == 0.01
    rates = run.result.history.learning_rate
    assert rates[0] > rates[-1]
    step = build_schedule("step:2", 0.1, steps_per_epoch=3, epochs=10)
    assert [step(k) for k in (0, 5, 6, 12)] == [0.1, 0.1, 0.05, 0.1 / 3]
    assert build_schedule("constant", 0.1, 3, 10) == 0.1


def test_read_table_and_encode_labels_directly(tmp_path):
    data = _write(tmp_path / "d.csv", [["1.5", "x", "-1"], ["2", "y", "1"], ["3", "x", "1"]], delimiter="|")
    table = read_table(data, label_column=1)
    assert table.delimiter == "|" and not table.header and table.features.tolist() == [[1.5, -1], [2, 1], [3, 1]]
    encoded = encode_labels(table)
    assert encoded.classes == ["x", "y"] and encoded.y.tolist() == [0, 1, 0] and encoded.remapped
    table = read_table(_write(tmp_path / "e.csv", [["1", "-1"], ["2", "1"], ["2", "1"]]))
    assert encode_labels(table).classes == [-1, 1] and encode_labels(table).y.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="a regression needs numbers"):
        encode_labels(read_table(data, label_column=1), "regression")
    assert encode_labels(table, "regression").y.dtype == np.float64


# --------------------------------------------------------------------------- compare --seeds


def _row(label_index, cost, acc):
    spec = COMPARISON_RUNS[label_index]
    history = type("H", (), {"cost": [cost * 2, cost]})()
    return ComparisonRow(spec.optimizer, spec.decay, spec.learning_rate, cost, acc, 0.1, history, None)


def test_spread_and_summaries_are_plain_numbers():
    assert spread([3.0]) == spread([3]) and spread([1, 5, 2]).median == 2 and spread([1, 5, 2]).high == 5
    assert seed_list(4, 3) == [4, 5, 6]
    with pytest.raises(ValueError):
        seed_list(0, 0)
    rows = [[_row(0, c, a), _row(3, c / 2, a)] for c, a in ((0.5, 0.6), (0.3, 0.9), (0.4, 0.5))]
    gd, adam = summarize(rows, [2, 3, 4])
    assert gd.label == "GD" and gd.final_cost.median == 0.4 and (gd.final_cost.low, gd.final_cost.high) == (0.3, 0.5)
    assert adam.train_accuracy.median == 0.6 and adam.train_accuracy.low == 0.5
    median, low, high = gd.band()
    assert median == [0.8, 0.4] and low == [0.6, 0.3] and high == [1.0, 0.5]
    cells = table_rows([gd], "decay")[0]
    assert len(cells) == len(SEED_COLUMNS) and cells[3:5] == ["0.4000", "0.3000-0.5000"]
    with pytest.raises(ValueError, match="same configurations"):
        summarize([rows[0], rows[1][:1]], [0, 1])


def test_run_seeds_first_seed_is_the_single_seed_run():
    problem = lesson_problem(seed=2)
    runs = COMPARISON_RUNS[3:4]
    summaries, first = run_seeds([2, 3], 20, problem=problem, runs=runs, progress=False)
    single, _ = run_seeds([2], 20, problem=problem, runs=runs, progress=False)
    assert summaries[0].final_costs[0] == single[0].final_costs[0] == first[0].final_cost
    assert summaries[0].final_costs[0] != summaries[0].final_costs[1]  # another initialization


def test_compare_with_seeds_prints_median_and_range_and_draws_bands(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["compare", "--epochs", "20", "--seeds", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "initialization seeds [2, 3]" in out and "median and range over 2 seeds" in out
    assert "final cost median" in out and (tmp_path / "loss_curves.png").is_file()
    assert main(["compare", "--epochs", "2", "--no-plots"]) == 0
    assert "seed 2 (one seed: --seeds N for the spread)" in capsys.readouterr().out
    assert main(["compare", "--seeds", "0"]) == 2
