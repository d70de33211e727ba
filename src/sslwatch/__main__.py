"""``python -m sslwatch`` runs the command line (also as ``torchrun -m sslwatch ...``)."""

from sslwatch.cli import app

if __name__ == "__main__":
    app(prog_name="sslwatch")
