"""One large image split into strips of rows over workers gives the single-process labels."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_unetseg.core import Segmenter
from napari_unetseg.core import predict as predict_module
from napari_unetseg.core.batch import segment_large_image
from napari_unetseg.core.errors import InputError
from napari_unetseg.core.synthetic import nuclei_scene


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    Segmenter.create(device="cpu", seed=6).save(path)
    return path


@pytest.fixture
def stack_zarr(tmp_path):
    stack = np.stack([nuclei_scene((200, 300), seed=s).image for s in (1, 2)])
    path = tmp_path / "stack.zarr"
    zarr.open_array(str(path), mode="w", shape=stack.shape, chunks=(1, 64, 64), dtype=stack.dtype)[
        :
    ] = stack
    return path


def _single_process(model_file, path):
    image = zarr.open_array(str(path), mode="r")
    return Segmenter.load(model_file, device="cpu").segment(image, tile_size=64)


@pytest.mark.parametrize("strip_rows", [50, 64, 200])
def test_strips_in_this_process_equal_the_whole_image(model_file, stack_zarr, tmp_path, strip_rows):
    out = tmp_path / "labels.zarr"
    progress = []
    written = segment_large_image(
        model_file,
        stack_zarr,
        out,
        strip_rows=strip_rows,
        tile_size=64,
        device="cpu",  # the CPU's labels are exact; a GPU's vary in the last bit
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert written == out
    strips = 2 * -(-200 // strip_rows)
    assert progress == [(k, strips) for k in range(1, strips + 1)]
    labels = zarr.open_array(str(out), mode="r")[:]
    assert np.array_equal(labels, _single_process(model_file, stack_zarr))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr", "stack.zarr"]


def test_strips_read_lazily_equal_the_whole_image(model_file, stack_zarr, tmp_path, monkeypatch):
    monkeypatch.setattr(predict_module, "LAZY_PLANE_BYTES", 0)
    out = segment_large_image(
        model_file, stack_zarr, tmp_path / "o.zarr", strip_rows=70, tile_size=64, device="cpu"
    )
    assert np.array_equal(zarr.open_array(str(out))[:], _single_process(model_file, stack_zarr))


def test_strips_over_two_workers_equal_the_whole_image(model_file, stack_zarr, tmp_path):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        out = segment_large_image(
            model_file,
            stack_zarr,
            tmp_path / "o.zarr",
            client,
            strip_rows=50,
            tile_size=64,
            device="cpu",
        )
    assert np.array_equal(zarr.open_array(str(out))[:], _single_process(model_file, stack_zarr))


def test_object_models_are_refused(tmp_path, stack_zarr):
    model = tmp_path / "objects.safetensors"
    Segmenter.create(task="objects", device="cpu").save(model)
    with pytest.raises(InputError, match="object ids would not agree"):
        segment_large_image(model, stack_zarr, tmp_path / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()


def test_output_checks(model_file, stack_zarr, tmp_path):
    with pytest.raises(InputError, match="name it"):
        segment_large_image(model_file, stack_zarr, tmp_path / "o.tif")
    with pytest.raises(InputError, match="the image itself"):
        segment_large_image(model_file, stack_zarr, stack_zarr)
    with pytest.raises(InputError, match="strip_rows must be at least 1, not 0"):
        segment_large_image(model_file, stack_zarr, tmp_path / "o.zarr", strip_rows=0)
    with pytest.raises(InputError, match="threads_per_worker must be at least 1, not 0"):
        segment_large_image(model_file, stack_zarr, tmp_path / "o.zarr", threads_per_worker=0)
    (tmp_path / "o.zarr").mkdir()
    with pytest.raises(InputError, match="exists"):
        segment_large_image(model_file, stack_zarr, tmp_path / "o.zarr")


def test_rows_need_a_class_model_an_out_array_and_a_range(model_file):
    seg = Segmenter.load(model_file, device="cpu")
    image = nuclei_scene((64, 64), seed=1).image
    events = seg.predict_iter(image, labels=True, probabilities=False)
    assert events is not None
    from napari_unetseg.core.layout import resolve_layout
    from napari_unetseg.core.predict import predict_iter, run_to_end

    layout = resolve_layout(image, 1)
    config = seg._predict_config(None, {})

    def run(**kwargs):
        return run_to_end(
            predict_iter(
                seg.model,
                seg.config,
                image,
                layout,
                config,
                seg.device,
                predict_module.torch.float32,
                want_probabilities=False,
                **kwargs,
            )
        )

    with pytest.raises(InputError, match="out= array"):
        run(rows=(0, 10))
    with pytest.raises(InputError, match="not a range"):
        run(rows=(10, 70), out_labels=np.zeros((64, 64), np.uint8))


@pytest.mark.parametrize("strip_rows", [37, 64])
def test_rows_give_exactly_the_whole_plane_probabilities(model_file, strip_rows):
    from napari_unetseg.core.layout import resolve_layout
    from napari_unetseg.core.predict import predict_iter, run_to_end

    seg = Segmenter.load(model_file, device="cpu")
    image = nuclei_scene((200, 300), seed=3).image
    config = seg._predict_config(None, {"tile_size": 64})
    expected = seg.predict_proba(image, config=config)
    layout = resolve_layout(image, 1)
    out = np.full(expected.shape, -1, np.float32)
    from napari_unetseg.core.devices import inference_dtype

    dtype = inference_dtype(seg.device, config.precision)
    for top in range(0, 200, strip_rows):
        run_to_end(
            predict_iter(
                seg.model,
                seg.config,
                image,
                layout,
                config,
                seg.device,
                dtype,
                want_labels=False,
                out_probabilities=out,
                rows=(top, min(top + strip_rows, 200)),
            )
        )
    assert np.array_equal(out, expected)
