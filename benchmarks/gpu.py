"""The CUDA path timed: the default training in 2-D and 3-D, prediction speed and peak GPU
memory by image size, the share of the GPU's own floor that the tiled pipeline reaches,
and agreement with the CPU's float32 labels.

``python -m benchmarks.gpu [--quick] [--device cuda] [--rounds 3] [--out DIR] [--name gpu]``

Every figure is taken in one run on one machine, so the GPU-over-CPU ratios compare the
GPU with the CPU beside it. ``--device cpu`` runs the same measurements on the CPU
(``--quick``: small sizes, a few training steps; the smoke test runs that).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unetseg.core import PredictConfig, Segmenter, TrainConfig
from napari_unetseg.core.devices import inference_dtype, select_device
from napari_unetseg.core.inference_network import inference_network
from napari_unetseg.core.predict import tiles_per_forward
from napari_unetseg.core.tiling import plan_tiles

from .records import write_results
from .stacks import STACK_CASES, dice_on, painted_stack
from .suite import machine_info, scene_image

HERE = Path(__file__).resolve().parent


@dataclass
class GpuSettings:
    device: str = "cuda"
    sizes: tuple[int, ...] = (1024, 2048, 4096, 8192)
    volume_shapes: tuple[tuple[int, int, int], ...] = ((64, 512, 512), (128, 1024, 1024))
    rounds: int = 3
    train_scene: int = 1024
    #: the default training: TrainConfig's epochs of 25 steps, with no time budget, so the
    #: figure is the wall time of the whole default run
    train_epochs: int = TrainConfig.max_epochs or 12
    steps_per_epoch: int = TrainConfig.steps_per_epoch
    #: the side compared with the CPU (labels and speed)
    compare_size: int = 2048
    compare_volume: tuple[int, int, int] = (64, 512, 512)
    #: the product's default network unless set (quick: a tiny one)
    model_size: dict[str, int] = field(default_factory=dict)
    quick: bool = False


def quick_settings(device: str) -> GpuSettings:
    return GpuSettings(
        device=device,
        sizes=(128, 192),
        volume_shapes=((16, 64, 64),),
        rounds=1,
        train_scene=128,
        train_epochs=1,
        steps_per_epoch=3,
        compare_size=128,
        compare_volume=(16, 64, 64),
        model_size={"base_width": 4, "depth": 2},
        quick=True,
    )


# --------------------------------------------------------------------------- clocks


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, function: Callable[[], Any]) -> tuple[Any, float]:
    synchronize(device)
    started = time.perf_counter()
    result = function()
    synchronize(device)
    return result, time.perf_counter() - started


def median_seconds(device: torch.device, function: Callable[[], Any], rounds: int) -> float:
    function()  # warm-up: kernels chosen, the inference copy built, precision proven
    return statistics.median(timed(device, function)[1] for _ in range(rounds))


def peak_gpu_mib(device: torch.device, function: Callable[[], Any]) -> float | None:
    """Peak GPU memory that ``function`` allocates above what was allocated before it."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    function()
    synchronize(device)
    return round((torch.cuda.max_memory_allocated(device) - before) / 2**20, 1)


