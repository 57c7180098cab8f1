# Helpers shared by the rules: config checks and the config slices passed to each rule.
# Each rule receives only the part of the config it uses, so that changing, say, a
# plotting option reruns only the aggregation (Snakemake reruns jobs whose params change).
import json
import shlex
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from tunevlseg.models.registry import MODEL_METHODS, supports
from tunevlseg.data.ingest import prepare_settings
from tunevlseg.report.layout import Grid, figure_files
from tunevlseg.search_spaces import method_settings

envvars:
    "PATH",


# Rules call the `tunevlseg` CLI installed next to the Python running Snakemake, also when
# the environment is not activated (e.g. `.venv/bin/snakemake`).
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

R = config["results"]
BENCH = config["benchmark"]
SRC = Path(workflow.basedir).parent / "src" / "tunevlseg"


def _check_config():
    """Cross-references the JSON schema cannot express; fail before any job runs."""
    known = sorted(config["datasets"])
    for name in BENCH["datasets"]:
        if name not in config["datasets"]:
            raise WorkflowError(f"config: benchmark.datasets: unknown dataset '{name}'; defined in datasets: {known}")
    for name in BENCH["models"]:
        if name not in config["models"]:
            raise WorkflowError(f"config: benchmark.models: '{name}' has no entry under models: {sorted(config['models'])}")
    for method in BENCH["methods"]:
        if method == "zeroshot":
            continue
        space = method_settings(method, config["methods"].get(method)).get("search", {})
        needed = ("lr",) if method == "finetune" else ("lr", "depth")
        missing = [k for k in needed if k not in space]
        if missing:
            raise WorkflowError(f"config: methods.{method}.search needs {missing} (prompt methods search lr and depth)")
        for key, spec in space.items():
            if "low" in spec and spec["low"] > spec["high"]:
                raise WorkflowError(f"config: methods.{method}.search.{key}: low {spec['low']} > high {spec['high']}")
    for model, mcfg in config["models"].items():
        if mcfg["weights"] == "standin":
            if "standin" not in mcfg:
                raise WorkflowError(f"config: models.{model}.weights is 'standin' but models.{model}.standin is missing")
            if mcfg["standin"]["dataset"] not in config["datasets"]:
                raise WorkflowError(f"config: models.{model}.standin.dataset: unknown dataset "
                                    f"'{mcfg['standin']['dataset']}'; defined: {known}")


_check_config()

# The grid: every (model, method, dataset) the model can run; combinations it cannot (vision
# prompts on CRIS's ResNet) are left out, and said so.
GRID = Grid(
    tuple(BENCH["models"]),
    tuple(BENCH["methods"]),
    tuple(BENCH["datasets"]),
    {d: config["datasets"][d]["domain"] for d in BENCH["datasets"] if "domain" in config["datasets"][d]},
)
if not GRID.pairs():
    raise WorkflowError(f"config: benchmark: no model supports any of the methods; supported: {MODEL_METHODS}")
SKIPPED = [f"{m}·{k}" for m in GRID.models for k in GRID.methods if not supports(m, k)]
if SKIPPED:
    print(f"TuneVLSeg: not in the grid (model has no vision tokens): {', '.join(SKIPPED)}", file=sys.stderr)

wildcard_constraints:
    dataset="|".join(config["datasets"]),
    model="|".join(config["models"]),
    method="[a-z_]+",
    size=r"\d+",


def as_json(value):
    return json.dumps(value, sort_keys=True)


def cell_dir(model, method, dataset):
    return f"{R}/cells/{model}/{method}/{dataset}"


def prepared_dir(dataset, size):
    return f"{R}/prepared/{dataset}/{size}"


def model_size(model):
    return config["models"][model]["image_size"]


def weights_input(model):
    """The stand-in folder when the model is trained locally, else nothing (hub or local folder)."""
    return f"{R}/pretrained/{model}-standin" if config["models"][model]["weights"] == "standin" else []


