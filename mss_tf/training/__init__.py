"""The one shared custom training loop and its checkpoints."""
