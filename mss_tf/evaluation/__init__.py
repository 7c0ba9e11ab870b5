"""Metrics (uSDR, museval cSDR), aggregation and reports."""
