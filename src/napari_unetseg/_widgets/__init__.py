"""napari widgets of napari-unetseg: one dock with Model, Train and Segment sections.

Importing this package loads neither torch nor Qt. From the napari console::

    from napari_unetseg._widgets import current_segmenter
    seg = current_segmenter(viewer)   # the model the dock widget trains and uses
"""

from ._session import current_segmenter, set_segmenter

__all__ = ["current_segmenter", "set_segmenter"]
