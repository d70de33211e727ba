"""Small runnable examples that make real embedding sets on the spot (no download)."""
