# Take the winner home: each tuned cell's best adapter (seed replicate 0, the study's best trial) exported as a
# self-describing folder (adapter_config.json + adapter_model.safetensors; README, "Use the winner"). Not part
# of `all`: run `snakemake export_adapters` once the cells are done. Zero-shot learns nothing: not exported.


rule export_adapter:
    input:
        best=L.cell("{model}", "{method}", "{dataset}").best_json,
        seed0=L.cell("{model}", "{method}", "{dataset}").seed(0).result_json,
        prepared=lambda w: L.prepared(w.dataset, model_size(w.model)),
        weights=lambda w: weights_input(w.model),
    output:
        directory(L.adapter("{model}", "{method}", "{dataset}")),
    params:
        cell=lambda w: cell_files(w).root,
    threads: 1
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("export/{model}.{method}.{dataset}"),
    shell:
        "tunevlseg export {params.cell:q} --out {output:q} > {log:q} 2>&1"


rule export_adapters:
    input:
        [L.adapter(m, k, d) for m, k, d in GRID.tuned_cells()],
