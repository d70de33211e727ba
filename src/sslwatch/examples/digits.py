"""Write scikit-learn's 1797 real 8x8 digits as an embedding file for ``sslwatch score``.

The raw pixels (64-d) serve as a stand-in embedding with real class structure:
``python -m sslwatch.examples.digits OUT.npz`` writes arrays ``embeddings`` (float32)
and ``labels``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def write_digits(path: str | Path) -> Path:
    """Save the digits as ``embeddings`` (1797, 64) float32 and ``labels`` to ``path``."""
    data = load_digits()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, embeddings=data.data.astype(np.float32), labels=data.target.astype(np.int64))
    return out


if __name__ == "__main__":
    target = write_digits(sys.argv[1] if len(sys.argv) > 1 else "digits.npz")
    print(f"wrote {target}")
