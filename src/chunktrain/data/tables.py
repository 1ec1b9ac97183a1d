"""A user's table (CSV or parquet) read with pandas, and its columns checked: each problem is one line.

Used by stage generate (data.source) and by predict.py (--input), never by a training stage (no pandas there).
"""

from collections import Counter
from pathlib import Path

import numpy as np

from chunktrain.recipe.errors import PipelineError, brief, did_you_mean
from chunktrain.recipe.files import write_atomically

READERS = {".csv": "read_csv", ".parquet": "read_parquet"}


def table_format(path: str | Path, what: str) -> str:
    """The pandas reader/writer suffix of a table path, by extension; anything else is refused."""
    suffix = Path(path).suffix.lower()
    if suffix not in READERS:
        raise PipelineError(f"{what} {path}: expected a .csv or .parquet file")
    return suffix


def read_table(path: str | Path, what: str = "table"):
    """A pandas DataFrame of the CSV or parquet file at `path`, with rows and distinct column names; missing,
    unreadable, empty or ambiguous is one line."""
    import pandas

    suffix = table_format(path, what)
    if not Path(path).exists():
        raise PipelineError(f"{what} {path} not found")
    if not Path(path).is_file():  # follows links: a FIFO, /dev/zero or a folder would hang or fail the reader
        raise PipelineError(f"{what} {path} is not a regular file (a folder, a FIFO, a device, ...)")
    try:
        frame = getattr(pandas, READERS[suffix])(path)
        # read_csv renames a repeated name a, a to a, a.1; the header as written tells them apart
        names = pandas.read_csv(path, header=None, nrows=1, dtype=str).iloc[0] if suffix == ".csv" else frame.columns
    except Exception as error:  # pandas and pyarrow raise many types for a malformed file
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise PipelineError(f"{what} {path} cannot be read ({reason})") from None
    repeated = [name for name, count in Counter(str(n) for n in names if not pandas.isna(n)).items() if count > 1]
    if repeated:
        raise PipelineError(f"{what} {path}: column name {brief(repeated[0])} appears more than once;"
                            " give every column its own name")
    if frame.empty:
        raise PipelineError(f"{what} {path} has no rows, only the header {brief([str(c) for c in frame.columns])}")
    return frame


def write_table(frame, path: str | Path, what: str = "output") -> None:
    """Write a DataFrame as CSV or parquet by extension, without the index, atomically: all of it or nothing."""
    suffix = table_format(path, what)
    write = frame.to_csv if suffix == ".csv" else frame.to_parquet
    try:
        write_atomically(path, lambda file: write(file, index=False))
    except OSError as error:
        raise PipelineError(f"{what} {path} cannot be written ({error.strerror or error})") from None


def require_columns(frame, columns: list[str], path, what: str) -> None:
    """Every named column is in the table; a missing one's nearest name is suggested."""
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: no {what} column {brief(missing[0])} (of {len(missing)} missing)"
                            f"{did_you_mean(missing[0], frame.columns, cutoff=0.75)}; it has"
                            f" {brief([str(c) for c in frame.columns])}")


def numeric_columns(frame, columns: list[str], path) -> np.ndarray:
    """The columns as a float64 (rows, columns) array; a non-numeric column or a missing value is one line."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    for name in columns:
        column = frame[name]
        if not is_numeric_dtype(column) or is_bool_dtype(column):
            raise PipelineError(f"{path}: column {brief(name)} is not numeric ({column.dtype}, e.g."
                                f" {brief(_first_non_number(column))}); every feature must be a number")
    values = frame[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    check_finite(values, columns, path)
    return values


def check_finite(values: np.ndarray, columns: list[str], path) -> None:
    """No missing (NaN, empty) or infinite value in a (rows, columns) array."""
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise PipelineError(f"{path}: column {brief(columns[col])} has {int(bad[:, col].sum())} missing or"
                            f" infinite value(s), the first in row {row}; fill or drop them")


def _first_non_number(column):
    import pandas

    numbers = pandas.to_numeric(column, errors="coerce")
    rejected = column[numbers.isna() & column.notna()]
    return rejected.iloc[0] if len(rejected) else column.iloc[0] if len(column) else None
