"""Reading image layers and writing result layers; no Qt widgets, no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels


def image_data(layer: Image) -> Any:
    """The array to compute on: the full-resolution level of a multiscale layer."""
    return layer.data[0] if layer.multiscale else layer.data


def image_axes(layer: Image) -> str | None:
    """Axes to pass to the core: named for RGB(A) layers, guessed by the core otherwise."""
    if not layer.rgb:
        return None
    n_stack = image_data(layer).ndim - 3
    return "TZ"[2 - n_stack :] + "YXC" if n_stack <= 2 else None


def image_channels(layer: Image) -> int:
    """Input channels a new model needs for this layer: 3 or 4 for RGB(A), else 1."""
    return int(image_data(layer).shape[-1]) if layer.rgb else 1


def spatial_shape(layer: Image) -> tuple[int, ...]:
    """Shape of a labels array that fits this image layer (channels of RGB dropped)."""
    shape = tuple(int(n) for n in image_data(layer).shape)
    return shape[:-1] if layer.rgb else shape


def find_layer(viewer: napari.Viewer, name: str) -> Any:
    """The layer called ``name``, or None."""
    return next((layer for layer in viewer.layers if layer.name == name), None)


def result_name(layer: Image) -> str:
    return f"{layer.name} segmentation"


def probability_name(layer: Image) -> str:
    return f"{layer.name} probabilities"


def visible_stack_index(viewer: napari.Viewer, layer: Image, layout_axes: str) -> tuple[int, ...]:
    """The stack index (T/Z/S axes) of ``layer`` at the viewer's current slider position."""
    point = layer.world_to_data(viewer.dims.point[-layer.ndim :])
    shape = image_data(layer).shape
    index = []
    for dim, letter in enumerate(layout_axes):
        if letter in "TZS":
            index.append(int(np.clip(round(float(point[dim])), 0, shape[dim] - 1)))
    return tuple(index)


def _spatial_transform(layer: Image, ndim: int) -> dict[str, Any]:
    """Scale and translate of the image layer for a result with ``ndim`` dimensions."""
    if layer.ndim != ndim:
        return {}
    return {"scale": tuple(layer.scale), "translate": tuple(layer.translate)}


def painting_for(viewer: napari.Viewer, image: Image) -> Labels | None:
    """The Labels layer painted for ``image``: the top one of its shape that is not a result."""
    from napari.layers import Labels

    shape = spatial_shape(image)
    for layer in reversed(list(viewer.layers)):
        if (
            isinstance(layer, Labels)
            and layer.data.shape == shape
            and not layer.name.endswith(" segmentation")
        ):
            return layer
    return None


#: Result colours when no painting says otherwise; none is napari's label-1 dark red.
RESULT_COLORS = ["#5bd5f8", "#f5d742", "#8de36b", "#f58af0", "#ff9d3c", "#9b8cff"]


def result_colormap(painting: Labels | None, mode: str, n_labels: int) -> Any:
    """Colours for a class result that keep the painting's meaning of each colour.

    In strokes (``mode`` "sparse") label k+1 paints class k, in dense masks label k does: the
    result's class k takes that label's colour, so "nuclei" looks the same in both layers and
    the painting's background colour never marks a class.
    """
    from napari.utils.colormaps import DirectLabelColormap

    shift = 1 if mode in ("sparse", "objects") else 0
    colors: dict[int | None, Any] = {0: np.zeros(4, np.float32), None: np.zeros(4, np.float32)}
    for k in range(1, max(2, n_labels)):
        if painting is not None:
            colors[k] = np.asarray(painting.colormap.map(np.array([k + shift]))[0], np.float32)
        else:
            colors[k] = RESULT_COLORS[(k - 1) % len(RESULT_COLORS)]
    return DirectLabelColormap(color_dict=colors)


def object_colormap() -> Any:
    """One colour per object, from a palette that does not start with the painting's red."""
    from napari.utils.colormaps import label_colormap

    return label_colormap(49, seed=0.1)


