"""The three kinds of classifier task and what differs between them, as plain data (no fastai here).

- single_label: one class per document (softmax, cross-entropy): `data.label_col: label`;
- multi_label: a set of labels per document (one sigmoid per label, BCE), from several 0/1 columns
  (`data.label_col: [toxic, insult]`) or one delimited column (`data.label_delim: ";"`);
- regression: one number per document (MSE): `data.task: regression`.

`data.task: auto` (the default) means multi_label when the labels are given as a list of columns or a
delimiter, single_label otherwise; regression is always asked for. The learner's loss and metrics are
built in `train/learners.py`, the figures reported in `inference/evaluation.py`.
"""
from __future__ import annotations

SINGLE, MULTI, REGRESSION = "single_label", "multi_label", "regression"
TASKS = (SINGLE, MULTI, REGRESSION)

# train.monitor -> the Recorder's column (the metric's name in metrics.jsonl), per task
MONITORS = {
    SINGLE: {"valid_loss": "valid_loss", "accuracy": "accuracy", "macro_f1": "f1_score"},
    MULTI: {"valid_loss": "valid_loss", "macro_f1": "f1_macro", "micro_f1": "f1_micro"},
    REGRESSION: {"valid_loss": "valid_loss", "mae": "mae", "rmse": "rmse", "pearson": "pearson",
                 "spearman": "spearman"},
}
LOWER_IS_BETTER = {"valid_loss", "mae", "rmse"}

# the figures results.json, the printed summary and `ulmfit evaluate` lead with
HEADLINE = {SINGLE: ("accuracy", "macro_f1"), MULTI: ("micro_f1", "macro_f1", "subset_accuracy", "roc_auc"),
            REGRESSION: ("mae", "rmse", "pearson", "spearman")}

MULTI_DELIM = ";"  # how `ulmfit predict` writes a predicted label set when the model was trained on columns


def task_of(task: str, label_col, label_delim: str | None) -> str:
    """The task `data.task` means (`auto` decided from how the labels are given)."""
    if task != "auto":
        return task
    return MULTI if isinstance(label_col, list) or label_delim is not None else SINGLE


def monitor_column(task: str, monitor: str) -> str:
    return MONITORS[task][monitor]


def encode_targets(task: str, labels: list[str], frame):
    """The targets of a frame's `label` column (as `corpus.tables.read_texts` reads it): class ids, a 0/1
    float matrix (one column per label), or float32 numbers."""
    import numpy as np
    if task == REGRESSION:
        return frame["label"].to_numpy(dtype=np.float32)
    index = {lbl: i for i, lbl in enumerate(labels)}
    if task == SINGLE:
        return frame["label"].map(index).to_numpy()
    y = np.zeros((len(frame), len(labels)), dtype=np.float32)
    for row, names in enumerate(frame["label"]):
        y[row, [index[n] for n in names]] = 1
    return y
