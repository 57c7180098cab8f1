# Models and tuning: the demo stand-in (when weights: standin), the frozen-feature caches (methods whose image
# side is frozen and unprompted train on them), one Optuna study per cell, then the seed replicates of each
# cell's best configuration (tuning.final_seeds). Every job defaults to one torch thread: tiny models gain
# little from intra-op threads, so a 2-core demo runs two jobs side by side (profiles raise it per rule).
# With tuning.workers_per_cell K > 1, K `tune_worker` jobs share the cell's study, then `tune`
# (the same command without --worker) completes anything left and writes the cell's outputs.
# Priorities order the ready jobs: stand-ins and feature caches first (cells wait on them), studies before
# seed replicates, so the run ends on short retrain jobs instead of a late study followed by its replicates
# while the other cores idle (measured on the 2-core demo: ~20 s of one core idle before `aggregate`).
# mem_mb: each job's host memory from its model's measured figures (models/registry.py, tunevlseg.config.job_mem_mb),
# so that `--resources mem_mb=N` keeps the jobs running side by side within N MB (README "Resources").


rule pretrain_standin:
    input:
        prepared=lambda w: L.prepared(config["models"][w.model]["standin"]["dataset"], model_size(w.model)),
    output:
        directory(L.pretrained("{model}")),
    params:
        settings=lambda w: as_json(cfg.standin_settings(config, w.model)),
    priority: 3
    threads: 1
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
        mem_mb=pretrain_mem_mb,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("pretrain/{model}"),
    shell:
        "tunevlseg pretrain --prepared {input.prepared:q} --out {output:q} --threads {threads}"
        " --settings {params.settings:q}"
        " > {log:q} 2>&1"


# A model's unprompted image features of one prepared dataset, computed once and shared by every trial and
# seed of the cells that read them (rules/common.smk: tune_features; src/tunevlseg/features.py).
# `weights_id` (unused by the command) is the content hash of local weights: replacing a weight file in
# place reruns this rule (and so the cells on the cache). A cell moves a damaged or stale cache aside, so
# the next run rebuilds it.
rule features:
    input:
        prepared=lambda w: L.prepared(w.dataset, w.size),
        weights=lambda w: weights_input(w.model),
    output:
        directory(L.features("{model}", "{dataset}", "{size}")),
    params:
        settings=features_settings,
        weights_id=lambda w: cfg.weights_trigger(config, w.model),
    priority: 2
    threads: 1
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
        mem_mb=features_mem_mb,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("features/{model}.{dataset}.{size}"),
    shell:
        "tunevlseg features --prepared {input.prepared:q} --out {output:q} --threads {threads}"
        " --settings {params.settings:q} > {log:q} 2>&1"


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
    priority: 1
    threads: 1
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
        mem_mb=cell_mem_mb,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("tune/{model}.{method}.{dataset}.worker{worker}"),
    shell:
        "tunevlseg tune --prepared {input.prepared:q} --out {params.out:q} --threads {threads}"
        " --worker {wildcards.worker} --marker {output.marker:q} {params.storage} {params.features}"
        " --settings {params.settings:q} > {log:q} 2>&1"


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
        seed0=L.cell("{model}", "{method}", "{dataset}").seed(0).result_json,
        seed0_metrics=L.cell("{model}", "{method}", "{dataset}").seed(0).test_metrics_csv,
    params:
        settings=cell_settings,
        out=lambda w: cell_files(w).root,
        storage=storage_arg,
        features=features_arg,
    priority: 1
    threads: 1
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
        mem_mb=cell_mem_mb,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("tune/{model}.{method}.{dataset}"),
    shell:
        "tunevlseg tune --prepared {input.prepared:q} --out {params.out:q} --threads {threads}"
        " {params.storage} {params.features} --settings {params.settings:q} > {log:q} 2>&1"


# Seed replicate R >= 1 of a cell's best configuration (replicate 0 is the best trial, written by `tune`).
# tuning.final_seeds is not a param of `tune`: raising it schedules only the new replicates.
rule retrain:
    input:
        prepared=lambda w: L.prepared(w.dataset, model_size(w.model)),
        weights=lambda w: weights_input(w.model),
        best=L.cell("{model}", "{method}", "{dataset}").best_json,
        features=tune_features,
    output:
        result=L.cell("{model}", "{method}", "{dataset}").seed("{replicate}").result_json,
        metrics=L.cell("{model}", "{method}", "{dataset}").seed("{replicate}").test_metrics_csv,
    wildcard_constraints:
        replicate=r"[1-9]\d*",
    params:
        settings=cell_settings,
        out=lambda w: cell_files(w).root,
        storage=storage_arg,
        features=features_arg,
    threads: 1
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
        mem_mb=cell_mem_mb,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("retrain/{model}.{method}.{dataset}.seed{replicate}"),
    shell:
        "tunevlseg retrain --prepared {input.prepared:q} --out {params.out:q} --replicate {wildcards.replicate}"
        " --threads {threads} {params.storage} {params.features} --settings {params.settings:q} > {log:q} 2>&1"
