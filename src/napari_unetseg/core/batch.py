"""Segment many image files, in this process or spread over a dask.distributed cluster.

:func:`plan_batch` turns file names, folders and glob patterns into one job per image and
checks everything that can be checked before any work starts: missing files, patterns
that match nothing, unsupported formats, an output folder that is a file, and two inputs
whose results would have the same name. Label files (``*_labels.tif``, ``*_mask.npy``,
and our own ``*_unetseg.*`` results) are never taken as images, and no output is ever
written over an input.

:func:`segment_files` runs the jobs. Without a client it runs them here, one after the
other; with a ``dask.distributed`` client the files are spread over the workers, each of
which loads the model once and keeps it. A file that fails is reported and skipped, the
others finish; a result that exists already is skipped, so a rerun resumes an
interrupted batch. Results are written atomically (a temporary name, then a rename), so
an existing result is always a complete one.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import InputError, UnetSegError

OutputFormat = Literal["tif", "npy", "zarr"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("tif", "npy", "zarr")
#: File endings read as images; a ``.zarr`` folder is read lazily.
IMAGE_SUFFIXES = (".tif", ".tiff", ".npy", ".zarr")
#: What an output's name adds to its input's: ``cells.tif`` -> ``cells_unetseg.tif``.
OUTPUT_SUFFIX = "_unetseg"
#: Names ending like these (before the file ending) are label files, never images.
LABEL_NAME = re.compile(r"[_\-.](labels?|masks?|unetseg)$", re.IGNORECASE)
_GLOB_CHARACTERS = re.compile(r"[*?\[]")

Status = Literal["done", "skipped", "failed", "ignored"]


@dataclass(frozen=True)
class FileJob:
    """One image to segment and where its result goes."""

    input: Path
    output: Path


@dataclass(frozen=True)
class BatchPlan:
    """The jobs of a batch, and the names that were left out with the reason why."""

    jobs: tuple[FileJob, ...]
    ignored: tuple[tuple[Path, str], ...]


@dataclass(frozen=True)
class FileResult:
    """What happened to one input: ``done``, ``skipped`` (its result exists), ``failed``
    (``message`` says why) or ``ignored`` (not an image, e.g. a label file)."""

    input: Path
    output: Path | None
    status: Status
    message: str = ""
    seconds: float = 0.0
    worker: str = ""


def image_stem(path: Path) -> str:
    """The name without its image ending: ``a.tif`` -> ``a``, ``b.ome.zarr`` -> ``b.ome``."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_label_file(path: Path) -> bool:
    """True for names such as ``a_labels.tif``, ``a-mask.npy`` or our own ``a_unetseg.tif``."""
    return LABEL_NAME.search(image_stem(path)) is not None


