# Data: synthetic raw layouts, or real releases (obtain -> index); then split + resize + cache per (dataset, size).
from tunevlseg.data.ingest import annotation_files, release_files
from tunevlseg.data.local import is_local, local_inputs


# Downloads need the internet: run them on the submitting host, not on compute nodes.
localrules:
    obtain,


rule synth:
    output:
        directory(L.raw("{dataset}")),
    params:
        settings=lambda w: as_json(
            {**config["datasets"][w.dataset]["synthetic"], "image_size": max(model_size(m) for m in GRID.models)}
        ),
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("synth/{dataset}"),
    shell:
        "tunevlseg synth --out {output:q} --settings {params.settings:q} > {log:q} 2>&1"


rule obtain:
    input:
        # gated archives: replacing one at the same path reruns obtain -> index -> prepare
        release=lambda w: release_files(config["datasets"][w.dataset], RAW),
    output:
        L.receipt("{dataset}"),
    params:
        source=lambda w: config["datasets"][w.dataset]["source"],
        raw_dir=RAW,
        archive=lambda w: config["datasets"][w.dataset].get("archive", ""),
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("obtain/{dataset}"),
    shell:
        "tunevlseg data obtain --source {params.source} --raw-dir {params.raw_dir:q} --archive={params.archive:q}"
        " --out {output:q} > {log:q} 2>&1"


rule index:
    input:
        L.receipt("{dataset}"),
    output:
        directory(L.index("{dataset}")),
    wildcard_constraints:
        dataset=REGISTRY_DATASETS,
    threads: data_threads
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("index/{dataset}"),
    shell:
        "tunevlseg data index --receipt {input:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


# The user's own data (source: folder | datalist | nnunet): indexed where it is, nothing is copied.
rule local_index:
    input:
        lambda w: local_inputs(config["datasets"][w.dataset]),
    output:
        directory(L.index("{dataset}")),
    wildcard_constraints:
        dataset=LOCAL_DATASETS,
    params:
        settings=lambda w: as_json(config["datasets"][w.dataset]),
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("index/{dataset}"),
    shell:
        "tunevlseg data local --dataset {wildcards.dataset} --settings {params.settings:q} --out {output:q}"
        " > {log:q} 2>&1"


rule prepare:
    input:
        raw=index_input,
        annotations=lambda w: annotation_files(config["datasets"][w.dataset]),
    output:
        directory(L.prepared("{dataset}", "{size}")),
    params:
        settings=lambda w: as_json(prepare_settings(config["datasets"][w.dataset])),
    threads: data_threads
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("prepare/{dataset}_{size}"),
    shell:
        "tunevlseg prepare --raw {input.raw:q} --out {output:q} --size {wildcards.size}"
        " --threads {threads} --settings {params.settings:q} > {log:q} 2>&1"
