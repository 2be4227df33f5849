"""ulmfit-cli: the ULMFiT recipe (Howard & Ruder 2018) on fastai v2, as a command-line tool and a Python API
(`ulmfit_cli.api`: train, prepare, generate; `load_classifier` below)."""
import warnings

from ulmfit_cli.layout import __version__  # noqa: F401

# fastai's AWD-LSTM helpers call torch.jit.script, which torch >= 2.10 flags on every run (CLI and API alike)
warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")


def load_classifier(*paths, device: str = "auto"):
    """A trained classifier (train-clf run dir or `ulmfit export` bundle); several paths: their ensemble.

    See `ulmfit_cli.inference.classifier` for the API (`predict`, `predict_proba`, `labels`).
    """
    # late: `import ulmfit_cli` (and --help) stay light
    from ulmfit_cli.inference.classifier import load_classifier as load
    return load(*paths, device=device)
