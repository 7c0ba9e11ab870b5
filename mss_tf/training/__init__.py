"""Training: the one custom training loop (loop), strategies and precision (distribute), a run
end to end (run), per-target validation health (health), TensorBoard media (summaries) and the
hyperparameter search (tuning).
"""
