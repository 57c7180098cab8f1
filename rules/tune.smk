# Models and tuning: the demo stand-in (when weights: standin), the frozen-feature caches (methods whose image
# side is frozen and unprompted train on them), then one Optuna study per cell.
# With tuning.workers_per_cell K > 1, K `tune_worker` jobs share the cell's study, then `tune`
# (the same command without --worker) completes anything left and writes the cell's outputs.


rule pretrain_standin:
    input:
        prepared=lambda w: L.prepared(config["models"][w.model]["standin"]["dataset"], model_size(w.model)),
    output:
        directory(L.pretrained("{model}")),
    params:
        settings=lambda w: as_json(cfg.standin_settings(config, w.model)),
    threads: 2
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("pretrain/{model}"),
    shell:
        "tunevlseg pretrain --prepared {input.prepared} --out {output} --settings {params.settings:q} > {log} 2>&1"


# A model's unprompted image features of one prepared dataset, computed once and shared by every trial and
# seed of the cells that read them (rules/common.smk: tune_features; src/tunevlseg/features.py).
rule features:
    input:
        prepared=lambda w: L.prepared(w.dataset, w.size),
        weights=lambda w: weights_input(w.model),
    output:
        directory(L.features("{model}", "{dataset}", "{size}")),
    params:
        settings=features_settings,
    threads: 2
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("features/{model}.{dataset}.{size}"),
    shell:
        "tunevlseg features --prepared {input.prepared} --out {output} --threads {threads}"
        " --settings {params.settings:q} > {log} 2>&1"


# One of K parallel workers of a cell: runs trials of the shared study until the budget is
# taken; writes no cell outputs (the `tune` job below does, after all K).
rule tune_worker:
    input:
        prepared=lambda w: L.prepared(w.dataset, model_size(w.model)),
        weights=lambda w: weights_input(w.model),
        features=tune_features,
    output:
        marker=L.cell("{model}", "{method}", "{dataset}").worker_marker("{worker}"),
    wildcard_constraints:
        worker=r"\d+",
    params:
        settings=cell_settings,
        out=lambda w: cell_files(w).root,
        storage=storage_arg,
        features=features_arg,
    threads: 1
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("tune/{model}.{method}.{dataset}.worker{worker}"),
    shell:
        "tunevlseg tune --prepared {input.prepared} --out {params.out} --threads {threads} --worker {wildcards.worker}"
        " --marker {output.marker} {params.storage} {params.features} --settings {params.settings:q} > {log} 2>&1"


rule tune:
    input:
        prepared=lambda w: L.prepared(w.dataset, model_size(w.model)),
        weights=lambda w: weights_input(w.model),
        features=tune_features,
        workers=tune_workers,
    output:
        trials=L.cell("{model}", "{method}", "{dataset}").trials_csv,
        best=L.cell("{model}", "{method}", "{dataset}").best_json,
        provenance=L.cell("{model}", "{method}", "{dataset}").provenance_json,
    params:
        settings=cell_settings,
        out=lambda w, output: os.path.dirname(output.best),
        storage=storage_arg,
        features=features_arg,
    threads: 1
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("tune/{model}.{method}.{dataset}"),
    shell:
        "tunevlseg tune --prepared {input.prepared} --out {params.out} --threads {threads}"
        " {params.storage} {params.features} --settings {params.settings:q} > {log} 2>&1"
