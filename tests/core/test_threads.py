"""The thread tuner moves to the thread count whose steps are fastest, and puts torch's back."""

import numpy as np
import torch

from napari_unetseg.core import threads
from napari_unetseg.core.threads import ThreadTuner, candidate_counts


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def drive(tuner, clock, seconds_per_step, steps):
    """Run ``steps`` steps whose duration depends on the thread count in use."""
    used = []
    for _ in range(steps):
        tuner.before_step()
        count = tuner._active
        used.append(count)
        took = seconds_per_step[count]
        clock.now += took
        tuner.after_step(took)
    return used


def test_candidates_are_the_count_one_fewer_and_half():
    assert candidate_counts(2) == [2, 1]
    assert candidate_counts(8) == [8, 7, 4]
    assert candidate_counts(1) == [1]


def test_a_busy_core_moves_training_to_fewer_threads(monkeypatch):
    calls = []
    clock = FakeClock()
    tuner = ThreadTuner(2, clock=clock, set_threads=calls.append)
    # two threads thrash (another process holds a core): 1.5 s a step; one thread: 0.4 s
    used = drive(tuner, clock, {2: 1.5, 1: 0.4}, 40)
    assert tuner.current == 1 and tuner.switches == 1
    assert used[-10:] == [1] * 10
    tuner.restore()
    assert calls[-1] == torch.get_num_threads()


def test_a_quiet_machine_keeps_all_threads_and_only_probes_briefly():
    clock = FakeClock()
    tuner = ThreadTuner(2, clock=clock, set_threads=lambda n: None)
    used = drive(tuner, clock, {2: 0.2, 1: 0.35}, 400)
    assert tuner.current == 2
    # probing one thread costs a window (plus a warm-up step) every PERIOD seconds
    explorations = max(1, int(clock.now // threads.PERIOD) + 1)
    assert used.count(1) <= explorations * (threads.WINDOW + 1)
    assert used.count(1) >= threads.WINDOW + 1  # it did look


def test_contention_that_ends_brings_the_threads_back():
    clock = FakeClock()
    tuner = ThreadTuner(2, clock=clock, set_threads=lambda n: None)
    drive(tuner, clock, {2: 1.5, 1: 0.4}, 40)
    assert tuner.current == 1
    drive(tuner, clock, {2: 0.2, 1: 0.4}, 200)
    assert tuner.current == 2


def test_short_runs_never_switch():
    clock = FakeClock()
    tuner = ThreadTuner(2, clock=clock, set_threads=lambda n: None)
    used = drive(tuner, clock, {2: 0.1, 1: 0.05}, 15)  # 1.5 s in all
    assert set(used) == {2}


def test_explorations_that_change_nothing_come_less_often():
    clock = FakeClock()
    tuner = ThreadTuner(2, clock=clock, set_threads=lambda n: None)
    used = drive(tuner, clock, {2: 0.2, 1: 0.35}, 1000)  # about 200 s
    assert tuner.current == 2 and tuner.period == threads.LONGEST_PERIOD
    # at 2 s, then 15, 30 and 60 s apart: 2, 17, 47, 107, 167
    explorations = used.count(1) // threads.WINDOW
    assert 4 <= explorations <= 6


def test_a_fixed_count_is_used_and_restored():
    calls = []
    original = torch.get_num_threads()
    fixed = 1 if original > 1 else 2
    tuner = ThreadTuner(fixed, clock=FakeClock(), set_threads=calls.append)
    assert calls == [fixed] and fixed in tuner.candidates
    tuner.before_step()
    tuner.after_step(0.1)
    tuner.restore()
    assert calls[0] == fixed and calls[-1] == original


def test_prediction_runs_at_the_count_asked_and_gives_the_threads_back(monkeypatch):
    from napari_unetseg.core import PredictConfig, Segmenter, predict

    seen = []
    to_probabilities = predict.logits_to_probabilities

    def recording(logits):
        seen.append(torch.get_num_threads())
        return to_probabilities(logits)

    monkeypatch.setattr(predict, "logits_to_probabilities", recording)
    seg = Segmenter.create(base_width=4, depth=2, device="cpu", seed=0)
    before = torch.get_num_threads()
    image = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    seg.predict_proba(image, config=PredictConfig(threads=1, precision="float32"))
    assert torch.get_num_threads() == before
    assert seen == [1]
