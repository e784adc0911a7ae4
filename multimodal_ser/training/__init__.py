"""Reproducible training of the packaged heads from real data (``mser train ...``)."""
