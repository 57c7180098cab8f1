"""`tunevlseg status` on constructed cell folders: counts, best Dice, running / interrupted, ETA; read-only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from filelock import FileLock

from tunevlseg.cells import Layout
from tunevlseg.progress import grid_status, read_journal, status_lines

REPO = Path(__file__).parents[2]


def _journal(path: Path, trials: list[dict]) -> None:
    """An Optuna journal file (the ops tune.py's JournalStorage writes) of ``trials``: state, val_dice, duration."""
    ops = [{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [2]}]
    for number, t in enumerate(trials):
        ops.append({"op_code": 4, "worker_id": "w", "study_id": 0, "datetime_start": "2026-01-01T00:00:00+00:00"})
        ops.append({"op_code": 5, "worker_id": "w", "trial_id": number, "param_name": "lr",
                    "param_value_internal": 0.01, "distribution": "{}"})
        if "val_dice" in t:
            ops.append({"op_code": 8, "worker_id": "w", "trial_id": number, "user_attr": {"val_dice": t["val_dice"]}})
        if "duration_s" in t:
            ops.append({"op_code": 8, "worker_id": "w", "trial_id": number,
                        "user_attr": {"duration_s": t["duration_s"]}})
        if t["state"] != 0:
            ops.append({"op_code": 6, "worker_id": "w", "trial_id": number, "state": t["state"],
                        "values": [t.get("val_dice")], "datetime_complete": "2026-01-01T00:01:40+00:00"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(op) + "\n" for op in ops) + '{"op_code": 8, "trial')  # torn last line


def _config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["benchmark"].update(models=["clipseg"], methods=["zeroshot", "coop", "vpt"], datasets=["newlook"])
    cfg["tuning"].update(n_trials=5, final_seeds=2)
    cfg["results"] = str(tmp_path / "res")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cells(tmp_path: Path, dataset: str):
    layout = Layout(str(tmp_path / "res"))
    coop, vpt, zs = (layout.cell("clipseg", m, dataset) for m in ("coop", "vpt", "zeroshot"))
    # coop: 2 finished (60 s and 120 s; one pruned), trial 2 running (its owner lock held by this process)
    _journal(Path(coop.journal), [dict(state=1, val_dice=0.61, duration_s=60.0), dict(state=2, val_dice=0.7,
                                                                                    duration_s=120.0),
                                  dict(state=0)])
    coop.trial(2).path.mkdir(parents=True)
    coop.trial(2).owner_lock.write_text("")
    # vpt: 1 complete (no duration attribute: timed from the journal's start/complete = 100 s), 1 interrupted
    _journal(Path(vpt.journal), [dict(state=1, val_dice=0.42), dict(state=0)])
    vpt.trial(1).path.mkdir(parents=True)
    vpt.trial(1).owner_lock.write_text("")
    # zeroshot: finished, no journal; trials.csv and best.json
    zs.path.mkdir(parents=True)
    Path(zs.trials_csv).write_text("model,method,dataset,trial,state,val_dice,duration_s\n"
                                   f"clipseg,zeroshot,{dataset},0,COMPLETE,0.25,4.0\n")
    Path(zs.best_json).write_text("{}")
    zs.seed(0).path.mkdir(parents=True)
    Path(zs.seed(0).result_json).write_text("{}")
    return coop, vpt, zs


def test_status_counts_trials_best_dice_running_and_eta(tmp_path, capsys):
    from tunevlseg.cli import main

    config = _config(tmp_path)
    dataset = "newlook"
    coop, vpt, zs = _cells(tmp_path, dataset)
    with FileLock(str(coop.trial(2).owner_lock)):
        before = {p: p.stat().st_mtime_ns for p in (tmp_path / "res").rglob("*")}
        assert main(["status", "--configfile", str(config)]) == 0
        after = {p: p.stat().st_mtime_ns for p in (tmp_path / "res").rglob("*")}
    out = capsys.readouterr().out.splitlines()
    rows = {line.split("  ")[0]: line.split() for line in out[1:-1]}
    zs_row, coop_row, vpt_row = (rows[f"clipseg · {m} · {dataset}"][5:] for m in ("zeroshot", "coop", "vpt"))
    assert zs_row == ["1/1", "1/1", "0.250", "done", "—"]
    # 3 trials left × mean(60, 120) s, one worker running: 270 s = 4 min (the pruned trial's 0.7 is no best)
    assert coop_row == ["2/5", "0/2", "0.610", "running", "(1)", "4", "min"]
    # 4 trials left × 100 s (from the journal's timestamps), nobody running
    assert vpt_row == ["1/5", "0/2", "0.420", "interrupted", "7", "min"]
    assert out[-1] == ("1/3 cells done, 4/11 trials, 1/5 seed replicates, 1 running; about 11 min of trial time "
                       "left (not counting the seed replicates' retraining)")
    assert after == before  # nothing written, no study created


def test_a_cell_without_trials_gets_the_grid_mean_and_a_missing_results_folder_is_all_waiting(tmp_path):
    from tunevlseg.cells import Grid

    grid = Grid(("clipseg",), ("coop",), ("a", "b"))
    _journal(Path(Layout(str(tmp_path)).cell("clipseg", "coop", "a").journal),
             [dict(state=1, val_dice=0.5, duration_s=30.0)])
    lines = status_lines(grid_status(grid, tmp_path, 3))
    assert lines[2].split()[-3:] == ["waiting", "~2", "min"]  # 3 trials × the grid's mean 30 s = 90 s
    assert lines[-1].startswith("0/2 cells done, 1/6 trials, 0/2 seed replicates, 0 running; about 2 min")
    empty = status_lines(grid_status(grid, tmp_path / "nothing", 3))
    assert empty[-1].startswith("0/2 cells done, 0/6 trials, 0/2 seed replicates, 0 running; about unknown "
                                "(no trial finished yet)")
    assert not (tmp_path / "nothing").exists()


def test_read_journal_skips_a_torn_line_and_keeps_trial_order(tmp_path):
    path = tmp_path / "study.journal"
    _journal(path, [dict(state=3), dict(state=1, val_dice=0.3, duration_s=5.0)])
    trials = read_journal(path)
    assert [(t.number, t.state, t.val_dice, t.duration_s) for t in trials] == [(0, "FAIL", None, 100.0),
                                                                                (1, "COMPLETE", 0.3, 5.0)]


def test_status_imports_neither_torch_nor_optuna(tmp_path):
    config = _config(tmp_path)
    code = ("import sys; from tunevlseg.cli import main; rc = main(['status', '--configfile', sys.argv[1]]); "
            "heavy = {'torch', 'optuna', 'pandas'} & set(sys.modules); assert not heavy, heavy; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert out.returncode == 0, out.stderr
    assert "0/3 cells done, 0/11 trials" in out.stdout
