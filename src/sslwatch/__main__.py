"""``python -m sslwatch`` runs the command line."""

from sslwatch.cli import app

app()
