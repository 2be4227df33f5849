"""`ulmfit predict`'s table in, table out, for any classifier (PyTorch or ONNX; torch-free itself): read the
input's rows, classify the text column(s), write the rows plus `prediction` and one `prob_<label>` column per
output."""
from __future__ import annotations

from pathlib import Path

from ulmfit_cli.corpus.tables import join_fields, named_columns, read_frame, text_columns, write_table
from ulmfit_cli.errors import UlmfitError


def predict_table(clf, input: str | Path, output: Path, text_col=None, input_format: str | None = None,
                  encoding: str = "utf-8", **kwargs):
    """Classify the texts of `input` (a table, fastText or text file; `-`: stdin) with `clf` (a classifier or
    ensemble) into `output` (`-`: stdout); `text_col` defaults to the columns the model was trained on;
    `kwargs`: `proba_of_ids`' (bs, max_tokens, precision). Returns the frame written."""
    cols = clf.text_col if text_col is None else text_col
    df, fmt = read_frame(input, "--input", encoding, fmt=input_format, columns=named_columns(cols))
    fields = (["text"] if fmt in ("lines", "fasttext")
              else text_columns(df, cols, "--text-col", "--input", input))
    if df.empty:
        raise UlmfitError(f"--input: {input} has no rows to classify")
    probs = clf.predict_proba(join_fields(df, fields).tolist(), progress=True, **kwargs)
    task = clf.task
    df["prediction"] = task.written(task.decide(probs, clf.labels, clf.thresholds), clf.spec.label_delim)
    if task.probability_columns():
        for j, label in enumerate(clf.labels):
            df[f"prob_{label}"] = probs[:, j]
    write_table(df, output)
    return df
