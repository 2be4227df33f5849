"""The three kinds of classifier task as frozen `Task` objects: everything that differs between them lives
here, so that no other module compares a task's name.

- single_label: one class per document (softmax, cross-entropy): `data.label_col: label`;
- multi_label: a set of labels per document (one sigmoid per label, BCE), from several 0/1 columns
  (`data.label_col: [toxic, insult]`) or one delimited column (`data.label_delim: ";"`);
- regression: one number per document (MSE): `data.task: regression`.

`data.task: auto` (the default) means multi_label when the labels are given as a list of columns or a
delimiter, single_label otherwise; regression is always asked for (`task_of`). A Task reads labels from
a table's columns, turns them into targets, names the fastai loss and metrics, the activation and the
decision rule of inference, the figures (`figures`, from `classify.scoring`), the metric that selects a
setting on the validation split, and the headline figures results.json leads with.

`ulmfit_cli.config` imports this module to check a classifier config (the one import that runs back up the
layers: the schema is below everything, and the task's rules belong here).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ulmfit_cli.classify.outputs import MultiLabelOutputs, Outputs, RegressionOutputs, SingleLabelOutputs
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.layout import PREDICTIONS, PROBABILITIES

if TYPE_CHECKING:
    import pandas as pd

# torch, fastai, scikit-learn and pandas (and `scoring`, which imports scikit-learn) are imported in the
# methods that read labels, train, fit or score: `config` imports this module, and `ulmfit prepare` runs
# without them (seconds of start-up; the import-linter contract on `lite`)

LOWER_IS_BETTER = frozenset({"valid_loss", "mae", "rmse"})
ZERO_ONE = {"0": False, "1": True, "0.0": False, "1.0": True, "false": False, "true": True}


def _positions(labels: list[str]) -> dict[str, int]:
    return {lbl: i for i, lbl in enumerate(labels)}


@dataclass(frozen=True, eq=False)
class Task(Outputs):
    """What a kind of classifier task decides; one instance per kind (`TASKS`). The outputs side (the
    decision, how predict writes it, the baseline's linear outputs) is inherited from `classify.outputs`."""
    name: ClassVar[str]
    monitors: ClassVar[dict[str, str]]  # train.monitor -> the Recorder's column (the name in metrics.jsonl)
    # the figures results.json, the printed summary and evaluate lead with
    headline: ClassVar[tuple[str, ...]]
    # what picks a setting on valid: tune's metric (auto), the baseline's C
    selection: ClassVar[str]
    label_lists: ClassVar[bool] = False  # labels given as several 0/1 columns or a delimited column
    numeric: ClassVar[bool] = False      # a number per document (model.y_range; no classes to weigh)
    # one class per document (train.sampler: balanced, a confusion matrix)
    by_class: ClassVar[bool] = False
    outputs_file: ClassVar[str] = PROBABILITIES  # what `ulmfit evaluate` saves its outputs as

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other) -> bool:
        # equal to its name too, as `load_classifier(...).task` was a string before Task objects existed
        return other == self.name if isinstance(other, str) else type(other) is type(self)

    def __hash__(self) -> int:
        return hash(self.name)

    @staticmethod
    def lower_is_better(figure: str) -> bool:
        return figure in LOWER_IS_BETTER

    def monitor(self, name: str) -> str:
        """The figure `train.monitor` names (`auto`: the task's `selection`, what the results lead with)."""
        return self.selection if name == "auto" else name

    # -- the config
    def check_config(self, data, model, train) -> None:
        """Refuse keys that contradict this task (a ValueError naming the key, as a config validator
        raises)."""
        if self.label_lists != (isinstance(data.label_col, list) or data.label_delim is not None):
            raise ValueError(self._labels_given_wrong)
        if isinstance(data.label_col, list) and data.label_delim is not None:
            raise ValueError("data.label_delim: data.label_col is a list of 0/1 columns, so there is nothing "
                             "to split; give one of them")
        if self.monitor(train.monitor) not in self.monitors:
            raise ValueError(f"train.monitor: {train.monitor} is not a figure of a {self} task; use one of "
                             f"{', '.join(self.monitors)}")
        if model.threshold is not None and not self.thresholded:
            raise ValueError(f"model.threshold: for multi-label tasks, not {self}")
        if model.y_range is not None and not self.numeric:
            raise ValueError(f"model.y_range: for regression tasks, not {self}")
        if train.sampler == "balanced" and not self.by_class:
            raise ValueError(f"train.sampler: balanced draws documents by class; a {self} task has none "
                             f"(multi-label: train.class_weights weighs each label's positives)")
        if train.class_weights is not None and self.numeric:
            raise ValueError("train.class_weights: a regression task has no classes")
        if (data.unlabelled or train.self_training_rounds) and not self.by_class:
            raise ValueError(f"{'data.unlabelled' if data.unlabelled else 'train.self_training_rounds'}: "
                             f"self-training keeps the most confident texts of each predicted "
                             f"class, and a {self} task has no one class per text (a regression output has "
                             f"no confidence; a multi-label one no class to balance by); single-label only")

    @property
    def _labels_given_wrong(self) -> str:
        return (f"data.task: {self}, but a list of label columns or data.label_delim means multi-label "
                f"(data.task: multi_label, or auto)")

    # -- labels and targets
    def parse_labels(self, df: pd.DataFrame, label_col, delim: str | None, key: str, path) -> pd.Series:
        """Each row's label as this task has it (a bad value names its row and column)."""
        return df[label_col].astype(str).str.strip()

    def parse_fasttext(self, labels: pd.Series, key: str, path) -> pd.Series:
        """The labels of fastText lines (`labels`: each line's `__label__` names, space-separated)."""
        if labels.isna().any():
            bad = int(labels.isna().to_numpy().argmax()) + 1
            raise UlmfitError(f"{key}: {path}: document {bad} has no __label__ label")
        return labels.str.split().str[0]

    def check_parsed(self, labels: pd.Series, label_col, key: str, path) -> None:
        """After empty documents are dropped: refuse a row without a label, where this task needs one."""

    def label_names(self, train: pd.DataFrame, data) -> list[str]:
        """The model's outputs, read from the training split: its classes, its labels, or the target."""
        raise NotImplementedError

    def check_known(self, seen, labels: list[str], what: str) -> None:
        """Refuse labels the model does not know (class names, or label sets of a multi-label task)."""
        seen = [x for s in seen for x in s] if any(isinstance(s, tuple) for s in seen) else seen
        unseen = sorted(set(seen) - set(labels))
        if unseen:
            raise UlmfitError(f"{what} has labels the model never saw: {', '.join(unseen[:20])}"
                              + (f" (and {len(unseen) - 20} more)" if len(unseen) > 20 else "")
                              + f"; the model knows: {', '.join(labels)}")

    def targets(self, labels: list[str], frame: pd.DataFrame) -> np.ndarray:
        """The targets of a frame's `label` column: class ids, a 0/1 float matrix, or float32 numbers."""
        raise NotImplementedError

    def describe(self, labels: list[str]) -> str:
        raise NotImplementedError

    def unlearnable(self, labels: list[str], y_train: np.ndarray) -> list[str]:
        """Labels no training document has (a multi-label model cannot learn them)."""
        return []

    def class_weights(self, setting, ys: np.ndarray, labels: list[str]) -> list[float] | None:
        """One loss weight per output for `train.class_weights`: `balanced`, or {label: weight} with 1 for the
        rest (a label that is not one of `labels` is refused)."""
        if setting is None:
            return None
        if setting == "balanced":
            return self._balanced(ys, labels)
        unknown = sorted(set(setting) - set(labels))
        if unknown:
            raise UlmfitError(f"train.class_weights: {', '.join(map(repr, unknown))} "
                              f"{'is not a class' if len(unknown) == 1 else 'are not classes'} "
                              f"of data.train; its classes are: {', '.join(labels)}")
        return [float(setting.get(lbl, 1.0)) for lbl in labels]

    def _balanced(self, ys: np.ndarray, labels: list[str]) -> list[float]:
        raise NotImplementedError

    # -- the model
    def loss_and_metrics(self, weights) -> tuple:
        """The loss (with `train.class_weights`) and each epoch's metrics, as fastai's blocks would pick them
        (CategoryBlock, MultiCategoryBlock, RegressionBlock); their names are the columns of `monitors`."""
        raise NotImplementedError

    def activation(self, logits):
        """The model's outputs from its logits (a torch tensor): probabilities, or the numbers."""
        raise NotImplementedError

    def choose_thresholds(self, y_valid: np.ndarray, outputs: np.ndarray, fixed: float | None):
        """Per-label decision thresholds chosen on the validation split (multi-label only; else None)."""
        return None

    def figures(self, y_true: np.ndarray, outputs: np.ndarray, labels: list[str], thresholds=None) -> dict:
        """The task's figures of `outputs` (what `predict_proba` returns) against the targets."""
        raise NotImplementedError

    # -- the baseline's linear model
    baseline_name: ClassVar[str] = "tfidf-logreg"
    baseline_setting: ClassVar[str] = "C"
    baseline_grid: ClassVar[tuple[float, ...]] = (1.0, 10.0, 100.0)  # weakest regularization last

    def linear_fits(self, x, y):
        """(setting, fitted model) along the regularization path of this task's linear model."""
        raise NotImplementedError

    def linear_state(self, model, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
        """A fitted linear model as (coefficients (outputs, features), intercepts (outputs,)), new arrays:
        what `linear_apply` turns into outputs and a saved baseline keeps."""
        raise NotImplementedError

    def output_loss(self, y_true: np.ndarray, outputs: np.ndarray) -> float:
        """The task's loss of `outputs` (cross-entropy, binary cross-entropy, squared error): what breaks a
        tie between two blends with the same figure."""
        raise NotImplementedError


class SingleLabel(SingleLabelOutputs, Task):
    name = "single_label"
    monitors = {"valid_loss": "valid_loss", "accuracy": "accuracy", "macro_f1": "f1_score"}
    headline = ("accuracy", "macro_f1")
    selection = "accuracy"
    by_class = True

    def check_parsed(self, labels, label_col, key, path) -> None:
        empty = labels == ""
        if empty.any():
            row = int(empty.to_numpy().argmax())
            raise UlmfitError(f"{key}: {path}: document {row + 1} has an empty label in '{label_col}'")

    def label_names(self, train, data) -> list[str]:
        labels = sorted(train["label"].unique())
        if len(labels) < 2:
            raise UlmfitError(f"data.train: {data.train}: column '{data.label_col}' has a single class "
                              f"({labels[0]!r}); a classifier needs at least two")
        return labels

    def targets(self, labels, frame) -> np.ndarray:
        return frame["label"].map(_positions(labels)).to_numpy()

    def describe(self, labels) -> str:
        return f"{len(labels)} classes"

    def _balanced(self, ys, labels) -> list[float]:  # scikit-learn's rule: n / (classes * count)
        counts = np.bincount(ys, minlength=len(labels))
        return [float(len(ys) / (len(labels) * c)) if c else 0.0 for c in counts]

    def loss_and_metrics(self, weights) -> tuple:
        from fastai.losses import CrossEntropyLossFlat
        from fastai.metrics import F1Score, accuracy

        from ulmfit_cli.train.device_metrics import DeviceAvgMetric
        return CrossEntropyLossFlat(weight=weights), [DeviceAvgMetric(accuracy), F1Score(average="macro")]

    def activation(self, logits):
        return logits.softmax(-1)

    def figures(self, y_true, outputs, labels, thresholds=None) -> dict:
        from ulmfit_cli.classify.scoring import class_scores
        return class_scores(y_true, outputs.argmax(1), labels)

    def linear_fits(self, x, y):
        from sklearn.linear_model import LogisticRegression
        model = LogisticRegression(max_iter=3000, warm_start=True)  # C ascending, each fit from the last
        for c in self.baseline_grid:
            yield c, model.set_params(C=c).fit(x, y)

    def linear_state(self, model, n_labels):
        # one row per label; a class absent from the training rows never wins (intercept -inf), and a
        # binary model's one row of scores is the softmax of (0, z): the sigmoid scikit-learn applies
        coef = np.zeros((n_labels, model.coef_.shape[1]))
        intercept = np.full(n_labels, -np.inf)
        classes = model.classes_.astype(int)
        if len(classes) == 2:
            coef[classes[1]], intercept[classes] = model.coef_[0], (0.0, model.intercept_[0])
        else:
            coef[classes], intercept[classes] = model.coef_, model.intercept_
        return coef, intercept

    def output_loss(self, y_true, outputs) -> float:
        return float(-np.log(np.clip(outputs[np.arange(len(y_true)), y_true], 1e-12, None)).mean())


class MultiLabel(MultiLabelOutputs, Task):
    name = "multi_label"
    monitors = {"valid_loss": "valid_loss", "macro_f1": "f1_macro", "micro_f1": "f1_micro"}
    headline = ("micro_f1", "macro_f1", "subset_accuracy", "roc_auc")
    selection = "micro_f1"
    label_lists = True

    _labels_given_wrong = ("data.task: multi_label reads a list of 0/1 columns (data.label_col: [a, b]) "
                           "or one column of delimited labels (data.label_delim: ';')")

    def parse_labels(self, df, label_col, delim, key, path) -> pd.Series:
        import pandas as pd
        if not isinstance(label_col, list):  # one column of delimited names
            col = df[label_col].astype(str).str.strip()
            return col.map(lambda s: tuple(sorted({p.strip() for p in s.split(delim) if p.strip()})))
        values = df[label_col].astype(str).apply(lambda c: c.str.strip().str.lower())
        bad = ~values.isin(list(ZERO_ONE))
        if bad.to_numpy().any():
            rows, cols = bad.to_numpy().nonzero()  # row-major: the first bad row
            row, col = int(rows[0]), int(cols[0])
            raise UlmfitError(f"{key}: {path}: row {row + 1}, column '{label_col[col]}' holds "
                              f"{df[label_col[col]].iloc[row]!r}; a multi-label column holds 0 or 1 "
                              f"(one column per label), or give one column of delimited labels with "
                              f"data.label_delim")
        ones = values.replace(ZERO_ONE).to_numpy(dtype=bool)
        return pd.Series([tuple(c for c, on in zip(label_col, row) if on) for row in ones], index=df.index)

    def parse_fasttext(self, labels, key, path) -> pd.Series:  # every __label__ of a line
        import pandas as pd
        return self.parse_labels(pd.DataFrame({"label": labels.fillna("")}), "label", " ", key, path)

    def label_names(self, train, data) -> list[str]:
        if not any(len(s) for s in train["label"]):
            raise UlmfitError(f"data.train: {data.train}: every document has an empty label set (no 1 in "
                              f"data.label_col, or nothing between the data.label_delim marks); "
                              f"a multi-label classifier needs documents with labels")
        return (data.label_col if isinstance(data.label_col, list)
                else sorted({x for s in train["label"] for x in s}))

    def targets(self, labels, frame) -> np.ndarray:
        index = _positions(labels)
        y = np.zeros((len(frame), len(labels)), dtype=np.float32)
        for row, names in enumerate(frame["label"]):
            y[row, [index[n] for n in names]] = 1
        return y

    def describe(self, labels) -> str:
        return f"{len(labels)} labels (multi-label)"

    def unlearnable(self, labels, y_train) -> list[str]:
        return [lbl for lbl, n in zip(labels, y_train.sum(0)) if not n]

    def _balanced(self, ys, labels) -> list[float]:  # BCE's pos_weight: negatives / positives per label
        pos = ys.sum(0)
        return [float((len(ys) - p) / p) if p else 1.0 for p in pos]

    def loss_and_metrics(self, weights) -> tuple:
        from fastai.losses import BCEWithLogitsLossFlat
        from fastai.metrics import ActivationType, accuracy_multi, skm_to_fastai
        from sklearn.metrics import f1_score

        from ulmfit_cli.train.device_metrics import DeviceAvgMetric

        # fastai's F1ScoreMulti at 0.5, named for train.monitor, quiet about absent labels
        def f1(average: str):
            return skm_to_fastai(f1_score, thresh=0.5, activation=ActivationType.Sigmoid, flatten=False,
                                 average=average, zero_division=0, name=f"f1_{average}")
        return (BCEWithLogitsLossFlat(pos_weight=weights),
                [DeviceAvgMetric(accuracy_multi), f1("macro"), f1("micro")])

    def activation(self, logits):
        return logits.sigmoid()

    def choose_thresholds(self, y_valid, outputs, fixed):
        from ulmfit_cli.classify.scoring import choose_thresholds
        return choose_thresholds(y_valid, outputs, fixed)

    def figures(self, y_true, outputs, labels, thresholds=None) -> dict:
        from ulmfit_cli.classify.scoring import multi_scores
        return multi_scores(y_true, outputs, labels, thresholds)

    def linear_fits(self, x, y):
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        for c in self.baseline_grid:
            yield c, OneVsRestClassifier(LogisticRegression(C=c, max_iter=3000)).fit(x, y)

    def linear_state(self, model, n_labels):
        coef, intercept = np.zeros((n_labels, model.n_features_in_)), np.zeros(n_labels)
        for j, est in enumerate(model.estimators_):
            if hasattr(est, "coef_"):
                coef[j], intercept[j] = est.coef_[0], est.intercept_[0]
            else:  # a label always (or never) on in training: scikit-learn predicts it constantly
                intercept[j] = np.inf if np.ravel(est.y_)[0] else -np.inf
        return coef, intercept

    def output_loss(self, y_true, outputs) -> float:
        p = np.clip(outputs, 1e-12, 1 - 1e-12)
        return float(-(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)).mean())


