"""Metrics during training, batch by batch.

- :mod:`~sslwatch.online.monitor`: :class:`~sslwatch.online.monitor.Monitor` (update,
  compute, reset) and its :class:`~sslwatch.online.monitor.MonitorResult`;
- :mod:`~sslwatch.online.settings`: the Monitor's settings, declared and checked once;
- :mod:`~sslwatch.online.state`: the mergeable torchmetrics state (moments, reservoirs)
  and its DDP sync;
- :mod:`~sslwatch.online.keys`: the content-derived keys that make the reservoir
  independent of batch split, order and rank;
- :mod:`~sslwatch.online.alarms`: collapse alarms;
- :mod:`~sslwatch.online.budget`: a stride governor that bounds the monitor's cost;
- :mod:`~sslwatch.online.hooks`: any layer through forward hooks, one Monitor per layer;
- :mod:`~sslwatch.online.sinks`: writers of results for plain loops (store, CSV,
  TensorBoard);
- :mod:`~sslwatch.online.lightning`: the Lightning callback (the only module that
  imports Lightning).
"""
