"""NoGAN training: data, losses, stages, checkpoints and monitoring (not imported by inference)."""
