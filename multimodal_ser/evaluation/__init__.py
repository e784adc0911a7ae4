"""Evaluation on labelled data."""
