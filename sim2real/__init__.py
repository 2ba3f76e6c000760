"""sim2real: robust multi-agent robot policies from simulation to the robot."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sim2real")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
