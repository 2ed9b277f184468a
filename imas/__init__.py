"""iMAS: instance-specific and model-adaptive supervision for semi-supervised semantic segmentation."""

__version__ = "0.1.0"
