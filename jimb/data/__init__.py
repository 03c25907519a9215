"""Data: sources, imbalance builders, splits, samplers, preprocessing and grain pipelines."""
