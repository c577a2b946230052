"""Tiled, blended inference over images of any size and layout, and probabilities to labels.

Memory is bounded by the tiles in flight plus one band of tile rows, not by the image:
planes of a stack are read one at a time, tiles are normalised as they are cut, and
finished rows of probabilities are handed on (written to the result, or turned into
labels) as soon as no later tile touches them. A lazy image (dask, zarr, anything with
``__getitem__``) whose planes are larger than :data:`LAZY_PLANE_BYTES` is read one tile
row at a time instead of a plane at a time, and the result can be written into an array
the caller gives (a zarr array on disk), so neither the image nor the result need fit in
memory. A numpy image is cut in place, as before: the lazy path adds nothing to it.

Tiles are planned in :mod:`.tiling`. Speed on CPU comes from the fused inference copy of the
network (:mod:`.inference_network`). On CUDA the same copy runs under autocast with pinned,
non-blocking transfers, and the next batch is queued before the previous one is stitched.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .allocator import in_a_job
from .config import ModelConfig, PredictConfig
from .errors import InputError
from .inference_network import cached_inference_network
from .layout import ImageLayout, PlaneView
from .normalization import Normalizer, check_finite, fit_normalizer
from .objects import objects_from_probabilities
from .threads import ThreadTuner
from .tiling import PlaneTiling, plan_tiles
from .uncertainty import entropy_from_probabilities

# --------------------------------------------------------------------------- inference


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Eval mode inside; each model's training flag is put back after.

    Autograd is switched off around each forward pass instead, not here: this context spans
    the generator's ``yield``s, and grad mode belongs to the thread that resumes it.
    """
    flags = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(models, flags, strict=True):
            m.train(flag)


def logits_to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


@dataclass(frozen=True)
class PredictProgress:
    """Emitted after each batch of tiles."""

    tiles_done: int
    tiles_total: int
    plane: int
    n_planes: int

    @property
    def fraction(self) -> float:
        return self.tiles_done / max(1, self.tiles_total)


#: ``emit(y0, y1, probabilities)`` receives finished rows y0..y1 of a plane, (n_outputs, rows, X).
RowSink = Callable[[int, int, torch.Tensor], None]


class _RowBlender:
    """Adds weighted tiles into a band of rows and hands rows on once no tile can touch them."""

    def __init__(
        self,
        tiling: PlaneTiling,
        n_outputs: int,
        height: int,
        width: int,
        emit: RowSink,
        top: int = 0,
    ) -> None:
        self.tiling, self.height, self.width, self.emit = tiling, height, width, emit
        self.wy = [
            torch.from_numpy(tiling.y.normalized_weights(i)) for i in range(len(tiling.y.starts))
        ]
        self.wx = [
            torch.from_numpy(tiling.x.normalized_weights(j)) for j in range(len(tiling.x.starts))
        ]
        self.band = torch.zeros((n_outputs, 0, tiling.x.padded), dtype=torch.float32)
        self.top = top  # first row of the plane held in the band

    def add(self, i: int, j: int, probs: torch.Tensor) -> None:
        y0, x0 = self.tiling.y.starts[i] - self.top, self.tiling.x.starts[j]
        ty, tx = probs.shape[-2:]
        missing = y0 + ty - self.band.shape[1]
        if missing > 0:
            extra = self.band.new_zeros((self.band.shape[0], missing, self.band.shape[2]))
            self.band = torch.cat([self.band, extra], dim=1)
        weight = self.wy[i][:, None] * self.wx[j][None, :]
        self.band[:, y0 : y0 + ty, x0 : x0 + tx].addcmul_(probs, weight)

    def finish_rows_before(self, row: int) -> None:
        """Hand on rows above ``row`` (plane coordinates): no tile still to come reaches them."""
        count = min(row, self.tiling.y.padded) - self.top
        if count <= 0:
            return
        done, self.band = self.band[:, :count], self.band[:, count:].clone()
        y0, y1 = self.top, min(self.top + count, self.height)
        if y1 > y0:
            self.emit(y0, y1, done[:, : y1 - y0, : self.width])
        self.top += count


