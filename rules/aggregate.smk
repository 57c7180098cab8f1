# Aggregation: tables and figures from every cell's best.json / trials.csv (and, read from the cell
# folders, the Optuna journal and the best trial's examples.npz).
# The report package's sources are inputs, so editing plotting code reruns only this rule.
# Every figure is wrapped in report() with a caption (workflow/report/*.rst): `snakemake --report`.
from tunevlseg.report.layout import Grid, figure_files

REPORT_GRID = Grid(
    tuple(BENCH["models"]),
    tuple(BENCH["methods"]),
    tuple(BENCH["datasets"]),
    {d: config["datasets"][d]["domain"] for d in BENCH["datasets"] if "domain" in config["datasets"][d]},
)
CAPTIONS = "../workflow/report"


def report_settings(w):
    """The slice of the config the report uses: plot options and the grid."""
    grid = {"models": BENCH["models"], "methods": BENCH["methods"], "datasets": BENCH["datasets"]}
    return as_json({**config.get("report", {}), **grid, "domains": REPORT_GRID.domains})


def report_outputs(tables, figures):
    """Named outputs (tables, figures with captions) written under `tables` prefix and `figures` folder."""
    fig = figure_files(figures, REPORT_GRID)

    def cell_report(cell, path, kind):
        model, method, dataset = cell
        return report(path, caption=f"{CAPTIONS}/optuna_{kind}.rst", category="Optuna", subcategory=dataset,
                      labels={"model": model, "method": method, "dataset": dataset, "figure": kind})

    return dict(
        tables=[report(f"{tables}.csv", caption=f"{CAPTIONS}/dice_table.rst", category="Dice"),
                f"{tables}.md", f"{tables}.tex"],
        heatmap=report(fig["heatmap"], caption=f"{CAPTIONS}/dice_heatmap.rst", category="Dice"),
        domains=report(fig["domains"], caption=f"{CAPTIONS}/domain_dice.rst", category="Dice"),
        domain_table=fig["domain_table"],
        depth=report(fig["depth"], caption=f"{CAPTIONS}/depth_vs_dice.rst", category="Prompt depth"),
        correlations=report(fig["correlations"], caption=f"{CAPTIONS}/depth_correlations.rst",
                            category="Prompt depth"),
        history=[cell_report(c, p, "history") for c, p in fig["history"].items()],
        importances=[cell_report(c, p, "importances") for c, p in fig["importances"].items()],
        qualitative=[report(p, caption=f"{CAPTIONS}/qualitative.rst", category="Qualitative",
                            labels={"dataset": d}) for d, p in fig["qualitative"].items()],
    )


def finished_cells(w):
    """best.json and Optuna journals present now, with their mtimes: a change reruns report_partial."""
    found = sorted(Path(R).glob("cells/*/*/*/best.json")) + sorted(Path(R).glob("cells/*/*/*/study.journal"))
    return as_json({str(p): p.stat().st_mtime_ns for p in found})


rule aggregate:
    input:
        best=[f"{cell_dir(*c)}/best.json" for c in cells()],
        trials=[f"{cell_dir(*c)}/trials.csv" for c in cells()],
        code=sorted(str(p) for p in (SRC / "report").glob("*.py")),
    output:
        **report_outputs(f"{R}/tables/dice", f"{R}/figures"),
    params:
        tables=f"{R}/tables/dice",
        figures=f"{R}/figures",
        settings=report_settings,
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/aggregate.log",
    shell:
        "tunevlseg aggregate --best {input.best} --trials {input.trials} --tables {params.tables}"
        " --figures {params.figures} --settings {params.settings:q} > {log} 2>&1"


# While the grid runs: `snakemake report_partial` (or `tunevlseg report --partial`) reports whatever
# cells have finished, missing ones as "—". No cell is an input, so it never schedules a cell; it
# reruns whenever a best.json or journal appears or changes (the scan is a param).
rule report_partial:
    output:
        **report_outputs(f"{R}/partial/tables/dice", f"{R}/partial/figures"),
    params:
        results=R,
        tables=f"{R}/partial/tables/dice",
        figures=f"{R}/partial/figures",
        settings=report_settings,
        finished=finished_cells,
    localrule: True
    conda:
        "../envs/tunevlseg.yaml"
    log:
        f"{R}/logs/report_partial.log",
    shell:
        "tunevlseg report --partial --results {params.results} --tables {params.tables} --figures {params.figures}"
        " --settings {params.settings:q} > {log} 2>&1"
