# Helpers shared by the rules: config checks and the config slices passed to each rule.
# Each rule receives only the part of the config it uses, so that changing, say, a
# plotting option reruns only the aggregation (Snakemake reruns jobs whose params change).
import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from tunevlseg.models.registry import MODEL_METHODS, supports
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

# Combinations a model cannot run (vision prompts on CRIS's ResNet) are left out of the grid.
SKIPPED = [f"{m}·{k}" for m in BENCH["models"] for k in BENCH["methods"] if not supports(m, k)]
if SKIPPED and not any(supports(m, k) for m in BENCH["models"] for k in BENCH["methods"]):
    raise WorkflowError(f"config: benchmark: no model supports any of the methods; supported: {MODEL_METHODS}")
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
    return [(m, k, d) for m in BENCH["models"] for k in BENCH["methods"] if supports(m, k) for d in BENCH["datasets"]]


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
