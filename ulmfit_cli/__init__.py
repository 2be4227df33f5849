"""ulmfit-cli: the ULMFiT recipe (Howard & Ruder 2018) on fastai v2, as a command-line tool."""
__version__ = "0.1.0"
