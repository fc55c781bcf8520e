"""The package version, on the ground floor so every layer may name it."""

__version__ = "0.1.0"