def _is_image_name(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def _expand(item: str | os.PathLike[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files an argument stands for, and the files it matched but left out."""
    text = os.fspath(item)
    path = Path(text).expanduser()
    if path.is_dir() and not text.lower().rstrip("/\\").endswith(".zarr"):
        found = sorted(p for p in path.iterdir() if _is_image_name(p))
        if not found:
            raise InputError(f"{text}: the folder holds no TIFF, .npy or .zarr images.")
        return found, []
    if path.exists():
        if not _is_image_name(path):
            raise InputError(
                f"{text}: not a supported image file; use TIFF (.tif, .tiff), .npy or .zarr."
            )
        return [path], []
    if _GLOB_CHARACTERS.search(text):
        matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
        if not matches:
            raise InputError(f"{text}: no file matches this pattern.")
        images = [p for p in matches if _is_image_name(p)]
        others = [(p, "not a TIFF, .npy or .zarr image") for p in matches if not _is_image_name(p)]
        if not images:
            raise InputError(f"{text}: the files it matches are not TIFF, .npy or .zarr images.")
        return images, others
    raise InputError(f"{text}: no such file or folder.")


def output_path(image: Path, output_dir: Path | None, output_format: OutputFormat) -> Path:
    """``<output_dir or the image's folder>/<name>_unetseg.<format>``."""
    folder = image.parent if output_dir is None else output_dir
    return folder / f"{image_stem(image)}{OUTPUT_SUFFIX}.{output_format}"


def plan_batch(
    inputs: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None,
    output_format: OutputFormat = "tif",
    *,
    skip_label_files: bool = True,
) -> BatchPlan:
    """Expand ``inputs`` (files, folders, glob patterns) into jobs; raise before any work.

    Raises :class:`InputError` for a missing file, a pattern that matches nothing, a file
    that is not an image, an output folder that is a file, or two inputs whose results
    would have the same name (``a/x.tif`` and ``b/x.npy`` into one folder).
    """
    if output_format not in OUTPUT_FORMATS:
        raise InputError(
            f"output format {output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}."
        )
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    folder = None if output_dir is None else Path(output_dir).expanduser()
    if folder is not None and folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: the output folder is a file; name a folder instead.")
    images: dict[Path, Path] = {}  # resolved -> as given
    ignored: dict[Path, tuple[Path, str]] = {}
    for item in inputs:
        found, left_out = _expand(item)
        for path, why in left_out:
            ignored.setdefault(path.resolve(), (path, why))
        for path in found:
            if skip_label_files and is_label_file(path):
                ignored.setdefault(
                    path.resolve(), (path, "a label file (by its name), not an image")
                )
            else:
                images.setdefault(path.resolve(), path)
    if not images:
        names = ", ".join(str(p) for p, _ in ignored.values()) or "nothing"
        raise InputError(f"no images to segment: the inputs hold only label files ({names}).")
    jobs = [FileJob(path, output_path(path, folder, output_format)) for path in images.values()]
    by_output: dict[str, list[Path]] = {}
    for job in jobs:  # casefolded: macOS and Windows see A.tif and a.tif as one file
        by_output.setdefault(str(job.output.resolve()).casefold(), []).append(job.input)
    clashes = [sources for sources in by_output.values() if len(sources) > 1]
    if clashes:
        shown = "; ".join(" and ".join(str(p) for p in sources) for sources in clashes[:3])
        raise InputError(
            f"{shown} would get results of the same name; rename one, or segment them "
            "into separate --output-dir folders."
        )
    inputs_resolved = {str(p).casefold() for p in images}
    for job in jobs:
        if str(job.output.resolve()).casefold() in inputs_resolved:  # pragma: no cover - a guard
            raise InputError(f"{job.input}: its result would replace an input, {job.output}.")
    return BatchPlan(tuple(jobs), tuple(ignored.values()))


# --------------------------------------------------------------------------- reading, writing


def read_image(path: Path) -> Any:
    """An image file as an array: TIFF and .npy (memory-mapped) as numpy, .zarr lazily."""
    name = path.name.lower()
    if name.endswith(".npy"):
        with open(path, "rb") as handle:
            if handle.read(6) != b"\x93NUMPY":
                raise InputError("not a .npy file (it lacks the NumPy header).")
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise InputError(
                f"not a plain numeric .npy array (it holds Python objects, or is damaged: {error})."
            ) from None
    if name.endswith(".zarr"):
        import zarr

        opened = zarr.open(str(path), mode="r")
        if isinstance(opened, zarr.Group):  # OME-Zarr: the full-resolution level, "0"
            if "0" not in opened:
                raise InputError("a zarr group without an array '0' (OME-Zarr level 0).")
            opened = opened["0"]
        return opened
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            if not len(tiff.pages) or not tiff.series:
                raise InputError("not a readable TIFF file (no image in it).")
            image: np.ndarray = tiff.asarray()
    except tifffile.TiffFileError as error:
        raise InputError(f"not a readable TIFF file ({error}).") from None
    return image


def _replace_folder(temporary: Path, final: Path) -> None:
    """Move a finished zarr folder into place; an older result is removed only after."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(temporary, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def segment_one(
    segmenter: Any, job: FileJob, output_format: OutputFormat, options: dict[str, Any]
) -> None:
    """Segment ``job.input`` with a loaded :class:`Segmenter` and write ``job.output``."""
    from .atomic_files import atomic_write

    image = read_image(job.input)
    job.output.parent.mkdir(parents=True, exist_ok=True)
    if output_format == "zarr":
        import zarr

        from .layout import resolve_layout

        layout = resolve_layout(image, segmenter.config.in_channels, options.get("axes"))
        dtype = "uint32" if segmenter.is_objects else "uint8"
        temporary = job.output.with_name(f".{job.output.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            plane = layout.plane_shape
            out = zarr.open_array(
                str(temporary),
                mode="w",
                shape=layout.output_shape,
                dtype=dtype,
                chunks=(1,) * len(layout.stack_shape) + (min(plane[0], 1024), min(plane[1], 1024)),
            )
            segmenter.segment(image, out=out, **options)
            _replace_folder(temporary, job.output)
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)
        return
    labels = segmenter.segment(image, **options)
    if output_format == "npy":

        def write_npy(temporary: Path) -> None:
            with open(temporary, "wb") as handle:  # a handle, so numpy does not append ".npy"
                np.save(handle, labels, allow_pickle=False)

        atomic_write(job.output, write_npy)
    else:
        import tifffile

        def write_tiff(temporary: Path) -> None:
            tifffile.imwrite(temporary, labels, compression="zlib")

        atomic_write(job.output, write_tiff)


def describe_failure(error: BaseException) -> str:
    """One line: our own errors speak for themselves, others are named by their type."""
    text = " ".join(str(error).split()) or "no message"
    if isinstance(error, UnetSegError):
        return text
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    return f"{type(error).__name__}: {text}"


# --------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class ModelSource:
    """A weights file as the workers load it; ``stamp`` changes when the file does.

    ``threads``: torch threads for each worker that loads it (None leaves them as they are).
    ``trust_code``: the user consents to files that hold code (TorchScript).
    """

    path: Path
    stamp: tuple[int, int]
    device: str
    threads: int | None = None
    trust_code: bool = False

    @classmethod
    def of(
        cls,
        path: str | os.PathLike[str],
        device: str,
        threads: int | None = None,
        trust_code: bool = False,
    ) -> ModelSource:
        if threads is not None and threads < 1:
            raise InputError(f"threads_per_worker must be at least 1, not {threads}.")
        resolved = Path(path).expanduser().resolve()
        try:
            info = resolved.stat()
        except OSError as error:
            raise InputError(f"{path}: {error.strerror or 'cannot be read'}.") from None
        return cls(resolved, (info.st_mtime_ns, info.st_size), device, threads, trust_code)


_worker_models: dict[tuple[str, ModelSource], tuple[Any, threading.Lock]] = {}
_worker_models_lock = threading.Lock()


def _current_worker() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return ""


def worker_segmenter(source: ModelSource) -> tuple[Any, threading.Lock]:
    """This worker's copy of the model, loaded on its first file and kept for the rest.

    A worker keeps one model: loading another drops the one it had. The lock serialises
    predictions within one worker: torch already uses the worker's cores for one image.
    """
    worker = _current_worker()
    key = (worker, source)
    with _worker_models_lock:
        loaded = _worker_models.get(key)
        if loaded is None:
            from .segmenter import Segmenter

            for other in [k for k in _worker_models if k[0] == worker]:
                del _worker_models[other]
            if source.threads is not None:
                import torch

                torch.set_num_threads(source.threads)
            loaded = (
                Segmenter.load(source.path, device=source.device, trust_code=source.trust_code),
                threading.Lock(),
            )
            _worker_models[key] = loaded
    return loaded


def run_job(
    job: FileJob,
    source: ModelSource,
    output_format: OutputFormat,
    options: dict[str, Any],
    overwrite: bool,
) -> FileResult:
    """Segment one file on whichever worker runs this; a failure is returned, not raised."""
    return _run(job, lambda: worker_segmenter(source), output_format, options, overwrite)


def _run(
    job: FileJob,
    model: Callable[[], tuple[Any, threading.Lock]],
    output_format: OutputFormat,
    options: dict[str, Any],
    overwrite: bool,
) -> FileResult:
    started = time.perf_counter()
    worker = _current_worker()
    if not overwrite and job.output.exists():
        return FileResult(job.input, job.output, "skipped", "the result exists", 0.0, worker)
    try:
        segmenter, lock = model()
        with lock:
            segment_one(segmenter, job, output_format, options)
    except Exception as error:  # one bad file must not stop the batch: report it
        return FileResult(
            job.input,
            job.output,
            "failed",
            describe_failure(error),
            time.perf_counter() - started,
            worker,
        )
    return FileResult(job.input, job.output, "done", "", time.perf_counter() - started, worker)


# --------------------------------------------------------------------------- the batch


def segment_files(
    model_path: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None,
    client: Any = None,
    *,
    output_format: OutputFormat = "tif",
    overwrite: bool = False,
    axes: str | None = None,
    tile_size: int | None = None,
    device: str = "auto",
    threads_per_worker: int | None = None,
    on_result: Callable[[FileResult, int, int], object] | None = None,
    trust_code: bool = False,
) -> list[FileResult]:
    """Segment image files with a weights file; return what happened to each input.

    Parameters
    ----------
    model_path
        A weights file that :meth:`Segmenter.load` reads. Workers read it themselves, so on
        a cluster it must be on a filesystem they share.
    inputs
        Files, folders (their images) and glob patterns such as ``"plates/*.tif"``. TIFF,
        ``.npy`` and ``.zarr`` (OME-Zarr level 0) are read; label files are left out.
    output_dir
        Where results go (created if missing); None puts each beside its input. A result is
        named ``<input name>_unetseg.<output_format>``.
    client
        A ``dask.distributed.Client``: files are spread over its workers, each loading the
        model once. None runs everything in this process.
    output_format
        ``"tif"`` (zlib-compressed), ``"npy"`` or ``"zarr"`` (written tile row by tile row).
    overwrite
        Replace results that exist; by default they are skipped, so a rerun resumes.
    axes, tile_size, device
        As for :meth:`Segmenter.segment`; ``tile_size`` None keeps the default.
    threads_per_worker
        Torch threads in each worker (dask's worker processes start with one). Give a
        worker one dask thread and this many cores: it segments one file at a time.
    on_result
        Called as ``on_result(result, finished, total)`` as each file finishes, in the order
        they finish.

    Returns
    -------
    list of FileResult
        One per input, in input order, then the files left out (``status="ignored"``).

    Raises
    ------
    InputError, WeightsFileError
        Before any work starts, for the problems :func:`plan_batch` checks, and for a
        weights file that cannot be loaded.
    """
    plan = plan_batch(inputs, output_dir, output_format)
    source = ModelSource.of(model_path, device, threads_per_worker, trust_code)
    from .segmenter import Segmenter

    # A bad weights file fails here, once, before any work; run here, this is the model used.
    segmenter = Segmenter.load(
        source.path, device=device if client is None else "cpu", trust_code=trust_code
    )
    if output_dir is not None:
        Path(output_dir).expanduser().mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"axes": axes}
    if tile_size is not None:
        options["tile_size"] = tile_size
    total = len(plan.jobs)
    results: dict[Path, FileResult] = {}

    def record(result: FileResult) -> None:
        results[result.input] = result
        if on_result is not None:
            on_result(result, len(results), total)

    pending = []
    for job in plan.jobs:
        if not overwrite and job.output.exists():
            record(FileResult(job.input, job.output, "skipped", "the result exists"))
        else:
            pending.append(job)
    if client is None:
        here = (segmenter, threading.Lock())
        for job in pending:
            record(_run(job, lambda: here, output_format, options, overwrite))
    else:
        _run_on_cluster(client, pending, source, output_format, options, overwrite, record)
    ordered = [results[job.input] for job in plan.jobs]
    return ordered + [FileResult(path, None, "ignored", why) for path, why in plan.ignored]


def _run_on_cluster(
    client: Any,
    jobs: Sequence[FileJob],
    source: ModelSource,
    output_format: OutputFormat,
    options: dict[str, Any],
    overwrite: bool,
    record: Callable[[FileResult], None],
) -> None:
    from distributed import as_completed

    futures = {
        client.submit(
            run_job,
            job,
            source,
            output_format,
            options,
            overwrite,
            key=f"unetseg-{uuid.uuid4().hex}",
            pure=False,
        ): job
        for job in jobs
    }
    for future in as_completed(list(futures)):  # type: ignore[no-untyped-call]
        job = futures[future]
        try:
            result: FileResult = future.result()
        except Exception as error:  # the worker died or the task was lost: report the file
            result = FileResult(job.input, job.output, "failed", describe_failure(error))
        record(result)


# --------------------------------------------------------------------------- one huge image


@dataclass(frozen=True)
class Strip:
    """Rows ``rows[0]`` to ``rows[1]`` of plane ``plane`` of a large image, for one task."""

    plane: tuple[int, ...]
    rows: tuple[int, int]


def _segment_strip(
    source: ModelSource,
    image_path: Path,
    axes: str,
    output_path: Path,
    strip: Strip,
    normalizer: Any,
    config: Any,
) -> str:
    """Segment one strip on whichever worker runs this, writing into the shared zarr output."""
    import zarr

    segmenter, lock = worker_segmenter(source)
    with lock:
        _predict_strip(
            segmenter,
            read_image(image_path),
            axes,
            zarr.open_array(str(output_path), mode="r+"),
            strip,
            normalizer,
            config,
        )
    return _current_worker()


def _predict_strip(
    segmenter: Any, image: Any, axes: str, out: Any, strip: Strip, normalizer: Any, config: Any
) -> None:
    from .devices import inference_dtype
    from .layout import resolve_layout
    from .predict import predict_iter, run_to_end

    layout = resolve_layout(image, segmenter.config.in_channels, axes)
    run_to_end(
        predict_iter(
            segmenter.model,
            segmenter.config,
            image,
            layout,
            config,
            segmenter.device,
            inference_dtype(segmenter.device, config.precision),
            want_probabilities=False,
            planes=[strip.plane],
            out_labels=out,
            normalizer=normalizer,
            rows=strip.rows,
        )
    )


def segment_large_image(
    model_path: str | os.PathLike[str],
    image_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    client: Any = None,
    *,
    strip_rows: int = 2048,
    axes: str | None = None,
    tile_size: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    threads_per_worker: int | None = None,
    on_progress: Callable[[int, int], object] | None = None,
    trust_code: bool = False,
) -> Path:
    """Segment one large zarr image in strips of rows spread over the workers, into zarr.

    Each strip is computed from the tiles that reach into it (its halo is the rest of
    those tiles: up to one tile above and below), with the intensity statistics of the
    whole image, in the same batches and blended in the same order as a single-process
    :meth:`Segmenter.segment` with the same settings, so the labels are identical to it.
    Workers read the image, and write their own chunks of the output, themselves: the
    image and the output folder must be on a filesystem they share.

    Parameters
    ----------
    image_path
        A ``.zarr`` array, or an OME-Zarr group (its level ``0``); TIFF and ``.npy`` work too.
    output_path
        The ``.zarr`` to write (class labels, uint8); written under a temporary name and
        renamed when every strip is done. An existing one is an error unless ``overwrite``.
    strip_rows
        Rows per task and per output chunk. Smaller strips spread better but recompute
        more tiles at their borders.

    Raises
    ------
    InputError
        For an object model: object ids would not agree where strips meet. Segment such
        an image in one process, ``seg.segment(zarr_image, out=zarr_labels)``, which
        reads it one row of tiles at a time.
    """
    import zarr

    from .config import PredictConfig
    from .layout import resolve_layout
    from .normalization import fit_normalizer
    from .predict import classes_from_probabilities
    from .segmenter import Segmenter

    image_file, output = _split_paths(image_path, output_path, overwrite)
    if strip_rows < 1:
        raise InputError(f"strip_rows must be at least 1, not {strip_rows}.")
    source = ModelSource.of(model_path, device, threads_per_worker, trust_code)
    segmenter = Segmenter.load(
        source.path, device=device if client is None else "cpu", trust_code=trust_code
    )
    if segmenter.is_objects:
        raise InputError(
            "an object model cannot split one image over workers: object ids would not agree "
            "where the strips meet. Segment it in one process instead (the command without "
            "--split-rows, or seg.segment(zarr_image, out=zarr_labels)), which reads it one "
            "row of tiles at a time."
        )
    image = read_image(image_file)
    layout = resolve_layout(image, segmenter.config.in_channels, axes)
    config = PredictConfig() if tile_size is None else PredictConfig(tile_size=tile_size)
    normalizer = fit_normalizer(image, layout, segmenter.config.normalization)
    n_outputs = segmenter.config.n_classes
    dtype = classes_from_probabilities(np.zeros((n_outputs, 1, 1), np.float32)).dtype
    height, width = layout.plane_shape
    strips = [
        Strip(plane, (top, min(top + strip_rows, height)))
        for plane in layout.plane_indices()
        for top in range(0, height, strip_rows)
    ]
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        out = zarr.open_array(
            str(temporary),
            mode="w",
            shape=layout.output_shape,
            dtype=dtype,
            chunks=(1,) * len(layout.stack_shape) + (min(strip_rows, height), min(width, 4096)),
        )
        if client is None:
            for done, strip in enumerate(strips, 1):
                _predict_strip(segmenter, image, layout.axes, out, strip, normalizer, config)
                if on_progress is not None:
                    on_progress(done, len(strips))
        else:
            _strips_on_workers(
                client,
                strips,
                (source, image_file.resolve(), layout.axes, temporary.resolve()),
                normalizer,
                config,
                on_progress,
            )
        _replace_folder(temporary, output)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return output


def _split_paths(
    image_path: str | os.PathLike[str], output_path: str | os.PathLike[str], overwrite: bool
) -> tuple[Path, Path]:
    """The image and the output zarr of a split image, checked."""
    image_file = Path(image_path).expanduser()
    output = Path(output_path).expanduser()
    if not image_file.exists():
        raise InputError(f"{image_path}: no such file or folder.")
    if not output.name.lower().endswith(".zarr"):
        raise InputError(f"{output_path}: the output of a split image is a zarr; name it *.zarr.")
    if output.resolve() == image_file.resolve():
        raise InputError(f"{output_path} is the image itself; name another output.")
    if output.exists() and not overwrite:
        raise InputError(f"{output_path} exists; remove it or pass overwrite=True (--overwrite).")
    return image_file, output


def _strips_on_workers(
    client: Any,
    strips: list[Strip],
    where: tuple[ModelSource, Path, str, Path],
    normalizer: Any,
    config: Any,
    on_progress: Callable[[int, int], object] | None,
) -> None:
    """Each strip as a task; ``where``: the model, the image, its axes and the output zarr."""
    from distributed import as_completed

    source, image_file, axes, output = where
    futures = [
        client.submit(
            _segment_strip,
            source,
            image_file,
            axes,
            output,
            strip,
            normalizer,
            config,
            key=f"unetseg-strip-{uuid.uuid4().hex}",
            pure=False,
        )
        for strip in strips
    ]
    try:
        for done, future in enumerate(as_completed(futures), 1):  # type: ignore[no-untyped-call]
            future.result()  # a strip that fails fails the image: nothing is renamed
            if on_progress is not None:
                on_progress(done, len(strips))
    except BaseException:
        client.cancel(futures)
        raise
