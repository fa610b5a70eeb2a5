"""The shared training engine: one loop for every family, written against the model interface."""