def gpu_info(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {}
    properties = torch.cuda.get_device_properties(device)
    return {
        "gpu": properties.name,
        "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
        "multiprocessors": properties.multi_processor_count,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "bfloat16_supported": torch.cuda.is_bf16_supported(),
    }


# --------------------------------------------------------------------------- training


def train_2d(settings: GpuSettings, device: torch.device) -> tuple[Segmenter, dict[str, Any]]:
    """The default 2-D training (300 steps of 8 patches of 128²) on the benchmark scene."""
    from napari_unetseg.core.synthetic import nuclei_scene

    scene = nuclei_scene((settings.train_scene, settings.train_scene), seed=0)
    seg = Segmenter.create(device=settings.device, **settings.model_size)
    config = TrainConfig(
        max_seconds=None,
        max_epochs=settings.train_epochs,
        steps_per_epoch=settings.steps_per_epoch,
    )
    history, seconds = timed(
        device, lambda: seg.train(scene.image, scene.painted, config, progress=False)
    )
    return seg, {
        "scene": settings.train_scene,
        "steps": history.steps,
        "seconds": round(seconds, 2),
        "steps_per_second": round(history.steps / seconds, 2),
        "mixed_precision": device.type == "cuda" and config.mixed_precision,
        "best_validation_dice": history.best_validation_dice,
    }


def train_3d(settings: GpuSettings, device: torch.device) -> tuple[Segmenter, dict[str, Any]]:
    """The default 3-D training on the GoNuclear stack painted on three planes (as
    ``benchmarks.stacks`` paints it), with Dice on the planes left unpainted."""
    case = STACK_CASES[0]
    stack, _planes, painted, unpainted = painted_stack(case, seed=0, quick=settings.quick)
    seg = Segmenter.create(spatial_dims=3, voxel_size=case.voxel_size, device=settings.device)
    config = TrainConfig(
        max_seconds=None,
        max_epochs=settings.train_epochs,
        steps_per_epoch=settings.steps_per_epoch,
    )
    history, seconds = timed(
        device, lambda: seg.train(stack.image, painted, config, progress=False)
    )
    labels = seg.segment(stack.image)
    scored = np.zeros(stack.image.shape, bool)
    scored[unpainted] = True
    return seg, {
        "stack": case.name,
        "shape": list(stack.image.shape),
        "steps": history.steps,
        "seconds": round(seconds, 2),
        "steps_per_second": round(history.steps / seconds, 2),
        "dice_unpainted_planes": round(dice_on(labels == 1, stack.foreground, scored), 4),
    }


# --------------------------------------------------------------------------- prediction


def chosen_precision(seg: Segmenter, image: np.ndarray) -> str:
    """The precision "auto" ran at on this image (after the per-model proof)."""
    from napari_unetseg.core.layout import resolve_layout
    from napari_unetseg.core.precision import proven_dtype

    config = PredictConfig()
    layout = resolve_layout(image, seg.config.in_channels, None)
    dtype = inference_dtype(seg.device, config.precision)
    proven = proven_dtype(seg.model, seg.config, image, layout, config, seg.device, dtype)
    return str(proven).removeprefix("torch.")


def forward_floor(seg: Segmenter, size: int, dtype: torch.dtype, rounds: int) -> float:
    """Seconds for the inference copy alone over the tiles of a ``size``² image, in the
    batches prediction uses, already on the device: no reading, normalising, copying or
    stitching. The pipeline's ceiling."""
    config = PredictConfig()
    plan = plan_tiles((size, size), config, seg.config.min_size)
    ty, tx = plan.y.tile, plan.x.tile
    per_forward = tiles_per_forward(config.batch_size, ty * tx, seg.device, dtype)
    sizes = [min(per_forward, plan.n_tiles - k) for k in range(0, plan.n_tiles, per_forward)]
    network = inference_network(seg.model, seg.device, dtype, config.channels_last)
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    batches = {
        n: torch.randn(n, 1, ty, tx, device=seg.device).contiguous(memory_format=layout)
        for n in set(sizes)
    }

    def run() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(seg.device.type, dtype=dtype, enabled=dtype != torch.float32),
        ):
            for n in sizes:
                network(batches[n])

    return median_seconds(seg.device, run, rounds)


def predict_2d(seg: Segmenter, settings: GpuSettings) -> list[dict[str, Any]]:
    rows = []
    for size in settings.sizes:
        image = scene_image(size)
        precision = chosen_precision(seg, image)
        row: dict[str, Any] = {"size": size, "auto_precision": precision}
        for name in ("auto", "float32"):
            seconds = median_seconds(
                seg.device,
                lambda n=name, i=image: seg.segment(i, precision=n),
                settings.rounds,
            )
            row[f"{name}_mpix_per_s"] = round(size * size / seconds / 1e6, 2)
        row["peak_gpu_mib"] = peak_gpu_mib(seg.device, lambda i=image: seg.segment(i))
        floor = forward_floor(seg, size, getattr(torch, precision), settings.rounds)
        row["floor_mpix_per_s"] = round(size * size / floor / 1e6, 2)
        row["share_of_floor"] = round(row["auto_mpix_per_s"] / row["floor_mpix_per_s"], 3)
        rows.append(row)
        print(f"2-D {size}²: {row}", file=sys.stderr, flush=True)
    return rows


