"""`ulmfit predict`'s table in, table out, for any classifier (PyTorch or ONNX; torch-free itself): read the
input's rows, classify the text column(s), write the rows plus `prediction` and one `prob_<label>` column per
output."""
from __future__ import annotations

from pathlib import Path

from ulmfit_cli.corpus.tables import join_fields, named_columns, read_frame, text_columns, write_table
from ulmfit_cli.errors import UlmfitError


def predict_table(clf, input: str | Path, output: Path, text_col=None, input_format: str | None = None,
                  encoding: str = "utf-8", explain: str | None = None, top_k: int = 5, **kwargs):
    """Classify the texts of `input` (a table, fastText or text file; `-`: stdin) with `clf` (a classifier or
    ensemble) into `output` (`-`: stdout); `text_col` defaults to the columns the model was trained on;
    `explain`: an attribution method (`inference.explain`, needs PyTorch and Captum) for an `explanation`
    column: the `top_k` tokens and their scores, or in JSON Lines every token's score;
    `kwargs`: `proba_of_ids`' (bs, max_tokens, precision). Returns the frame written."""
    cols = clf.text_col if text_col is None else text_col
    df, fmt = read_frame(input, "--input", encoding, fmt=input_format, columns=named_columns(cols))
    fields = (["text"] if fmt in ("lines", "fasttext")
              else text_columns(df, cols, "--text-col", "--input", input))
    if df.empty:
        raise UlmfitError(f"--input: {input} has no rows to classify")
    texts = join_fields(df, fields).tolist()
    probs = clf.predict_proba(texts, progress=True, **kwargs)
    task = clf.task
    df["prediction"] = task.written(task.decide(probs, clf.labels, clf.thresholds), clf.spec.label_delim)
    if task.probability_columns():
        for j, label in enumerate(clf.labels):
            df[f"prob_{label}"] = probs[:, j]
    if explain:
        found = explanations(clf, texts, method=explain, progress=True)
        whole = Path(output).suffix.lower() in (".jsonl", ".ndjson")
        df["explanation"] = [e.as_dict() if whole else top_tokens(e, top_k) for e in found]
    write_table(df, output)
    return df


def explanations(clf, texts: list[str], target=None, **kwargs) -> list:
    """`inference.explain.explain` of `texts` by `clf` (a classifier or ensemble, ONNX bundles included), for
    the commands and the server, which stay torch-free until asked: where PyTorch or Captum is missing (the
    runtime's install) a clear error, not an ImportError."""
    try:
        from ulmfit_cli.inference.explain import explain  # gradients need PyTorch and Captum: on call
    except ModuleNotFoundError as e:
        raise UlmfitError(f"explanations need PyTorch and Captum, and {e.name} is not installed: "
                          f"pip install 'ulmfit-cli[explain]' (in the full install, not the runtime's)"
                          ) from None
    return explain(clf, texts, target, **kwargs)


def top_tokens(explanation, k: int) -> str:
    """`word:+0.123 word:-0.045` for each explained target (several: `label: ... | label: ...`)."""
    parts = [" ".join(f"{tok}:{score:+.3f}" for tok, score in explanation.top(k, i))
             for i in range(len(explanation.targets))]
    if len(parts) == 1:
        return parts[0]
    return " | ".join(f"{name}: {part}" for name, part in zip(explanation.targets, parts))
