"""Evaluation: uSDR (metrics), BSSEval v4 by museval or the fast implementation (bss, bsseval),
oracle masks (oracle), per-track scores and results.json (report), comparison tables and plots (compare).
"""
