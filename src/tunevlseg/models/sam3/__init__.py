"""SAM 3 (Meta, "segment anything with concepts") on ``transformers``' ``Sam3Model``."""

from .adapter import Sam3Adapter
from .loading import PUBLIC_ARCH, build_sam3, load_sam3, sam3_config

__all__ = ["PUBLIC_ARCH", "Sam3Adapter", "build_sam3", "load_sam3", "sam3_config"]
