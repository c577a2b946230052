"""Paint a few strokes, train a U-Net, get a napari Labels layer back."""

__version__ = "0.1.0"
