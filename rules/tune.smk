# Models and tuning: the demo stand-in (when weights: standin), then one Optuna study per cell.
# With tuning.workers_per_cell K > 1, K `tune_worker` jobs share the cell's study, then `tune`
# (the same command without --worker) completes anything left and writes the cell's outputs.


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
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/pretrain/{{model}}.log",
    shell:
        "tunevlseg pretrain --prepared {input.prepared} --out {output} --settings {params.settings:q} > {log} 2>&1"


# One of K parallel workers of a cell: runs trials of the shared study until the budget is
# taken; writes no cell outputs (the `tune` job below does, after all K).
rule tune_worker:
    input:
        prepared=lambda w: prepared_dir(w.dataset, model_size(w.model)),
        weights=lambda w: weights_input(w.model),
    output:
        marker=f"{R}/cells/{{model}}/{{method}}/{{dataset}}/workers/{{worker}}.json",
    wildcard_constraints:
        worker=r"\d+",
    params:
        settings=cell_settings,
        out=lambda w: cell_dir(w.model, w.method, w.dataset),
        storage=storage_arg,
    threads: 1
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/tune/{{model}}.{{method}}.{{dataset}}.worker{{worker}}.log",
    shell:
        "tunevlseg tune --prepared {input.prepared} --out {params.out} --threads {threads} --worker {wildcards.worker}"
        " --marker {output.marker} {params.storage} --settings {params.settings:q} > {log} 2>&1"


rule tune:
    input:
        prepared=lambda w: prepared_dir(w.dataset, model_size(w.model)),
        weights=lambda w: weights_input(w.model),
        workers=tune_workers,
    output:
        trials=f"{R}/cells/{{model}}/{{method}}/{{dataset}}/trials.csv",
        best=f"{R}/cells/{{model}}/{{method}}/{{dataset}}/best.json",
        provenance=f"{R}/cells/{{model}}/{{method}}/{{dataset}}/provenance.json",
    params:
        settings=cell_settings,
        out=lambda w, output: os.path.dirname(output.best),
        storage=storage_arg,
    threads: 1
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/tune/{{model}}.{{method}}.{{dataset}}.log",
    shell:
        "tunevlseg tune --prepared {input.prepared} --out {params.out} --threads {threads}"
        " {params.storage} --settings {params.settings:q} > {log} 2>&1"
