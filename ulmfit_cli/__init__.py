"""ulmfit-cli: the ULMFiT recipe (Howard & Ruder 2018) on fastai v2, as a command-line tool."""
__version__ = "0.1.0"


def load_classifier(*paths, device: str = "auto"):
    """A trained classifier (train-clf run dir or `ulmfit export` bundle); several paths: their ensemble.

    See `ulmfit_cli.inference` for the API (`predict`, `predict_proba`, `labels`).
    """
    from ulmfit_cli.inference import load_classifier as load
    return load(*paths, device=device)
