"""Metrics during training: the streaming :class:`~sslwatch.online.monitor.Monitor`, the
writers it logs to (:mod:`~sslwatch.online.sinks`) and the Lightning callback
(:mod:`~sslwatch.online.lightning`, which alone imports Lightning).
"""