#: On CPU a forward pass of more than this many bytes of feature maps per channel runs
#: slower per pixel (they fall out of cache), and one of far fewer pays the per-call
#: overhead of every layer. Measured with the default U-Net (base width 16, 2 cores,
#: median of 6-10 rounds), in MPix/s computed: bfloat16 5.85 for two 544² tiles per pass,
#: 4.87 for one, 5.63 for four 256²; float32 2.72 for one 544² tile, 2.43 for two,
#: 3.03 for four 256².
CPU_BYTES_PER_FORWARD = 2 * 576 * 576 * 2


def tiles_per_forward(
    batch_size: int, tile_pixels: int, device: torch.device, dtype: torch.dtype = torch.bfloat16
) -> int:
    """Tiles per forward pass: ``batch_size``, capped on CPU so a pass stays cache-sized."""
    if device.type != "cpu":
        return batch_size
    itemsize = torch.empty((), dtype=dtype).element_size()
    return max(1, min(batch_size, CPU_BYTES_PER_FORWARD // (tile_pixels * itemsize)))


def _to_host(probs: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Start copying probabilities to the host; on CUDA the copy is asynchronous into pinned memory."""
    if probs.device.type != "cuda":
        return probs.cpu(), None
    host = torch.empty(probs.shape, dtype=probs.dtype, pin_memory=True)
    host.copy_(probs, non_blocking=True)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(probs.device))
    return host, event


#: A lazy (not numpy) image whose planes hold more than this many bytes is read one tile
#: row at a time; a smaller plane is read whole, in one call, which costs a dask array with
#: one chunk per plane (a common lazy stack) a single read instead of one per tile row.
LAZY_PLANE_BYTES = 64 << 20


class _TileRowReader:
    """Cuts tiles from a lazy plane, reading one tile row (every column) at a time.

    At most the tile rows of one batch are held: a batch spans at most two rows of tiles.
    """

    def __init__(self, plane: PlaneView, tiling: PlaneTiling, where: str) -> None:
        self.plane, self.tiling, self.where = plane, tiling, where
        self.rows: dict[int, np.ndarray] = {}

    def tile(self, i: int, j: int) -> np.ndarray:
        band = self.rows.get(i)
        if band is None:
            for finished in [k for k in self.rows if k < i]:
                del self.rows[finished]
            y0 = self.tiling.y.starts[i]
            band = self.plane.read(slice(y0, y0 + self.tiling.y.tile), slice(None))
            check_finite(band, self.where)
            self.rows[i] = band
        x0 = self.tiling.x.starts[j]
        return band[:, :, x0 : x0 + self.tiling.x.tile]


def _rows_only(emit: RowSink, first: int, end: int) -> RowSink:
    """``emit`` for rows ``first`` to ``end`` only."""

    def clipped(y0: int, y1: int, values: torch.Tensor) -> None:
        a, b = max(y0, first), min(y1, end)
        if b > a:
            emit(a, b, values[:, a - y0 : b - y0])

    return clipped


def predict_plane_iter(
    network: nn.Module,
    plane: np.ndarray | PlaneView,
    normalizer: Normalizer,
    n_outputs: int,
    config: PredictConfig,
    multiple: int,
    device: torch.device,
    dtype: torch.dtype,
    emit: RowSink,
    where: str = "the image",
    rows: tuple[int, int] | None = None,
) -> Generator[int, None, None]:
    """Predict one raw (C, Y, X) plane, handing finished rows to ``emit``; yields tiles done.

    Tiles are normalised as they are cut, so no float copy of the whole plane is made
    (except for a plane smaller than one tile, which is padded by reflection). A
    :class:`PlaneView` is read one tile row at a time, each row checked for NaN (named
    by ``where``); a numpy plane is cut in place and is checked by the caller.

    ``rows=(first, end)`` computes only those rows of the plane, with exactly the values
    the whole plane's prediction gives them: the same tiles, in the same batches (a batch
    that reaches into the rows is run whole), blended in the same order. Workers that
    share a plane's rows between them together give the single-process result.
    """
    channels, height, width = plane.shape
    tiling = plan_tiles((height, width), config, multiple)
    pad_y, pad_x = tiling.y.padded - height, tiling.x.padded - width
    if isinstance(plane, PlaneView) and (pad_y or pad_x):
        plane = plane.read(slice(None), slice(None))  # smaller than a tile on one side
        check_finite(plane, where)
    if pad_y or pad_x:
        assert isinstance(plane, np.ndarray)
        plane = np.pad(normalizer(plane), ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect")
        normalize: Callable[[np.ndarray], np.ndarray] = np.asarray
    else:
        normalize = normalizer
    ty, tx = tiling.y.tile, tiling.x.tile
    cut: Callable[[int, int], np.ndarray]
    if isinstance(plane, PlaneView):
        cut = _TileRowReader(plane, tiling, where).tile
    else:
        source = plane

        def cut(i: int, j: int) -> np.ndarray:
            y0, x0 = tiling.y.starts[i], tiling.x.starts[j]
            return source[:, y0 : y0 + ty, x0 : x0 + tx]

    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    use_autocast = dtype != torch.float32
    cuda = device.type == "cuda"
    positions = list(tiling.tiles())
    per_forward = tiles_per_forward(config.batch_size, ty * tx, device, dtype)
    batches = [positions[k : k + per_forward] for k in range(0, len(positions), per_forward)]
    wanted: set[int] | None = None  # tile rows to blend; None: all
    top = 0
    if rows is not None:
        first, end = rows
        wanted = {i for i, y0 in enumerate(tiling.y.starts) if y0 < end and y0 + ty > first}
        batches = [batch for batch in batches if any(i in wanted for i, _ in batch)]
        top = tiling.y.starts[min(wanted)]
        emit = _rows_only(emit, first, end)
    blender = _RowBlender(tiling, n_outputs, height, width, emit, top)

    def launch(batch: list[tuple[int, int]]) -> tuple[torch.Tensor, Any]:
        inputs = torch.empty((len(batch), channels, ty, tx), dtype=torch.float32, pin_memory=cuda)
        staging = inputs.numpy()
        for k, (i, j) in enumerate(batch):
            staging[k] = normalize(cut(i, j))
        on_device = inputs.to(device, non_blocking=cuda).contiguous(memory_format=memory_format)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=use_autocast):
            logits = network(on_device)
            return _to_host(logits_to_probabilities(logits))

    def stitch(batch: list[tuple[int, int]], probs: torch.Tensor, event: Any) -> None:
        if event is not None:
            event.synchronize()
        for k, (i, j) in enumerate(batch):
            if wanted is None or i in wanted:
                blender.add(i, j, probs[k])
        following = positions.index(batch[-1]) + 1
        if following < len(positions):
            blender.finish_rows_before(tiling.y.starts[positions[following][0]])
        else:
            blender.finish_rows_before(tiling.y.padded)

    done = 0
    pending: tuple[list[tuple[int, int]], torch.Tensor, Any] | None = None
    for batch in batches:
        # Queue this batch before stitching the last one: on a GPU the two overlap.
        result = (batch, *launch(batch))
        if pending is not None:
            stitch(*pending)
            done += len(pending[0])
            yield done
        pending = result
    if pending is not None:
        stitch(*pending)
        done += len(pending[0])
        yield done


# --------------------------------------------------------------------------- labels


def smallest_uint_dtype(max_value: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise OverflowError(max_value)  # pragma: no cover


def classes_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Class index per pixel: argmax, or sigmoid > 0.5 for a single output."""
    classes: np.ndarray
    if probs.shape[0] == 1:
        classes = (probs[0] > 0.5).astype(np.uint8)
    else:
        classes = np.argmax(probs, axis=0).astype(smallest_uint_dtype(probs.shape[0] - 1))
    return classes


@dataclass
class Prediction:
    """What :func:`predict_iter` returns; either part may be None when it was not asked for.

    Each part is a numpy array, or the array the caller gave to be filled (e.g. zarr).
    """

    probabilities: np.ndarray | Any | None
    labels: np.ndarray | Any | None
    #: Normalised entropy in [0, 1], the image's spatial shape (see ``core.uncertainty``).
    uncertainty: np.ndarray | Any | None = None


def _is_lazy(image: Any, layout: ImageLayout) -> bool:
    """Read by tile rows: not numpy, and a plane larger than :data:`LAZY_PLANE_BYTES`."""
    if isinstance(image, np.ndarray):
        return False
    itemsize = np.dtype(getattr(image, "dtype", np.float32)).itemsize
    plane_bytes = layout.n_channels * layout.plane_shape[0] * layout.plane_shape[1] * itemsize
    return plane_bytes > LAZY_PLANE_BYTES


def check_out(out: Any, image: Any, shape: tuple[int, ...], kinds: str, what: str) -> None:
    """Check that ``out`` can take a result of ``shape`` whose dtype kind is one of ``kinds``."""
    got = tuple(int(n) for n in getattr(out, "shape", ()))
    if got != shape:
        raise InputError(
            f"out= for the {what} must have shape {shape}; the array given has shape {got or None}."
        )
    dtype = np.dtype(getattr(out, "dtype", np.float32))
    if dtype.kind not in kinds:
        wanted = "a float" if kinds == "f" else "an integer"
        raise InputError(f"out= for the {what} must have {wanted} dtype, not {dtype}.")
    if out is image or (
        isinstance(out, np.ndarray)
        and isinstance(image, np.ndarray)
        and np.may_share_memory(out, image)
    ):
        raise InputError(f"out= for the {what} is the image itself; give a separate array.")


def check_plane_size(layout: ImageLayout, model_config: ModelConfig) -> None:
    """Refuse planes smaller than the model's minimum side (2-D and 3-D prediction)."""
    if min(layout.plane_shape) < model_config.min_size:
        raise InputError(
            f"the image planes are {layout.plane_shape[0]}x{layout.plane_shape[1]} px; this model "
            f"(depth {model_config.depth}) needs at least {model_config.min_size} px on each side."
        )


@in_a_job
def predict_iter(
    model: nn.Module,
    model_config: ModelConfig,
    image: Any,
    layout: ImageLayout,
    config: PredictConfig,
    device: torch.device,
    dtype: torch.dtype,
    want_probabilities: bool = True,
    want_labels: bool = True,
    planes: list[tuple[int, ...]] | None = None,
    out_probabilities: Any = None,
    out_labels: Any = None,
    normalizer: Normalizer | None = None,
    rows: tuple[int, int] | None = None,
    network: nn.Module | None = None,
    want_uncertainty: bool = False,
    out_uncertainty: Any = None,
) -> Generator[PredictProgress, None, Prediction]:
    """Predict every plane (or the given stack indices); yields progress, returns the result.

    Probabilities have shape (n_outputs, *stack, Y, X); labels have the image's shape
    without channels. Object models return instance ids, unique across the whole stack.
    ``out_probabilities`` and ``out_labels`` are arrays (numpy, zarr, ...) of those shapes
    to fill, tile row by tile row, instead of new numpy arrays; they are what is returned.
    An object model still holds one plane's probabilities in memory for the watershed.

    ``normalizer``: statistics fitted beforehand (by default, on this image). ``rows``:
    compute only these rows of each plane (see :func:`predict_plane_iter`), for a class
    model writing into ``out_labels`` / ``out_probabilities``; other rows are not written.

    ``want_uncertainty`` adds the normalised entropy of each pixel's probabilities, made in
    the same pass (into ``out_uncertainty`` when given).

    ``network`` is the inference copy to run (default: :func:`cached_inference_network`);
    ``model`` itself is never switched to eval mode when a copy runs, so a prediction does
    not disturb a training of the same model on another thread.
    """
    if model_config.spatial_dims == 3:
        raise InputError(
            "this is a 3-D model: it segments whole stacks through Segmenter.segment / "
            "predict_iter (split by rows across workers is for 2-D models only)."
        )
    check_plane_size(layout, model_config)
    indices = list(layout.plane_indices()) if planes is None else planes
    n_outputs = model_config.n_classes
    objects = model_config.task == "objects"
    if rows is not None and (objects or (out_labels is None and out_probabilities is None)):
        raise InputError(
            "rows= computes part of each plane: it needs a class model and an out= array."
        )
    if rows is not None and not 0 <= rows[0] < rows[1] <= layout.plane_shape[0]:
        raise InputError(f"rows={rows} is not a range of the plane's {layout.plane_shape[0]} rows.")
    if normalizer is None:
        normalizer = fit_normalizer(image, layout, model_config.normalization)
    tiling = plan_tiles(layout.plane_shape, config, model_config.min_size)
    total_tiles = tiling.n_tiles * len(indices)
    arrays = OutputArrays.make(
        image,
        layout,
        model_config,
        want=(want_probabilities, want_labels, want_uncertainty),
        given=(out_probabilities, out_labels, out_uncertainty),
    )
    outputs = _PlaneOutputs(arrays, layout, model_config)
    lazy = _is_lazy(image, layout)
    done_before = 0
    if network is None:
        network = cached_inference_network(model, device, dtype, config.channels_last)
    tuner = (
        ThreadTuner(config.threads, window=2, first_exploration=0.0)
        if device.type == "cpu"
        else None
    )
    with eval_mode(network), _restoring(tuner):
        for number, index in enumerate(indices):
            where = f"plane {index}" if index else "the image"
            raw: np.ndarray | PlaneView
            if lazy:
                raw = layout.plane_view(image, index)
            else:
                raw = layout.read_plane(image, index)
                check_finite(raw, where)
            emit, plane_probs = outputs.plane_sink(index)
            timer = _BatchTimer(tuner)
            for done in predict_plane_iter(
                network,
                raw,
                normalizer,
                n_outputs,
                config,
                model_config.min_size,
                device,
                dtype,
                emit,
                where,
                rows,
            ):
                timer.finished(done)
                yield PredictProgress(done_before + done, total_tiles, number, len(indices))
                timer.resume()
            done_before += tiling.n_tiles
            outputs.write_objects(index, plane_probs, config.min_object_size)
    return outputs.result()


@dataclass
class OutputArrays:
    """The arrays a prediction fills: the caller's out= arrays, or new ones made here."""

    probabilities: Any
    labels: Any
    uncertainty: Any
    labels_given: bool

    @classmethod
    def make(
        cls,
        image: Any,
        layout: ImageLayout,
        model_config: ModelConfig,
        want: tuple[bool, bool, bool],
        given: tuple[Any, Any, Any],
    ) -> OutputArrays:
        """``want`` and ``given``: (probabilities, labels, uncertainty)."""
        want_probabilities, want_labels, want_uncertainty = want
        out_probabilities, out_labels, out_uncertainty = given
        n_outputs = model_config.n_classes
        objects = model_config.task == "objects"
        probabilities: Any = None
        if out_probabilities is not None and want_probabilities:
            check_out(
                out_probabilities, image, (n_outputs, *layout.output_shape), "f", "probabilities"
            )
            probabilities = out_probabilities
        elif want_probabilities:
            probabilities = np.zeros((n_outputs, *layout.output_shape), np.float32)
        label_dtype = (
            np.dtype(np.uint32)
            if objects
            else classes_from_probabilities(np.zeros((n_outputs, 1, 1), np.float32)).dtype
        )
        labels: Any = None
        if out_labels is not None and want_labels:
            check_out(out_labels, image, layout.output_shape, "ui", "labels")
            if not objects and np.iinfo(out_labels.dtype).max < n_outputs - 1:
                raise InputError(
                    f"out= for the labels has dtype {out_labels.dtype}, too small for "
                    f"{n_outputs} classes; use {label_dtype}."
                )
            labels = out_labels
        elif want_labels:
            labels = np.zeros(layout.output_shape, label_dtype)
        uncertainty: Any = None
        if out_uncertainty is not None and want_uncertainty:
            check_out(out_uncertainty, image, layout.output_shape, "f", "uncertainty")
            uncertainty = out_uncertainty
        elif want_uncertainty:
            uncertainty = np.zeros(layout.output_shape, np.float32)
        return cls(probabilities, labels, uncertainty, labels is not None and labels is out_labels)

    def place_objects(self, where: tuple[Any, ...], ids: np.ndarray, next_id: int) -> int:
        """Write object ``ids`` at ``where``, numbered on from ``next_id``; the new next id."""
        last = next_id + int(ids.max())
        if self.labels_given and last > np.iinfo(self.labels.dtype).max:
            raise InputError(
                f"out= for the labels has dtype {self.labels.dtype}, too small for "
                f"{last} objects; use uint32."
            )
        self.labels[where] = np.where(ids > 0, ids + next_id, 0)
        return last

    def result(self, n_objects: int | None = None) -> Prediction:
        """The prediction; new object labels shrink to the smallest dtype for ``n_objects``."""
        labels = self.labels
        if labels is not None and n_objects is not None and not self.labels_given:
            labels = labels.astype(smallest_uint_dtype(n_objects), copy=False)
        return Prediction(self.probabilities, labels, self.uncertainty)


class _PlaneOutputs:
    """Writes a 2-D model's predictions into the output arrays, plane by plane."""

    def __init__(self, arrays: OutputArrays, layout: ImageLayout, model_config: ModelConfig):
        self.arrays = arrays
        self.n_outputs = model_config.n_classes
        self.plane_shape = layout.plane_shape
        self.objects = model_config.task == "objects"
        self.next_id = 0

    def plane_sink(self, index: tuple[Any, ...]) -> tuple[RowSink, np.ndarray | None]:
        """The row writer for one plane, and the plane's own probabilities when needed."""
        arrays = self.arrays
        # Object models need the whole plane's probabilities for the watershed.
        plane_probs = (
            np.zeros((self.n_outputs, *self.plane_shape), np.float32)
            if self.objects and arrays.labels is not None and arrays.probabilities is None
            else None
        )

        def emit(y0: int, y1: int, rows: torch.Tensor) -> None:
            values = rows.numpy()
            where = (*index, slice(y0, y1), slice(None))
            if arrays.probabilities is not None:
                arrays.probabilities[(slice(None), *where)] = values
            if plane_probs is not None:
                plane_probs[:, y0:y1] = values
            if arrays.labels is not None and not self.objects:
                arrays.labels[where] = classes_from_probabilities(values)
            if arrays.uncertainty is not None:
                arrays.uncertainty[where] = entropy_from_probabilities(values)

        return emit, plane_probs

    def write_objects(
        self, index: tuple[Any, ...], plane_probs: np.ndarray | None, min_object_size: int
    ) -> None:
        """An object model's ids for one plane, numbered on from the planes before."""
        if self.arrays.labels is None or not self.objects:
            return
        source = plane_probs
        if source is None:
            source = np.asarray(self.arrays.probabilities[(slice(None), *index)])
        ids = objects_from_probabilities(source, min_object_size)
        self.next_id = self.arrays.place_objects(
            (*index, slice(None), slice(None)), ids, self.next_id
        )

    def result(self) -> Prediction:
        return self.arrays.result(self.next_id if self.objects else None)


class _BatchTimer:
    """Times each batch of tiles for the thread tuner, leaving out the caller's own time."""

    def __init__(self, tuner: ThreadTuner | None) -> None:
        self.tuner = tuner
        self.tiles_done = 0
        self.resume()

    def resume(self) -> None:
        if self.tuner is not None:
            self.tuner.before_step()
        self.began = time.perf_counter()

    def finished(self, tiles_done: int) -> None:
        if self.tuner is not None:
            tiles = max(1, tiles_done - self.tiles_done)
            self.tuner.after_step((time.perf_counter() - self.began) / tiles)
        self.tiles_done = tiles_done


@contextlib.contextmanager
def _restoring(tuner: ThreadTuner | None) -> Iterator[None]:
    try:
        yield
    finally:
        if tuner is not None:
            tuner.restore()


def run_to_end(
    events: Generator[PredictProgress, None, Prediction],
    on_progress: Callable[[PredictProgress], object] | None = None,
) -> Prediction:
    """Run a prediction generator to the end in this thread and return its result.

    ``on_progress`` is called with each progress event on the way.
    """
    while True:
        try:
            progress = next(events)
        except StopIteration as finished:
            result: Prediction = finished.value
            return result
        if on_progress is not None:
            on_progress(progress)
