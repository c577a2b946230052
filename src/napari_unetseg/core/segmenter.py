"""``Segmenter``: the scripting API shared by the widgets, the napari console and the command line."""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from .config import (
    DEFAULT_SECONDS,
    ModelConfig,
    NormalizationConfig,
    PredictConfig,
    Task,
    TrainConfig,
    Upsampling,
    check_argument,
    settings,
)
from .devices import describe_device, inference_dtype, select_device
from .errors import ConfigError, InputError
from .inference_network import cached_inference_network
from .layout import ImageLayout, resolve_layout
from .model import UNet, count_parameters, member_count, member_networks
from .planes import prepare_planes
from .precision import proven_dtype
from .predict import Prediction, PredictProgress, predict_iter, run_to_end
from .prior import folded_shift
from .resources import check_memory, parameter_bytes, training_bytes
from .sampling import TrainingPlane
from .starting_weights import (
    STARTED_FROM_SYNTHETIC,
    Start,
    load_starting_weights,
    wants_starting_weights,
)
from .train import consume, wants_bar
from .train import train_iter as _train_iter
from .training_events import TrainingEvent, TrainingHistory
from .uncertainty import PaintSuggestion, suggest_regions
from .weights import load_weights, save_weights


def _same_paint(a: Any, b: Any) -> bool:
    """True when two labels arrays (or lists of them) hold the same paint."""
    if a is b:
        return True  # the painting's source handed back the same copy
    first, second = (list(x) if isinstance(x, list | tuple) else [x] for x in (a, b))
    return len(first) == len(second) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(first, second, strict=True)
    )


_SMALLER_MODEL = (
    "Choose a smaller base_width (the default 16 suits most images; each doubling needs four "
    "times the memory) or a smaller depth."
)


