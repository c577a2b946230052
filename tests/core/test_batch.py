"""Batches of files, in this process and on a dask.distributed LocalCluster of two workers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_unetseg.core import Segmenter
from napari_unetseg.core import batch as batch_module
from napari_unetseg.core.batch import is_label_file, plan_batch, read_image, segment_files
from napari_unetseg.core.errors import InputError, WeightsFileError
from napari_unetseg.core.synthetic import nuclei_scene

TILING = {"tile_size": 48}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "nuclei.safetensors"
    # random weights: no pixel sits on the border, so labels compare exactly
    Segmenter.create(device="cpu", seed=4, start="random").save(path)
    return path


def _image(seed: int) -> np.ndarray:
    return nuclei_scene((56 + 8 * seed, 72), seed=seed).image


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder with TIFF, .npy and zarr images, the user's painting and a text file."""
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", _image(0))
    tifffile.imwrite(folder / "a_labels.tif", np.ones((56, 72), np.uint8))  # the user's paint
    np.save(folder / "b.npy", _image(1))
    tifffile.imwrite(folder / "c.tiff", _image(2))
    zarr.open_array(
        str(folder / "d.zarr"), mode="w", shape=(80, 72), chunks=(32, 32), dtype="uint16"
    )[:] = _image(3)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _expected(model_file: Path, path: Path) -> np.ndarray:
    segmenter = Segmenter.load(model_file, device="cpu")
    return segmenter.segment(np.asarray(read_image(path)[...]), **TILING)


def test_label_names():
    for name in ("a_labels.tif", "a_label.npy", "a-mask.tif", "A_Masks.zarr", "a_unetseg.tif"):
        assert is_label_file(Path(name))
    for name in ("a.tif", "labels.tif", "a_labelsx.tif", "masked.npy"):
        assert not is_label_file(Path(name))


def test_folder_in_this_process_equals_segment_and_leaves_paint_alone(model_file, images, tmp_path):
    paint = (images / "a_labels.tif").read_bytes()
    seen = []
    out = tmp_path / "out"
    results = segment_files(
        model_file,
        [images],
        out,
        output_format="tif",
        tile_size=48,
        on_result=lambda r, done, total: seen.append((r.status, done, total)),
    )
    assert [(r.input.name, r.status) for r in results] == [
        ("a.tif", "done"),
        ("b.npy", "done"),
        ("c.tiff", "done"),
        ("d.zarr", "done"),
        ("a_labels.tif", "ignored"),
    ]
    assert seen == [("done", 1, 4), ("done", 2, 4), ("done", 3, 4), ("done", 4, 4)]
    for name in ("a.tif", "b.npy", "c.tiff", "d.zarr"):
        result = tifffile.imread(out / f"{Path(name).stem}_unetseg.tif")
        assert np.array_equal(result, _expected(model_file, images / name))
    assert (images / "a_labels.tif").read_bytes() == paint
    assert sorted(p.name for p in out.iterdir()) == [
        "a_unetseg.tif",
        "b_unetseg.tif",
        "c_unetseg.tif",
        "d_unetseg.tif",
    ]


@pytest.mark.parametrize("output_format", ["npy", "zarr"])
def test_npy_and_zarr_outputs(model_file, images, tmp_path, output_format):
    out = tmp_path / "out"
    segment_files(model_file, [images / "a.tif"], out, output_format=output_format, tile_size=48)
    written = out / f"a_unetseg.{output_format}"
    labels = np.load(written) if output_format == "npy" else zarr.open_array(str(written))[:]
    assert np.array_equal(labels, _expected(model_file, images / "a.tif"))
    assert [p.name for p in out.iterdir()] == [written.name]  # no temporary left behind


def test_results_beside_inputs_are_not_taken_as_images_on_a_rerun(model_file, images):
    first = segment_files(model_file, [str(images / "*")], None, tile_size=48)
    assert {r.input.name: r.status for r in first} == {
        "a.tif": "done",
        "b.npy": "done",
        "c.tiff": "done",
        "d.zarr": "done",
        "a_labels.tif": "ignored",
        "notes.txt": "ignored",
    }
    again = segment_files(model_file, [str(images / "*")], None, tile_size=48)
    assert {r.input.name for r in again if r.status == "ignored"} == {
        "a_labels.tif",
        "notes.txt",
        "a_unetseg.tif",
        "b_unetseg.tif",
        "c_unetseg.tif",
        "d_unetseg.tif",
    }
    assert all(r.status == "skipped" for r in again if r.status != "ignored")


