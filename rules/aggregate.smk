# Aggregation: tables and figures from every cell's best.json / trials.csv (and, read from the cell
# folders, the Optuna journal and the best trial's examples.npz).
# The report package's sources are inputs, so editing plotting code reruns only this rule.
# Every figure is wrapped in report() with a caption (workflow/report/*.rst): `snakemake --report`.


rule aggregate:
    input:
        best=[L.cell(*c).best_json for c in GRID.cells()],
        trials=[L.cell(*c).trials_csv for c in GRID.cells()],
        replicates=[f for c in GRID.cells() for f in cfg.replicate_files(config, *c)],
        code=sorted(str(p) for p in (SRC / "report").glob("*.py")),
    output:
        **report_outputs(L.tables(), L.figures()),
    params:
        tables=lambda w, output: output.tables[0].removesuffix(".csv"),
        figures=lambda w, output: os.path.dirname(output.heatmap),
        settings=report_settings,
    threads: 2  # the per-cell Optuna figures and qualitative panels are drawn beside the tables
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("aggregate"),
    shell:
        "tunevlseg aggregate --best {input.best:q} --trials {input.trials:q} --replicates {input.replicates:q}"
        " --tables {params.tables:q} --figures {params.figures:q} --threads {threads}"
        " --settings {params.settings:q} > {log:q} 2>&1"


# While the grid runs: `snakemake report_partial` (or `tunevlseg report --partial`) reports whatever
# cells have finished, missing ones as "—". No cell is an input, so it never schedules a cell; it
# reruns whenever a best.json or journal appears or changes (the scan is a param).
rule report_partial:
    output:
        **report_outputs(L.partial().tables(), L.partial().figures()),
    params:
        results=lambda w, output: Path(output.heatmap).parents[2],
        tables=lambda w, output: output.tables[0].removesuffix(".csv"),
        figures=lambda w, output: os.path.dirname(output.heatmap),
        settings=report_settings,
        finished=finished_cells,
    threads: 2
    localrule: True
    conda:
        "../envs/tunevlseg.yaml"
    log:
        L.log("report_partial"),
    shell:
        "tunevlseg report --partial --results {params.results:q} --tables {params.tables:q}"
        " --figures {params.figures:q} --threads {threads} --settings {params.settings:q} > {log:q} 2>&1"
