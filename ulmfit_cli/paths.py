"""Input paths from configs: plain paths, or `pkg:PACKAGE/sub/path` for a file shipped inside an
installed Python package (how the embedded demo reads gensim's test data without a download)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ulmfit_cli.errors import UlmfitError

PKG_PREFIX = "pkg:"


def resolve(value: str, key: str) -> Path:
    """The file or folder a config value names; raises a `UlmfitError` naming `key` if absent."""
    if value.startswith(PKG_PREFIX):
        package, _, rest = value[len(PKG_PREFIX):].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            hint = " (install the demo extra: pip install -e '.[demo]')" if package == "gensim" else ""
            raise UlmfitError(f"{key}: {value}: Python package '{package}' is not installed{hint}")
        path = Path(list(spec.submodule_search_locations)[0]) / rest
    else:
        path = Path(value).expanduser()
    if not path.exists():
        raise UlmfitError(f"{key}: file not found: {path}")
    return path