class Regression(RegressionOutputs, Task):
    name = "regression"
    numeric = True
    outputs_file = PREDICTIONS
    monitors = {"valid_loss": "valid_loss", "mae": "mae", "rmse": "rmse", "pearson": "pearson",
                "spearman": "spearman"}
    headline = ("mae", "rmse", "pearson", "spearman")
    selection = "rmse"
    baseline_name = "tfidf-ridge"
    baseline_setting = "alpha"
    baseline_grid = (10.0, 1.0, 0.1)  # ridge's alpha, strongest first

    def parse_labels(self, df, label_col, delim, key, path) -> pd.Series:
        import pandas as pd
        col = df[label_col].astype(str).str.strip()
        numbers = pd.to_numeric(col, errors="coerce")
        with np.errstate(over="ignore"):  # checked in float32, the dtype that trains: 1e308 is inf there
            bad = ~np.isfinite(numbers.to_numpy(dtype=float).astype(np.float32))
        if bad.any():
            row = int(bad.argmax())
            finite = bool(np.isfinite(numbers.to_numpy(dtype=float)[row]))
            raise UlmfitError(f"{key}: {path}: row {row + 1}, column '{label_col}' holds {col.iloc[row]!r}, "
                              + ("too large for the float32 the model trains in (|x| < 3.4e38)" if finite
                                 else "not a number; a regression label is a finite number")
                              + " (data.task: regression)")
        return numbers.astype("float64")

    def parse_fasttext(self, labels, key, path) -> pd.Series:
        import pandas as pd
        Task.parse_fasttext(self, labels, key, path)  # every line has a label
        return self.parse_labels(pd.DataFrame({"label": labels}), "label", " ", key, path)

    def label_names(self, train, data) -> list[str]:
        return [data.label_col]

    def check_known(self, seen, labels, what) -> None:
        pass  # any number is a target

    def targets(self, labels, frame) -> np.ndarray:
        return frame["label"].to_numpy(dtype=np.float32)

    def describe(self, labels) -> str:
        return f"regression of '{labels[0]}'"

    def loss_and_metrics(self, weights) -> tuple:
        import torch
        from fastai.losses import MSELossFlat
        from fastai.metrics import AccumMetric, PearsonCorrCoef, SpearmanCorrCoef, mae

        from ulmfit_cli.train.device_metrics import DeviceAvgMetric

        def rmse(inp, targ):
            return torch.sqrt(torch.nn.functional.mse_loss(inp, targ))
        return MSELossFlat(), [DeviceAvgMetric(mae), AccumMetric(rmse, name="rmse"),
                               PearsonCorrCoef(name="pearson"), SpearmanCorrCoef(name="spearman")]

    def activation(self, logits):
        return logits

    def figures(self, y_true, outputs, labels, thresholds=None) -> dict:
        from ulmfit_cli.classify.scoring import regression_scores
        return regression_scores(y_true, outputs)

    def linear_fits(self, x, y):
        from sklearn.linear_model import Ridge
        for alpha in self.baseline_grid:
            yield alpha, Ridge(alpha=alpha).fit(x, y)

    def linear_state(self, model, n_labels):
        return np.array(model.coef_, dtype=float).reshape(1, -1), np.array([model.intercept_], dtype=float)

    def output_loss(self, y_true, outputs) -> float:
        return float(((np.asarray(y_true).reshape(-1) - outputs[:, 0]) ** 2).mean())


TASKS: dict[str, Task] = {t.name: t for t in (SingleLabel(), MultiLabel(), Regression())}
SINGLE_LABEL, MULTI_LABEL, REGRESSION = TASKS.values()


def task_of(task: str, label_col, label_delim: str | None) -> Task:
    """The task `data.task` names (`auto`: multi-label when the labels are a list of columns or delimited)."""
    if task != "auto":
        return TASKS[task]
    return MULTI_LABEL if isinstance(label_col, list) or label_delim is not None else SINGLE_LABEL
