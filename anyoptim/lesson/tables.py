"""Real data files for ``anyoptim train``: the delimiter, the header, the label column and the labels.

:func:`read_table` reads a delimited text file with the :mod:`csv` module and
NumPy (the library's own :func:`anyoptim.datasets.load_csv` is stricter and
takes every option explicitly); :func:`encode_labels` turns its label column
into what :func:`anyoptim.fit` takes: classes ``0 .. K-1`` (with the mapping
back to the file's labels) or real-valued targets.  Every way a file can be
misread ends in one :class:`~anyoptim.lesson.checks.ExperimentError` that names
the likely cause and the option that fixes it.

The rules, in order:

* **delimiter** (unless given): the one of ``,`` ``;`` tab ``|`` that splits
  every line into the same number (at least two) of fields; when several do,
  the one whose data fields are numbers (all columns but at most one); when
  that still leaves a choice, or none, an error asks for ``--delimiter``.
* **header** (unless given): the first line is a header when none of its
  fields is a number, or when one of them is not a number while the same field
  of the second line is.
* **label column**: an index (negative counts from the end; default the last)
  or a header name.
* **labels**: numbers or words.  For a classification they become classes
  ``0 .. K-1`` in sorted order (labels 1/2 are two classes, not three);
  non-integer numbers are refused with a hint to ``--task regression``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np  # host-side file reading

from ..nn.files import existing_file
from .checks import ExperimentError

__all__ = [
    "DELIMITERS",
    "EncodedLabels",
    "Table",
    "detect_delimiter",
    "encode_labels",
    "read_saved_features",
    "read_table",
]

#: The delimiters tried when ``--delimiter`` is not given.
DELIMITERS = (",", ";", "\t", "|")
_SAMPLE_LINES = 50
#: At most this many distinct labels, and at most one per two rows, for an automatic classification.
_MAX_CLASSES = 100


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _shown(delimiter: str) -> str:
    return {"\t": "tab", " ": "space"}.get(delimiter, delimiter)


def _split(lines: list[str], delimiter: str) -> list[list[str]]:
    return [[field.strip() for field in row] for row in csv.reader(lines, delimiter=delimiter)]


def detect_delimiter(lines: list[str], source: str = "the file") -> str:
    """The delimiter of ``lines`` (non-blank lines of a file), by the rules in the module notes.

    Raises
    ------
    ExperimentError
        When no delimiter, or more than one, fits.
    """
    sample = lines[:_SAMPLE_LINES]
    consistent = []
    for delimiter in DELIMITERS:
        widths = {len(row) for row in _split(sample, delimiter)}
        if len(widths) == 1 and widths.pop() >= 2:
            consistent.append(delimiter)
    if len(consistent) > 1:
        numeric = [d for d in consistent if _numeric_columns(_split(sample[1:], d)) >= len(_split(sample, d)[0]) - 1]
        consistent = numeric or consistent
    if len(consistent) == 1:
        return consistent[0]
    if not consistent:
        found = [_shown(d) for d in DELIMITERS if any(d in line for line in sample)]
        raise ExperimentError(
            f"{source}: cannot tell how the fields are separated (no delimiter gives every line the same number of "
            f"fields{'; found ' + ' '.join(repr(f) for f in found) if found else ''}): pass --delimiter, "
            "e.g. --delimiter ';'"
        )
    choices = " or ".join(repr(_shown(d)) for d in consistent)
    raise ExperimentError(f"{source}: the fields could be separated by {choices}: pass --delimiter to choose")


def _numeric_columns(rows: list[list[str]]) -> int:
    """How many columns hold only numbers in ``rows`` (0 for no rows)."""
    if not rows:
        return 0
    width = len(rows[0])
    return sum(all(len(r) == width and _number(r[j]) is not None for r in rows) for j in range(width))


@dataclass(frozen=True)
class Table:
    """A data file read by :func:`read_table`.

    Attributes
    ----------
    features : numpy.ndarray
        float64, shape (n_samples, n_columns - 1): every column but the label column, in file order.
    labels : list of str
        The label column's fields, as written.
    label_name : str
        The label column's header name, or ``"column K"`` (0-based, as ``--label-column``) without a header.
    label_index : int
        Its 0-based index.
    delimiter : str
    header : bool
        Whether the first line held column names.
    feature_names : tuple of str or None
        The feature columns' header names, in file order (None without a header).
    """

    features: np.ndarray
    labels: list[str]
    label_name: str
    label_index: int
    delimiter: str
    header: bool
    feature_names: tuple[str, ...] | None = None

    def layout(self) -> dict:
        """How the file was read, JSON-friendly: what ``train --save`` records for ``predict``."""
        return {
            "delimiter": self.delimiter,
            "header": self.header,
            "label_index": self.label_index,
            "label_name": self.label_name,
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "columns": self.features.shape[1] + 1,
        }

    def describe(self) -> str:
        """One line: the delimiter, the header and the label column, as read."""
        where = f"{self.label_name!r} (column {self.label_index})" if self.header else self.label_name
        return (
            f"delimiter {_shown(self.delimiter)!r}, {'a header line' if self.header else 'no header line'}, "
            f"labels in {where}; {self.features.shape[1]} features"
        )


def _label_index(label_column: int | str | None, width: int, names: list[str] | None, source: str) -> int:
    if label_column is None:
        return width - 1
    if isinstance(label_column, str):
        if names is None:
            raise ExperimentError(
                f"{source}: --label-column {label_column!r} is a column name, but the file has no header line "
                "(give the column's index, or --header if its first line holds the names)"
            )
        if label_column not in names:
            raise ExperimentError(f"{source}: no column named {label_column!r}; the columns are {', '.join(names)}")
        return names.index(label_column)
    if not -width <= label_column < width:
        raise ExperimentError(
            f"{source}: --label-column {label_column} is out of range for {width} columns "
            f"(0 .. {width - 1}, or -1 .. -{width} from the end)"
        )
    return label_column % width


def read_table(
    path: str | Path,
    *,
    label_column: int | str | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
) -> Table:
    """Read a delimited text file of examples: numeric feature columns and one label column.

    Parameters
    ----------
    path : str or Path
        The file, UTF-8 text; blank lines are skipped.
    label_column : int or str, optional
        The label column: an index (negative from the end) or a header name; by default the last.
    delimiter : str, optional
        The field separator; detected by default (see the module notes).
    header : bool, optional
        Whether the first line holds column names; detected by default.

    Returns
    -------
    Table

    Raises
    ------
    ExperimentError
        A missing or empty file, an undetectable delimiter, rows of different lengths, a bad label column, or a
        feature that is not a number (naming line, column and the likely fix).
    """
    lines, source = _lines(path)
    if delimiter is None:
        delimiter = detect_delimiter(lines, source)
    rows = _rows(lines, delimiter, source)
    width = len(rows[0])
    if width < 2:
        raise ExperimentError(
            f"{source}: one field per line with delimiter {_shown(delimiter)!r}; a file needs features and a label "
            "(is it separated by something else? pass --delimiter)"
        )
    if header is None:
        header = _looks_like_header(rows)
    names = rows[0] if header else None
    body = rows[1:] if header else rows
    if not body:
        raise ExperimentError(f"{source}: no data rows{' (only a header line)' if header else ''}")
    index = _label_index(label_column, width, names, source)
    features = np.empty((len(body), width - 1))
    for i, row in enumerate(body):
        cells = row[:index] + row[index + 1 :]
        for j, cell in enumerate(cells):
            value = _number(cell)
            if value is None:
                column = j if j < index else j + 1
                line = i + 1 + (1 if header else 0)
                hint = _decimal_comma(cell) or (
                    "is the first line a header? pass --header"
                    if i == 0 and len(body) > 1 and _number_column(body, column)
                    else f"if column {column} holds the labels, pass --label-column {column}"
                )
                where = f"{source}: line {line}, column {column}"
                raise ExperimentError(f"{where}: {cell!r} is not a finite number ({hint})")
            features[i, j] = value
    name = names[index] if names is not None else f"column {index}"
    feature_names = None if names is None else tuple(names[:index] + names[index + 1 :])
    return Table(features, [row[index] for row in body], name, index, delimiter, bool(header), feature_names)


def _lines(path: str | Path) -> tuple[list[str], str]:
    """The non-blank lines of a text file, and its name as shown in messages."""
    file, source = existing_file(path)  # a directory or a missing file: one line naming it
    try:
        lines = [line for line in Path(file).read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise ExperimentError(f"{source}: cannot read as text ({error})") from None
    if not lines:
        raise ExperimentError(f"{source}: the file is empty")
    return lines, source


def _rows(lines: list[str], delimiter: str, source: str) -> list[list[str]]:
    """``lines`` split by ``delimiter``, every row as wide as the first."""
    try:
        rows = _split(lines, delimiter)
    except csv.Error as error:
        raise ExperimentError(f"{source}: cannot read as delimited text ({error})") from None
    width = len(rows[0])
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ExperimentError(
                f"{source}: line {number} has {len(row)} fields, line 1 has {width} "
                f"(delimiter {_shown(delimiter)!r}; pass --delimiter if that is not it)"
            )
    return rows


def _looks_like_header(rows: list[list[str]]) -> bool:
    """Whether the first row holds names: no number at all (a data row has number features), or a field
    that is not a number above one that is."""
    if all(_number(field) is None for field in rows[0]):
        return True
    return len(rows) > 1 and any(
        _number(a) is None and _number(b) is not None for a, b in zip(rows[0], rows[1], strict=True)
    )


def _decimal_comma(cell: str) -> str | None:
    """A hint when ``cell`` is a number written with a decimal comma (``0,5``)."""
    if "," in cell and _number(cell.replace(",", ".")) is not None:
        return "a decimal comma? write numbers with a decimal point, 0.5 not 0,5"
    return None


def _number_column(body: list[list[str]], column: int) -> bool:
    """Whether every row after the first holds a number in ``column``."""
    return all(_number(row[column]) is not None for row in body[1:])


@dataclass(frozen=True)
class EncodedLabels:
    """Labels as :func:`anyoptim.fit` takes them.

    Attributes
    ----------
    y : numpy.ndarray
        int64 classes ``0 .. K-1`` for a classification, float64 targets for a regression.
    classes : list or None
        The file's label of each class (numbers or strings, JSON-friendly); None for a regression.
    """

    y: np.ndarray
    classes: list | None

    @property
    def remapped(self) -> bool:
        """Whether the file's labels differ from the classes they became."""
        return self.classes is not None and self.classes != list(range(len(self.classes)))

    def mapping(self) -> str:
        """The mapping, e.g. ``"labels -> classes: 1 -> 0, 2 -> 1"``."""
        shown = ", ".join(f"{label!r} -> {k}" if isinstance(label, str) else f"{label:g} -> {k}"
                          for k, label in enumerate(self.classes or []))  # fmt: skip
        return f"labels -> classes: {shown}"


