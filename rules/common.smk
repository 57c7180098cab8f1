# What Snakemake needs from the package: the checked config, the grid, the results layout and each rule's
# slice of the config (tunevlseg.config; unit-tested there). Rules get only the slice they use, so that
# changing, say, a plotting option reruns only the aggregation.
import glob
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from tunevlseg import config as cfg
from tunevlseg.data.check import start_problems
from tunevlseg.data.ingest import prepare_settings
from tunevlseg.data.local import is_local
from tunevlseg.report.layout import figure_files, table_files

envvars:
    "PATH",


# Rules call the `tunevlseg` CLI installed next to the Python running Snakemake, also when
# the environment is not activated (e.g. `.venv/bin/snakemake`).
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

CONFIG_SOURCE = ", ".join(map(str, workflow.configfiles)) or "config.yaml"
try:
    cfg.check_config(config, CONFIG_SOURCE)
except cfg.ConfigError as err:
    raise WorkflowError(f"config: {err}")
# Cheap data checks before any job (files exist and pair up, weights paths, device; `tunevlseg data check`
# also decodes every mask), once in the main process (not in each cluster job). The device is checked
# where jobs run on this machine (not on a cluster's submit host).
_problems = start_problems(config, CONFIG_SOURCE, device=workflow.local_exec) if workflow.is_main_process else []
# A dry run (-n) still plans, with the problems as a warning: a plan is useful before data or weights are in
# place. (workflow.dryrun is not set yet while the Snakefile is parsed: the command line says it.)
_DRY_RUN = workflow.dryrun or any(a in ("--dry-run", "--dryrun") or (a.startswith("-") and not a.startswith("--")
                                                                     and "n" in a[1:]) for a in sys.argv[1:])
if _problems and _DRY_RUN:
    print("TuneVLSeg: warning (a real run stops here): config: " + "\nconfig: ".join(_problems), file=sys.stderr)
elif _problems:
    raise WorkflowError("config: " + "\nconfig: ".join(_problems))

L = cfg.layout(config)
R = config["results"]
SRC = Path(workflow.basedir).parent / "src" / "tunevlseg"
GRID = cfg.make_grid(config)
if GRID.skipped():
    print("TuneVLSeg: not in the grid (model has no vision tokens): "
          + ", ".join(f"{m}·{k}" for m, k in GRID.skipped()), file=sys.stderr)

wildcard_constraints:
    dataset="|".join(config["datasets"]),
    model="|".join(config["models"]),
    method="[a-z_]+",
    size=r"\d+",


def as_json(value):
    return json.dumps(value, sort_keys=True)


def cell_files(w):
    return L.cell(w.model, w.method, w.dataset)


def model_size(model):
    return cfg.model_size(config, model)


def weights_input(model):
    return cfg.weights_input(config, model)


# ---- data rules
RAW = config.get("raw_dir") or f"{R}/raw"
_NONE = "(?!x)x"  # a pattern nothing matches: a rule without datasets of its kind
LOCAL_DATASETS = "|".join(d for d, c in config["datasets"].items() if is_local(c["source"])) or _NONE
REGISTRY_DATASETS = "|".join(d for d, c in config["datasets"].items()
                             if c["source"] != "synthetic" and not is_local(c["source"])) or _NONE


def index_input(w):
    """The folder with samples.csv that `prepare` reads: synthetic raw layout or the real dataset's index."""
    return L.raw(w.dataset) if config["datasets"][w.dataset]["source"] == "synthetic" else L.index(w.dataset)


def data_threads(wildcards):
    """Real datasets decode thousands of images: all cores of the job; the small synthetic ones take one
    each, so that they are prepared side by side (a 2-thread job would run them one after another)."""
    return 1 if config["datasets"][wildcards.dataset]["source"] == "synthetic" else max(workflow.cores, 1)


# ---- tuning rules
def cell_settings(w):
    return as_json(cfg.cell_settings(config, w.model, w.method, w.dataset))