def stack_of(shape: tuple[int, int, int]) -> np.ndarray:
    """A uint16 stack of the given shape, tiled from the GoNuclear stack (real content)."""
    from .stacks import load_stack

    source = load_stack(STACK_CASES[0], quick=False, seed=0).image.astype(np.uint16)
    reps = [-(-n // s) for n, s in zip(shape, source.shape, strict=True)]
    tiled = np.tile(source, reps)
    return np.ascontiguousarray(tiled[: shape[0], : shape[1], : shape[2]])


def predict_3d(seg: Segmenter, settings: GpuSettings) -> list[dict[str, Any]]:
    rows = []
    for shape in settings.volume_shapes:
        stack = stack_of(shape)
        seconds = median_seconds(seg.device, lambda s=stack: seg.segment(s), settings.rounds)
        row = {
            "shape": list(shape),
            "voxels": int(stack.size),
            "mvoxels_per_s": round(stack.size / seconds / 1e6, 2),
            "seconds": round(seconds, 2),
            "peak_gpu_mib": peak_gpu_mib(seg.device, lambda s=stack: seg.segment(s)),
        }
        rows.append(row)
        print(f"3-D {shape}: {row}", file=sys.stderr, flush=True)
    return rows


# --------------------------------------------------------------------------- the CPU beside it


def on_cpu(seg: Segmenter) -> Segmenter:
    copy = Segmenter(type(seg.model)(seg.config), seg.config, device="cpu")
    copy.model.load_state_dict({k: v.cpu() for k, v in seg.model.state_dict().items()})
    return copy


def against_cpu(seg_2d: Segmenter, seg_3d: Segmenter, settings: GpuSettings) -> dict[str, Any]:
    """Labels and one timed run on this machine's CPU (float32, torch's thread choice)."""
    cpu = torch.device("cpu")
    image = scene_image(settings.compare_size)
    cpu_2d = on_cpu(seg_2d)
    cpu_labels, cpu_seconds = timed(cpu, lambda: cpu_2d.segment(image, precision="float32"))
    gpu_labels, gpu_seconds = timed(seg_2d.device, lambda: seg_2d.segment(image))
    stack = stack_of(settings.compare_volume)
    cpu_3d = on_cpu(seg_3d)
    cpu_stack, cpu_stack_seconds = timed(cpu, lambda: cpu_3d.segment(stack))
    gpu_stack, gpu_stack_seconds = timed(seg_3d.device, lambda: seg_3d.segment(stack))
    return {
        "size": settings.compare_size,
        "labels_agree_2d": round(float(np.mean(cpu_labels == gpu_labels)), 5),
        "cpu_seconds_2d": round(cpu_seconds, 2),
        "device_seconds_2d": round(gpu_seconds, 2),
        "volume": list(settings.compare_volume),
        "labels_agree_3d": round(float(np.mean(cpu_stack == gpu_stack)), 5),
        "cpu_seconds_3d": round(cpu_stack_seconds, 2),
        "device_seconds_3d": round(gpu_stack_seconds, 2),
        "cpu_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- report


def run(settings: GpuSettings) -> dict[str, Any]:
    device = select_device(settings.device)
    results: dict[str, Any] = {
        "machine": machine_info() | gpu_info(device) | {"platform": platform.platform()},
        "settings": asdict(settings),
    }
    seg_2d, results["train_2d"] = train_2d(settings, device)
    print(f"training 2-D: {results['train_2d']}", file=sys.stderr, flush=True)
    seg_3d, results["train_3d"] = train_3d(settings, device)
    print(f"training 3-D: {results['train_3d']}", file=sys.stderr, flush=True)
    results["predict_2d"] = predict_2d(seg_2d, settings)
    results["predict_3d"] = predict_3d(seg_3d, settings)
    results["against_cpu"] = against_cpu(seg_2d, seg_3d, settings)
    return results


def table(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        f"Device: {machine.get('gpu', 'CPU')} · CPU: {machine['cpu']} ×{machine['logical_cpus']} "
        f"· torch {machine['torch']}",
        "",
        "| 2-D side | auto precision | auto MPix/s | float32 MPix/s | floor MPix/s | "
        "share of floor | peak GPU MiB |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["predict_2d"]:
        lines.append(
            f"| {r['size']}² | {r['auto_precision']} | {r['auto_mpix_per_s']} | "
            f"{r['float32_mpix_per_s']} | {r['floor_mpix_per_s']} | {r['share_of_floor']} | "
            f"{r['peak_gpu_mib'] or 'n/a'} |"
        )
    lines += ["", "| 3-D stack | Mvoxels/s | seconds | peak GPU MiB |", "|---|---:|---:|---:|"]
    for r in results["predict_3d"]:
        shape = "×".join(map(str, r["shape"]))
        lines.append(
            f"| {shape} | {r['mvoxels_per_s']} | {r['seconds']} | {r['peak_gpu_mib'] or 'n/a'} |"
        )
    t2, t3, c = results["train_2d"], results["train_3d"], results["against_cpu"]
    lines += [
        "",
        f"Default training, 2-D: {t2['steps']} steps in {t2['seconds']} s "
        f"({t2['steps_per_second']} steps/s), validation Dice {t2['best_validation_dice']}.",
        f"Default training, 3-D ({t3['stack']}): {t3['steps']} steps in {t3['seconds']} s "
        f"({t3['steps_per_second']} steps/s), Dice on unpainted planes "
        f"{t3['dice_unpainted_planes']}.",
        f"Against the CPU ({c['cpu_threads']} threads, float32): {c['size']}² in "
        f"{c['cpu_seconds_2d']} s against {c['device_seconds_2d']} s, labels agree on "
        f"{100 * c['labels_agree_2d']:.3f} %; {'×'.join(map(str, c['volume']))} in "
        f"{c['cpu_seconds_3d']} s against {c['device_seconds_3d']} s, labels agree on "
        f"{100 * c['labels_agree_3d']:.3f} %.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks it runs")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (default: cuda)")
    parser.add_argument("--rounds", type=int, help="timed runs per figure (median reported)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="gpu", help="file stem of the JSON written")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("No CUDA GPU here: run on a GPU machine, or pass --device cpu.", file=sys.stderr)
        return 2
    settings = quick_settings(args.device) if args.quick else GpuSettings(device=args.device)
    if args.rounds:
        settings.rounds = args.rounds
    results = run(settings)
    print(table(results))
    path = write_results(args.out, args.name, args.quick, results)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
