"""Freed memory is kept while jobs run and given back when the last one ends."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from napari_unetseg.core import Segmenter, TrainConfig, allocator
from napari_unetseg.core.synthetic import nuclei_scene


class RecordingLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int] | tuple[str, int]] = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append(("mallopt", parameter, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def libc(monkeypatch) -> RecordingLibc:
    fake = RecordingLibc()
    monkeypatch.setattr(allocator, "glibc", lambda: fake)
    return fake


START = [
    ("mallopt", allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD),
    ("mallopt", allocator.M_TRIM_THRESHOLD, allocator.JOB_TRIM_THRESHOLD),
]
END = [
    ("mallopt", allocator.M_TRIM_THRESHOLD, allocator.IDLE_TRIM_THRESHOLD),
    ("malloc_trim", 0),
]


def test_settings_change_when_the_first_job_starts_and_the_last_ends(libc):
    with allocator.reuse_freed_memory():
        assert libc.calls == START
        with allocator.reuse_freed_memory():
            assert allocator.jobs_running() == 2
        assert libc.calls == START, "an inner job must not give memory back"
    assert libc.calls == START + END
    assert allocator.jobs_running() == 0


def test_an_error_still_ends_the_job(libc):
    with pytest.raises(ValueError), allocator.reuse_freed_memory():
        raise ValueError("boom")
    assert libc.calls == START + END
    assert allocator.jobs_running() == 0


def test_jobs_in_threads_share_one_setting(libc):
    inside, release = threading.Barrier(3), threading.Event()

    def job() -> None:
        with allocator.reuse_freed_memory():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert allocator.jobs_running() == 2
    release.set()
    for t in threads:
        t.join()
    assert libc.calls == START + END


def test_prediction_and_training_run_inside_a_job(libc):
    scene = nuclei_scene((96, 96), seed=1)
    seg = Segmenter.create(base_width=4, depth=2, device="cpu")
    seen = []
    events = seg.predict_iter(scene.image, tile_size=64, overlap=8)
    for _ in events:
        seen.append(allocator.jobs_running())
    assert seen and all(n == 1 for n in seen)
    assert allocator.jobs_running() == 0

    events = seg.train_iter(
        scene.image, scene.painted, TrainConfig(max_epochs=1, steps_per_epoch=2, patch_size=32)
    )
    next(events)
    assert allocator.jobs_running() == 1
    events.close()  # stopped early, as the widget's Stop does
    assert allocator.jobs_running() == 0
    assert libc.calls == (START + END) * 2


@pytest.mark.skipif(allocator.glibc() is None, reason="not glibc")
def test_real_glibc_accepts_the_settings():
    libc = allocator.glibc()
    assert libc is not None
    assert libc.mallopt(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD) == 1
    assert libc.mallopt(allocator.M_TRIM_THRESHOLD, allocator.IDLE_TRIM_THRESHOLD) == 1
    scene = nuclei_scene((96, 96), seed=2)
    probabilities = Segmenter.create(base_width=4, depth=2, device="cpu").predict_proba(scene.image)
    assert np.isfinite(probabilities).all()


def test_other_platforms_leave_the_allocator_alone(monkeypatch):
    allocator.glibc.cache_clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    try:
        assert allocator.glibc() is None
        with allocator.reuse_freed_memory():
            assert allocator.jobs_running() == 1
        assert allocator.jobs_running() == 0
    finally:
        allocator.glibc.cache_clear()


def test_the_environment_can_switch_it_off(monkeypatch):
    allocator.glibc.cache_clear()
    monkeypatch.setenv(allocator.SWITCH, "0")
    try:
        assert allocator.glibc() is None
    finally:
        allocator.glibc.cache_clear()
