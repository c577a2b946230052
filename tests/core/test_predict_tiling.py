"""Tiled prediction: equal to one untiled forward pass, any size, bounded, and honest about progress."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_unetseg.core import PredictConfig, Segmenter, TrainConfig
from napari_unetseg.core.devices import cpu_has_native_bfloat16
from napari_unetseg.core.inference_network import (
    FusedConv2d,
    SplitConcatUp,
    cached_inference_network,
    inference_network,
    onednn_binary_fusion_available,
)
from napari_unetseg.core.layout import resolve_layout
from napari_unetseg.core.normalization import fit_normalizer
from napari_unetseg.core.predict import (
    PredictProgress,
    _RowBlender,
    run_to_end,
    tiles_per_forward,
)
from napari_unetseg.core.synthetic import nuclei_scene
from napari_unetseg.core.tiling import plan_tiles


def randomised(seg: Segmenter, seed: int = 0) -> Segmenter:
    """Batch-norm statistics away from (0, 1), so that folding them into the convolutions matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in seg.model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return seg


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    return randomised(Segmenter.create(in_channels=1, n_classes=3, device="cpu"))


def untiled(seg: Segmenter, image: np.ndarray) -> np.ndarray:
    """Probabilities from one forward pass of the original model over the whole image, float32,
    on the model's device."""
    layout = resolve_layout(image, seg.config.in_channels, None)
    plane = fit_normalizer(image, layout, seg.config.normalization)(layout.read_plane(image, ()))
    x = torch.from_numpy(plane)[None].to(seg.device)
    h, w = x.shape[-2:]
    m = seg.config.min_size
    x = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="reflect")
    with torch.inference_mode():
        probs = torch.softmax(seg.model.eval()(x), dim=1)[0, :, :h, :w]
    return probs.cpu().numpy()


