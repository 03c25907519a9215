"""Fitting a classifier: pure jitted train / predict steps over the device mesh, optimizers,
transfer-learning schedules. Used by the folds, the synthesis judge and the stage-2 heads."""
