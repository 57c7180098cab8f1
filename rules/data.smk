# Data: synthetic raw layouts, then split + resize + cache per (dataset, size).


rule synth:
    output:
        directory(f"{R}/raw/{{dataset}}"),
    params:
        settings=lambda w: as_json(
            {**config["datasets"][w.dataset]["synthetic"], "image_size": config["models"][BENCH["models"][0]]["image_size"]}
        ),
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/synth/{{dataset}}.log",
    shell:
        "tunevlseg synth --out {output} --settings {params.settings:q} > {log} 2>&1"


rule prepare:
    input:
        raw=f"{R}/raw/{{dataset}}",
    output:
        directory(f"{R}/prepared/{{dataset}}/{{size}}"),
    params:
        settings=lambda w: as_json(
            {
                "seed": config["datasets"][w.dataset].get("split_seed", 0),
                "split_fractions": config["datasets"][w.dataset].get("split_fractions", [0.7, 0.15, 0.15]),
            }
        ),
    threads: 2
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/prepare/{{dataset}}_{{size}}.log",
    shell:
        "tunevlseg prepare --raw {input.raw} --out {output} --size {wildcards.size}"
        " --threads {threads} --settings {params.settings:q} > {log} 2>&1"
