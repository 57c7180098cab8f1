# Models and tuning: the demo stand-in (when weights: standin), then one Optuna study per cell.


def standin_settings(model):
    s = config["models"][model]["standin"]
    keys = ("arch", "vocabulary", "epochs", "batch_size", "lr", "min_grounding_gap")
    return as_json({**{k: s[k] for k in keys if k in s}, "seed": config["seed"], "device": config["device"]})


rule pretrain_standin:
    input:
        prepared=lambda w: prepared_dir(config["models"][w.model]["standin"]["dataset"], model_size(w.model)),
    output:
        directory(f"{R}/pretrained/{{model}}-standin"),
    params:
        settings=lambda w: standin_settings(w.model),
    threads: 2
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
    log:
        f"{R}/logs/pretrain/{{model}}.log",
    shell:
        "tunevlseg pretrain --prepared {input.prepared} --out {output} --settings {params.settings:q} > {log} 2>&1"


def cell_settings(w):
    tuning = config.get("tuning", {})
    method_cfg = config["methods"].get(w.method, {})
    return as_json(
        {
            "model": w.model,
            "method": w.method,
            "dataset": w.dataset,
            "weights": weights_value(w.model),
            "prompt_key": config["prompt"],
            "seed": config["seed"],
            "device": config["device"],
            "search": method_cfg.get("search", {}),
            "fixed": method_cfg.get("fixed", {}),
            "training": config.get("training", {}),
            **tuning,
        }
    )


rule tune:
    input:
        prepared=lambda w: prepared_dir(w.dataset, model_size(w.model)),
        weights=lambda w: weights_input(w.model),
    output:
        trials=f"{R}/cells/{{model}}/{{method}}/{{dataset}}/trials.csv",
        best=f"{R}/cells/{{model}}/{{method}}/{{dataset}}/best.json",
        provenance=f"{R}/cells/{{model}}/{{method}}/{{dataset}}/provenance.json",
    params:
        settings=cell_settings,
        out=lambda w: cell_dir(w.model, w.method, w.dataset),
    threads: 1
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
    log:
        f"{R}/logs/tune/{{model}}.{{method}}.{{dataset}}.log",
    shell:
        "tunevlseg tune --prepared {input.prepared} --out {params.out} --threads {threads}"
        " --settings {params.settings:q} > {log} 2>&1"
