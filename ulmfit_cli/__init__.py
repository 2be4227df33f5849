"""ulmfit-cli: the ULMFiT recipe (Howard & Ruder 2018) on fastai v2, as a command-line tool and a Python API
(`ulmfit_cli.api`: train, prepare, generate; `load_classifier` below)."""
import warnings

from ulmfit_cli.layout import __version__  # noqa: F401

# fastai's AWD-LSTM helpers call torch.jit.script, which torch >= 2.10 flags on every run (CLI and API alike)
warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")


def load_classifier(*paths, device: str = "auto", threads: int | None = None, runtime: str = "auto"):
    """A trained classifier (train-clf run dir or `ulmfit export` bundle); several paths: their ensemble.
    Bundles exported with `--format onnx` load on onnxruntime without importing torch or fastai.

    See `ulmfit_cli.inference.classifier` for the API (`predict`, `predict_proba`, `labels`).
    """
    # late: `import ulmfit_cli` (and --help) stay light, and an ONNX bundle never imports torch
    from ulmfit_cli.inference.runtime import chooses_onnx, load_onnx
    if chooses_onnx(paths, runtime, device):
        return load_onnx(*paths, threads=threads)
    from ulmfit_cli.inference.classifier import load_classifier as load
    return load(*paths, device=device, threads=threads)
