"""Lazy images are read one tile row at a time, and results can be written into a given array."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_unetseg.core import Segmenter
from napari_unetseg.core import predict as predict_module
from napari_unetseg.core.errors import InputError
from napari_unetseg.core.normalization import MAX_SAMPLES
from napari_unetseg.core.synthetic import nuclei_scene

TILING = {"tile_size": 64, "overlap": 8, "batch_size": 3}


class RecordingArray:
    """An array that only answers ``__getitem__``, and records the part each read covers."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.reads: list[tuple[int, ...]] = []

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        part = np.array(self.data[key])  # a copy, as a file would give
        self.reads.append(part.shape)
        return part


@pytest.fixture
def read_by_rows(monkeypatch):
    """Every lazy plane is read by tile rows, however small (the default spares small planes)."""
    monkeypatch.setattr(predict_module, "LAZY_PLANE_BYTES", 0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return nuclei_scene((200, 300), seed=5).image


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.create(device="cpu", seed=1)


def _without_probe(reads: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The reads without the bfloat16 probe's one tile, which may come first
    (``precision="auto"`` proves bfloat16 on the first tile of new weights)."""
    probe = (TILING["tile_size"], TILING["tile_size"])
    if len(reads) > 1 and probe in (tuple(reads[0][:2]), tuple(reads[0][-2:])):
        return reads[1:]
    return reads


def _tile_row_reads(reads: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The reads after the normalisation's bounded sample (and the probe's tile)."""
    reads = _without_probe(reads)
    assert np.prod(reads[0]) <= MAX_SAMPLES
    return reads[1:]


def test_lazy_reads_are_tile_rows_and_results_equal_numpy(segmenter, image, read_by_rows):
    lazy = RecordingArray(image)
    labels = segmenter.segment(lazy, **TILING)
    assert np.array_equal(labels, segmenter.segment(image, **TILING))
    rows = _tile_row_reads(lazy.reads)
    assert len(rows) == 4  # 200 rows in tiles of 64: 4 tile rows, each read once
    assert all(shape == (64, 300) for shape in rows)

    lazy.reads.clear()
    probabilities = segmenter.predict_proba(lazy, **TILING)
    assert np.array_equal(probabilities, segmenter.predict_proba(image, **TILING))
    assert all(shape == (64, 300) for shape in _tile_row_reads(lazy.reads))


def test_stack_with_channels_last_is_read_by_tile_rows(image, read_by_rows):
    seg = Segmenter.create(in_channels=3, device="cpu", seed=2)
    rgb = np.stack([image, image[::-1], image[:, ::-1]], axis=-1)
    stack = np.stack([rgb, rgb[::-1]])  # (Z, Y, X, C)
    lazy = RecordingArray(stack)
    labels = seg.segment(lazy, axes="ZYXC", **TILING)
    assert np.array_equal(labels, seg.segment(stack, axes="ZYXC", **TILING))
    assert all(shape == (64, 300, 3) for shape in _tile_row_reads(lazy.reads))


def test_small_lazy_planes_are_read_whole_by_default(segmenter, image):
    lazy = RecordingArray(image)
    segmenter.segment(lazy, **TILING)
    assert _without_probe(lazy.reads)[1:] == [(200, 300)]


def test_dask_input_and_zarr_output_equal_the_in_memory_result(segmenter, image, read_by_rows):
    expected = segmenter.segment(image, **TILING)
    lazy = da.from_array(image, chunks=(50, 100))
    out = zarr.zeros(image.shape, chunks=(64, 64), dtype=expected.dtype)
    returned = segmenter.segment(lazy, out=out, **TILING)
    assert returned is out
    assert np.array_equal(out[:], expected)

    probabilities = zarr.zeros((2, *image.shape), chunks=(1, 64, 64), dtype="float32")
    segmenter.predict_proba(zarr.array(image, chunks=(64, 64)), out=probabilities, **TILING)
    assert np.array_equal(probabilities[:], segmenter.predict_proba(image, **TILING))


def test_numpy_out_is_filled_and_returned(segmenter, image):
    out = np.full(image.shape, 7, np.uint16)
    assert segmenter.segment(image, out=out, **TILING) is out
    assert np.array_equal(out, segmenter.segment(image, **TILING))


def test_object_model_writes_ids_into_out(image, read_by_rows):
    seg = Segmenter.create(task="objects", device="cpu", seed=3)
    stack = np.stack([image, image])
    expected = seg.segment(stack, **TILING)
    out = zarr.zeros(stack.shape, chunks=(1, 64, 64), dtype="uint32")
    seg.segment(RecordingArray(stack), out=out, **TILING)
    assert np.array_equal(out[:], expected)


@pytest.mark.parametrize(
    ("make_out", "message"),
    [
        (lambda image: np.zeros((10, 10), np.uint8), "must have shape"),
        (lambda image: np.zeros(image.shape, np.float32), "integer dtype"),
        (lambda image: image, "the image itself"),
        (lambda image: image.view(np.uint32), "the image itself"),
    ],
)
def test_unusable_out_is_refused(segmenter, make_out, message):
    image = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 251).astype(np.uint32)
    with pytest.raises(InputError, match=message):
        segmenter.segment(image, out=make_out(image), **TILING)


def test_probabilities_out_must_be_float(segmenter, image):
    with pytest.raises(InputError, match="float dtype"):
        segmenter.predict_proba(image, out=np.zeros((2, *image.shape), np.uint8), **TILING)


def test_nan_in_a_lazy_tile_row_is_an_input_error(segmenter, image, read_by_rows, monkeypatch):
    from napari_unetseg.core import normalization

    monkeypatch.setattr(normalization, "MAX_SAMPLES", 1000)  # a sample of every 8th row and column
    broken = image.astype(np.float32)
    broken[150, 21] = np.nan
    lazy = RecordingArray(broken)
    with pytest.raises(InputError, match="NaN"):
        segmenter.segment(lazy, **TILING)
    assert lazy.reads[0] == (25, 38)  # the sample, which misses the NaN
    assert lazy.reads[-1] == (64, 300)  # the tile row that holds it
