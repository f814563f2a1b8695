"""The package version, in one place: ``pyrobnn.__version__`` and the checkpoints read it here."""

__all__ = ["__version__"]

__version__ = "0.3.0"