def weights_value(model):
    return weights_input(model) or config["models"][model]["weights"]


def model_options(model):
    """Loading options besides the weights (CRIS: backbone, tokenizer, image size, token budget)."""
    return {k: v for k, v in config["models"][model].items() if k not in ("weights", "standin")}


def cells():
    return GRID.cells()


def standin_settings(model):
    s = config["models"][model]["standin"]
    keys = ("arch", "vocabulary", "epochs", "batch_size", "lr", "min_grounding_gap")
    return as_json({**{k: s[k] for k in keys if k in s}, "model": model, "seed": config["seed"], "device": config["device"]})


# Tuning keys that shape how a cell runs, not its result: not part of the cell's params.
RUN_ONLY_TUNING_KEYS = ("workers_per_cell", "storage")


def cell_settings(w):
    tuning = {k: v for k, v in config.get("tuning", {}).items() if k not in RUN_ONLY_TUNING_KEYS}
    method_cfg = method_settings(w.method, config["methods"].get(w.method))
    return as_json(
        {
            "model": w.model,
            "method": w.method,
            "dataset": w.dataset,
            "weights": weights_value(w.model),
            "model_options": model_options(w.model),
            "prompt_key": config["prompt"],
            "seed": config["seed"],
            "device": config["device"],
            "search": method_cfg.get("search", {}),
            "fixed": method_cfg.get("fixed", {}),
            "training": {**config.get("training", {}), **method_cfg.get("training", {})},
            **tuning,
        }
    )


# ---- data rules
RAW = config.get("raw_dir") or f"{R}/raw"


def index_input(w):
    """The folder with samples.csv that `prepare` reads: synthetic raw layout or the real dataset's index."""
    if config["datasets"][w.dataset]["source"] == "synthetic":
        return f"{R}/raw/{w.dataset}"
    return f"{R}/index/{w.dataset}"


def data_threads(wildcards):
    """Real datasets decode thousands of images: all cores of the job; the small synthetic ones keep 2."""
    return 2 if config["datasets"][wildcards.dataset]["source"] == "synthetic" else max(workflow.cores, 1)


# ---- tuning rules
def tune_workers(w):
    """With tuning.workers_per_cell K > 1: the K worker markers a cell's finishing step waits for."""
    k = config["tuning"].get("workers_per_cell", 1)
    if k <= 1 or w.method == "zeroshot":
        return []
    return [f"{cell_dir(w.model, w.method, w.dataset)}/workers/{i}.json" for i in range(k)]


def storage_arg(w):
    url = config["tuning"].get("storage")
    return f"--storage {shlex.quote(url)}" if url else ""


# ---- aggregation rules
CAPTIONS = "../workflow/report"


def report_settings(w):
    """The slice of the config the report uses: plot options and the grid."""
    grid = {"models": BENCH["models"], "methods": BENCH["methods"], "datasets": BENCH["datasets"]}
    return as_json({**config.get("report", {}), **grid, "domains": GRID.domains})


def report_outputs(tables, figures):
    """Named outputs (tables, figures with captions) written under `tables` prefix and `figures` folder."""
    fig = figure_files(figures, GRID)

    def cell_report(cell, path, kind):
        model, method, dataset = cell
        return report(path, caption=f"{CAPTIONS}/optuna_{kind}.rst", category="Optuna", subcategory=dataset,
                      labels={"model": model, "method": method, "dataset": dataset, "figure": kind})

    return dict(
        tables=[report(f"{tables}.csv", caption=f"{CAPTIONS}/dice_table.rst", category="Dice"),
                f"{tables}.md", f"{tables}.tex"],
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
    found = sorted(Path(R).glob("cells/*/*/*/best.json")) + sorted(Path(R).glob("cells/*/*/*/study.journal"))
    return as_json({str(p): p.stat().st_mtime_ns for p in found})
