"""TuneVLSeg: benchmark prompt tuning for vision-language segmentation models."""

__version__ = "0.1.0"