def tune_workers(w):
    return cfg.worker_markers(config, w.model, w.method, w.dataset)


def tune_features(w):
    """The frozen-feature cache the cell trains on (CoOp, CoCoOp with training.cache_frozen: auto), or nothing."""
    return cfg.features_input(config, w.model, w.method, w.dataset)


def cell_mem_mb(w):
    """Host memory of a cell's training job, from the model's measured figures (tunevlseg.config.job_mem_mb)."""
    return cfg.job_mem_mb(config, w.model, w.method)


def features_mem_mb(w):
    return cfg.job_mem_mb(config, w.model, job="features")


def pretrain_mem_mb(w):
    return cfg.job_mem_mb(config, w.model, job="pretrain")


def features_arg(w, input):
    return f"--features {shlex.quote(input.features)}" if input.features else ""


def features_settings(w):
    return as_json(cfg.features_settings(config, w.model))


def storage_arg(w):
    url = config["tuning"].get("storage")
    return f"--storage {shlex.quote(url)}" if url else ""


# ---- aggregation rules
CAPTIONS = "../workflow/report"


def report_settings(w):
    return as_json(cfg.report_settings(config))


def report_outputs(tables, figures):
    """Named outputs (tables, figures with captions) written under `tables` prefix and `figures` folder."""
    fig = figure_files(figures, GRID)

    def cell_report(cell, path, kind):
        model, method, dataset = cell
        return report(path, caption=f"{CAPTIONS}/optuna_{kind}.rst", category="Optuna", subcategory=dataset,
                      labels={"model": model, "method": method, "dataset": dataset, "figure": kind})

    tab = table_files(tables)
    return dict(
        # csv first (the rule's prefix); the html is shown in the report's page, not only downloaded
        tables=[*tab["dice"][:3], report(tab["dice"][3], caption=f"{CAPTIONS}/dice_table.rst", category="Dice")],
        pairwise=report(tab["pairwise"], caption=f"{CAPTIONS}/pairwise.rst", category="Tests and ranks"),
        rank_stability=report(tab["rank_stability"], caption=f"{CAPTIONS}/rank_stability.rst",
                              category="Tests and ranks"),
        unstable=report(tab["unstable"], caption=f"{CAPTIONS}/unstable.rst", category="Dice"),
        critical_difference=report(fig["critical_difference"], caption=f"{CAPTIONS}/critical_difference.rst",
                                   category="Tests and ranks"),
        cd_table=fig["cd_table"],
        cost=report(tab["cost"], caption=f"{CAPTIONS}/cost_table.rst", category="Cost"),
        dice_vs_params=report(fig["dice_vs_params"], caption=f"{CAPTIONS}/dice_vs_params.rst", category="Cost"),
        params_table=fig["params_table"],
        heatmap=report(fig["heatmap"], caption=f"{CAPTIONS}/dice_heatmap.rst", category="Dice"),
        domains=report(fig["domains"], caption=f"{CAPTIONS}/domain_dice.rst", category="Dice"),
        domain_table=fig["domain_table"],
        depth=report(fig["depth"], caption=f"{CAPTIONS}/depth_vs_dice.rst", category="Prompt depth"),
        correlations=report(fig["correlations"], caption=f"{CAPTIONS}/depth_correlations.rst",
                            category="Prompt depth"),
        history=[cell_report(c, p, "history") for c, p in fig["history"].items()],
        importances=[cell_report(c, p, "importances") for c, p in fig["importances"].items()],
        qualitative=[report(p, caption=f"{CAPTIONS}/qualitative.rst", category="Qualitative",
                            labels={"dataset": d}) for d, p in fig["qualitative"].items()],
    )


def finished_cells(w):
    """best.json and Optuna journals present now, with their mtimes: a change reruns report_partial."""
    every = L.cell("*", "*", "*")
    found = sorted(glob.glob(every.best_json)) + sorted(glob.glob(every.journal))
    return as_json({p: os.stat(p).st_mtime_ns for p in found})
