# Models and tuning: the demo stand-in (when weights: standin), then one Optuna study per cell.


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
        out=lambda w, output: os.path.dirname(output.best),
    threads: 1
    resources:
        gpu=lambda w: 1 if config["device"] != "cpu" else 0,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/tune/{{model}}.{{method}}.{{dataset}}.log",
    shell:
        "tunevlseg tune --prepared {input.prepared} --out {params.out} --threads {threads}"
        " --settings {params.settings:q} > {log} 2>&1"
