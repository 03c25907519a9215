"""Training: optimizers, the device mesh, and pure jitted train/eval steps."""
