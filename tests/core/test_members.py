"""Models of several U-Nets ("members") trained side by side, whose logits are averaged."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_volumes import TINY, dice, paint, spheres

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.config import ModelConfig
from napari_unetseg.core.errors import ConfigError
from napari_unetseg.core.losses import masked_loss
from napari_unetseg.core.model import UNet
from napari_unetseg.core.prior import folded_shift, output_layers
from napari_unetseg.core.train import member_losses
from napari_unetseg.core.training_events import EpochDone, StepDone, TrainingStarted

QUICK = {"volume_patch_size": (8, 32, 32), "threads": 1}


def _changed(before: dict[str, torch.Tensor], model: torch.nn.Module, prefix: str) -> bool:
    now = model.state_dict()
    return any(not torch.equal(before[k], now[k]) for k in before if k.startswith(prefix))


# --------------------------------------------------------------------------- the model


def test_a_model_of_two_members_returns_the_mean_of_their_logits():
    torch.manual_seed(0)
    model = UNet(ModelConfig.native(1, 2, spatial_dims=3, members=2, **TINY)).eval()
    assert model.members is not None and len(model.members) == 2
    x = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        first, second = (member(x) for member in model.members)
        assert not torch.allclose(first, second)  # initialised apart
        torch.testing.assert_close(model(x), (first + second) / 2)


def test_a_new_3d_class_model_has_two_members_and_others_one():
    assert Segmenter.create(spatial_dims=3, **TINY).config.members == 2
    assert Segmenter.create(spatial_dims=3, task="objects", **TINY).config.members == 1
    assert Segmenter.create(**TINY).config.members == 1
    assert Segmenter.create(spatial_dims=3, members=1, **TINY).config.members == 1
    assert Segmenter.create(members=3, **TINY).model.members is not None


@pytest.mark.parametrize("members", [0, 5, 1.5])
def test_members_outside_1_to_4_are_refused(members):
    with pytest.raises(ConfigError, match="members"):
        Segmenter.create(members=members, **TINY)


def test_settings_without_members_load_as_one_and_one_member_is_not_written():
    data = ModelConfig.native(1, 2, **TINY).to_dict()
    assert "members" not in data  # files stay readable by versions before members
    assert ModelConfig.from_dict(data).members == 1
    assert ModelConfig.native(1, 2, members=2, **TINY).to_dict()["members"] == 2


def test_the_starting_weights_are_for_a_model_of_one_member():
    assert Segmenter.create(members=2).config.started_from == ""  # random start
    with pytest.raises(ConfigError, match="members=1"):
        Segmenter.create(members=2, start="synthetic")


def test_a_model_of_members_is_saved_and_loaded(tmp_path):
    seg = Segmenter.create(spatial_dims=3, voxel_size=(2.0, 0.5, 0.5), **TINY)
    loaded = Segmenter.load(seg.save(tmp_path / "two.safetensors"))
    assert loaded.config.members == 2
    image, _ = spheres((6, 32, 32))
    np.testing.assert_allclose(seg.predict_proba(image), loaded.predict_proba(image), atol=1e-6)
    assert "2 U-Nets" in loaded.describe()


def test_moving_the_border_moves_the_averaged_output_exactly():
    seg = Segmenter.create(spatial_dims=3, device="cpu", **TINY)
    assert len(output_layers(seg.model)) == 2
    x = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        before = seg.model(x)
        seg.move_border(1.5)
        after = seg.model(x)
    odds = (after[:, 1] - after[:, 0]) - (before[:, 1] - before[:, 0])
    torch.testing.assert_close(odds, torch.full_like(odds, 1.5))


# --------------------------------------------------------------------------- training


def test_each_member_is_fitted_on_its_own_loss():
    torch.manual_seed(0)
    model = UNet(ModelConfig.native(1, 2, spatial_dims=3, members=2, **TINY))
    x = torch.rand(2, 1, 8, 16, 16)
    y = (x > 0.5).long()[:, 0]
    mask = torch.rand(2, 8, 16, 16) > 0.5
    losses = member_losses(model, "bce+dice", x, y, mask)
    assert losses.shape == (2,)
    for loss, member in zip(losses, model.members, strict=True):
        torch.testing.assert_close(loss, masked_loss("bce+dice", member(x).float(), y, mask))
    plain = UNet(ModelConfig.native(1, 2, spatial_dims=3, members=1, **TINY))
    assert member_losses(plain, "bce+dice", x, y, mask).shape == (1,)


def test_a_new_model_of_two_members_trains_each_in_a_run_of_its_own():
    image, ids = spheres()
    painted = paint(ids, [3, 8, 12])
    seg = Segmenter.create(1, 2, spatial_dims=3, voxel_size=(1.0, 0.5, 0.5), **TINY)
    before = {k: v.clone() for k, v in seg.model.state_dict().items()}
    config = TrainConfig(max_seconds=None, max_epochs=6, steps_per_epoch=10, **QUICK)
    events = list(seg.train_iter(image, painted, config))
    history = events[-1].history
    assert history.steps == 120 and history.epochs == 12 and history.members_dropped == 0
    started = [e for e in events if isinstance(e, TrainingStarted)]
    assert len(started) == 1 and started[0].members == 2
    steps = [e.step for e in events if isinstance(e, StepDone)]
    assert steps == list(range(1, 121))  # numbered as one training
    elapsed = [e.elapsed for e in events if isinstance(e, StepDone | EpochDone)]
    assert elapsed == sorted(elapsed)
    assert seg.config.members == 2 and seg.config.training["total_steps"] == 120
    assert _changed(before, seg.model, "members.0.") and _changed(before, seg.model, "members.1.")
    shift = folded_shift(seg.model, seg.config.training, 0.0, False)
    np.testing.assert_allclose(shift, seg.config.training["output_shift"])
    labels = seg.segment(image)
    unpainted = np.setdiff1d(np.arange(image.shape[0]), [3, 8, 12])
    assert dice(labels[unpainted] == 1, ids[unpainted] > 0) > 0.8


def test_members_trained_in_turn_are_the_runs_of_their_seeds():
    image, ids = spheres()
    painted = paint(ids, [3, 8, 12])
    config = TrainConfig(max_seconds=None, max_epochs=3, steps_per_epoch=20, **QUICK)
    two = Segmenter.create(1, 2, spatial_dims=3, seed=0, **TINY)
    two.train(image, painted, config, progress=False)
    alone = Segmenter.create(1, 2, spatial_dims=3, seed=0, members=1, **TINY)
    with torch.random.fork_rng(devices=[]):  # the second member's first weights, as drawn
        torch.manual_seed(0)
        UNet(ModelConfig.native(1, 2, spatial_dims=3, members=1, **TINY))
        second = UNet(ModelConfig.native(1, 2, spatial_dims=3, members=1, **TINY))
    alone.model.load_state_dict(second.state_dict())
    alone.train(image, painted, config.replace(seed=1), progress=False)
    trained = two.model.members[1].state_dict()
    for key, value in alone.model.state_dict().items():
        if "outc.conv.bias" not in key:  # the output shift is the members' mean
            torch.testing.assert_close(trained[key], value, atol=1e-5, rtol=1e-4)


def test_a_budget_too_short_for_a_second_run_leaves_one_network(tmp_path):
    image, ids = spheres()
    painted = paint(ids, [3, 8, 12])
    seg = Segmenter.create(1, 2, spatial_dims=3, **TINY)
    config = TrainConfig(max_seconds=2, max_epochs=10_000, steps_per_epoch=10, **QUICK)
    history = seg.train(image, painted, config, progress=False)
    assert history.stop_reason == "time" and history.members_dropped == 1
    assert any("1 of 2 networks were trained" in w for w in history.warnings)
    assert seg.config.members == 1 and seg.model.members is None
    assert seg.config.training["members_dropped"] == 1
    assert "U-Nets" not in seg.describe()
    loaded = Segmenter.load(seg.save(tmp_path / "one.safetensors"))
    assert loaded.config.members == 1
    np.testing.assert_allclose(seg.predict_proba(image), loaded.predict_proba(image), atol=1e-6)


def test_stopping_during_the_second_run_keeps_the_first_network(tmp_path):
    image, ids = spheres()
    painted = paint(ids, [3, 8, 12])
    seg = Segmenter.create(1, 2, spatial_dims=3, **TINY)
    first = seg.model.members[0]
    config = TrainConfig(max_seconds=None, max_epochs=3, steps_per_epoch=20, **QUICK)
    events = seg.train_iter(image, painted, config)
    for event in events:
        if isinstance(event, StepDone) and event.step == 10:
            assert list(seg.model.members) == [first]  # the second is not averaged in yet
            # saved meanwhile: what has been begun, a file that loads
            early = Segmenter.load(seg.save(tmp_path / "early.safetensors"))
            assert early.config.members == 1
        if isinstance(event, StepDone) and event.step == 70:
            assert len(seg.model.members) == 2
            assert Segmenter.load(seg.save(tmp_path / "later.safetensors")).config.members == 2
            break
    events.close()
    assert seg.model is first and seg.config.members == 1
    assert seg.config.training["steps"] == 70
    assert seg.config.training["members_dropped"] == 1
    assert seg.segment(image).shape == image.shape


def test_a_fine_tune_trains_every_member_together():
    image, ids = spheres()
    painted = paint(ids, [3, 8, 12])
    seg = Segmenter.create(1, 2, spatial_dims=3, **TINY)
    config = TrainConfig(max_seconds=None, max_epochs=3, steps_per_epoch=20, **QUICK)
    seg.train(image, painted, config, progress=False)
    before = {k: v.clone() for k, v in seg.model.state_dict().items()}
    history = seg.train(image, painted, config.replace(max_epochs=1), progress=False)
    assert history.steps == 20 and history.members_dropped == 0 and seg.config.members == 2
    assert seg.config.training["runs"] == 2
    if history.best_epoch != 0:  # the fine-tune's weights were kept
        assert _changed(before, seg.model, "members.0.")
        assert _changed(before, seg.model, "members.1.")


# --------------------------------------------------------------------------- exchange


def test_torchscript_export_of_members_gives_the_average(tmp_path):
    seg = Segmenter.create(members=2, base_width=4, depth=2, device="cpu")
    path = seg.export(tmp_path / "two.ts")
    x = torch.rand(1, 1, 48, 40)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = seg.model.eval()(x)
        torch.testing.assert_close(torch.jit.load(str(path))(x), expected)
        loaded = Segmenter.load(path, device="cpu", trust_code=True)
        torch.testing.assert_close(loaded.model(x), expected)


def test_onnx_export_of_members_gives_the_average(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    seg = Segmenter.create(members=2, base_width=4, depth=2, device="cpu")
    session = ort.InferenceSession(
        str(seg.export(tmp_path / "two.onnx")), providers=["CPUExecutionProvider"]
    )
    x = torch.rand(1, 1, 64, 64)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = seg.model.eval()(x).numpy()
    assert np.abs(out - expected).max() < 1e-4


def test_the_packaged_architecture_builds_a_model_of_members():
    from napari_unetseg.core.bioimageio import (
        ARCHITECTURE_CALLABLE,
        architecture_kwargs,
        architecture_source,
    )

    seg = Segmenter.create(members=2, base_width=4, depth=2, device="cpu")
    namespace: dict = {"__name__": "unet_architecture"}
    exec(compile(architecture_source(), "unet_architecture.py", "exec"), namespace)
    packaged = namespace[ARCHITECTURE_CALLABLE](**architecture_kwargs(seg.config)).eval()
    packaged.load_state_dict(seg.model.state_dict())
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(packaged(x), seg.model.eval()(x))
