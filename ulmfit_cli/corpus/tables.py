"""Read the user's texts: CSV/TSV/JSONL tables, fastText `__label__x text` files, or one document per line.

Every problem names the config key, the file and (where it helps) the column or line.
Empty documents are dropped and counted, never silently kept as empty samples.
"""
from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ulmfit_cli.console import info
from ulmfit_cli.corpus.text import FLD
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import atomic_write, input_path, reads

if TYPE_CHECKING:  # imported where used: `ulmfit prepare` reads text files without it (0.35 s of start-up)
    import pandas as pd

FASTTEXT_PREFIX = "__label__"


def _not_encoded(key: str, path, encoding: str, offset: int, line: int) -> UlmfitError:
    how = ("pass --encoding if the input has another encoding (e.g. cp1252)" if key.startswith("--") else
           "set data.encoding if the file has another encoding (e.g. cp1252), or "
           "data.encoding_errors=replace to replace the bad bytes")
    return UlmfitError(f"{key}: {path} is not {encoding} text (byte offset {offset}, line {line}); {how}")


def _decode(raw: bytes, key: str, path, encoding: str, errors: str) -> str:
    try:
        text = raw.decode(encoding, errors=errors)
    except UnicodeDecodeError as e:
        raise _not_encoded(key, path, encoding, e.start, raw[:e.start].count(b"\n") + 1) from None
    if errors == "replace" and "\ufffd" in text:
        info(f"{key}: {path}: {text.count(chr(0xFFFD)):,} undecodable byte sequence(s) replaced by U+FFFD")
    return text


FORMATS = ("csv", "tsv", "jsonl", "fasttext", "lines")
FORMAT_NAMES = {"csv": "CSV", "tsv": "TSV", "jsonl": "JSON Lines", "fasttext": "fastText lines",
                "lines": "one text per line"}


def _first_line(text: str) -> str:
    return next(filter(str.strip, io.StringIO(text)), "").rstrip("\r\n")  # without splitting the whole file


def file_format(path: Path, text: str) -> str:
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return "fasttext" if _first_line(text).startswith(FASTTEXT_PREFIX) else "lines"


def sniff_format(text: str, columns: tuple[str, ...]) -> str:
    """The format of text without a file name (standard input), from its first line: a JSON object, a
    fastText label, or a header naming one of `columns` (split by tabs, then commas); else plain lines."""
    import csv
    first = _first_line(text)
    if first.lstrip().startswith("{"):
        return "jsonl"
    if first.startswith(FASTTEXT_PREFIX):
        return "fasttext"
    for fmt, sep in (("tsv", "\t"), ("csv", ",")):
        header = next(csv.reader([first], delimiter=sep), [])
        if len(header) > 1 and any(h.strip() in columns for h in header):
            return fmt
    return "lines"


def _parse_fasttext(text: str) -> pd.DataFrame:
    import pandas as pd
    rows = []
    for line in text.splitlines():
        words = line.split()
        labels = [w[len(FASTTEXT_PREFIX):] for w in words if w.startswith(FASTTEXT_PREFIX)]
        if not words:
            continue
        # every label of the line, space-separated (a fastText label has no spaces):
        # multi-label reads them all
        rows.append({"label": " ".join(labels) if labels else None,
                     "text": " ".join(w for w in words if not w.startswith(FASTTEXT_PREFIX))})
    return pd.DataFrame(rows, columns=["label", "text"])


STDIN = "-"


