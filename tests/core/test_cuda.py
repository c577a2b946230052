"""The CUDA path on a real GPU: training with mixed precision, tiled 2-D and 3-D prediction,
agreement with the CPU, bounded GPU memory and files that move between devices.

Skipped where no CUDA GPU is present (CI has none); run them on a GPU machine with
``pytest tests/core/test_cuda.py``. Device selection and the precision choice are also tested
without a GPU, with CUDA faked, in ``test_devices.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_predict_tiling import randomised, untiled
from test_volumes import paint, spheres

from napari_unetseg.core import PredictConfig, Segmenter, TrainConfig
from napari_unetseg.core.devices import inference_dtype
from napari_unetseg.core.metrics import dice
from napari_unetseg.core.model import UNet
from napari_unetseg.core.synthetic import nuclei_scene

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY = {"base_width": 8, "depth": 3}
SHORT = {"max_seconds": None, "max_epochs": 4, "steps_per_epoch": 15, "batch_size": 4}


@pytest.fixture(scope="module")
def scene():
    return nuclei_scene((256, 256), seed=2)


@pytest.fixture(scope="module")
def trained_on_gpu(scene) -> Segmenter:
    seg = Segmenter.create(device="cuda", seed=0, **TINY)
    seg.train(scene.image, scene.painted, TrainConfig(**SHORT, patch_size=64), progress=False)
    return seg


def on_cpu_copy(seg: Segmenter) -> Segmenter:
    """The same weights and settings on the CPU; ``seg`` stays on the GPU."""
    copy = Segmenter(UNet(seg.config), seg.config, device="cpu")
    copy.model.load_state_dict({k: v.cpu() for k, v in seg.model.state_dict().items()})
    return copy


def test_auto_picks_the_gpu_and_describes_it():
    seg = Segmenter.create(**TINY)
    assert seg.device.type == "cuda"
    assert next(seg.model.parameters()).is_cuda
    assert "GPU (CUDA)" in seg.describe()


def test_training_on_the_gpu_uses_mixed_precision_and_learns(scene, trained_on_gpu):
    seg = trained_on_gpu
    assert all(p.is_cuda and torch.isfinite(p).all() for p in seg.model.parameters())
    labels = seg.segment(scene.image)
    assert dice(labels, scene.classes, mask=scene.painted == 0) > 0.85


def test_training_on_the_gpu_leaves_inputs_alone(scene):
    image, painted = scene.image.copy(), scene.painted.copy()
    seg = Segmenter.create(device="cuda", **TINY)
    config = TrainConfig(**(SHORT | {"max_epochs": 1}), patch_size=64)
    history = seg.train(image, painted, config, progress=False)
    assert history.steps == 15
    np.testing.assert_array_equal(image, scene.image)
    np.testing.assert_array_equal(painted, scene.painted)


def test_gpu_prediction_agrees_with_the_cpu(scene, trained_on_gpu):
    cpu = on_cpu_copy(trained_on_gpu)
    image = nuclei_scene((300, 420), seed=5).image
    reference = cpu.predict_proba(image, precision="float32")
    on_gpu = trained_on_gpu.predict_proba(image, precision="float32")
    difference = np.abs(on_gpu - reference)
    assert difference.mean() < 1e-3 and difference.max() < 0.05  # TF32 convolutions
    labels = trained_on_gpu.segment(image)  # precision "auto": reduced, where proven
    agree = np.mean(labels == cpu.segment(image, precision="float32"))
    assert agree > 0.995


def test_gpu_tiles_equal_one_untiled_pass():
    seg = randomised(Segmenter.create(in_channels=1, n_classes=3, device="cuda"))
    image = nuclei_scene((260, 330), seed=6).image
    whole = untiled(seg, image)
    for tile, overlap in [(64, 16), (128, 32)]:
        tiled = seg.predict_proba(
            image, tile_size=tile, overlap=overlap, batch_size=3, precision="float32"
        )
        difference = np.abs(tiled - whole)
        assert difference.mean() < 2e-3 and difference.max() < 0.1, (tile, difference.mean())


def test_many_small_gpu_tiles_give_the_cpu_s_answer(trained_on_gpu):
    """Pinned buffers and copies that overlap the next batch: every tile lands in its place."""
    image = nuclei_scene((300, 500), seed=10).image
    small = {"tile_size": 64, "overlap": 16, "batch_size": 5, "precision": "float32"}
    on_gpu = trained_on_gpu.predict_proba(image, **small)
    on_cpu = on_cpu_copy(trained_on_gpu).predict_proba(image, **small)
    difference = np.abs(on_gpu - on_cpu)
    assert difference.mean() < 1e-3 and difference.max() < 0.05


def test_auto_precision_is_reduced_on_the_gpu_and_agrees(trained_on_gpu):
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert inference_dtype(torch.device("cuda"), "auto") is expected
    image = nuclei_scene((256, 256), seed=7).image
    reduced = trained_on_gpu.predict_proba(image, precision="bfloat16")
    full = trained_on_gpu.predict_proba(image, precision="float32")
    assert np.mean(reduced.argmax(0) == full.argmax(0)) > 0.995


def test_gpu_memory_is_bounded_by_the_tile_not_the_image(trained_on_gpu):
    peaks = {}
    for side in (1024, 3072):
        image = np.random.default_rng(side).random((side, side), dtype=np.float32)
        trained_on_gpu.segment(image)  # a first pass settles the caches
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        trained_on_gpu.segment(image)
        torch.cuda.synchronize()
        peaks[side] = torch.cuda.max_memory_allocated() - base
    # nine times the pixels; the peak is a batch of tiles either way
    assert peaks[3072] < 1.5 * peaks[1024] + 16 * 2**20, peaks


def test_a_model_trained_on_the_gpu_saves_and_loads_on_the_cpu(tmp_path, trained_on_gpu):
    image = nuclei_scene((200, 200), seed=8).image
    path = trained_on_gpu.save(tmp_path / "gpu.safetensors")
    loaded = Segmenter.load(path, device="cpu")
    assert loaded.device.type == "cpu"
    np.testing.assert_allclose(
        loaded.predict_proba(image, precision="float32"),
        trained_on_gpu.predict_proba(image, precision="float32"),
        atol=0.05,
    )
    back = Segmenter.load(path, device="cuda")
    assert next(back.model.parameters()).is_cuda


def test_objects_train_and_segment_on_the_gpu(scene):
    seg = Segmenter.create(task="objects", device="cuda", **TINY)
    seg.train(scene.image, scene.painted_objects, TrainConfig(**SHORT), progress=False)
    labels = seg.segment(scene.image)
    found = np.unique(labels)
    np.testing.assert_array_equal(found, np.arange(len(found)))
    assert labels.max() > 5


def test_uncertainty_runs_on_the_gpu(trained_on_gpu):
    image = nuclei_scene((200, 240), seed=9).image
    unsure = trained_on_gpu.uncertainty(image)
    assert unsure.shape == image.shape and np.isfinite(unsure).all()
    assert unsure.min() >= 0 and unsure.max() <= 1


def test_a_3d_model_trains_and_predicts_on_the_gpu():
    image, ids = spheres()
    planes = [3, 8, 12]
    seg = Segmenter.create(1, 2, spatial_dims=3, voxel_size=(1.0, 0.5, 0.5), device="cuda")
    config = TrainConfig(
        max_seconds=None, max_epochs=6, steps_per_epoch=10, volume_patch_size=(8, 32, 32)
    )
    assert seg.train(image, paint(ids, planes), config, progress=False).steps == 60
    labels = seg.segment(image)
    unpainted = np.setdiff1d(np.arange(image.shape[0]), planes)
    assert dice(labels[unpainted] == 1, ids[unpainted] > 0) > 0.8
    cpu = on_cpu_copy(seg)
    tiles = PredictConfig(volume_tile_size=(8, 32, 32), overlap=8, precision="float32")
    difference = np.abs(
        seg.predict_proba(image, config=tiles) - cpu.predict_proba(image, config=tiles)
    )
    assert difference.mean() < 1e-3 and difference.max() < 0.05