def _add_result_layer(viewer: napari.Viewer, image: Image, add: Any) -> Any:
    """Add a layer just above ``image`` (under the strokes), keeping the user's selection."""
    selected = viewer.layers.selection.active
    chosen = set(viewer.layers.selection)
    layer = add()
    above = _index_of(viewer, image.name)
    if above is not None:
        at = viewer.layers.index(layer)
        target = above + 1 if above < at else above
        if target != at:
            viewer.layers.move(at, target)
    if selected is not None and selected in viewer.layers:
        viewer.layers.selection.clear()
        viewer.layers.selection.update(chosen & set(viewer.layers))
        viewer.layers.selection.active = selected
    return layer


def _index_of(viewer: napari.Viewer, name: str) -> int | None:
    names = [layer.name for layer in viewer.layers]
    return names.index(name) if name in names else None


def put_labels(
    viewer: napari.Viewer,
    image: Image,
    labels: np.ndarray,
    planes: list[tuple[int, ...]] | None = None,
    colormap: Any = None,
) -> Labels:
    """Write ``labels`` into the layer "<image> segmentation", made on first use, updated in place.

    With ``planes`` only those stack planes are written and the others keep what they had.
    A new layer goes just above the image, under the painted strokes, and the layer the user
    had selected stays selected. ``colormap`` (if given) colours the layer.
    """
    from napari.layers import Labels

    name = result_name(image)
    layer = find_layer(viewer, name)
    if layer is not None and not isinstance(layer, Labels):
        viewer.layers.remove(layer)
        layer = None
    if planes is not None and layer is not None and layer.data.shape == labels.shape:
        if _write_in_place(layer, [(index, labels[index]) for index in planes]):
            return layer
        data = np.asarray(layer.data).astype(np.promote_types(layer.data.dtype, labels.dtype))
        for index in planes:
            data[index] = labels[index]
        layer.data = data
        return layer
    if layer is None:
        extra = {} if colormap is None else {"colormap": colormap}
        return _add_result_layer(
            viewer,
            image,
            lambda: viewer.add_labels(
                labels, name=name, **extra, **_spatial_transform(image, labels.ndim)
            ),
        )
    layer.data = labels
    if colormap is not None:
        layer.colormap = colormap
    return layer


def put_labels_plane(
    viewer: napari.Viewer,
    image: Image,
    index: tuple[int, ...],
    plane: np.ndarray,
    shape: tuple[int, ...],
    colormap: Any = None,
) -> Labels:
    """Write one plane into "<image> segmentation" of ``shape``; the other planes keep theirs.

    Writes in place when the layer already has that shape and dtype room, so a preview of
    one plane of a large stack costs one plane, not a stack-sized array.
    """
    from napari.layers import Labels

    layer = find_layer(viewer, result_name(image))
    fits = isinstance(layer, Labels) and layer.data.shape == shape
    if fits and _write_in_place(layer, [(index, plane)]):
        return layer
    full = np.zeros(shape, plane.dtype)
    full[index] = plane
    return put_labels(viewer, image, full, planes=[index], colormap=colormap)


def _write_in_place(layer: Labels, planes: list[tuple[tuple[int, ...], np.ndarray]]) -> bool:
    """Write each (stack index, plane) into the layer's array; False when a dtype does not fit."""
    data = np.asarray(layer.data)
    if not all(np.can_cast(values.dtype, data.dtype) for _, values in planes):
        return False
    for index, values in planes:
        data[index] = values
    layer.refresh()
    return True


def put_probabilities(
    viewer: napari.Viewer, image: Image, probabilities: np.ndarray, objects: bool
) -> None:
    """Foreground probabilities as an Image layer "<image> probabilities", updated in place.

    Two-class and object models give one map (foreground, or object interior); models with
    more classes give one map per class along a leading axis.
    """
    shown = probabilities[1] if objects or probabilities.shape[0] <= 2 else probabilities[1:]
    if probabilities.shape[0] == 1:
        shown = probabilities[0]
    name = probability_name(image)
    if name in viewer.layers and viewer.layers[name].data.shape == shown.shape:
        viewer.layers[name].data = shown
        return
    if name in viewer.layers:
        viewer.layers.remove(name)
    _add_result_layer(
        viewer,
        image,
        lambda: viewer.add_image(
            shown,
            name=name,
            colormap="magma",
            contrast_limits=(0.0, 1.0),
            blending="additive",
            visible=True,
            **_spatial_transform(image, shown.ndim),
        ),
    )
