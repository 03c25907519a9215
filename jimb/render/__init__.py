"""Figures and self-contained HTML pages drawn from a run's saved results (no data, no models)."""
