"""crystalscope: diffraction from small or imperfect crystals, raw frames to structure factors."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crystalscope")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

from crystalscope.errors import ConfigError, CrystalscopeError, DataError, FormatError

__all__ = ["ConfigError", "CrystalscopeError", "DataError", "FormatError", "__version__"]
