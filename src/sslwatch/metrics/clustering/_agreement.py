"""Agreement between two clusterings of the same samples (AMI, ARI, NMI)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sslwatch.metrics._validation import as_labels, to_numpy

_AGREEMENT = ("ami", "ari", "nmi")


def cluster_agreement(labels_a: Any, labels_b: Any, *, method: str = "ami") -> float:
    """Agreement between two clusterings of the same samples (scikit-learn's scores).

    ``"ami"``: adjusted mutual information with arithmetic normalisation,
    ``(MI - E[MI]) / (mean(H(A), H(B)) - E[MI])`` (Vinh, Epps & Bailey 2010), the
    agreement used by Xu, Lowe & Trappenberg (2024, arXiv 2409.06612); ``"ari"``:
    adjusted Rand index (Hubert & Arabie 1985); ``"nmi"``: normalised mutual information
    ``MI / mean(H(A), H(B))``. All three are 1 for identical partitions (up to renaming);
    AMI and ARI are about 0 for independent ones. Values are scikit-learn's
    ``adjusted_mutual_info_score(average_method="arithmetic")``,
    ``adjusted_rand_score`` and ``normalized_mutual_info_score``.

    Args:
        labels_a: (N,) labels of the first clustering (any hashable values).
        labels_b: (N,) labels of the second clustering.
        method: ``"ami"``, ``"ari"`` or ``"nmi"``.

    Raises:
        ValueError: on an unknown method, non 1-D or empty labels, or different lengths.
    """
    from sklearn.metrics import (
        adjusted_mutual_info_score,
        adjusted_rand_score,
        normalized_mutual_info_score,
    )

    if method not in _AGREEMENT:
        raise ValueError(f"method must be one of {_AGREEMENT}; got {method!r}.")
    a = _label_vector(labels_a, "labels_a")
    b = _label_vector(labels_b, "labels_b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"labels_a has length {a.shape[0]} but labels_b has length {b.shape[0]}; both "
            "clusterings must label the same samples."
        )
    ca = as_labels(a, a.shape[0], name="labels_a")
    cb = as_labels(b, b.shape[0], name="labels_b")
    if method == "ami":
        return float(adjusted_mutual_info_score(ca, cb, average_method="arithmetic"))
    if method == "ari":
        return float(adjusted_rand_score(ca, cb))
    return float(normalized_mutual_info_score(ca, cb, average_method="arithmetic"))


def _label_vector(labels: Any, name: str) -> np.ndarray:
    arr = to_numpy(labels) if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one label per sample; got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass one label per sample.")
    return arr