def read_frame(path: str | Path, key: str, encoding: str = "utf-8", errors: str = "strict",
               fmt: str | None = None, columns: tuple[str, ...] = ("text",)) -> tuple[pd.DataFrame, str]:
    """Every row and column of a CSV/TSV/JSONL table, fastText file (`label`, `text`) or text file
    (`text`, one document per line), and the format's name: `fmt` if given, else the file's suffix, or
    for `-` (standard input) its first line (a header naming one of `columns`); which is said."""
    if fmt is not None and fmt not in FORMATS:
        raise UlmfitError(f"{key}: unknown input format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    reads(path, key)
    if str(path) == STDIN:
        where = "standard input"
        text = _decode(sys.stdin.buffer.read(), key, where, encoding, errors)
        fmt, how = (fmt, "as asked") if fmt else (sniff_format(text, columns), "from its first line; "
                                                                               "--input-format chooses")
        info(f"{key}: reading standard input as {FORMAT_NAMES[fmt]} ({how})")
    else:
        where = path = Path(path)
        if not path.is_file():
            raise UlmfitError(f"{key}: file not found: {path}")
        text = _decode(path.read_bytes(), key, path, encoding, errors)
        fmt = fmt or file_format(path, text)
    return _parse(text, fmt, key, where), fmt


def _parse(text: str, fmt: str, key: str, where) -> pd.DataFrame:
    import pandas as pd
    if fmt in ("csv", "tsv"):
        import csv
        sep = "," if fmt == "csv" else "\t"
        header = next(csv.reader([_first_line(text)], delimiter=sep), [])
        twice = sorted({h for h in header if header.count(h) > 1})
        if twice:
            raise UlmfitError(f"{key}: {where}: the header names column {twice[0]!r} more than once (columns "
                              f"{', '.join(str(i + 1) for i, h in enumerate(header) if h == twice[0])})")
        try:
            return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            hint = ""
            if fmt == "csv" and "\t" in _first_line(text) and "," not in _first_line(text):
                hint = " (its first line holds tabs and no commas: a TSV file? name it .tsv)"
            raise UlmfitError(f"{key}: {where} is not a readable {fmt.upper()} file: "
                              f"{str(e).strip()}{hint}") from None
    if fmt == "jsonl":
        try:
            return (pd.read_json(io.StringIO(text), lines=True, dtype=False) if text.strip()
                    else pd.DataFrame())
        except ValueError as e:
            raise UlmfitError(f"{key}: {where} is not JSON Lines (one JSON object per line): {e}") from None
    if fmt == "fasttext":
        return _parse_fasttext(text)
    return pd.DataFrame({"text": text.splitlines()})


def named_columns(text_col) -> tuple[str, ...]:
    """The column names among `text_col` (positions left out): what a header on stdin is sniffed for."""
    return tuple(c for c in (text_col if isinstance(text_col, list) else [text_col]) if isinstance(c, str))


def text_columns(df: pd.DataFrame, text_col, what: str, key: str, path) -> list[str]:
    """The column names `text_col` means: a name, a position (as fastai's `text_cols=3`), or a list of
    them."""
    names = []
    for col in text_col if isinstance(text_col, list) else [text_col]:
        if isinstance(col, int):
            if not 0 <= col < len(df.columns):
                raise UlmfitError(f"{key}: {path} has {len(df.columns)} columns, so {what} position {col} is "
                                  f"out of range (positions count from 0); its columns are: "
                                  f"{', '.join(map(str, df.columns))}")
            col = df.columns[col]
        check_column(df, col, what, key, path)
        names.append(col)
    return names


def join_fields(df: pd.DataFrame, names: list[str]) -> pd.Series:
    """The text of each row: one column as it is; several joined as fastai's `text_cols` joins them, each
    field after its mark (`xxfld 1 the title xxfld 2 the body`), so the model can tell them apart."""
    if len(names) == 1:
        return df[names[0]].astype(str)
    text = f"{FLD} 1 " + df[names[0]].astype(str)
    for i, name in enumerate(names[1:], 2):
        text = text + f" {FLD} {i} " + df[name].astype(str)
    return text


def check_column(df: pd.DataFrame, col: str, what: str, key: str, path) -> None:
    if col not in df.columns:
        raise UlmfitError(f"{key}: {path} has no column '{col}' ({what}); "
                          f"its columns are: {', '.join(map(str, df.columns)) or '(none)'}")


def _label_columns(label_col) -> list[str]:
    return label_col if isinstance(label_col, list) else [label_col]


def read_texts(path: str | Path, key: str, text_col="text", label_col: str | list[str] | None = None,
               encoding: str = "utf-8", errors: str = "strict", fmt: str | None = None, task=None,
               label_delim: str | None = None) -> pd.DataFrame:
    """A frame with column `text` (and `label` when `label_col` is given), empty texts dropped. `text_col`:
    a column name or position, or a list of them (joined with fastai's field marks: `join_fields`). `label`
    holds what `task` (a `classify.task.Task`, given with `label_col`) reads: a class name, a tuple of label
    names, or a number; a bad value is named by its row and column.

    For fastText files the columns are always `text` and `label` (every `__label__` of a line, for a
    multi-label task); for a plain text file (one document per line) there is only `text`.
    """
    import pandas as pd
    sniffed = named_columns(text_col) + (tuple(_label_columns(label_col)) if label_col else ())
    df, fmt = read_frame(path, key, encoding, errors, fmt, sniffed)
    if fmt in ("fasttext", "lines") and isinstance(text_col, list) and len(text_col) > 1:
        raise UlmfitError(f"{key}: {path} is {FORMAT_NAMES[fmt]}, with one text per document; data.text_col "
                          f"names {len(text_col)} fields, which need a CSV/TSV/JSONL table")
    names = {"text": text_col, "label": label_col}
    if fmt == "fasttext":
        names = {"text": "text", "label": "label" if label_col is not None else None}  # labels only if asked
    elif fmt == "lines":
        if label_col is not None:
            raise UlmfitError(f"{key}: {path} has no labels: use a CSV/TSV with a "
                              f"'{_label_columns(label_col)[0]}' column or fastText lines "
                              f"('{FASTTEXT_PREFIX}pos some text')")
        names = {"text": "text", "label": None}
    fields = text_columns(df, names["text"], "data.text_col", key, path)
    out = pd.DataFrame({"text": join_fields(df, fields)})
    if names["label"] is not None:
        for col in _label_columns(names["label"]):
            check_column(df, col, "data.label_col", key, path)
        if fmt == "fasttext":  # a line's labels, space-separated
            out["label"] = task.parse_fasttext(df["label"], key, path)
        else:
            out["label"] = task.parse_labels(df, names["label"], label_delim, key, path)
    out = out[out["text"].str.strip() != ""].reset_index(drop=True)
    if label_col is not None:
        task.check_parsed(out["label"], label_col, key, path)
    if out.empty:
        raise UlmfitError(f"{key}: {path} has no non-empty documents")
    out.attrs["dropped_empty"] = len(df) - len(out)
    if out.attrs["dropped_empty"]:
        info(f"{key}: {path}: dropped {out.attrs['dropped_empty']:,} empty document(s)")
    return out


def read_documents(files: list[str], key: str, text_col="text", encoding: str = "utf-8",
                   errors: str = "strict") -> list[str]:
    """The texts of several files named by a config list (`key[i]` in errors), labels unused: finetune-lm's
    data.extra_text, train-clf's data.unlabelled."""
    return [t for i, f in enumerate(files)
            for t in read_texts(input_path(f, f"{key}[{i}]"), f"{key}[{i}]", text_col, encoding=encoding,
                                errors=errors)["text"]]


def iter_text_documents(path: Path, key: str, encoding: str = "utf-8",
                        errors: str = "strict") -> Iterator[str]:
    """Documents of a plain-text corpus file, read as a stream.

    WikiText files (`*.tokens`) are split into articles at their ` = Title = ` lines;
    any other file holds one document per non-empty line.
    """
    if not path.is_file():
        raise UlmfitError(f"{key}: file not found: {path}")
    wikitext = path.name.endswith(".tokens")
    cur: list[str] = []
    offset = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode(encoding, errors=errors)
            except UnicodeDecodeError as e:
                raise _not_encoded(key, path, encoding, offset + e.start, n) from None
            offset += len(raw)
            s = line.strip()
            if not wikitext:
                if s:
                    yield line.rstrip("\r\n")
            elif s.startswith("= ") and s.endswith(" =") and not s.startswith("= ="):
                if cur:
                    yield "\n".join(cur)
                cur = [s.strip("= ").strip()]
            elif s:
                cur.append(s)
    if cur:
        yield "\n".join(cur)


OUTPUT_SUFFIXES = ("", ".csv", ".tsv", ".jsonl", ".ndjson")  # no suffix: CSV


def check_table_output(path: Path) -> None:
    """Refuse an output name whose suffix promises a format `write_table` does not write (e.g. .parquet)."""
    if str(path) != "-" and Path(path).suffix.lower() not in OUTPUT_SUFFIXES:
        raise UlmfitError(f"--output: {path}: {Path(path).suffix} is not a format predict writes; name the "
                          f"file .csv, .tsv or .jsonl (or - for standard output)")


def write_table(df: pd.DataFrame, path: Path) -> None:
    """CSV, TSV or JSON Lines by the file's suffix; `-` is standard output; atomic for files."""
    check_table_output(path)
    suffix = path.suffix.lower()
    if str(path) == "-":
        df.to_csv(sys.stdout, index=False)
        return
    if suffix in (".jsonl", ".ndjson"):
        text = df.to_json(orient="records", lines=True, force_ascii=False)
    else:
        text = df.to_csv(index=False, sep="\t" if suffix == ".tsv" else ",")
    try:
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    except OSError as e:
        raise UlmfitError(f"--output: cannot write {path} ({e.strerror})") from None
