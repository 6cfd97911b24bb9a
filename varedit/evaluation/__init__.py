"""Quality measurements on the synthetic domain (classifier, Fréchet distance, inpainting baselines)."""
