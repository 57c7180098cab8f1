"""Vision-language segmentation models wrapped with prompt hooks."""
