# Data: synthetic raw layouts, or real releases (obtain -> index); then split + resize + cache per (dataset, size).
from tunevlseg.data.ingest import annotation_files, release_files


# Downloads need the internet: run them on the submitting host, not on compute nodes.
localrules:
    obtain,


rule synth:
    output:
        directory(f"{R}/raw/{{dataset}}"),
    params:
        settings=lambda w: as_json(
            {**config["datasets"][w.dataset]["synthetic"], "image_size": max(model_size(m) for m in BENCH["models"])}
        ),
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/synth/{{dataset}}.log",
    shell:
        "tunevlseg synth --out {output} --settings {params.settings:q} > {log} 2>&1"


rule obtain:
    input:
        # gated archives: replacing one at the same path reruns obtain -> index -> prepare
        release=lambda w: release_files(config["datasets"][w.dataset], RAW),
    output:
        f"{R}/sources/{{dataset}}.json",
    params:
        source=lambda w: config["datasets"][w.dataset]["source"],
        raw_dir=RAW,
        archive=lambda w: config["datasets"][w.dataset].get("archive", ""),
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/obtain/{{dataset}}.log",
    shell:
        "tunevlseg data obtain --source {params.source} --raw-dir {params.raw_dir:q} --archive={params.archive:q}"
        " --out {output} > {log} 2>&1"


rule index:
    input:
        f"{R}/sources/{{dataset}}.json",
    output:
        directory(f"{R}/index/{{dataset}}"),
    threads: data_threads
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/index/{{dataset}}.log",
    shell:
        "tunevlseg data index --receipt {input} --out {output} --threads {threads} > {log} 2>&1"


rule prepare:
    input:
        raw=index_input,
        annotations=lambda w: annotation_files(config["datasets"][w.dataset]),
    output:
        directory(f"{R}/prepared/{{dataset}}/{{size}}"),
    params:
        settings=lambda w: as_json(prepare_settings(config["datasets"][w.dataset])),
    threads: data_threads
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/prepare/{{dataset}}_{{size}}.log",
    shell:
        "tunevlseg prepare --raw {input.raw} --out {output} --size {wildcards.size}"
        " --threads {threads} --settings {params.settings:q} > {log} 2>&1"
