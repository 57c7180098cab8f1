"""Training: loss, metrics, the epoch loop, checkpoints of trainable parameters."""
