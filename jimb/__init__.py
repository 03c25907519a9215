"""jimb: honest, fast classification on imbalanced data with JAX/Flax."""

__version__ = "0.1.0"
