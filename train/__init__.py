"""Training recipes: one per stage, on the shared Accelerate loop in `train.loop`."""
