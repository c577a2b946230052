"""The measurements: prediction speed against MONAI and the raw-forward floor, agreement,
memory, scaling with image size, and training throughput.

Contenders are measured in rounds, each round running every contender once in turn, and
the median over rounds is reported, so that load from other processes hits them alike.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unetseg.core import PredictConfig, Segmenter, TrainConfig
from napari_unetseg.core.devices import cpu_has_native_bfloat16, inference_dtype
from napari_unetseg.core.inference_network import inference_network
from napari_unetseg.core.layout import resolve_layout
from napari_unetseg.core.losses import masked_loss, resolve_loss_name
from napari_unetseg.core.normalization import fit_normalizer
from napari_unetseg.core.planes import prepare_planes
from napari_unetseg.core.predict import logits_to_probabilities
from napari_unetseg.core.sampling import PatchSampler, augment
from napari_unetseg.core.synthetic import nuclei_scene

from .contention import contention_benchmark
from .records import load_average

#: MONAI's sliding-window settings named in the issue.
MONAI_ROI = 256
MONAI_OVERLAP = 0.25
MONAI_BATCH = 4
#: The raw-forward floor: non-overlapping tiles of this side, channels-last, no stitching.
FLOOR_TILE = 256
FLOOR_BATCH = 4


@dataclass
class Settings:
    sizes: tuple[int, ...] = (512, 1024, 2048, 4096)
    compare_size: int = 2048
    scale_sizes: tuple[int, int] = (2048, 4096)
    memory_size: int = 4096
    rounds: int = 5
    train_seconds: float = 40.0
    train_scene: int = 1024
    train_batch_size: int = TrainConfig.batch_size  # the product's defaults
    train_patch_size: int = TrainConfig.patch_size
    profile_steps: int = 20
    contention_seconds: float = 60.0  # the default budget
    contention_predict_size: int = 4096  # enough batches for the thread tuner to act
    base_width: int = 16
    depth: int = 4
    monai: bool = True
    seed: int = 0
    threads: int | None = None


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    contention: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, dict[str, float]] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    #: The same ratios from each round alone (both contenders ran back to back): their spread.
    round_ratios: dict[str, list[float]] = field(default_factory=dict)
    agreement: dict[str, float | None] = field(default_factory=dict)
    scaling: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, bool | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def monai_available() -> bool:
    return importlib.util.find_spec("monai") is not None


@functools.lru_cache(maxsize=4)
def _scene(size: int, seed: int) -> Any:
    return nuclei_scene(shape=(size, size), seed=seed)


def scene_image(size: int, seed: int = 0) -> np.ndarray:
    """The benchmark image of side ``size``: a 2048 scene, tiled for larger sizes (cheap to make)."""
    base = min(size, 2048)
    image = _scene(base, seed).image
    reps = -(-size // base)
    return np.ascontiguousarray(np.tile(image, (reps, reps))[:size, :size])


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's CPU thread count set to ``count`` (None: left as it is) for the block, and put
    back after, so a caller in the same process (a smoke test) keeps its own."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = load_average()
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bfloat16": cpu_has_native_bfloat16(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "load_average_at_start": load,
    }
    if monai_available():
        import monai

        info["monai"] = monai.__version__
    return info


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rounds(contenders: dict[str, Callable[[], Any]], n: int) -> dict[str, list[float]]:
    """Run each contender once per round (after one warm-up each); seconds per run."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(n):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            times[name].append(_time(contenders[name]))
    return times


# --------------------------------------------------------------------------- contenders


def normalized_tensor(seg: Segmenter, image: np.ndarray) -> torch.Tensor:
    """The image as the network sees it, (1, C, Y, X) float32."""
    layout = resolve_layout(image, seg.config.in_channels, None)
    normalizer = fit_normalizer(image, layout, seg.config.normalization)
    return torch.from_numpy(normalizer(layout.read_plane(image, ())))[None]


def raw_floor(module: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> Callable[[], None]:
    """The module over non-overlapping FLOOR_TILE tiles in channels-last: no overlap, no stitching.

    It runs a channels-last copy of ``module``: converting the module itself would also
    speed up the contenders measured after it, which get the module as a user has it.
    """
    _, c, h, w = x.shape
    t = min(FLOOR_TILE, h, w)
    tiles = x[:, :, : h // t * t, : w // t * t].reshape(c, h // t, t, w // t, t)
    tiles = (
        tiles.permute(1, 3, 0, 2, 4)
        .reshape(-1, c, t, t)
        .contiguous(memory_format=torch.channels_last)
    )
    module = copy.deepcopy(module).eval().to(memory_format=torch.channels_last)

    def run() -> None:
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32),
        ):
            for k in range(0, tiles.shape[0], FLOOR_BATCH):
                module(tiles[k : k + FLOOR_BATCH])

    return run


