"""unigs-deploy: deploy UniGS (unified image generation and segmentation) models."""

__version__ = "0.1.0"
