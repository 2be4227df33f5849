"""The package version, from the installed distribution's metadata (pyproject.toml is its one source)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ulmfit-cli")
except PackageNotFoundError:  # run from a source tree that was never installed (PYTHONPATH=.)
    __version__ = "0+unknown"