def monai_predict(
    module: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype = torch.float32
) -> Callable[[], np.ndarray]:
    """MONAI's sliding_window_inference with the issue's settings, blending probabilities."""
    from monai.inferers import sliding_window_inference

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(module(batch).float(), dim=1)

    def run() -> np.ndarray:
        module.eval()
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32),
        ):
            out = sliding_window_inference(
                x,
                roi_size=(MONAI_ROI, MONAI_ROI),
                sw_batch_size=MONAI_BATCH,
                predictor=predictor,
                overlap=MONAI_OVERLAP,
                mode="gaussian",
            )
        return out[0].numpy()

    return run


def untiled_forward(module: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """Probabilities from one forward pass over the whole plane: no tiles, hence no seams."""
    network = inference_network(module, torch.device("cpu"), dtype)
    with torch.inference_mode():
        logits = network(x.contiguous(memory_format=torch.channels_last))
    probabilities: np.ndarray = logits_to_probabilities(logits)[0].numpy()
    return probabilities


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


# --------------------------------------------------------------------------- training


def train_benchmark(
    settings: Settings, log: Callable[[str], None]
) -> tuple[Segmenter, dict[str, Any]]:
    """Train on the benchmark scene; steps/s, time to validation Dice 0.9, and a profile of a step."""
    from napari_unetseg.core.training_events import EpochDone, StepDone, TrainingDone

    scene = _scene(settings.train_scene, settings.seed)
    seg = Segmenter.create(
        in_channels=1,
        n_classes=2,
        base_width=settings.base_width,
        depth=settings.depth,
        device="cpu",
    )
    config = TrainConfig(
        max_seconds=settings.train_seconds,
        seed=settings.seed,
        batch_size=settings.train_batch_size,
        patch_size=settings.train_patch_size,
    )
    time_to_09: float | None = None
    steps_to_09: int | None = None
    dice_curve: list[tuple[float, float | None]] = []
    step_times: list[float] = []
    last = None
    history = None
    for event in seg.train_iter(scene.image, scene.painted, config):
        if isinstance(event, StepDone):
            if last is not None:
                step_times.append(event.elapsed - last)
            last = event.elapsed
        elif isinstance(event, EpochDone):
            last = None  # validation time is not a step
            dice_curve.append((round(event.elapsed, 2), event.validation_dice))
            if (
                time_to_09 is None
                and event.validation_dice is not None
                and event.validation_dice >= 0.9
            ):
                time_to_09, steps_to_09 = event.elapsed, event.step
        elif isinstance(event, TrainingDone):
            history = event.history
    assert history is not None
    log(
        f"trained {history.steps} steps in {history.elapsed:.1f} s, best Dice {history.best_validation_dice}"
    )
    result: dict[str, Any] = {
        "scene": settings.train_scene,
        "batch_size": config.batch_size,
        "patch_size": config.patch_size,
        "steps": history.steps,
        "seconds": history.elapsed,
        "steps_per_second": history.steps / history.elapsed if history.elapsed > 0 else None,
        "median_step_seconds": statistics.median(step_times) if step_times else None,
        "seconds_to_dice_0.9": time_to_09,
        "steps_to_dice_0.9": steps_to_09,
        "best_validation_dice": history.best_validation_dice,
        "validation_curve": dice_curve,
        "profile": profile_training_step(seg, scene, config, settings.profile_steps),
    }
    return seg, result


def profile_training_step(
    seg: Segmenter, scene: Any, config: TrainConfig, steps: int
) -> dict[str, float]:
    """Median seconds of each part of a training step, on a copy of the trained model."""
    import copy

    planes = prepare_planes(
        scene.image, scene.painted, seg.config, config, seg.config.normalization
    )
    rng = np.random.default_rng(1)
    generator = torch.Generator().manual_seed(1)
    sampler = PatchSampler(planes, config.patch_size, 2, rng)
    model = copy.deepcopy(seg.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_name = resolve_loss_name(config.loss, seg.config.n_classes)
    parts: dict[str, list[float]] = {"sample": [], "augment": [], "forward_backward_step": []}
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        xb, yb, mb = (torch.from_numpy(a) for a in sampler.sample(config.batch_size))
        t1 = time.perf_counter()
        xb, yb, mb = augment(xb, yb, mb, config.intensity_jitter, generator)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = masked_loss(loss_name, model(xb).float(), yb, mb)
        loss.backward()
        optimizer.step()
        t3 = time.perf_counter()
        parts["sample"].append(t1 - t0)
        parts["augment"].append(t2 - t1)
        parts["forward_backward_step"].append(t3 - t2)
    medians = {k: statistics.median(v[2:]) for k, v in parts.items()}
    total = sum(medians.values())
    medians["data_fraction"] = (medians["sample"] + medians["augment"]) / total
    return medians


# --------------------------------------------------------------------------- memory


def memory_benchmark(seg: Segmenter, size: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Peak RSS above the loaded model and image while segmenting, measured in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "model.safetensors"
        seg.save(weights)
        root = Path(__file__).resolve().parent.parent
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
        }
        env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", str(weights), str(size)],
            capture_output=True,
            text=True,
            cwd=root,
            env=env,
            check=False,
        )
    if done.returncode != 0:
        log(done.stderr[-2000:])
        return {
            "size": size,
            "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed",
        }
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- the whole run


def mpix_per_s(size: int, seconds: float) -> float:
    return size * size / 1e6 / seconds


def run(settings: Settings, log: Callable[[str], None] = print) -> Results:
    torch.manual_seed(settings.seed)
    with torch_threads(settings.threads):
        return _run(settings, log)


def _run(settings: Settings, log: Callable[[str], None]) -> Results:
    results = Results(machine=machine_info(), settings=dict(vars(settings)))
    use_monai = settings.monai and monai_available()
    if settings.monai and not use_monai:
        results.notes.append(
            "MONAI is not installed (pip install 'napari-unetseg[bench]'): comparison skipped."
        )

    log("training on the benchmark scene ...")
    seg, results.training = train_benchmark(settings, log)
    if settings.contention_seconds > 0:
        results.contention = contention_benchmark(
            _scene(settings.train_scene, settings.seed),
            scene_image(settings.contention_predict_size, settings.seed),
            settings.contention_seconds,
            settings.train_batch_size,
            settings.train_patch_size,
            settings.seed,
            log,
        )
    module = seg.model.eval()
    default_dtype = inference_dtype(torch.device("cpu"), PredictConfig().precision)
    results.settings["default_precision"] = str(default_dtype).replace("torch.", "")

    # Throughput against image size; at compare_size every contender, elsewhere ours and the floors.
    for size in sorted(set(settings.sizes) | {settings.compare_size}):
        image = scene_image(size, settings.seed)
        x = normalized_tensor(seg, image)
        contenders: dict[str, Callable[[], Any]] = {
            "ours default": lambda image=image: seg.predict_proba(image),
            "ours float32": lambda image=image: seg.predict_proba(image, precision="float32"),
            "floor float32": raw_floor(module, x, torch.float32),
            "floor fused float32": raw_floor(
                inference_network(module, torch.device("cpu"), torch.float32), x, torch.float32
            ),
        }
        if cpu_has_native_bfloat16():
            contenders["ours bfloat16"] = lambda image=image: seg.predict_proba(
                image, precision="bfloat16"
            )
            contenders["floor bfloat16"] = raw_floor(module, x, torch.bfloat16)
            contenders["floor fused bfloat16"] = raw_floor(
                inference_network(module, torch.device("cpu"), torch.bfloat16), x, torch.bfloat16
            )
        if use_monai and size == settings.compare_size:
            contenders["MONAI float32"] = monai_predict(module, x)
            if cpu_has_native_bfloat16():
                contenders["MONAI bfloat16"] = monai_predict(module, x, torch.bfloat16)
        n = settings.rounds if size == settings.compare_size else max(1, settings.rounds // 2)
        log(f"{size}²: {len(contenders)} contenders x {n} rounds ...")
        times = rounds(contenders, n)
        results.speed[str(size)] = {
            name: mpix_per_s(size, statistics.median(t)) for name, t in times.items()
        }
        results.speed[str(size)]["_seconds"] = {
            name: statistics.median(t) for name, t in times.items()
        }  # type: ignore[assignment]
        if size == settings.compare_size:
            results.speed[str(size)]["_all_seconds"] = times  # type: ignore[assignment]

    # Ratios at compare_size: of the medians, and round by round.
    s = results.speed[str(settings.compare_size)]
    compare_times: dict[str, list[float]] = s["_all_seconds"]  # type: ignore[assignment]
    same = "bfloat16" if default_dtype == torch.bfloat16 else "float32"
    pairs = {
        "ours_default_vs_monai_float32": ("ours default", "MONAI float32"),
        "ours_default_vs_monai_bfloat16": ("ours default", "MONAI bfloat16"),
        "ours_default_vs_floor_same_precision": ("ours default", f"floor {same}"),
        "ours_default_vs_floor_float32": ("ours default", "floor float32"),
        "ours_default_vs_fused_floor_same_precision": ("ours default", f"floor fused {same}"),
        "ours_bfloat16_vs_ours_float32": ("ours bfloat16", "ours float32"),
    }
    for key, (faster, slower) in pairs.items():
        if faster not in s or slower not in s:
            results.ratios[key] = None
            continue
        results.ratios[key] = s[faster] / s[slower]
        results.round_ratios[key] = [
            t_slow / t_fast
            for t_fast, t_slow in zip(compare_times[faster], compare_times[slower], strict=True)
        ]

    # Agreement on the benchmark scene with the trained model.
    image = scene_image(settings.compare_size, settings.seed)
    classes_f32 = seg.predict_proba(image, precision="float32").argmax(0)
    classes_default = seg.predict_proba(image).argmax(0)
    results.agreement["ours_default_vs_ours_float32"] = agreement(classes_default, classes_f32)
    if cpu_has_native_bfloat16():
        classes_bf16 = seg.predict_proba(image, precision="bfloat16").argmax(0)
        results.agreement["ours_bfloat16_vs_ours_float32"] = agreement(classes_bf16, classes_f32)
    x = normalized_tensor(seg, image)
    if settings.compare_size <= 2048:  # one forward pass over the whole plane fits in memory
        results.agreement["ours_default_vs_untiled_forward"] = agreement(
            classes_default, untiled_forward(module, x, default_dtype).argmax(0)
        )
    if use_monai:
        monai_classes = monai_predict(module, x)().argmax(0)
        results.agreement["ours_default_vs_monai_float32"] = agreement(
            classes_default, monai_classes
        )
        results.agreement["ours_float32_vs_monai_float32"] = agreement(classes_f32, monai_classes)
    truth = _scene(min(settings.compare_size, 2048), settings.seed).classes
    if settings.compare_size <= 2048:
        results.agreement["ours_default_vs_ground_truth"] = agreement(
            classes_default > 0, truth > 0
        )
        results.agreement["ours_float32_vs_ground_truth"] = agreement(classes_f32 > 0, truth > 0)

    # Scaling: time(large) / time(small), interleaved.
    small, large = settings.scale_sizes
    images = {small: scene_image(small, settings.seed), large: scene_image(large, settings.seed)}
    log(f"scaling {small}² -> {large}² ...")
    times = rounds(
        {str(k): (lambda im=im: seg.predict_proba(im)) for k, im in images.items()},
        max(3, settings.rounds // 2),
    )
    t_small, t_large = statistics.median(times[str(small)]), statistics.median(times[str(large)])
    results.scaling = {
        "sizes": [small, large],
        "seconds": [t_small, t_large],
        "all_seconds": times,
        "ratio": t_large / t_small,
        "ideal": (large / small) ** 2,
    }

    log(f"memory while segmenting {settings.memory_size}² (subprocess) ...")
    results.memory = memory_benchmark(seg, settings.memory_size, log)

    results.machine["load_average_at_end"] = load_average()
    results.targets = check_targets(results, settings)
    return results


def check_targets(r: Results, settings: Settings) -> dict[str, bool | None]:
    def ge(value: float | None, bound: float) -> bool | None:
        return None if value is None else value >= bound

    ideal = r.scaling.get("ideal", 4.0)
    ratio = r.scaling.get("ratio")
    peak = r.memory.get("peak_above_baseline_mib")
    bf16_ok = r.agreement.get("ours_bfloat16_vs_ours_float32")
    return {
        "2x_faster_than_monai": ge(r.ratios.get("ours_default_vs_monai_float32"), 2.0),
        "agrees_with_monai_97": ge(r.agreement.get("ours_default_vs_monai_float32"), 0.97),
        "0.75x_floor_same_precision": ge(
            r.ratios.get("ours_default_vs_floor_same_precision"), 0.75
        ),
        "bfloat16_agrees_99.5": ge(bf16_ok, 0.995),
        "bfloat16_not_slower": ge(r.ratios.get("ours_bfloat16_vs_ours_float32"), 1.0),
        "memory_under_1GiB": None if peak is None else peak <= 1024,
        "scaling_within_0.9_1.1_of_ideal": None
        if ratio is None
        else 0.9 * ideal <= ratio <= 1.1 * ideal,
        "reaches_dice_0.9": r.training.get("seconds_to_dice_0.9") is not None,
        "training_0.8x_bare_loop": ge(r.contention.get("ours_vs_bare_loop"), 0.8),
        "busy_core_training_0.45x_quiet": ge(r.contention.get("ours_busy_vs_quiet"), 0.45),
    }
