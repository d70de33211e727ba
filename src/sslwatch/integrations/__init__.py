"""Thin adapters between training frameworks and :class:`sslwatch.Monitor`.

Each integration lives in its own module and imports its framework only there, so that
``import sslwatch`` never imports Lightning (or anything else optional):

* :mod:`sslwatch.integrations.lightning`: ``SSLWatchCallback`` for Lightning (``pip install
  'sslwatch[lightning]'``), also offered through the ``lightning.pytorch.callbacks_factory``
  entry point when ``SSLWATCH_CALLBACK=1`` is set.

For plain PyTorch loops use :class:`sslwatch.Monitor` directly with the writers in
:mod:`sslwatch.sinks`.
"""