def image_of(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return nuclei_scene(shape, seed=seed).image


@pytest.mark.parametrize("shape", [(200, 260), (173, 301), (96, 400)])
def test_tiled_equals_untiled_forward(seg, shape):
    image = image_of(shape)
    reference = untiled(seg, image)
    for tile, overlap in [(64, 16), (128, 32)]:
        assert plan_tiles(shape, PredictConfig(tile_size=tile, overlap=overlap), 16).n_tiles > 1
        probs = seg.predict_proba(image, tile_size=tile, overlap=overlap, precision="float32")
        assert probs.shape == (3, *shape)
        difference = np.abs(probs - reference)
        assert difference.mean() < 2e-3, (tile, difference.mean())
        assert difference.max() < 0.1, (tile, difference.max())
        assert np.mean(probs.argmax(0) == reference.argmax(0)) > 0.995
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


@pytest.mark.parametrize("shape", [(16, 16), (17, 33), (31, 47), (100, 50), (130, 129)])
def test_odd_sizes_and_images_smaller_than_one_tile(seg, shape):
    image = image_of((max(shape[0], 64), max(shape[1], 64)))[: shape[0], : shape[1]]
    probs = seg.predict_proba(image, tile_size=512, precision="float32")
    assert probs.shape == (3, *shape)
    np.testing.assert_allclose(probs, untiled(seg, image), atol=1e-4)


def test_one_tile_is_exactly_the_forward_pass(seg):
    image = image_of((128, 128))
    probs = seg.predict_proba(image, tile_size=128, precision="float32")
    np.testing.assert_allclose(probs, untiled(seg, image), atol=1e-5)


def test_smaller_than_the_network_is_refused(seg):
    from napari_unetseg.core.errors import InputError

    with pytest.raises(InputError, match="needs at least 16 px"):
        seg.predict_proba(np.zeros((15, 40), np.float32))


@pytest.mark.parametrize(
    ("n_classes", "task", "dtype"),
    [(1, "semantic", np.uint8), (2, "semantic", np.uint8), (5, "semantic", np.uint8)],
)
def test_labels_dtype_and_shape(n_classes, task, dtype):
    # random weights: 64 px tiles with an 8 px overlap see less context than the whole image,
    # which moves a trained model's border pixels
    seg = Segmenter.create(
        in_channels=1, n_classes=n_classes, task=task, device="cpu", start="random"
    )
    image = image_of((70, 90))
    labels = seg.segment(image, tile_size=64, overlap=8)
    assert labels.shape == image.shape
    assert labels.dtype == dtype
    assert labels.max() < max(n_classes, 2)
    assert np.array_equal(labels, seg.segment(image, tile_size=512))


def test_object_labels_are_unsigned_and_unique_across_a_stack():
    seg = Segmenter.create(task="objects", device="cpu")
    stack = np.stack([image_of((64, 80), seed=s) for s in range(3)])
    labels = seg.segment(stack, axes="ZYX")
    assert labels.shape == stack.shape
    assert labels.dtype.kind == "u"


def test_progress_events_per_batch(seg):
    image = image_of((200, 260))
    config = PredictConfig(tile_size=64, overlap=16, batch_size=3)
    n_tiles = plan_tiles(image.shape, config, 16).n_tiles
    per_forward = tiles_per_forward(3, 64 * 64, torch.device("cpu"))
    assert per_forward == 3
    events: list[PredictProgress] = []
    result = run_to_end(seg.predict_iter(image, config=config), events.append)
    assert all(isinstance(e, PredictProgress) for e in events)
    assert len(events) == -(-n_tiles // 3)
    assert [e.tiles_done for e in events] == sorted(e.tiles_done for e in events)
    assert events[-1].tiles_done == events[-1].tiles_total == n_tiles
    assert events[-1].fraction == 1.0
    assert result.labels.shape == image.shape and result.probabilities.shape == (3, *image.shape)


def test_progress_counts_every_plane_of_a_stack(seg):
    stack = np.stack([image_of((64, 100), seed=s) for s in range(3)])
    events = list(seg.predict_iter(stack, axes="ZYX", tile_size=64, overlap=8, batch_size=1))
    assert {e.plane for e in events} == {0, 1, 2}
    assert events[-1].tiles_done == events[-1].tiles_total == 3 * events[-1].tiles_total // 3
    assert all(e.n_planes == 3 for e in events)


def test_cpu_caps_pixels_per_forward():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert tiles_per_forward(4, 544 * 544, cpu) == 2
    assert tiles_per_forward(4, 640 * 640, cpu) == 1
    assert tiles_per_forward(16, 256 * 256, cpu) == 10
    assert tiles_per_forward(4, 544 * 544, cpu, torch.float32) == 1, (
        "float32 fills cache twice as fast"
    )
    assert tiles_per_forward(4, 256 * 256, cpu, torch.float32) == 4
    assert tiles_per_forward(2, 64 * 64, cpu) == 2
    assert tiles_per_forward(2, 2048 * 2048, cpu) == 1
    assert tiles_per_forward(8, 464 * 464, cuda) == 8


def test_inputs_and_model_are_left_alone(seg):
    image = image_of((150, 170))
    before = image.copy()
    state = {k: v.clone() for k, v in seg.model.state_dict().items()}
    seg.model.train()
    try:
        seg.segment(image, tile_size=64, overlap=16)
        assert seg.model.training, "the model's training flag was not put back"
    finally:
        seg.model.eval()
    assert np.array_equal(image, before)
    for key, value in seg.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not any(isinstance(m, FusedConv2d) for m in seg.model.modules())


def test_rows_are_handed_on_once_in_order_and_the_band_stays_small():
    config = PredictConfig(tile_size=64, overlap=16, batch_size=1)
    tiling = plan_tiles((300, 90), config, 16)
    seen: list[tuple[int, int]] = []
    blender = _RowBlender(tiling, 2, 300, 90, lambda y0, y1, rows: seen.append((y0, y1)))
    largest_band = 0
    for i, j in tiling.tiles():
        blender.add(i, j, torch.ones(2, tiling.y.tile, tiling.x.tile))
        largest_band = max(largest_band, blender.band.shape[1])
        following = i + 1 if j == len(tiling.x.starts) - 1 else i
        row = tiling.y.starts[following] if following < len(tiling.y.starts) else tiling.y.padded
        blender.finish_rows_before(row)
    assert seen[0][0] == 0 and seen[-1][1] == 300
    assert all(a[1] == b[0] for a, b in itertools.pairwise(seen))
    assert largest_band <= tiling.y.tile


@pytest.mark.parametrize("upsampling", ["bilinear", "transposed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_network_matches_the_model(upsampling, dtype):
    if dtype == torch.bfloat16 and not cpu_has_native_bfloat16():
        pytest.skip("no native bfloat16 on this CPU")
    seg = randomised(Segmenter.create(upsampling=upsampling, device="cpu"))
    network = inference_network(seg.model, torch.device("cpu"), dtype)
    assert network is not seg.model
    assert any(isinstance(m, FusedConv2d) for m in network.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    split = [m for m in network.modules() if isinstance(m, SplitConcatUp)]
    assert len(split) == (seg.config.depth if onednn_binary_fusion_available(dtype) else 0)
    generator = torch.Generator().manual_seed(0)
    # 60 x 90 is no multiple of 16: the decoder pads the upsampled maps to the skip's size.
    for shape in [(2, 1, 64, 96), (1, 1, 60, 90)]:
        x = torch.randn(*shape, generator=generator)
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32),
        ):
            expected = seg.model.eval()(x).float()
            got = network(x.contiguous(memory_format=torch.channels_last)).float()
        tolerance = 1e-4 if dtype == torch.float32 else 0.05
        assert (got - expected).abs().max() <= tolerance * expected.abs().max()


def test_fused_network_is_channels_last_and_the_model_is_not():
    seg = Segmenter.create(device="cpu")
    network = inference_network(seg.model, torch.device("cpu"), torch.float32)
    fused = [m for m in network.modules() if isinstance(m, FusedConv2d)]
    assert fused and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in fused)
    assert all(p.is_contiguous() for p in seg.model.parameters())
    flat = inference_network(seg.model, torch.device("cpu"), torch.float32, channels_last=False)
    assert all(m.weight.is_contiguous() for m in flat.modules() if isinstance(m, FusedConv2d))


def test_inference_network_is_reused_until_the_weights_change():
    seg = randomised(Segmenter.create(device="cpu"))
    cpu = torch.device("cpu")
    first = cached_inference_network(seg.model, cpu, torch.float32)
    assert cached_inference_network(seg.model, cpu, torch.float32) is first
    assert cached_inference_network(seg.model, cpu, torch.float32, channels_last=False) is not first

    image = image_of((96, 96))
    before = seg.predict_proba(image, precision="float32")
    # An optimiser step writes the weights in place; the next prediction must use them.
    optimizer = torch.optim.SGD(seg.model.parameters(), lr=0.5)
    seg.model.train()
    seg.model(torch.randn(2, 1, 64, 64)).mean().backward()
    optimizer.step()
    after = seg.predict_proba(image, precision="float32")
    assert not np.allclose(before, after, atol=1e-3)
    np.testing.assert_allclose(after, untiled(seg, image), atol=2e-4)

    # So must weights loaded into the model.
    other = randomised(Segmenter.create(device="cpu"), seed=5)
    seg.model.load_state_dict(other.model.state_dict())
    np.testing.assert_allclose(
        seg.predict_proba(image, precision="float32"), untiled(other, image), atol=2e-4
    )


@pytest.mark.filterwarnings("ignore:.*torch.jit:DeprecationWarning")
def test_torchscript_models_run_unfused():
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2)).eval()
    scripted = torch.jit.trace(plain, torch.zeros(1, 1, 32, 32))
    assert inference_network(scripted, torch.device("cpu"), torch.float32) is scripted


@pytest.fixture(scope="module")
def trained() -> tuple[Segmenter, np.ndarray]:
    scene = nuclei_scene((256, 256), seed=3)
    seg = Segmenter.create(device="cpu")
    seg.train(
        scene.image,
        scene.painted,
        TrainConfig(max_seconds=30, max_epochs=3, steps_per_epoch=10, batch_size=4, patch_size=64),
        progress=False,
    )
    return seg, nuclei_scene((384, 384), seed=4).image


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_native_bfloat16(), reason="no native bfloat16 on this CPU")
def test_bfloat16_agrees_with_float32(trained):
    seg, image = trained
    f32 = seg.segment(image, precision="float32", tile_size=128)
    bf16 = seg.segment(image, precision="bfloat16", tile_size=128)
    assert np.mean(f32 == bf16) >= 0.995
    assert np.array_equal(seg.segment(image, tile_size=128), bf16), "auto should pick bfloat16 here"