def test_ome_zarr_group_is_read_at_its_full_resolution_level(model_file, tmp_path):
    group = zarr.open_group(str(tmp_path / "plate.ome.zarr"), mode="w")
    group.create_array("0", shape=(64, 72), dtype="uint16", chunks=(32, 32))[:] = _image(1)
    group.create_array("1", shape=(32, 36), dtype="uint16")
    results = segment_files(model_file, [tmp_path / "plate.ome.zarr"], tmp_path / "out")
    assert results[0].status == "done" and results[0].output.name == "plate.ome_unetseg.tif"
    expected = Segmenter.load(model_file, device="cpu").segment(_image(1))
    assert np.array_equal(tifffile.imread(results[0].output), expected)
    zarr.open_group(str(tmp_path / "nolevel.zarr"), mode="w").create_array(
        "x", shape=(4,), dtype="u1"
    )
    failed = segment_files(model_file, [tmp_path / "nolevel.zarr"], tmp_path / "out")
    assert failed[0].status == "failed" and "array '0'" in failed[0].message


def test_recursive_glob(model_file, images, tmp_path):
    (images / "deeper").mkdir()
    np.save(images / "deeper" / "e.npy", _image(4))
    jobs = plan_batch([str(images / "**" / "*.npy")], tmp_path / "out").jobs
    assert sorted(job.input.name for job in jobs) == ["b.npy", "e.npy"]


def test_a_bad_file_is_reported_and_the_rest_finish_and_a_rerun_resumes(
    model_file, images, tmp_path
):
    (images / "broken.tif").write_bytes(b"II*\x00 this is not a TIFF")
    out = tmp_path / "out"
    results = {r.input.name: r for r in segment_files(model_file, [images], out, tile_size=48)}
    assert results["broken.tif"].status == "failed"
    assert results["broken.tif"].message == "not a readable TIFF file (no image in it)."
    assert {n for n, r in results.items() if r.status == "done"} == {
        "a.tif",
        "b.npy",
        "c.tiff",
        "d.zarr",
    }
    assert not (out / "broken_unetseg.tif").exists()

    (out / "b_unetseg.tif").unlink()
    before = (out / "a_unetseg.tif").stat().st_mtime_ns
    rerun = {r.input.name: r.status for r in segment_files(model_file, [images], out)}
    assert rerun["b.npy"] == "done" and rerun["broken.tif"] == "failed"
    assert rerun["a.tif"] == rerun["c.tiff"] == rerun["d.zarr"] == "skipped"
    assert (out / "a_unetseg.tif").stat().st_mtime_ns == before

    overwritten = segment_files(model_file, [images / "a.tif"], out, overwrite=True, tile_size=48)
    assert overwritten[0].status == "done"


def test_wrong_channels_fail_that_file_only(model_file, images, tmp_path):
    tifffile.imwrite(images / "rgb.tif", np.zeros((40, 40, 3), np.uint8))
    results = {r.input.name: r for r in segment_files(model_file, [images], tmp_path / "o")}
    assert results["rgb.tif"].status == "failed" and "RGB" in results["rgb.tif"].message
    assert results["a.tif"].status == "done"


def test_name_clashes_are_errors_before_any_work(model_file, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "x.npy", _image(0))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="same name"):
        segment_files(model_file, [tmp_path / "a" / "x.npy", tmp_path / "b" / "x.npy"], out)
    assert not out.exists()
    tifffile.imwrite(tmp_path / "a" / "x.tif", _image(0))
    with pytest.raises(InputError, match="same name"):
        plan_batch([tmp_path / "a"], None)
    # Beside their inputs they do not clash.
    assert len(plan_batch([tmp_path / "a" / "x.npy", tmp_path / "b" / "x.npy"], None).jobs) == 2


