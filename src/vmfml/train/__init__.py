"""Training: the dataclass config, the training loop, checkpoints."""