def _other_label_columns(table_features: np.ndarray, label_index: int) -> list[int]:
    """File indices of feature columns that look like class labels (few distinct whole numbers)."""
    found = []
    for j in range(table_features.shape[1]):
        column = table_features[:, j]
        distinct = np.unique(column)
        if np.all(column == np.round(column)) and 2 <= distinct.size <= min(20, max(2, column.size // 2)):
            found.append(j if j < label_index else j + 1)
    return found


def encode_labels(table: Table, task: str = "classification", source: str = "the file") -> EncodedLabels:
    """The label column of ``table`` for ``task`` ("classification" or "regression").

    Raises
    ------
    ExperimentError
        Text labels for a regression; non-integer numbers, a single class, or (nearly) one class per row
        for a classification, each with a hint to the option that fixes it.
    """
    if task not in ("classification", "regression"):
        raise ExperimentError(f"task must be 'classification' or 'regression', got {task!r}")
    where = f"{source}: the label column {table.label_name!r}"
    numbers = [_number(label) for label in table.labels]
    text = next((label for label, value in zip(table.labels, numbers, strict=True) if value is None), None)
    if task == "regression":
        if text is not None:
            raise ExperimentError(
                f"{where} holds {text!r}, not a number: a regression needs numbers "
                "(choose the target with --label-column, or drop --task regression for classes)"
            )
        return EncodedLabels(np.asarray(numbers, dtype=np.float64), None)
    if text is None:
        values = np.asarray(numbers, dtype=np.float64)
        if not np.all(values == np.round(values)):
            example = next(v for v in values if v != round(v))
            others = _other_label_columns(table.features, table.label_index)
            hint = f"; if the labels are in column {others[0]}, pass --label-column {others[0]}" if others else ""
            raise ExperimentError(
                f"{where} holds {example:g}, not a class label: for a real-valued target pass --task regression "
                f"(or --output identity){hint}"
            )
        classes: list = sorted({int(v) for v in values})
        y = np.searchsorted(np.asarray(classes), values.astype(np.int64))
    else:
        classes = sorted(set(table.labels))
        y = np.searchsorted(np.asarray(classes), np.asarray(table.labels))
    if len(classes) < 2:
        raise ExperimentError(f"{where} holds one class only ({classes[0]!r}): a classifier needs two or more")
    n = len(table.labels)
    if text is None and (len(classes) > _MAX_CLASSES or (n >= 20 and len(classes) > n // 2)):
        raise ExperimentError(
            f"{where} has {len(classes)} distinct values in {n} rows: for a real-valued target pass --task regression "
            "(or --output identity)"
        )
    return EncodedLabels(y.astype(np.int64), classes)


def read_saved_features(path: str | Path, n_features: int, layout: dict | None = None) -> np.ndarray:
    """The feature columns of a delimited text file, read as ``train`` read its file (for ``predict``).

    Parameters
    ----------
    path : str or Path
        The file: the training file's columns, or only its feature columns (with or without a header line).
    n_features : int
        How many features the model takes.
    layout : dict, optional
        :meth:`Table.layout` of the training file, as ``train --save`` records it in the checkpoint's
        ``extra["table"]``.  Without it: a detected delimiter, and a label column (if any) last.

    Returns
    -------
    numpy.ndarray
        float64, shape (n_samples, n_features), the features in the training file's order.

    Raises
    ------
    ExperimentError
        A file whose columns (by header names when it has a header, by count otherwise) are not the training
        file's, no data rows, or a feature that is not a finite number (naming line, column and value).
    """
    layout = _checked_layout(layout or {}, n_features)
    lines, source = _lines(path)
    delimiter = layout["delimiter"]
    if delimiter is None or (n_features > 1 and delimiter not in lines[0]):  # e.g. features saved with commas
        delimiter = _guessed_delimiter(lines, source)
    rows = _rows(lines, delimiter, source)
    saved, index = layout["feature_names"], layout["label_index"]
    full = None if saved is None else [*saved[:index], layout["label_name"], *saved[index:]]
    header = _looks_like_header(rows) or (saved is not None and rows[0] in (saved, full))
    body = rows[1:] if header else rows
    if not body:
        raise ExperimentError(f"{source}: no data rows (only a header line)")
    if header and saved is not None:
        picked = _by_name(rows[0], saved, layout, source)
    else:
        picked = _by_count(len(rows[0]), n_features, layout, source)
    features = np.empty((len(body), n_features))
    for i, row in enumerate(body):
        for j, column in enumerate(picked):
            value = _number(row[column])
            if value is None:
                hint = _decimal_comma(row[column])
                line = i + 1 + (1 if header else 0)
                raise ExperimentError(
                    f"{source}: line {line}, column {column}: {row[column]!r} is not a finite number"
                    + (f" ({hint})" if hint else "")
                )
            features[i, j] = value
    return features


def _checked_layout(layout: dict, n_features: int) -> dict:
    """``layout`` with every key, checked (a default for each one missing: no header, labels last)."""
    columns = layout.get("columns", n_features + 1)
    index = layout.get("label_index", columns - 1)
    names = layout.get("feature_names")
    delimiter = layout.get("delimiter") or None
    if (
        not isinstance(columns, int) or columns != n_features + 1 or not isinstance(index, int)
        or not 0 <= index < columns or (delimiter is not None and not isinstance(delimiter, str))
        or (names is not None and (not isinstance(names, list) or len(names) != n_features))
    ):  # fmt: skip
        raise ExperimentError(f"the model's record of its training file does not fit its {n_features} features")
    label_name = str(layout.get("label_name", f"column {index}"))
    return {"columns": columns, "label_index": index, "label_name": label_name, "feature_names": names,
            "delimiter": delimiter}  # fmt: skip


def _guessed_delimiter(lines: list[str], source: str) -> str:
    """The detected delimiter; a comma for a file of one column."""
    if not any(d in line for d in DELIMITERS for line in lines):
        return ","
    return detect_delimiter(lines, source)


def _by_count(width: int, n_features: int, layout: dict, source: str) -> list[int]:
    """The feature columns of a file without a header line: all of them, or all but the label column."""
    if width == n_features:
        return list(range(width))
    if width == layout["columns"]:
        return [j for j in range(width) if j != layout["label_index"]]
    raise ExperimentError(
        f"{source} has {width} columns; the model takes {n_features} features (its training file had "
        f"{layout['columns']} columns, labels in {layout['label_name']})"
    )


def _by_name(names: list[str], saved: list[str], layout: dict, source: str) -> list[int]:
    """The feature columns of a file with a header line, found by name (in any order)."""
    index, label = layout["label_index"], layout["label_name"]
    if names == [*saved[:index], label, *saved[index:]]:
        return [j for j in range(len(names)) if j != index]
    if names == saved:
        return list(range(len(names)))
    unique = len(set(names)) == len(names) and len(set(saved)) == len(saved)
    if unique and set(saved) <= set(names) and set(names) - set(saved) <= {label}:
        return [names.index(name) for name in saved]
    raise ExperimentError(
        f"{source}: the columns are {', '.join(names)}; the model was trained on the features "
        f"{', '.join(saved)} (labels in {label})"
    )
