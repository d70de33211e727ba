"""Metrics after training: data sets, embedding files, checkpoints, the encoder's forward
pass, checkpoint sweeps and the SQLite results store.
"""
