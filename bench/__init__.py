"""wmbench: an attack-and-defense benchmark for ownership watermarks of pretrained vision models."""
from importlib import metadata

try:
    __version__ = metadata.version("wmbench")
except metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
