"""Separation models and the registry that builds them from preset names."""
