"""``anyoptim predict`` reads a .csv as ``train`` read its file: the columns, by name or by count; one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("safetensors")  # every test here saves a model (the checkpoint extra)

from anyoptim.checkpoint import read_info
from anyoptim.lesson.checks import ExperimentError
from anyoptim.lesson.cli import main
from anyoptim.lesson.tables import read_saved_features, read_table

RNG = np.random.default_rng(1)
X = RNG.normal(size=(60, 2))
Y = np.where(X[:, 0] > 0, 2, 1)  # labels 1 and 2: only column a matters
WORDS = np.array(["", "cat", "dog"])


def _write(path, rows, delimiter=",", header=None):
    lines = [] if header is None else [delimiter.join(header)]
    lines += [delimiter.join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _cells(i, decimal="."):
    return [f"{v:.5f}".replace(".", decimal) for v in X[i]]


def _train(capsys, data, model, *args):
    argv = ["train", "--data", data, "--epochs", "200", "--learning-rate", "0.1", "--no-plots", "--save", model]
    assert main([*argv, *args]) == 0, capsys.readouterr().err
    capsys.readouterr()


def _predict(capsys, model, data):
    assert main(["predict", "--model", model, "--data", data]) == 0, capsys.readouterr().err
    return capsys.readouterr().out.split()


def _one_line_error(capsys, argv):
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 2, captured.out
    assert captured.err.startswith("anyoptim: error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


@pytest.fixture
def first(tmp_path, capsys):
    """A model trained on y,a,b (the labels first) with --label-column 0."""
    data = _write(tmp_path / "lf.csv", [[Y[i], *_cells(i)] for i in range(60)], header=["y", "a", "b"])
    model = str(tmp_path / "m.safetensors")
    _train(capsys, data, model, "--label-column", "0")
    return data, model


def test_the_reading_is_saved(first):
    _, model = first
    table = read_info(model).extra["table"]
    assert table == {"delimiter": ",", "header": True, "label_index": 0, "label_name": "y",
                     "feature_names": ["a", "b"], "columns": 3}  # fmt: skip


def test_predict_on_the_training_file_uses_its_feature_columns(first, capsys):
    data, model = first
    predicted = _predict(capsys, model, data)
    assert len(predicted) == 60 and np.mean(np.asarray(predicted, dtype=int) == Y) >= 0.9  # not one class for all


@pytest.mark.parametrize(
    ("header", "columns", "delimiter"),
    [
        (["a", "b"], [0, 1], ","),  # the features only, by name
        (["b", "a"], [1, 0], ","),  # in another order, by name
        (["b", "y", "a"], [1, None, 0], ";"),  # with the label, shuffled, another delimiter
        (None, [0, 1], ","),  # no header: by count
    ],
)
def test_predict_on_a_features_file_gives_the_same(first, capsys, tmp_path, header, columns, delimiter):
    data, model = first
    rows = [[Y[i] if c is None else _cells(i)[c] for c in columns] for i in range(60)]
    other = _write(tmp_path / "other.csv", rows, delimiter=delimiter, header=header)
    assert _predict(capsys, model, other) == _predict(capsys, model, data)


@pytest.mark.parametrize(
    ("header", "columns", "message"),
    [
        (["a", "c"], [0, 1], "the columns are a, c; the model was trained on the features a, b (labels in y)"),
        (["a", "b", "z"], [0, 1, 1], "the columns are a, b, z; the model was trained on the features a, b"),
        (None, [0, 1, 1, 0], "has 4 columns; the model takes 2 features (its training file had 3 columns"),
        (None, [0], "has 1 columns; the model takes 2 features"),
    ],
)
def test_other_columns_are_refused_in_one_line(first, capsys, tmp_path, header, columns, message):
    _, model = first
    other = _write(tmp_path / "other.csv", [[_cells(i)[c] for c in columns] for i in range(5)], header=header)
    assert message in _one_line_error(capsys, ["predict", "--model", model, "--data", other])


def test_a_text_label_first_gives_text_predictions(tmp_path, capsys):
    data = _write(tmp_path / "t.csv", [[WORDS[Y[i]], *_cells(i)] for i in range(60)], delimiter="\t")
    model = str(tmp_path / "m.safetensors")
    _train(capsys, data, model, "--label-column", "0")
    predicted = _predict(capsys, model, data)
    assert set(predicted) <= {"cat", "dog"} and np.mean(np.asarray(predicted) == WORDS[Y]) >= 0.9
    features = _write(tmp_path / "f.csv", [_cells(i) for i in range(60)], delimiter="\t")
    assert _predict(capsys, model, features) == predicted


def test_a_regression_file_records_its_reading_too(tmp_path, capsys):
    target = X @ np.array([1.0, -2.0])
    data = _write(tmp_path / "r.csv", [[*_cells(i)[:1], f"{target[i]:.5f}", *_cells(i)[1:]] for i in range(60)])
    model = str(tmp_path / "m.safetensors")
    _train(capsys, data, model, "--label-column", "1", "--task", "regression")
    assert read_info(model).extra["table"]["label_index"] == 1 and "labels" not in read_info(model).extra
    features = _write(tmp_path / "f.csv", [_cells(i) for i in range(60)])
    assert _predict(capsys, model, features) == _predict(capsys, model, data)


def test_a_decimal_comma_is_named_on_its_line(first, tmp_path, capsys):
    _, model = first
    rows = [[*_cells(i, ","), WORDS[Y[i]]] for i in range(10)]
    data = _write(tmp_path / "dc.csv", rows, delimiter=";", header=["a", "b", "y"])
    value = _cells(0, ",")[0]
    for argv in (["train", "--data", data, "--no-plots"], ["predict", "--model", model, "--data", data]):
        err = _one_line_error(capsys, argv)
        assert f"line 2, column 0: {value!r} is not a finite number (a decimal comma?" in err


def test_a_header_only_file_has_no_data_rows(first, tmp_path, capsys):
    _, model = first
    data = _write(tmp_path / "h.csv", [], header=["a", "b", "y"])
    for argv in (["train", "--data", data, "--no-plots"], ["predict", "--model", model, "--data", data]):
        assert "h.csv: no data rows (only a header line)" in _one_line_error(capsys, argv)
    empty = tmp_path / "e.csv"
    empty.write_text("\n")
    assert "the file is empty" in _one_line_error(capsys, ["predict", "--model", model, "--data", str(empty)])


def test_a_bad_value_in_a_features_file_names_line_and_column(first, tmp_path, capsys):
    _, model = first
    rows = [_cells(i) for i in range(5)]
    rows[3][1] = "oops"
    data = _write(tmp_path / "bad.csv", rows, header=["a", "b"])
    err = _one_line_error(capsys, ["predict", "--model", model, "--data", data])
    assert "bad.csv: line 5, column 1: 'oops' is not a finite number" in err


def test_read_saved_features_directly(tmp_path):
    data = _write(tmp_path / "d.csv", [["1.5", "x", "-1"], ["2", "y", "1"]], delimiter="|", header=["p", "q", "r"])
    layout = read_table(data, label_column="q").layout()
    assert read_saved_features(data, 2, layout).tolist() == [[1.5, -1], [2, 1]]
    swapped = _write(tmp_path / "s.csv", [["-1", "1.5"], ["1", "2"]], header=["r", "p"])
    assert read_saved_features(swapped, 2, layout).tolist() == [[1.5, -1], [2, 1]]
    # without a record (a model trained on a generated data set): a label column, if any, last
    plain = _write(tmp_path / "p.csv", [["1", "2", "0"], ["3", "4", "1"]])
    assert read_saved_features(plain, 2).tolist() == [[1, 2], [3, 4]]
    one = _write(tmp_path / "one.csv", [["1"], ["3"]])
    assert read_saved_features(one, 1).tolist() == [[1], [3]]
    with pytest.raises(ExperimentError, match="does not fit its 3 features"):
        read_saved_features(data, 3, layout)
    with pytest.raises(ExperimentError, match="does not fit"):
        read_saved_features(data, 2, {**layout, "label_index": 7})