class Segmenter:
    """A U-Net with everything needed to train it on painted labels and segment images.

    Examples
    --------
    >>> from napari_unetseg.core import Segmenter, TrainConfig
    >>> seg = Segmenter.create(in_channels=1, n_classes=2)
    >>> history = seg.train(image, painted, TrainConfig(max_seconds=60))  # doctest: +SKIP
    >>> labels = seg.segment(image)  # doctest: +SKIP
    >>> seg.save("nuclei.safetensors")  # doctest: +SKIP
    """

    def __init__(
        self, model: nn.Module, config: ModelConfig, device: str | torch.device = "auto"
    ) -> None:
        self.config = config
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.source: Path | None = None
        #: True once training has changed the weights read from or written to ``source``.
        self.changed_since_saved = False
        # Held while a training step changes the weights, and while a prediction copies them
        # or a save reads them: a Segmenter may be shared between threads.
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- construction

    @classmethod
    def create(
        cls,
        in_channels: int = 1,
        n_classes: int = 2,
        *,
        base_width: int = 16,
        depth: int | None = None,
        upsampling: Upsampling = "bilinear",
        task: Task = "semantic",
        class_names: tuple[str, ...] | list[str] = (),
        normalization: NormalizationConfig | None = None,
        device: str | torch.device = "auto",
        seed: int | None = 0,
        spatial_dims: int = 2,
        voxel_size: tuple[float, ...] | list[float] | None = None,
        start: Start = "auto",
        members: int | None = None,
    ) -> Segmenter:
        """A fresh U-Net, not yet trained on your images.

        Parameters
        ----------
        in_channels, n_classes
            Image channels, and classes including background (2 = background + foreground).
            An object model (``task="objects"``) always has 3 outputs: background, interior,
            boundary.
        base_width, depth
            Width of the first block and number of down-sampling levels. The defaults (16,
            and 4 levels for a 2-D model, 3 for a 3-D one: measured on real stacks) train in
            about a minute on a laptop CPU.
        seed
            Seed for the initial weights, so two ``create`` calls give the same model.
        spatial_dims
            2: a 2-D U-Net that segments a stack plane by plane. 3: a 3-D U-Net that sees
            neighbouring planes too; it trains on stacks painted on a few planes and
            segments whole stacks (Z is the last stack axis).
        voxel_size
            (z, y, x) spacing of the stacks, in any one unit (napari's layer scale), for
            a 3-D model: levels pool in Z only where Z is fine enough. Stored with the model.
        start
            ``"auto"``: a two-class 2-D model of the default width and depth starts from
            weights trained on varied synthetic scenes (see
            :mod:`~napari_unetseg.core.starting_weights`; better on real images after a
            minute of training on a few strokes), any other model from random weights.
            ``"synthetic"`` asks for those weights and fails where they do not fit;
            ``"random"``: random weights from ``seed``.
        members
            How many U-Nets the model holds; it averages their outputs. ``None``: 2 for a
            3-D class model (two runs averaged beat one on the real nuclei stacks and tied
            on the membranes), 1 otherwise.
            A new model's first training trains them one after the other, each in a run of
            its own seed, while the budget holds another run as long as the first; those
            left untrained are dropped (the history says so). A fine-tune, and live
            training, train them together. Prediction costs one pass per member.
        """
        config = ModelConfig.native(
            in_channels,
            n_classes,
            base_width=base_width,
            depth=depth,
            upsampling=upsampling,
            task=task,
            class_names=class_names,
            normalization=normalization,
            spatial_dims=spatial_dims,
            voxel_size=voxel_size,
            members=members,
        )
        seed = check_argument("seed", seed, int | None)
        start = check_argument("start", start, Start)
        device = (
            device if isinstance(device, torch.device) else check_argument("device", device, str)
        )
        check_memory(parameter_bytes(config), "the model's weights", _SMALLER_MODEL)
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = UNet(config)
        else:
            model = UNet(config)
        if wants_starting_weights(config, start):
            load_starting_weights(model, config.in_channels)
            config = config.replace(started_from=STARTED_FROM_SYNTHETIC)
        return cls(model, config, device)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "auto",
        *,
        trust_code: bool = False,
    ) -> Segmenter:
        """Load any supported weights file (see :mod:`napari_unetseg.core.weights`).

        Parameters
        ----------
        trust_code
            Files that hold code (TorchScript archives, and bioimage.io packages whose only
            usable weights are TorchScript) run that code when loaded and used; it can read and
            change your files. They are refused with :class:`TrustRequiredError` unless this is
            True. Pass True only for files from a source you trust.
        """
        loaded = load_weights(path, trust_code=trust_code)
        segmenter = cls(loaded.model, loaded.config, device)
        segmenter.source = loaded.path
        segmenter.changed_since_saved = False
        return segmenter

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save weights and settings; ``.safetensors`` is recommended. The write is atomic."""
        with self._lock:
            saved = save_weights(path, *self._as_saved())
        self.source = saved
        self.changed_since_saved = False
        return saved

    def export(
        self, path: str | os.PathLike[str], format: str | None = None, **bioimageio: Any
    ) -> Path:
        """Write the model for other tools; the write is atomic.

        Parameters
        ----------
        path
            The file to write. Without ``format``, its suffix chooses: ``.zip`` a bioimage.io
            package, ``.onnx`` ONNX, ``.ts``/``.torchscript`` TorchScript.
        format
            ``"bioimageio"``, ``"onnx"`` or ``"torchscript"``.
        **bioimageio
            Details of a bioimage.io package (authors, licence, citation, sample image, ...);
            see :func:`napari_unetseg.core.bioimageio.export_package`.

        Notes
        -----
        ONNX and bioimage.io need the optional packages of ``pip install
        'napari-unetseg[bioimageio]'`` (ONNX alone: ``[export]``). Loading the TorchScript file
        back needs ``trust_code=True``, like any file that holds code.
        """
        from .export import export_model

        with self._lock:
            model, config = self._as_saved()
        return export_model(path, model, config, format, **bioimageio)

    def _as_saved(self) -> tuple[nn.Module, ModelConfig]:
        """The model and settings a file gets. While a new model's members train in turn
        (:mod:`.member_runs`) the model holds only those begun so far: they are what is
        saved, a single one as a plain U-Net."""
        networks = member_networks(self.model)
        if len(networks) == self.config.members:
            return self.model, self.config
        if len(networks) == 1:
            return networks[0], self.config.replace(members=1)
        return self.model, self.config.replace(members=len(networks))

    def to(self, device: str | torch.device) -> Segmenter:
        self.device = select_device(device)
        self.model.to(self.device)
        return self

    # ----------------------------------------------------------------- facts

    @property
    def is_objects(self) -> bool:
        return self.config.task == "objects"

    @property
    def is_3d(self) -> bool:
        """True for a 3-D U-Net, which segments a stack as one volume."""
        return self.config.spatial_dims == 3

    @property
    def is_trained(self) -> bool:
        return bool(self.config.training) or self.config.origin != "native"

    def describe(self) -> str:
        """What is loaded, in a few lines a person can read."""
        c = self.config
        kind = "objects (one id per object)" if self.is_objects else "classes"
        lines = [
            f"U-Net ({c.origin}), {count_parameters(self.model):,} parameters",
            f"input channels: {c.in_channels}; output: {kind}",
            f"classes: {', '.join(c.names)}",
            f"normalisation: {c.normalization.method}"
            + (
                f" ({c.normalization.low}-{c.normalization.high} %)"
                if c.normalization.method == "percentile"
                else ""
            ),
        ]
        if c.origin != "torchscript":
            lines.append(
                f"depth {c.depth}, widths {list(c.encoder_channels)}, {c.upsampling} up-sampling"
            )
        if c.members > 1:
            lines.append(f"{c.members} U-Nets of this layout, their outputs averaged")
        if self.is_3d:
            pooled = sum(c.z_pooling)
            voxel = f"voxel size {tuple(c.voxel_size)}, " if c.voxel_size else ""
            lines.append(f"3-D: {voxel}pools in Z at {pooled} of {c.depth} levels")
        t = c.training
        if t:
            dice = t.get("best_validation_dice")
            runs = int(t.get("runs", 1))
            total = t.get("total_steps", t.get("steps"))
            done = (
                f"{total} steps in {runs} runs (the last: {t.get('steps')} steps in "
                f"{t.get('seconds')} s)"
                if runs > 1
                else f"{total} steps in {t.get('seconds')} s"
            )
            if t.get("validation_saturated"):
                judged = ", held-out strokes all right (not a test of the borders)"
            elif isinstance(dice, float):
                judged = f", validation Dice {dice:.3f}"
            else:
                judged = ""
            lines.append(f"trained: {t.get('mode')} labels, {done}{judged}")
        else:
            lines.append("not trained yet" if c.origin == "native" else "trained elsewhere")
        if c.started_from:
            lines.append(f"started from weights trained on {c.started_from}")
        if c.border_moved:
            lines.append(f"border moved by hand: {c.border_moved:+g} (foreground log-odds)")
        lines.append(f"device: {describe_device(self.device)}")
        if self.source is not None:
            changed = " (changed since; not saved)" if self.changed_since_saved else ""
            lines.append(f"file: {self.source}{changed}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        c = self.config
        dims = ", spatial_dims=3" if self.is_3d else ""
        return (
            f"Segmenter(in_channels={c.in_channels}, n_classes={c.n_classes}, task={c.task!r}"
            f"{dims}, origin={c.origin!r}, device={str(self.device)!r})"
        )

    # ----------------------------------------------------------------- the border

    @property
    def can_move_border(self) -> bool:
        """True for a two-class or object model whose output layer can be reached (not
        TorchScript)."""
        from .prior import output_layer

        return (self.is_objects or self.config.n_classes in (1, 2)) and output_layer(
            self.model
        ) is not None

    def move_border(self, shift: float) -> None:
        """Move the border between background and foreground: ``shift`` > 0 gives more foreground.

        Strokes keep away from borders, so nothing painted says exactly where one lies, and
        a trained model can draw walls too thick or objects too small. ``shift`` is added to
        the foreground's log-odds everywhere: +1 turns a pixel at probability 0.27 into 0.5.
        For an object model the foreground is interior and boundary together, so objects
        grow or shrink (and their seeds with them). It goes into the output layer's bias, so
        saving, exporting and batch segmentation all use it; ``config.border_moved`` holds
        the total, and moving it back undoes it. Training again takes the move out, with the
        last training's class shares and border step, trains, and sets the total back to 0.

        Raises
        ------
        InputError
            For models of more than two classes, TorchScript models, a shift that is not a
            finite number, or a total beyond ±MAX_BORDER_MOVE.
        """
        from .config import MAX_BORDER_MOVE
        from .prior import foreground_shift, output_layer, shift_output_bias

        if not self.can_move_border:
            what = (
                f"a {self.config.n_classes}-class model"
                if self.config.n_classes > 2 and not self.is_objects
                else "this model, whose output layer cannot be reached (TorchScript)"
            )
            raise InputError(
                f"the border can be moved only for two-class and object models, not for {what}."
            )
        try:
            shift = float(shift)
        except (TypeError, ValueError):
            raise InputError(f"shift must be a number, not {shift!r}.") from None
        total = self.config.border_moved + shift
        if not math.isfinite(shift) or abs(total) > MAX_BORDER_MOVE:
            raise InputError(
                f"the border can move at most ±{MAX_BORDER_MOVE:g} in all; it is at "
                f"{self.config.border_moved:+g} and {shift:+g} more would make {total:+g}."
            )
        if shift == 0:
            return
        conv = output_layer(self.model)
        assert conv is not None
        with self._lock:
            shift_output_bias(
                self.model, foreground_shift(shift, conv.out_channels, self.is_objects)
            )
            self.config = self.config.replace(border_moved=round(total, 6))
            self.changed_since_saved = True

    # ----------------------------------------------------------------- training

    def _resolve_train_config(self, config: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
        """``config`` as a TrainConfig; a budget not given (no config, or a dict without
        ``max_seconds``) is the default for this model's dims, as in the widget and the CLI."""
        if config is None or (isinstance(config, Mapping) and "max_seconds" not in config):
            seconds = DEFAULT_SECONDS[self.config.spatial_dims]
            config = {**(config or {}), "max_seconds": seconds}
        config = settings(TrainConfig, config, "config")
        if self.is_objects and not config.is_objects:
            config = config.replace(mode="objects" if config.mode == "sparse" else "objects-dense")
        elif config.is_objects and not self.is_objects:
            raise ConfigError(
                f"mode={config.mode!r} trains an object model, but this model segments classes. "
                "Create one with Segmenter.create(in_channels=..., task='objects')."
            )
        return config

    def train_iter(
        self,
        image: Any,
        labels: Any,
        config: TrainConfig | None = None,
        *,
        axes: str | None = None,
        stop: threading.Event | None = None,
        until_stopped: bool = False,
    ) -> Generator[TrainingEvent, None, TrainingHistory]:
        """Train on painted labels, yielding events; close the generator (or set ``stop``) to stop.

        ``image`` and ``labels`` may be lists of pairs. Inputs are checked before anything
        happens and are never modified. The best weights are kept when training ends.

        Live painting: ``labels`` may be a callable that returns the current labels (an
        array, or a list, as above). It is called once before training and again after
        every epoch; when the paint has changed, training goes on with the new paint (the
        weights and optimiser carry on) and a :class:`~napari_unetseg.core.training_events.PaintUpdated`
        event says how many pixels it now learns from. Return a copy: the array must not
        change while training reads it.

        ``until_stopped=True`` ignores the time and epoch budget and trains until ``stop``
        is set or the generator is closed, at a constant learning rate after a one-epoch
        warm-up; the final weights are kept (the widget's live mode).

        A new model of several members (a 3-D class model, by default) trains them one after
        the other while the budget holds another run, and keeps those trained
        (:mod:`~napari_unetseg.core.member_runs`); its events come as one training.
        """
        config = self._resolve_train_config(config)
        normalization = config.normalization or self.config.normalization
        if self.is_3d:
            from .volumes import prepare_volumes

            prepare = prepare_volumes
        else:
            prepare = prepare_planes
        paint_source = labels if callable(labels) else None
        if paint_source is not None:
            labels = paint_source()
        notes: list[str] = []
        planes = prepare(image, labels, self.config, config, normalization, axes, notes)
        refresh = None
        if paint_source is not None:
            last = [labels]

            def refresh() -> list[TrainingPlane] | None:
                current = paint_source()
                if _same_paint(current, last[0]):
                    return None
                fresh = prepare(image, current, self.config, config, normalization, axes)
                last[0] = current
                return fresh

        device = self.device if config.device == "auto" else select_device(config.device)
        self._check_training_memory(planes, config, device)
        if device != self.device:
            self.to(device)

        previous = self.config.training
        # what was folded into the output bias after the weights were trained comes out, so
        # that a fine-tune learns, and estimates the class shares, from even shares again
        start_shift = (
            folded_shift(self.model, previous, self.config.border_moved, self.is_objects)
            if self.is_trained and not isinstance(self.model, torch.jit.ScriptModule)
            else None
        )

        def record(history: TrainingHistory) -> None:
            if history.members_dropped:
                self._keep_first_member()
            if history.steps == 0:
                return  # nothing was learnt: the model stays as it was
            runs = int(previous.get("runs", 0)) + 1
            steps = int(previous.get("total_steps", previous.get("steps", 0))) + history.steps
            summary = {
                **history.summary(),
                "mode": config.mode,
                "loss": config.loss,
                "runs": runs,
                "total_steps": steps,
            }
            self.config = self.config.replace(
                normalization=normalization, training=summary, border_moved=0.0
            )
            self.changed_since_saved = True

        model_and_paint = (self.model, self.config, planes, config, self.device)
        if member_count(self.model) > 1 and not self.is_trained and not until_stopped:
            from .member_runs import train_members_in_turn

            events = train_members_in_turn(
                *model_and_paint, stop=stop, on_finish=record, refresh=refresh, notes=notes
            )
        else:
            events = _train_iter(
                *model_and_paint,
                stop=stop,
                on_finish=record,
                start_is_candidate=self.is_trained and not until_stopped,
                start_shift=start_shift,
                refresh=refresh,
                until_stopped=until_stopped,
                notes=notes,
            )
        return self._one_step_at_a_time(events)

    def _keep_first_member(self) -> None:
        """After training dropped the other members: the model is what a save writes, its
        first U-Net alone."""
        model, config = self._as_saved()
        if model is not self.model:
            cast(UNet, model).config = config
            self.model, self.config = model, config

    def _check_training_memory(
        self, planes: list[Any], config: TrainConfig, device: torch.device
    ) -> None:
        """Refuse a batch of patches that would not fit in memory, before training starts."""
        if isinstance(self.model, torch.jit.ScriptModule):
            return
        if self.is_3d:
            from .volumes import volume_patch

            sides = volume_patch(planes, self.config, config)
            with self._lock:
                needed = training_bytes(self.model, self.config, config.volume_batch_size, sides)
            check_memory(
                needed,
                f"training {config.volume_batch_size} patches of {'x'.join(map(str, sides))} "
                "voxels",
                "Use a smaller volume_batch_size or volume_patch_size, e.g. the defaults "
                "TrainConfig(volume_batch_size=2, volume_patch_size=(16, 64, 64)).",
                device,
            )
            return
        multiple = self.config.min_size
        largest = max(max(p.classes.shape) for p in planes)
        patch = max(multiple, min(config.patch_size, -(-largest // multiple) * multiple))
        advice = (
            f"Use a smaller batch_size (now {config.batch_size}) or patch_size (now "
            f"{config.patch_size}), e.g. TrainConfig(batch_size=8, patch_size=128), the defaults."
        )
        with self._lock:
            needed = training_bytes(self.model, self.config, config.batch_size, patch)
        check_memory(needed, f"training {config.batch_size} patches of {patch}² px", advice, device)

    def _one_step_at_a_time(
        self, events: Generator[TrainingEvent, None, TrainingHistory]
    ) -> Generator[TrainingEvent, None, TrainingHistory]:
        """``events``, each step run under the lock: predictions and saves see whole steps."""
        try:
            with self._lock:
                event = next(events)
            while True:
                sent = yield event
                with self._lock:
                    event = events.send(sent)
        except StopIteration as finished:
            history: TrainingHistory = finished.value
            return history
        finally:
            with self._lock:
                events.close()  # a stopped training restores its best weights here

    def train(
        self,
        image: Any,
        labels: Any,
        config: TrainConfig | None = None,
        *,
        axes: str | None = None,
        progress: bool | None = None,
    ) -> TrainingHistory:
        """Train until the budget is spent (blocking) and return the history; see :meth:`train_iter`.

        Parameters
        ----------
        progress
            Show a tqdm progress bar on stderr: True always, False never, None (the default)
            only when stderr is a terminal, so notebooks, batch jobs and logs stay quiet.
        """
        return consume(
            self.train_iter(image, labels, config, axes=axes), progress_bar=wants_bar(progress)
        )

    # ----------------------------------------------------------------- prediction

    def _predict_config(
        self, config: PredictConfig | None, overrides: dict[str, Any]
    ) -> PredictConfig:
        config = PredictConfig() if config is None else settings(PredictConfig, config, "config")
        if not overrides:
            return config
        return PredictConfig.from_mapping({**dataclasses.asdict(config), **overrides})

    def _check_planes(self, planes: Any, layout: ImageLayout) -> list[tuple[int, ...]] | None:
        """``planes=`` as stack indices that exist in this image, or a ConfigError that says so."""
        if planes is None:
            return None
        stack = layout.stack_shape
        example = f"[{tuple(0 for _ in stack)}]" if stack else "None"
        if isinstance(planes, str | bytes) or not isinstance(planes, list | tuple):
            raise ConfigError(
                f"planes={planes!r} cannot be used: pass a list of stack indices, one tuple of "
                f"{len(stack)} numbers each for an image of stack shape {stack}, e.g. "
                f"planes={example}."
            )
        checked = []
        for index in planes:
            if not isinstance(index, tuple | list) or not all(
                isinstance(i, int | np.integer) and not isinstance(i, bool) for i in index
            ):
                raise ConfigError(
                    f"planes entry {index!r} cannot be used: each entry is a tuple of "
                    f"{len(stack)} whole numbers, e.g. planes={example}."
                )
            if len(index) != len(stack) or not all(
                0 <= int(i) < n for i, n in zip(index, stack, strict=False)
            ):
                raise ConfigError(
                    f"planes entry {tuple(index)} is not a plane of this image: its stack axes "
                    f"({layout.axes[: len(stack)] or 'none'}) have shape {stack}"
                    + (
                        f", so each entry is a tuple of {len(stack)} indices, e.g. planes={example}."
                        if stack
                        else "; a single 2-D image needs no planes=."
                    )
                )
            checked.append(tuple(int(i) for i in index))
        return checked

    def predict_iter(
        self,
        image: Any,
        *,
        axes: str | None = None,
        config: PredictConfig | None = None,
        probabilities: bool = True,
        labels: bool = True,
        planes: list[tuple[int, ...]] | None = None,
        out_probabilities: Any = None,
        out_labels: Any = None,
        uncertainty: bool = False,
        out_uncertainty: Any = None,
        **overrides: Any,
    ) -> Generator[PredictProgress, None, Prediction]:
        """Predict with progress events; the generator's return value is a :class:`Prediction`.

        ``out_probabilities`` / ``out_labels``: arrays to fill instead of new ones (see
        :meth:`segment`). ``uncertainty=True`` adds :meth:`uncertainty`'s map to the result,
        computed in the same tiled pass as the probabilities and labels
        (``out_uncertainty``: a float array to fill).
        """
        config = self._predict_config(config, overrides)
        layout = resolve_layout(image, self.config.in_channels, axes)
        planes = self._check_planes(planes, layout)
        device = self.device if config.device == "auto" else select_device(config.device)
        if device != self.device:
            self.to(device)
        dtype = inference_dtype(self.device, config.precision)
        if self.is_3d:
            return self._predict_volume_iter(
                image, layout, config, dtype, probabilities, labels, planes,
                out_probabilities, out_labels,
            )  # fmt: skip
        with self._lock:
            # A consistent copy of the weights, even while another thread trains this model;
            # the model's own train/eval mode is left alone.
            if config.precision == "auto":
                dtype = proven_dtype(
                    self.model, self.config, image, layout, config, self.device, dtype
                )
            network = cached_inference_network(self.model, self.device, dtype, config.channels_last)
        return predict_iter(
            self.model,
            self.config,
            image,
            layout,
            config,
            self.device,
            dtype,
            want_probabilities=probabilities,
            want_labels=labels,
            planes=planes,
            out_probabilities=out_probabilities,
            out_labels=out_labels,
            network=network,
            want_uncertainty=uncertainty,
            out_uncertainty=out_uncertainty,
        )

    def _predict_volume_iter(
        self,
        image: Any,
        layout: ImageLayout,
        config: PredictConfig,
        dtype: torch.dtype,
        probabilities: bool,
        labels: bool,
        planes: list[tuple[int, ...]] | None,
        out_probabilities: Any,
        out_labels: Any,
    ) -> Generator[PredictProgress, None, Prediction]:
        """A 3-D model's prediction, tile by tile (see :mod:`napari_unetseg.core.volume_predict`).

        ``precision="auto"`` runs float32: the reduced precisions are proven per model on
        2-D tiles only.
        """
        from .inference_network import inference_network
        from .volume_predict import predict_volume_iter

        if config.precision == "auto":
            dtype = torch.float32
        with self._lock:
            network = inference_network(self.model, self.device, dtype, config.channels_last)
        return predict_volume_iter(
            network, self.config, image, layout, config, self.device, dtype,
            want_probabilities=probabilities, want_labels=labels, planes=planes,
            out_probabilities=out_probabilities, out_labels=out_labels,
        )  # fmt: skip

    def predict_proba(
        self,
        image: Any,
        *,
        axes: str | None = None,
        config: PredictConfig | None = None,
        out: Any = None,
        **overrides: Any,
    ) -> np.ndarray | Any:
        """Class probabilities, float32 of shape (n_classes, *spatial shape of image).

        ``out``: a float array of that shape (numpy, or zarr for an image larger than
        memory) filled tile row by tile row and returned, instead of a new numpy array.
        """
        result = run_to_end(
            self.predict_iter(
                image, axes=axes, config=config, labels=False, out_probabilities=out, **overrides
            )
        )
        assert result.probabilities is not None
        return result.probabilities

    def uncertainty(
        self,
        image: Any,
        *,
        axes: str | None = None,
        config: PredictConfig | None = None,
        out: Any = None,
        **overrides: Any,
    ) -> np.ndarray | Any:
        """How unsure the model is at each pixel: float32 in [0, 1], the image's spatial shape.

        The normalised entropy of the class probabilities: 0 where one class is certain, 1
        where all are equally likely (see :mod:`napari_unetseg.core.uncertainty`). To get
        labels or probabilities from the same pass, use
        ``predict_iter(image, uncertainty=True)``. ``out``: a float array of that shape
        (numpy, zarr) to fill and return instead of a new one.

        Examples
        --------
        >>> unsure = seg.uncertainty(image)  # doctest: +SKIP
        >>> seg.suggest_where_to_paint(image, painted)[0].centre  # doctest: +SKIP
        (412, 96)
        """
        result = run_to_end(
            self.predict_iter(
                image,
                axes=axes,
                config=config,
                probabilities=False,
                labels=False,
                uncertainty=True,
                out_uncertainty=out,
                **overrides,
            )
        )
        assert result.uncertainty is not None
        return result.uncertainty

    def suggest_where_to_paint(
        self,
        image: Any,
        painted: Any = None,
        *,
        count: int = 5,
        window: int = 64,
        where: Any = None,
        axes: str | None = None,
        config: PredictConfig | None = None,
        **overrides: Any,
    ) -> list[PaintSuggestion]:
        """The unpainted windows where the model is most unsure, most uncertain first.

        A shortcut for :meth:`uncertainty` followed by
        :func:`napari_unetseg.core.uncertainty.suggest_regions` (see there for ``count``,
        ``window`` and ``where``). ``painted``: the painting so far, the image's spatial
        shape; painted pixels count as certain.
        """
        unsure = self.uncertainty(image, axes=axes, config=config, **overrides)
        return suggest_regions(unsure, painted, count=count, window=window, where=where)

    def segment(
        self,
        image: Any,
        *,
        axes: str | None = None,
        config: PredictConfig | None = None,
        out: Any = None,
        **overrides: Any,
    ) -> np.ndarray | Any:
        """Integer labels with the image's spatial shape; 0 is background.

        Class models give class indices; object models give one id per object, consecutive
        from 1 and unique across a stack. The dtype is the smallest that holds the values.

        ``out``: an integer array of the image's spatial shape to fill and return instead
        of a new numpy array, e.g. a zarr array on disk. With a lazy image (dask, zarr) as
        well, an image larger than memory is segmented with memory for a band of tile rows.
        An object model still needs one plane's probabilities in memory.

        Examples
        --------
        >>> import zarr  # doctest: +SKIP
        >>> image = zarr.open_array("slide.zarr", mode="r")  # doctest: +SKIP
        >>> out = zarr.create_array("labels.zarr", shape=image.shape, chunks=(1024, 1024),
        ...                         dtype="uint8")  # doctest: +SKIP
        >>> seg.segment(image, out=out)  # doctest: +SKIP
        """
        result = run_to_end(
            self.predict_iter(
                image, axes=axes, config=config, probabilities=False, out_labels=out, **overrides
            )
        )
        assert result.labels is not None
        return result.labels
