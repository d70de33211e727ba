"""The metric layer's orchestration: the registry, each metric's declaration, the
definitions stored with every value, the per-evaluation cache and :func:`evaluate`.

Imports only :mod:`sslwatch.metrics`; everything above (online, offline, analysis, report,
cli) reads metrics through this package.
"""
