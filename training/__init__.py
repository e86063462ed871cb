"""Training: data sets, splits, caches and the training loop."""
