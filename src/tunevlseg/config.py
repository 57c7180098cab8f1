"""The workflow config → what each rule gets: checks beyond the JSON schema, and the per-rule slices.

Used by ``rules/common.smk`` (at Snakemake's start) and by the CLI alike, so the translation is
written once and unit-tested. Plain Python (no torch).

Each rule receives only the part of the config it uses, so that changing, say, a plotting option
reruns only the aggregation (Snakemake reruns jobs whose params change).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from .cells import Grid, Layout, replicates_of
from .methods import METHODS, catalogue_settings
from .models.registry import REGISTRY as MODELS
from .models.registry import supported_methods

#: Tuning keys that are not part of a cell's study: how it runs (workers, storage) and how many seed
#: replicates of its best configuration are retrained afterwards (their own jobs).
RUN_ONLY_TUNING_KEYS = ("workers_per_cell", "storage", "final_seeds")
#: Training keys of the frozen-feature cache: one cache serves every method, so they are read from the
#: top-level ``training`` only (a method's ``training`` override may not set them).
CACHE_KEYS = ("cache_views", "cache_dtype")
#: Host memory of a job besides its model (MB): Python, torch, optuna, pandas (measured 221 MB after importing
#: torch and tunevlseg; the libraries a training job imports besides add about 100).
RUNTIME_MB = 350
#: Per DataLoader worker, started from the fork server, and the server itself (measured 99 MB PSS each, 185 MB
#: RSS of which the torch libraries are shared between them).
WORKER_MB = 120
#: What a CUDA job adds on the host (the CUDA runtime and its libraries); its activations are on the GPU.
CUDA_HOST_MB = 3000
#: Headroom over the measured figures (allocator fragmentation, the evaluation's buffers).
MEMORY_MARGIN = 1.1
#: Stand-in keys passed to pretraining (the rest of ``models.<m>.standin`` says which data to use).
STANDIN_KEYS = ("arch", "vocabulary", "epochs", "batch_size", "lr", "min_grounding_gap")
#: The workflow's config schema (its defaults of ``training.*`` are the lowest layer of every method's training).
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
#: Where an effective setting comes from when no config key set it (else: that key's path).
SCHEMA_DEFAULT, CATALOGUE = "schema default", "catalogue"
#: The parts of a method's settings, in the order they are shown.
METHOD_PARTS = ("search", "fixed", "training")


class ConfigError(ValueError):
    """A config problem, named by file and key."""

    def __init__(self, source: str, key: str, message: str):
        super().__init__(f"{source}: {key}: {message}")
        self.source, self.key = source, key


def load_config_file(path: str | Path) -> dict:
    """A config file as a dict; a YAML error names the file, line and column (Snakemake's own message has
    neither)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "file", "not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "syntax"
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(str(path), where, f"not valid YAML: {problem}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), "file", f"not UTF-8 text ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(str(path), "top level", f"must be a mapping of keys, got {type(data).__name__}")
    return data


def merge_configs(base: dict, *overlays: dict) -> dict:
    """``base`` with each overlay merged in turn, as Snakemake merges several ``--configfile`` files: a
    mapping merges key by key (recursively), any other value (list, scalar, null) replaces. Inputs are
    not modified."""
    out = copy.deepcopy(base)
    for overlay in overlays:
        for key, value in overlay.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge_configs(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def load_config_files(paths) -> dict:
    """Config files merged in order (:func:`merge_configs`); a YAML error names its file and line."""
    configs = [load_config_file(p) for p in paths]
    return merge_configs(configs[0], *configs[1:]) if configs else {}


def check_required(config: dict, source: str, schema_path: str | Path = SCHEMA) -> None:
    """One line naming the schema's missing top-level keys (an overlay given without its base), instead
    of a dump of the whole schema."""
    import yaml

    required = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8")).get("required", [])
    missing = [k for k in required if k not in config]
    if missing:
        raise ConfigError(source, "top level", f"missing {', '.join(missing)}; if this is an overlay, give its "
                                               "base first: --configfile base.yaml overlay.yaml")


def validate_schema(config: dict, source: str, schema_path: str | Path) -> None:
    """The JSON schema check with the offending key path and the file named (defaults are not filled)."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.path) or "top level"
        raise ConfigError(source, key, err.message)


def fill_model_defaults(config: dict) -> None:
    """Fill in, in place, what the registry lets a model entry leave out: its ``standin`` (with ``weights:
    standin``) and ``image_size`` (the stand-in's, else the public weights')."""
    for model, mcfg in (config.get("models") or {}).items():
        info = MODELS.get(model)
        if info is None or not isinstance(mcfg, dict):
            continue
        standin = mcfg.get("weights") == "standin"
        if standin and info.standin and "standin" not in mcfg:
            mcfg["standin"] = copy.deepcopy(info.standin)
        size = mcfg["standin"]["arch"].get("image_size") if standin and "standin" in mcfg else info.image_size
        if size and "image_size" not in mcfg:
            mcfg["image_size"] = size


def check_config(config: dict, source: str = "config.yaml") -> None:
    """Cross-references the JSON schema cannot express; raise :class:`ConfigError` before any job runs.
    Fills in the registry's model defaults first (:func:`fill_model_defaults`)."""
    fill_model_defaults(config)
    bench = config["benchmark"]
    datasets = sorted(config["datasets"])
    for name in bench["datasets"]:
        if name not in config["datasets"]:
            raise ConfigError(source, "benchmark.datasets", f"unknown dataset '{name}'; defined under datasets: "
                                                           f"{datasets}")
    for name, dcfg in config["datasets"].items():
        _check_dataset_keys(name, dcfg, source)
    for name in bench["models"]:
        if name not in config["models"]:
            raise ConfigError(source, "benchmark.models", f"'{name}' has no entry under models: "
                                                         f"{sorted(config['models'])}")
    for name in bench["methods"]:
        _check_method(config, name, source)
    for model, mcfg in config["models"].items():
        if model not in MODELS:
            raise ConfigError(source, f"models.{model}", f"unknown model; known: {sorted(MODELS)}")
        if mcfg["weights"] == "standin":
            if "standin" not in mcfg:
                raise ConfigError(source, f"models.{model}.weights", f"is 'standin' but models.{model}.standin "
                                                                    "is missing")
            if mcfg["standin"]["dataset"] not in config["datasets"]:
                raise ConfigError(source, f"models.{model}.standin.dataset",
                                  f"unknown dataset '{mcfg['standin']['dataset']}'; defined: {datasets}")
    for name, mcfg in (config.get("methods") or {}).items():
        shared = sorted(set((mcfg or {}).get("training") or {}) & set(CACHE_KEYS))
        if shared:
            raise ConfigError(source, f"methods.{name}.training", f"{shared} belong to the shared feature cache: "
                                                                 "set them under the top-level training")
    grid = make_grid(config)
    if not grid.pairs():
        runnable = {m: list(supported_methods(m)) for m in grid.models}
        raise ConfigError(source, "benchmark", f"no model supports any of the methods; supported: {runnable}")


#: Keys every dataset may set, whatever its source; the others belong to one kind of source.
COMMON_DATASET_KEYS = ("source", "domain", "split_fractions", "val_fraction", "leak_policy", "split_seed")


def _check_dataset_keys(name: str, dcfg: dict, source: str) -> None:
    """A folder / datalist / nnunet dataset accepts only its own keys (a typo or a key of another source is named)."""
    from .data.local import LOCAL_SOURCES, PREPARE_KEYS

    reader = LOCAL_SOURCES.get(dcfg.get("source"))
    if reader is None:
        return
    allowed = (*COMMON_DATASET_KEYS, *reader.KEYS, *PREPARE_KEYS)
    unknown = sorted(set(dcfg) - set(allowed))
    if unknown:
        raise ConfigError(source, f"datasets.{name}", f"{unknown} not used by source {dcfg['source']}; it accepts "
                                                      f"{sorted(allowed)}")


def _check_method(config: dict, name: str, source: str) -> None:
    method = METHODS[name]
    if not method.tuned:
        return
    settings = effective_settings(config, name)
    space, fixed = settings["search"], settings["fixed"]
    given = (config.get("methods") or {}).get(name) or {}
    key = f"methods.{name}"
    accepted = method.accepted_search_keys()
    for part in ("search", "fixed"):
        unknown = sorted(set(given.get(part) or {}) - set(accepted))
        if unknown:
            raise ConfigError(source, f"{key}.{part}", f"unknown hyper-parameter(s) {unknown}; {name} accepts "
                                                       f"{list(accepted)}")
    missing = [k for k in method.required_search_keys() if k not in space and k not in fixed]
    if missing:
        raise ConfigError(source, f"{key}.search", f"needs {missing} (searched or under fixed)")
    for param, spec in space.items():
        if "low" in spec and spec["low"] > spec["high"]:
            raise ConfigError(source, f"{key}.search.{param}", f"low {spec['low']} > high {spec['high']}")


def make_grid(config: dict) -> Grid:
    """The benchmark grid with each configured dataset's domain."""
    bench = config["benchmark"]
    datasets = config.get("datasets") or {}
    domains = {d: datasets[d]["domain"] for d in bench["datasets"]
               if isinstance(datasets.get(d), dict) and datasets[d].get("domain")}
    return Grid(tuple(bench["models"]), tuple(bench["methods"]), tuple(bench["datasets"]), domains)


def layout(config: dict) -> Layout:
    return Layout(config["results"])


def weights_input(config: dict, model: str) -> list[str] | str:
    """The stand-in folder when the model is trained locally (a rule input), else nothing."""
    return layout(config).pretrained(model) if config["models"][model]["weights"] == "standin" else []


def weights_value(config: dict, model: str) -> str:
    """What the model is loaded from: the stand-in folder, a hub name, a folder or a file."""
    return weights_input(config, model) or config["models"][model]["weights"]


def weights_trigger(config: dict, model: str) -> str:
    """A param of the ``features`` rule that changes when the content of local weights does, so that Snakemake
    reruns it (a path string stays the same when a file is replaced in place): the digest of
    ``study.weights_identity`` (sha256 of the files, once per Snakemake process). "" for the stand-in (a rule
    input already) and hub names (the name is in the settings; the cell checks the revision when it opens the cache).
    """
    weights = config["models"][model]["weights"]
    if weights == "standin" or not Path(weights).exists():
        return ""
    from .study import fingerprint, weights_identity  # optuna: imported only for local weights

    return fingerprint(weights_identity(weights))


def model_options(config: dict, model: str) -> dict:
    """Loading options besides the weights (CRIS: backbone, tokenizer, image size, token budget)."""
    return {k: v for k, v in config["models"][model].items() if k not in ("weights", "standin")}


def model_size(config: dict, model: str) -> int:
    return config["models"][model]["image_size"]


def standin_settings(config: dict, model: str) -> dict:
    """What ``tunevlseg pretrain`` needs for ``model``'s stand-in."""
    s = config["models"][model]["standin"]
    return {**{k: s[k] for k in STANDIN_KEYS if k in s}, "model": model, "seed": config["seed"],
            "device": config["device"]}


@functools.cache
def _schema_training_defaults() -> dict:
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    return {k: v["default"] for k, v in schema["properties"]["training"]["properties"].items() if "default" in v}


def training_defaults() -> dict:
    """The schema's defaults of ``training.*``: the lowest layer of every method's training."""
    return copy.deepcopy(_schema_training_defaults())


def global_training(config: dict) -> dict:
    """The top-level ``training`` over the schema's defaults (no method's overrides)."""
    return {**training_defaults(), **copy.deepcopy(config.get("training") or {})}


def validate_workflow_config(config: dict, schema: str | Path = SCHEMA) -> None:
    """Snakemake's schema check, which fills in the schema's defaults — except under ``training``: those are
    applied per method by :func:`effective_settings`, below a method's catalogue training, which only the
    training keys a config sets override. Used by the Snakefile and by ``tunevlseg estimate``."""
    from snakemake.utils import validate

    training = copy.deepcopy(config.get("training"))
    validate(config, str(schema))
    config["training"] = training or {}


def load_workflow_config(paths) -> dict:
    """A config as the Snakefile sees it: the files (one, or several merged in order as ``snakemake --configfile
    A B`` merges them), the schema's defaults filled in (training's per method), the workflow's checks applied.
    Used by ``tunevlseg estimate`` and ``tunevlseg status``."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    config = load_config_files(paths)
    source = " + ".join(map(str, paths))
    check_required(config, source)
    validate_schema(config, source, SCHEMA)  # one line with the key path, before Snakemake's validation
    try:
        validate_workflow_config(config)
    except Exception as err:  # noqa: BLE001 - Snakemake's message dumps the schema: keep its first line
        raise ConfigError(source, "schema", str(err).strip().splitlines()[0]) from err
    try:
        check_config(config, source)
    except (KeyError, TypeError) as err:
        raise ConfigError(source, "config", f"{type(err).__name__}: {err}") from err
    return config


def _merge_hyperparameters(catalogue: dict, given: dict, where: str) -> dict:
    """``search`` and ``fixed`` (name → (value, source)): the catalogue's, except that each hyper-parameter
    the config names under either part is the config's in both (null: neither); a part given as null
    drops the catalogue's whole part."""
    cat = {part: {} if part in given and given[part] is None else catalogue.get(part, {})
           for part in ("search", "fixed")}
    mine = {part: given.get(part) or {} for part in ("search", "fixed")}
    named = set(mine["search"]) | set(mine["fixed"])
    out = {}
    for part in ("search", "fixed"):
        out[part] = {}
        for k in (*cat[part], *mine[part]):
            if k not in named:
                out[part][k] = (cat[part][k], CATALOGUE)
            elif mine[part].get(k) is not None:
                out[part][k] = (copy.deepcopy(mine[part][k]), f"{where}.{part}.{k}")
    return out


def effective_settings(config: dict, method: str, sources: bool = False) -> dict:
    """A method's ``search``, ``fixed`` and ``training`` as every cell of it gets them (docs/how-to/configure.md,
    precedence); with ``sources`` each value is a ``(value, source)`` pair, source = the config key that set
    it, :data:`CATALOGUE` or :data:`SCHEMA_DEFAULT`. The one place the layers are merged; every consumer
    (the rules' cell settings, ``tune`` through them, ``estimate``, ``check-config``) reads it.

    ``training``, lowest first: the schema's defaults < the catalogue's training of the method (finetune's
    40 epochs) < the config's ``training`` < the config's ``methods.<m>.training`` (null there: the
    catalogue's value of that key is not used). ``search``/``fixed``: see :func:`_merge_hyperparameters`."""
    given = (config.get("methods") or {}).get(method) or {}
    where = f"methods.{method}"
    catalogue = catalogue_settings(method)
    out = _merge_hyperparameters(catalogue, given, where)
    mine = given.get("training") or {}
    cat_training = {} if "training" in given and given["training"] is None else catalogue.get("training", {})
    layers = ((SCHEMA_DEFAULT, training_defaults()),
              (CATALOGUE, {k: v for k, v in cat_training.items() if not (k in mine and mine[k] is None)}),
              ("training", config.get("training") or {}),
              (f"{where}.training", {k: v for k, v in mine.items() if v is not None}))
    out["training"] = {}
    for layer, values in layers:
        keyed = layer not in (SCHEMA_DEFAULT, CATALOGUE)  # a config key: the source names it
        out["training"].update({k: (copy.deepcopy(v), f"{layer}.{k}" if keyed else layer) for k, v in values.items()})
    if sources:
        return out
    return {part: {k: v for k, (v, _) in out[part].items()} for part in METHOD_PARTS}


def training_settings(config: dict, method: str) -> dict:
    """The training every trial of ``method`` gets (:func:`effective_settings`)."""
    return effective_settings(config, method)["training"]


def _flow(value) -> str:
    """A value as YAML flow text on one line (as a config would write it)."""
    import yaml

    return yaml.safe_dump([value], default_flow_style=True, sort_keys=False, width=10**9).strip()[1:-1]


def effective_settings_lines(config: dict, methods=None) -> list[str]:
    """``check-config --show-effective``: each method's effective settings (default: the grid's methods), one
    line per key: the value and where it comes from (:func:`effective_settings`)."""
    lines = []
    for method in methods or config["benchmark"]["methods"]:
        settings = effective_settings(config, method, sources=True)
        rows = [(f"{part}.{k}", _flow(v), src) for part in METHOD_PARTS for k, (v, src) in settings[part].items()]
        key_w, value_w = (max((len(r[i]) for r in rows), default=0) for i in (0, 1))
        lines.append(f"  {method}")
        lines += [f"    {key:<{key_w}}  {value:<{value_w}}  {src}" for key, value, src in rows]
    return lines


def cell_settings(config: dict, model: str, method: str, dataset: str) -> dict:
    """Everything that determines one cell's trials (``tunevlseg.tune.CellSpec`` fields)."""
    tuning = {k: v for k, v in config.get("tuning", {}).items() if k not in RUN_ONLY_TUNING_KEYS}
    method_cfg = effective_settings(config, method)
    return {
        "model": model,
        "method": method,
        "dataset": dataset,
        "weights": weights_value(config, model),
        "model_options": model_options(config, model),
        "prompt_key": config["prompt"],
        "seed": config["seed"],
        "device": config["device"],
        "search": method_cfg["search"],
        "fixed": method_cfg["fixed"],
        "training": method_cfg["training"],
        **copy.deepcopy(tuning),
    }


def uses_feature_cache(config: dict, method: str) -> bool:
    """Whether cells of ``method`` train on the frozen-feature cache: the method's image side is
    frozen and unprompted (``Method.frozen_image_side``), it has a study (zero-shot evaluates once: a cache
    would cost more than it saves), and its ``training.cache_frozen`` is ``auto``."""
    spec = METHODS[method]
    training = training_settings(config, method)
    return spec.tuned and spec.frozen_image_side and training.get("cache_frozen", "auto") == "auto"


def features_input(config: dict, model: str, method: str, dataset: str) -> list[str] | str:
    """The cell's frozen-feature cache folder (a rule input), or nothing when the cell does not use one."""
    if not uses_feature_cache(config, method):
        return []
    return layout(config).features(model, dataset, model_size(config, model))


def features_settings(config: dict, model: str) -> dict:
    """What ``tunevlseg features`` needs: the model and its weights, the cache's dtype and views; the
    augmentation seed of the views is the config's seed."""
    training = global_training(config)
    return {"model": model, "weights": weights_value(config, model), "model_options": model_options(config, model),
            "dtype": training.get("cache_dtype", "float16"), "views": training.get("cache_views", 0),
            "seed": config["seed"], "batch_size": training.get("batch_size", 32), "device": config["device"],
            "amp": training.get("amp", True)}


def _job_shape(config: dict, model: str, method: str | None, job: str) -> tuple[int, int, str, int]:
    """(batch, image size, kind of step, DataLoader workers) of a job; kind: ``encode`` (no gradients),
    ``text`` / ``vision`` (prompt methods without / with image-encoder prompts), ``train`` (the whole model)."""
    mcfg = config["models"][model]
    if job == "pretrain":
        standin = mcfg["standin"]
        return standin.get("batch_size", 32), standin["arch"].get("image_size", mcfg["image_size"]), "train", 0
    if job == "features":
        return config.get("training", {}).get("batch_size", 32), mcfg["image_size"], "encode", 0
    if job != "train":
        raise ValueError(f"job must be train, features or pretrain, got {job!r}")
    info, training = METHODS[method], training_settings(config, method)
    kind = ("encode" if not info.tuned else "train" if info.trains_model else
            "vision" if "vision" in info.modalities else "text")
    return training.get("batch_size", 32), mcfg["image_size"], kind, training.get("num_workers", 0)


def job_mem_mb(config: dict, model: str, method: str | None = None, job: str = "train") -> int:
    """The ``mem_mb`` a job declares, from the model's measured figures (``models.registry.MemoryFigures``).

    ``job``: ``train`` (a cell's tune, tune_worker, retrain jobs: ``method`` given), ``features`` (the frozen
    encoder over a dataset) or ``pretrain`` (the stand-in, trained whole). On the CPU: runtime + weights + the
    step's fixed part (scaled with the weights: a stand-in's learner is as narrow as the stand-in) + batch ×
    per-image figure × (image size / measured size)² + DataLoader workers (train and val loaders, and their
    fork server), × :data:`MEMORY_MARGIN`, rounded up to 100 MB. With ``device: cuda…`` the activations are
    on the GPU: runtime + CUDA runtime + the weights (twice when the trial loads a fresh model) + workers."""
    figures = MODELS[model].memory
    if figures is None:
        raise ValueError(f"model '{model}' has no memory figures in the model registry")
    batch, size, kind, workers = _job_shape(config, model, method, job)
    weights = figures.standin_weights_mb if config["models"][model]["weights"] == "standin" else figures.weights_mb
    loaders = WORKER_MB * (2 * workers + 1) if workers else 0
    if str(config.get("device", "auto")).startswith("cuda"):
        need = RUNTIME_MB + CUDA_HOST_MB + weights * (2 if kind == "train" else 1) + loaders
    else:
        step = 0.0 if kind == "encode" else getattr(figures, f"{kind}_step_mb") * weights / figures.weights_mb
        per_image = getattr(figures, f"{kind}_mb_per_image")
        need = RUNTIME_MB + weights + step + batch * per_image * (size / figures.size) ** 2 + loaders
    return int(-(-need * MEMORY_MARGIN // 100) * 100)


def worker_markers(config: dict, model: str, method: str, dataset: str) -> list[str]:
    """With ``tuning.workers_per_cell`` K > 1: the K worker markers a cell's finishing step waits for."""
    k = config["tuning"].get("workers_per_cell", 1)
    if k <= 1 or not METHODS[method].tuned:
        return []
    cell = layout(config).cell(model, method, dataset)
    return [cell.worker_marker(i) for i in range(k)]


def n_replicates(config: dict, method: str) -> int:
    """Seed replicates of a cell's best configuration: ``tuning.final_seeds``; 1 for an untuned method
    (zero-shot is deterministic)."""
    return replicates_of(method, config.get("tuning", {}).get("final_seeds", 1))


def replicate_files(config: dict, model: str, method: str, dataset: str) -> list[str]:
    """Every seed replicate's ``result.json`` of a cell (replicate 0 = the best trial, written by ``tune``)."""
    cell = layout(config).cell(model, method, dataset)
    return [cell.seed(r).result_json for r in range(n_replicates(config, method))]


def report_settings(config: dict) -> dict:
    """The slice of the config the report uses: plot options, the grid, the datasets' domains and the seed
    replicates each tuned cell should have (``final_seeds``: the report marks cells with fewer)."""
    bench = config["benchmark"]
    grid = {"models": bench["models"], "methods": bench["methods"], "datasets": bench["datasets"]}
    return {**config.get("report", {}), **grid, "domains": make_grid(config).domains,
            "final_seeds": config.get("tuning", {}).get("final_seeds", 1)}


__all__ = ["CACHE_KEYS", "CATALOGUE", "ConfigError", "METHOD_PARTS", "RUN_ONLY_TUNING_KEYS", "SCHEMA", "SCHEMA_DEFAULT",
           "cell_settings", "check_config", "fill_model_defaults", "effective_settings", "effective_settings_lines", "features_input",
           "features_settings", "global_training", "job_mem_mb", "layout", "load_config_file", "make_grid", "model_options",
           "model_size", "n_replicates", "replicate_files", "report_settings", "standin_settings", "training_defaults",
           "training_settings", "uses_feature_cache", "validate_schema", "validate_workflow_config", "weights_input", "weights_trigger",
           "weights_value", "worker_markers"]