@pytest.mark.parametrize(
    ("make_inputs", "message"),
    [
        (lambda d: [d / "missing.tif"], "no such file"),
        (lambda d: [str(d / "*.tiff")], "no file matches"),
        (lambda d: [d / "notes.txt"], "not a supported image file"),
        (lambda d: [d / "a_labels.tif"], "only label files"),
        (lambda d: [d / "empty"], "holds no TIFF"),
    ],
)
def test_input_problems_are_errors_before_any_work(tmp_path, make_inputs, message):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    tifffile.imwrite(tmp_path / "a_labels.tif", np.ones((8, 8), np.uint8))
    with pytest.raises(InputError, match=message):
        plan_batch(make_inputs(tmp_path), tmp_path / "out")


def test_output_folder_that_is_a_file_and_bad_weights(model_file, images, tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(InputError, match="output folder is a file"):
        segment_files(model_file, [images], tmp_path / "out")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    with pytest.raises(WeightsFileError):
        segment_files(bad, [images], tmp_path / "o")
    with pytest.raises(InputError, match=r"missing\.safetensors"):
        segment_files(tmp_path / "missing.safetensors", [images], tmp_path / "o")
    with pytest.raises(InputError, match="threads_per_worker must be at least 1, not 0"):
        segment_files(model_file, [images], tmp_path / "o", threads_per_worker=0)


# --------------------------------------------------------------------------- dask.distributed

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_two_workers_share_the_files_and_each_loads_the_model_once(
    model_file, tmp_path, client, monkeypatch
):
    folder = tmp_path / "many"
    folder.mkdir()
    for seed in range(6):
        tifffile.imwrite(folder / f"im{seed}.tif", _image(seed))
    (folder / "broken.npy").write_bytes(b"not numpy")
    loads = []
    real_load = Segmenter.load.__func__

    def counting_load(cls, path, device="auto", **kwargs):  # type: ignore[no-untyped-def]
        loads.append(batch_module._current_worker())
        return real_load(cls, path, device, **kwargs)

    monkeypatch.setattr(Segmenter, "load", classmethod(counting_load))
    batch_module._worker_models.clear()
    out = tmp_path / "out"
    progress = []
    results = segment_files(
        model_file,
        [str(folder / "*")],
        out,
        client=client,
        tile_size=48,
        on_result=lambda r, done, total: progress.append((done, total)),
    )
    by_name = {r.input.name: r for r in results}
    assert by_name["broken.npy"].status == "failed"
    done = [r for r in results if r.status == "done"]
    assert len(done) == 6
    workers = {r.worker for r in done}
    assert workers <= set(client.scheduler_info()["workers"]) and len(workers) == 2
    assert sorted(loads) == sorted(["", *workers])  # the check here, then once per worker
    assert progress == [(k, 7) for k in range(1, 8)]
    for seed in range(6):
        labels = tifffile.imread(out / f"im{seed}_unetseg.tif")
        assert np.array_equal(labels, _expected(model_file, folder / f"im{seed}.tif"))

    rerun = segment_files(model_file, [str(folder / "*")], out, client=client)
    assert sorted(r.status for r in rerun) == ["failed"] + ["skipped"] * 6
    batch_module._worker_models.clear()


@pytest.mark.slow
def test_process_workers_give_the_same_labels(model_file, images, tmp_path):
    from distributed import Client, LocalCluster

    out = tmp_path / "out"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        results = segment_files(
            model_file, [images], out, client=client, tile_size=48, threads_per_worker=2
        )
        threads = client.run(lambda: __import__("torch").get_num_threads())
    used = {r.worker for r in results if r.status == "done"}
    assert {threads[w] for w in used} == {2}  # worker processes start with one thread
    assert [r.status for r in results if r.status != "ignored"] == ["done"] * 4
    for name in ("a.tif", "b.npy", "c.tiff", "d.zarr"):
        labels = tifffile.imread(out / f"{Path(name).stem}_unetseg.tif")
        assert np.array_equal(labels, _expected(model_file, images / name))
    assert os.listdir(out) and not any(n.startswith(".") for n in os.listdir(out))
