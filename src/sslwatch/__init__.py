"""sslwatch: label-free quality metrics for self-supervised encoders."""

from sslwatch._version import __version__

__all__ = ["__version__"]
