"""The machine state every benchmark prints first: load, CPUs and the OpenMP wait policy.

Timings on a shared machine are only comparable side by side; this line says how busy
the machine was while they were taken.
"""

from __future__ import annotations

import os


def machine_line() -> str:
    """``load average ... on N CPUs, OMP_WAIT_POLICY=...`` with the advice for shared hosts."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    wait = os.environ.get("OMP_WAIT_POLICY", "unset")
    return (
        f"load average {load} on {os.cpu_count()} CPUs, OMP_WAIT_POLICY={wait} (on a shared "
        "machine run with OMP_WAIT_POLICY=PASSIVE: spinning OpenMP threads stall both sides)"
    )
