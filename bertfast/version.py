"""The package version, importable without the rest of bertfast."""
__version__ = "0.1.0"
