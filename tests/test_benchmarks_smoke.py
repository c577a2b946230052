"""The benchmark suite runs end to end on tiny sizes (no timing is checked: CI machines vary)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_writes_table_json_and_plot(tmp_path, capsys):
    from benchmarks.__main__ import main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "| ours default |" in table and "| floor float32 |" in table

    results = json.loads((tmp_path / "latest.json").read_text())
    assert set(results) >= {
        "machine",
        "speed",
        "ratios",
        "agreement",
        "scaling",
        "memory",
        "training",
        "targets",
    }
    speed = results["speed"]["128"]
    for name in ("ours default", "ours float32", "floor float32", "floor fused float32"):
        assert speed[name] > 0
    assert results["agreement"]["ours_default_vs_ours_float32"] > 0.5
    assert results["memory"]["size"] == 128 and "peak_above_baseline_mib" in results["memory"]
    assert results["training"]["profile"]["forward_backward_step"] > 0
    if importlib.util.find_spec("monai") is not None:
        assert "MONAI float32" in speed
        assert results["agreement"]["ours_default_vs_monai_float32"] > 0.5
    else:
        assert "MONAI float32" not in speed
        assert any("MONAI is not installed" in note for note in results["notes"])
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "latest.png").stat().st_size > 1000


def test_command_line_help():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout


def test_quick_accuracy_benchmark_writes_its_table_and_json(tmp_path, capsys):
    from benchmarks.accuracy import CASES, main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    assert "| case | painted |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "accuracy-quick.json").read_text())["cases"]
    assert [r["name"] for r in rows] == [c.name for c in CASES]
    assert all(0 <= r["dice_unpainted"] <= 1 and r["steps"] >= 1 for r in rows)
    assert all("object_f1" in r for r in rows if r["objects"])


@pytest.mark.slow  # starts two local dask clusters of worker processes: about 30 s on 2 cores
def test_quick_scale_benchmark_writes_its_table_and_json(tmp_path, capsys):
    pytest.importorskip("distributed")
    from benchmarks.scale import main

    assert main(["--quick", "--out", str(tmp_path), "--work-dir", str(tmp_path)]) == 0
    assert "| 2 worker(s) |" in capsys.readouterr().out
    results = json.loads((tmp_path / "scale-quick.json").read_text())
    batch = results["batch"]
    assert batch["in_process"]["images_per_s"] > 0
    for n in (1, 2):
        row = batch[f"workers_{n}"]
        assert row["images_per_s"] > 0 and sum(row["files_per_worker"]) == batch["files"]
        assert len(row["peak_rss_per_worker_mib"]) == n
    large = results["large"]
    assert large["size"] == 300 and large["peak_above_model_mib"] < 1024 and large["under_1_gib"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("unetseg-scale-")] == []


def test_quick_real_image_benchmark_runs_every_contender(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from benchmarks.real import main

    draws = importlib.util.find_spec("matplotlib") is not None  # in the bench extra
    figures = ["--figures", str(tmp_path / "figs")] if draws else []
    assert main(["--quick", "--out", str(tmp_path), *figures]) == 0
    assert "| ours Dice | forest Dice | Otsu Dice |" in capsys.readouterr().out
    result = json.loads((tmp_path / "real-quick.json").read_text())
    classes, objects, scribbles = result["rows"]
    for row in (classes, objects, scribbles):
        assert set(row["dice"]) == {"ours", "forest", "otsu"}
        assert all(0 <= v <= 1 for v in row["dice"].values())
        assert row["ours"]["steps"] >= 1 and row["painted_percent"] > 0
    assert set(objects["f1"]) == {"ours", "forest", "otsu"}
    assert scribbles["painted_part"] == "whole image" and classes["painted_part"] == "left half"
    assert "maize regions, hand scribbles: Dice ours - forest" in result["summary"]
    if draws:
        assert len(list((tmp_path / "figs").glob("*.png"))) == 3
    assert "classes: mean Dice ours - forest" in result["summary"]
    assert classes["paint"] == "lines"
    # the machine's load before and after, so a reader can tell a quiet run from a shared one
    assert len(result["machine"]["load_average_at_start"]) == 3
    assert len(result["machine"]["load_average_at_end"]) == 3
    # the stacks too: 2-D and 3-D U-Nets, forest and Otsu on the unpainted planes of a crop
    stacks = json.loads((tmp_path / "real-stacks-quick.json").read_text())
    assert "note" not in stacks["machine"] and len(stacks["machine"]["load_average_at_end"]) == 3
    (stack,) = stacks["rows"]
    assert set(stack["dice"]) == {"2-D", "3-D", "forest", "otsu", "gaussian+otsu"}
    assert all(0 <= v <= 1 for v in stack["dice"].values())
    assert stack["info"]["3-D"]["steps"] == stack["info"]["2-D"]["steps"] >= 1


def test_simulated_painting_stays_on_the_left_half_and_inside_its_class():
    import numpy as np
    from benchmarks.painting import paint_objects, paint_region, paint_strokes

    rng = np.random.default_rng(0)
    instances = np.zeros((120, 160), np.int32)
    for i, (y, x) in enumerate([(20, 20), (60, 30), (90, 60), (30, 110), (80, 130)], 1):
        yy, xx = np.ogrid[:120, :160]
        instances[(yy - y) ** 2 + (xx - x) ** 2 < 100] = i
    strokes = paint_strokes(instances > 0, rng, instances=instances)
    right = ~paint_region(strokes.shape)
    assert not strokes[right].any()
    assert (strokes == 2).any() and (strokes == 1).any()
    assert np.all(instances[strokes == 2] > 0) and np.all(instances[strokes == 1] == 0)
    assert 0.005 < (strokes > 0).mean() * 2 < 0.03
    objects = paint_objects(instances, rng, n_objects=2)
    assert not objects[right].any()
    painted_ids = np.unique(instances[objects >= 2])
    assert len(painted_ids) == 2 and np.all(painted_ids > 0)
    for old in painted_ids:  # whole objects, each with one id
        assert len(np.unique(objects[instances == old])) == 1


@pytest.mark.parametrize("out_is_folder", [False, True])
def test_contention_benchmark_alone_writes_its_json(tmp_path, capsys, out_is_folder):
    from benchmarks.contention import main

    out = tmp_path / "contention.json"
    target = tmp_path if out_is_folder else out  # a folder gets contention.json inside
    assert (
        main(["--seconds", "2", "--scene", "128", "--predict-size", "96", "--out", str(target)])
        == 0
    )
    result = json.loads(out.read_text())
    assert result["ours_quiet"]["steps"] >= 1 and result["bare_loop_steps_per_second"] > 0
    assert result["prediction_side"] == 96
    assert "ours_vs_bare_loop" in capsys.readouterr().out


def test_quick_active_painting_benchmark_compares_both_strategies(tmp_path, capsys):
    from benchmarks.active_painting import main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    assert "| case | strategy | start | round 1 |" in capsys.readouterr().out
    result = json.loads((tmp_path / "active-painting-quick.json").read_text())
    (row,) = result["rows"]
    suggested, random = row["curves"]["suggested"], row["curves"]["random"]
    rounds = result["settings"]["rounds"]
    for curve in (suggested, random):
        assert len(curve["dice"]) == rounds + 1 and all(0 <= d <= 1 for d in curve["dice"])
        assert curve["painted_pixels"] == sorted(curve["painted_pixels"])  # paint only grows
        assert curve["painted_pixels"][-1] > curve["painted_pixels"][0]
    assert suggested["dice"][0] == random["dice"][0]  # both start from the same model
    added = np.diff(suggested["painted_pixels"]), np.diff(random["painted_pixels"])
    np.testing.assert_allclose(added[0], added[1], rtol=0.35)  # the same paint per round
    half = result["rows"][0]["curves"]["suggested"]["boxes"][0]
    assert all(box[1] < 96 for box in half)  # windows start on the painted (left) half
    assert "last_round_gain" in result["summary"]["tissue nuclei 0"]


def test_quick_stack_objects_case_trains_object_models_and_scores_their_ids():
    pytest.importorskip("sklearn")
    from benchmarks.stacks import STACK_CASES, load_stack, paint_plane_objects, run_stack_case

    (case,) = [c for c in STACK_CASES if c.objects]
    stack = load_stack(case, quick=True, seed=0)
    painted = paint_plane_objects(stack.instances, [4, 8], np.random.default_rng(0), 3)
    assert set(np.nonzero(painted.any(axis=(1, 2)))[0]) == {4, 8}  # only the planes asked
    ids = np.unique(painted[painted >= 2])
    assert len(ids) >= 2 and ids.min() == 2 and ids.max() == 1 + len(ids)  # unique, in a row
    for i in ids:  # each painted object is one real object's cut
        assert len(np.unique(stack.instances[painted == i])) == 1
    row = run_stack_case(case, 0, quick=True, epochs=1, options={"steps_per_epoch": 2})
    assert row["objects_painted"] >= 2
    assert set(row["f1"]) == {"2-D", "3-D", "forest", "otsu", "gaussian+otsu"}
    assert all(0 <= v <= 1 for v in row["f1"].values())


def test_membrane_stack_walls_in_3d_add_the_tops_and_bottoms_of_cells():
    from benchmarks.stacks import STACK_CASES, load_stack, painted_stack

    by_name = {c.name: c for c in STACK_CASES}
    in_planes = load_stack(by_name["ovule membranes 3-D"], quick=True, seed=0).foreground
    in_3d = load_stack(by_name["ovule membranes, 3-D walls"], quick=True, seed=0).foreground
    assert not (in_planes & ~in_3d).any()  # every wall of a plane is a wall in 3-D
    assert in_3d.sum() > 1.1 * in_planes.sum()  # and cells that end above or below add more
    _stack, _planes, painted, _unpainted = painted_stack(
        by_name["ovule membranes, 3-D walls"], 0, quick=True
    )
    assert (painted == 2).any() and in_3d[painted == 2].all()  # wall paint follows those walls
    assert not in_3d[painted == 1].any()


def test_dark_cases_invert_the_image_and_keep_the_truth():
    from benchmarks.real import CASES, darkened, load_case
    from benchmarks.stacks import STACK_CASES, load_stack

    case = next(c for c in CASES if c.name == "maize cell walls")
    bright, dark = load_case(case, quick=True), load_case(darkened(case), quick=True)
    assert (
        darkened(case).name == "maize cell walls, dark" and dark.image.dtype == bright.image.dtype
    )
    assert len(np.unique(dark.image.astype(int) + bright.image)) == 1  # bright + dark: constant
    assert (dark.foreground == bright.foreground).all()
    stack_case = next(c for c in STACK_CASES if c.name == "ovule membranes, 3-D walls")
    bright_stack = load_stack(stack_case, quick=True, seed=0)
    dark_stack = load_stack(darkened(stack_case), quick=True, seed=0)
    assert np.corrcoef(dark_stack.image.ravel(), bright_stack.image.ravel())[0, 1] < -0.99
    assert (dark_stack.foreground == bright_stack.foreground).all()


def test_quick_real_image_benchmark_paints_discs_on_request(tmp_path):
    pytest.importorskip("sklearn")
    from benchmarks.painting import paint_discs
    from benchmarks.real import main

    foreground = np.zeros((64, 64), bool)
    foreground[10:30, 5:25] = True
    painted = paint_discs(foreground, np.random.default_rng(0), radius=3, fraction=0.1)
    assert set(np.unique(painted)) == {0, 1, 2} and not painted[:, 32:].any()
    assert not (painted == 2)[~foreground].any() and not (painted == 1)[foreground].any()
    main(["--quick", "--paint", "discs", "--cases", "tissue nuclei 0", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "real-quick.json").read_text())["rows"]
    assert [row["paint"] for row in rows] == ["discs", "whole objects", "a person's"]


def test_quick_border_benchmark_sweeps_the_shifts_beside_the_forest(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from benchmarks.border import SHIFTS, main

    draws = importlib.util.find_spec("matplotlib") is not None
    figure = ["--figure", str(tmp_path / "border.png")] if draws else []
    assert main(["--quick", "--seeds", "1", "--out", str(tmp_path), *figure]) == 0
    assert "| best | forest | truth fg % |" in capsys.readouterr().out
    (row,) = json.loads((tmp_path / "border-quick.json").read_text())["rows"]
    assert len(row["dice_by_shift"]) == len(SHIFTS) and row["steps"] >= 1
    shares = [row["foreground_percent_by_shift"][f"{s:+.2f}"] for s in SHIFTS]
    assert shares == sorted(shares)  # more foreground as the border moves up
    assert row["dice_by_shift"][f"{row['best_shift']:+.2f}"] == max(row["dice_by_shift"].values())
    assert 0 <= row["forest_dice"] <= 1
    if draws:
        assert (tmp_path / "border.png").stat().st_size > 1000


def test_quick_walls_benchmark_sweeps_the_unmoved_border_beside_the_forest(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from benchmarks.walls import SHIFTS, main

    cases = ["maize cell walls", "tissue nuclei 0"]
    assert main(["--quick", "--seeds", "1", "--cases", *cases, "--out", str(tmp_path)]) == 0
    assert "| background split |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "walls-quick.json").read_text())["rows"]
    assert [r["case"] for r in rows] == cases
    for row in rows:
        assert len(row["dice_by_shift"]) == len(SHIFTS) and row["steps"] >= 1
        assert 0 <= row["background_split"] <= 1 and 0 <= row["forest_dice"] <= 1
        assert 0 <= row["dice_without_border_steps"] <= 1
    argv = ["--quick", "--seeds", "1", "--dark", "--cases", cases[0], "--out", str(tmp_path)]
    assert main([*argv, "--training-seeds", "2", "--start", "random"]) == 0
    rows = json.loads((tmp_path / "walls-quick.json").read_text())["rows"]
    assert [r["case"] for r in rows] == ["maize cell walls, dark"] * 2
    assert [(r["training_seed"], r["start"]) for r in rows] == [(0, "random"), (1, "random")]
    assert ", training 1, random start |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--quick", "--cases", "no such image"])


def test_quick_wall_limit_benchmark_replays_each_limit_beside_the_forest(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from benchmarks.wall_limit import FIXED_MOVES, LIMITS, main

    argv = ["--quick", "--seeds", "1", "--cases", "ovule membranes, 3-D walls"]
    assert main([*argv, "--dark", "--out", str(tmp_path)]) == 0
    assert "| limit 1 % |" in capsys.readouterr().out
    (row,) = json.loads((tmp_path / "wall_limit-quick.json").read_text())["rows"]
    assert row["case"] == "ovule membranes, 3-D walls, dark" and row["steps"] >= 1
    moves = list(row["move_by_limit"].values())
    assert len(moves) == len(LIMITS) and len(row["dice_by_move"]) == len(FIXED_MOVES)
    assert moves == sorted(moves, reverse=True)  # a looser limit moves as far or further
    assert all(-1.5 <= m <= 0 for m in moves) and 0 <= row["forest_dice"] <= 1


def test_quick_memory_layout_benchmark_times_both_layouts(tmp_path, capsys):
    from benchmarks.memory_layout import main

    assert main(["--quick", "--steps", "1", "--threads", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "memory-layout-quick.json").read_text())
    for dims in ("2-D", "3-D"):
        assert result[dims]["plain_step_seconds"] > 0
        assert result[dims]["channels_last_step_seconds"] > 0
    assert "3-D step: plain" in capsys.readouterr().out


def test_benchmarks_put_torch_s_thread_count_back():
    import torch
    from benchmarks.suite import torch_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), torch_threads(1):
            raise RuntimeError("a benchmark that fails")
        assert torch.get_num_threads() == 2
        with torch_threads(None):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_quick_gpu_benchmark_runs_its_measurements_on_the_cpu(tmp_path, capsys):
    from benchmarks.gpu import main

    assert main(["--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu-quick.json").read_text())
    assert [row["size"] for row in result["predict_2d"]] == [128, 192]
    for row in result["predict_2d"]:
        assert row["auto_mpix_per_s"] > 0 and row["floor_mpix_per_s"] > 0
        assert row["peak_gpu_mib"] is None  # no GPU memory on the CPU
    assert result["predict_3d"][0]["mvoxels_per_s"] > 0
    assert result["train_2d"]["steps"] == result["train_3d"]["steps"] == 3
    compared = result["against_cpu"]
    assert compared["labels_agree_2d"] == compared["labels_agree_3d"] == 1.0  # the same device
    assert "| 2-D side | auto precision |" in capsys.readouterr().out


def test_gpu_benchmark_says_when_there_is_no_gpu(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from benchmarks.gpu import main

    assert main(["--out", str(tmp_path)]) == 2
    assert "No CUDA GPU here" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_quick_spread_benchmark_trains_each_seed_and_scores_it_twice(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from benchmarks.spread import main

    argv = ["--quick", "--train-seeds", "2", "--pairs", "1:0", "--out", str(tmp_path)]
    assert main(argv) == 0
    (pair,) = json.loads((tmp_path / "spread-quick.json").read_text())["pairs"]
    assert [run["train_seed"] for run in pair["runs"]] == [0, 1]
    for run in pair["runs"]:
        assert 0 <= run["ours"] <= 1 and 0 <= run["no_border_step"] <= 1
    summary = pair["summary"]
    assert summary["min"] <= summary["mean"] <= summary["max"]
    (two,) = summary["two_models_averaged"]  # the one pair of the 2 runs
    assert 0 <= two <= 1 and summary["two_models_mean"] == two
    assert "| stack, painting | forest |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--pairs", "3:0"])  # the object case trains object models: not a pair here


def test_quick_finetune_benchmark_trains_again_both_ways(tmp_path, capsys):
    from benchmarks.finetune import main

    argv = ["--quick", "--rounds", "1", "--cases", "maize cell walls", "--out", str(tmp_path)]
    assert main(argv) == 0
    results = json.loads((tmp_path / "finetune-quick.json").read_text())["results"]
    assert [r["way"] for r in results] == ["now", "kept"]
    for r in results:
        assert [t["training"] for t in r["trainings"]] == [0, 1]
        assert all(0 <= t["dice"] <= 1 and t["steps"] == 3 for t in r["trainings"])
    assert "| maize cell walls | kept |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--cases", "tissue nuclei 0, objects"])  # object models: not a case here


def test_docking_benchmark_docks_trains_and_appends_its_json(tmp_path):
    """In a fresh interpreter, as it is meant to run (its first docking is the one it times)."""
    pytest.importorskip("napari")
    out = tmp_path / "docking.json"
    out.write_text(json.dumps([{"label": "an earlier run"}]))
    command = [sys.executable, "-m", "benchmarks.docking", "--out", str(out), "--label", "smoke"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    earlier, run = json.loads(out.read_text())
    assert earlier == {"label": "an earlier run"} and run["label"] == "smoke"
    assert 0 < run["first_step_s"] < 120  # a training step was plotted before the wait ran out
    assert run["dock_call_ms"] >= 0 and run["cpu_count"] >= 1
    assert run["load_average_1min"] is None or run["load_average_1min"] >= 0


def test_quick_stack_memory_benchmark_stops_after_its_tiles(tmp_path, capsys):
    from benchmarks.stack_memory import main

    assert main(["--quick", "--tiles", "3", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "stack-memory-quick.json").read_text())
    assert result["stack"] == [40, 200, 200]
    assert result["tiles_predicted"] == 3 < result["tiles_total"] == 8
    assert result["within_bound"] and result["voxels_per_second"] > 0
    assert '"peak_rss_anon_above_model_mib"' in capsys.readouterr().out
