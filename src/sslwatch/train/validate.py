"""Check that the reference recipes learn: linear-probe accuracy at init vs after training.

Run as ``python -m sslwatch.train.validate --methods simclr simsiam --epochs 30``. For
each method it trains the MNIST-1D recipe (:func:`sslwatch.train.recipes.mnist1d_config`)
on the 4000 training signals and scores the backbone with a linear probe
(:func:`sslwatch.linear_probe`: multinomial logistic regression on standardised features,
L2 strength chosen on a held-out split, trained on the 4000 training signals, tested on
the 1000 test signals):

* at random initialisation, after re-estimating BatchNorm statistics on the training
  data (:func:`sslwatch.offline.embed.recalibrate_batchnorm`), in eval mode;
* every ``--every`` epochs and at the end, in eval mode (BN statistics from training).

A recipe whose final accuracy is not clearly above its initial accuracy is broken. This
is a slow scientific check (minutes per method on CPU), not a unit test.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from sslwatch.metrics.probes import linear_probe
from sslwatch.offline.embed import extract_embeddings, recalibrate_batchnorm
from sslwatch.train.data import mnist1d_tensors
from sslwatch.train.loop import train
from sslwatch.train.methods import METHODS, SSLMethod
from sslwatch.train.recipes import mnist1d_config

__all__ = ["ValidationRow", "main", "validate"]


@dataclass
class ValidationRow:
    """Linear-probe accuracies of one method: ``probe[epoch]`` (epoch 0 = init)."""

    method: str
    epochs: int
    probe: dict[int, float] = field(default_factory=dict)
    final_loss: float = float("nan")
    seconds: float = 0.0

    @property
    def gain(self) -> float:
        """Final minus initial accuracy."""
        return self.probe[self.epochs] - self.probe[0]


def validate(
    methods: Sequence[str] = tuple(METHODS),
    *,
    epochs: int = 30,
    every: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> list[ValidationRow]:
    """Train each method's MNIST-1D recipe and probe its backbone at init and at the end."""
    x_train, y_train, x_test, y_test = mnist1d_tensors()

    def probe(backbone: nn.Module) -> float:
        z_train = extract_embeddings(backbone, x_train, batch_size=1024, progress=False)
        z_test = extract_embeddings(backbone, x_test, batch_size=1024, progress=False)
        return linear_probe(z_train["output"], y_train, z_test["output"], y_test, seed=seed)

    rows = []
    for name in methods:
        row = ValidationRow(method=name, epochs=epochs)

        def score(epoch: int, method: SSLMethod, path: object, row: ValidationRow = row) -> None:
            if epoch == 0:
                # Statistics as the projector's input sees them in training.
                net = copy.deepcopy(nn.Sequential(method.backbone, method.projector))
                recalibrate_batchnorm(net, x_train, batches=10, batch_size=256, seed=seed)
                row.probe[0] = probe(net[0])
            elif epoch == epochs or (every > 0 and epoch % every == 0):
                row.probe[epoch] = probe(method.backbone)

        start = time.perf_counter()
        config = mnist1d_config(name, epochs=epochs, seed=seed, progress=progress)
        result = train(config, x_train, callbacks=[score])
        row.seconds = time.perf_counter() - start
        row.final_loss = result.losses[-1]
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point; prints a table of linear-probe accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--every", type=int, default=0, help="also probe every N epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    x_train, y_train, x_test, y_test = mnist1d_tensors()
    raw = linear_probe(x_train, y_train, x_test, y_test, seed=args.seed)
    print(f"linear probe on the raw signal: {raw:.3f}")
    print(f"{'method':<9} {'LP init':>8} {'LP end':>7} {'gain':>6} {'loss':>8} {'s':>6}  curve")
    for row in validate(
        args.methods, epochs=args.epochs, every=args.every, seed=args.seed, progress=args.progress
    ):
        curve = " ".join(f"{e}:{a:.3f}" for e, a in sorted(row.probe.items()))
        print(
            f"{row.method:<9} {row.probe[0]:>8.3f} {row.probe[row.epochs]:>7.3f} "
            f"{row.gain:>+6.3f} {row.final_loss:>8.4f} {row.seconds:>6.0f}  {curve}",
            flush=True,
        )


if __name__ == "__main__":
    main()
