# Aggregation: tables and figures from every cell's best.json / trials.csv.
# The report package's sources are inputs, so editing plotting code reruns only this rule.


rule aggregate:
    input:
        best=[f"{cell_dir(*c)}/best.json" for c in cells()],
        trials=[f"{cell_dir(*c)}/trials.csv" for c in cells()],
        code=sorted(str(p) for p in (SRC / "report").glob("*.py")),
    output:
        tables=multiext(f"{R}/tables/dice", ".csv", ".md", ".tex"),
        heatmap=report(
            f"{R}/figures/dice_heatmap.png", caption="../workflow/report/dice_heatmap.rst", category="Dice"
        ),
        depth=report(
            f"{R}/figures/depth_vs_dice.png", caption="../workflow/report/depth_vs_dice.rst", category="Prompt depth"
        ),
        correlations=f"{R}/figures/depth_vs_dice.csv",
    params:
        tables=lambda w, output: output.tables[0].removesuffix(".csv"),
        figures=lambda w, output: os.path.dirname(output.heatmap),
        settings=lambda w: as_json(
            {
                **config.get("report", {}),
                "datasets": BENCH["datasets"],
                "rows": [f"{m} · {k}" for m in BENCH["models"] for k in BENCH["methods"] if supports(m, k)],
            }
        ),
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/aggregate.log",
    shell:
        "tunevlseg aggregate --best {input.best} --trials {input.trials} --tables {params.tables}"
        " --figures {params.figures} --settings {params.settings:q} > {log} 2>&1"
