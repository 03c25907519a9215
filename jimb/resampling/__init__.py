"""Re-sampling of feature matrices for imbalanced classes."""
