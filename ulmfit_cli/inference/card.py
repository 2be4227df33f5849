"""The model card every export bundle carries (`card.json`), and its text for `ulmfit report BUNDLE`: what the
model is (task, labels, thresholds), what it was trained on (each data file's sha256 and size, the rows of
each split), how well it did (the test and validation figures, the classifier's alone and the baseline's),
what it was fine-tuned from (the upstream LM run), the versions that made it, the export (format,
precision, each file's sha256, int8's check), and a few test texts to try (`ulmfit serve`'s page). Plain
JSON: nothing is unpickled to read it.
"""
from __future__ import annotations

import json
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ulmfit_cli.config import ClassifierConfig
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import read_json, sha256
from ulmfit_cli.layout import CARD, CONFIG, RESULTS, __version__
from ulmfit_cli.runs import read_run

CARD_FORMAT = 1
_FIGURE_PREFIXES = ("valid_", "test_", "classifier_valid_", "classifier_test_", "baseline_valid_",
                    "baseline_test_")


def _versions(packages: tuple[str, ...]) -> dict:
    out = {"ulmfit-cli": __version__, "python": platform.python_version()}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def build_card(source: Path, clf, rows: dict | None, export: dict, examples: list[str] | None = None) -> dict:
    """The card of a classifier exported from `source` (a train-clf run dir, or a bundle with a card, whose
    training side is kept). `rows`: the size of each split, when its data was read; `export`: format,
    precision and files (names -> sha256), and int8's check; `examples`: a few test texts to try."""
    packages = ("torch", "fastai", "numpy", "spacy", "sentencepiece", "scikit-learn", "onnx", "onnxruntime")
    card = {"format": CARD_FORMAT, "task": clf.task.name, "labels": clf.labels,
            "thresholds": (None if clf.thresholds is None
                           else dict(zip(clf.labels, map(float, clf.thresholds)))),
            "blend_weight": None if clf.blend is None else clf.blend[0]}
    if (source / CARD).is_file():  # a bundle exported again: what it was trained on comes from its card
        old = read_json(source / CARD, "--model")
        if isinstance(old, dict):
            kept = ("data", "rows", "figures", "upstream", "trained_with", "examples")
            card.update({k: old[k] for k in kept if k in old})
    elif (source / CONFIG).is_file():
        run = read_run(source, "--model", ("train-clf",), "model.pth")
        cfg = run.typed(ClassifierConfig)
        data = {}
        for key in ("train", "valid", "test"):
            value = getattr(cfg.data, key)
            if value is not None:
                file = Path(value)
                data[key] = {"path": str(value), **({"sha256": sha256(file), "bytes": file.stat().st_size}
                                                    if file.is_file() else {"missing": True})}
        results = read_json(source / RESULTS, "--model") if (source / RESULTS).is_file() else {}
        card["data"], card["rows"] = data, rows or {k: results.get(f"{k}_n") for k in ("valid", "test")}
        card["figures"] = {k: v for k, v in results.items()
                           if k.startswith(_FIGURE_PREFIXES) or k == "baseline"}
        upstream = cfg.init.from_run
        card["upstream"] = {"run": None if upstream is None else str(upstream),
                            "pretrained_encoder": results.get("pretrained_encoder")}
        card["trained_with"] = (run.config.get("_meta") or {}).get("version")
    if examples:
        card["examples"] = examples
    card["versions"] = _versions(packages)
    card["export"] = {**export, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return card


def card_text(bundle: Path) -> str:
    """`ulmfit report BUNDLE`: the card as a few readable lines."""
    card = read_json(bundle / CARD, "report")
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise UlmfitError(f"{bundle / CARD} is not an ulmfit model card (format {CARD_FORMAT})")
    exp = card.get("export") or {}
    lines = [f"bundle {bundle}: {card.get('task')} over {len(card.get('labels') or [])} output(s): "
             f"{', '.join(map(str, card.get('labels') or []))}",
             f"  export: {exp.get('format')} {exp.get('precision')}, {exp.get('created')}"]
    quant = exp.get("int8")
    if quant:
        lines.append(f"  int8: {'kept' if quant.get('kept') else 'not kept (fp32 written)'}; "
                     f"{json.dumps({k: quant[k] for k in ('figure', 'valid', 'test') if k in quant})}")
    for name, f in (card.get("data") or {}).items():
        lines.append(f"  data.{name}: {f.get('path')} "
                     + ("(missing when exported)" if f.get("missing")
                        else f"({f.get('bytes')} bytes, sha256 {f.get('sha256')})"))
    if card.get("rows"):
        lines.append("  rows: " + ", ".join(f"{k} {v}" for k, v in card["rows"].items()))
    figures = card.get("figures") or {}
    for prefix, name in (("test_", "test"), ("classifier_test_", "classifier alone, test"),
                         ("baseline_test_", "baseline, test")):
        shown = {k[len(prefix):]: v for k, v in figures.items()
                 if k.startswith(prefix) and not k.endswith("_n")}
        if shown:
            lines.append(f"  {name}: " + "  ".join(
                f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in shown.items()))
    if card.get("blend_weight") is not None:
        lines.append(f"  blend weight {card['blend_weight']:.2f} (classifier; the rest the baseline)")
    up = card.get("upstream") or {}
    lines.append(f"  upstream LM: {up.get('run')}")
    lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in (card.get("versions") or {}).items()))
    return "\n".join(lines)
