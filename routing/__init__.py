"""Routing: per-item features and the performance-prediction router (pure functions)."""
