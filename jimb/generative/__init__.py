"""Generative models that synthesise minority-class samples inside a fold (GANs, CycleGAN)."""
