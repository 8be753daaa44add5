"""Leaderboard outputs in `leaderboards/<dataset>/`: leaderboard.md (mean ± std per metric, best per column in
bold, significance against the best CF baseline, protocol and environment), leaderboard.csv (one row per run) and
leaderboard.png (bar chart with error bars)."""
from __future__ import annotations

import csv
import io
import math
import os
import platform
from importlib import metadata

from mmrecbole import __version__
from mmrecbole.config import Config
from mmrecbole.data.fileio import write_atomically, write_text_atomically
from mmrecbole import provenance
from mmrecbole.leaderboard import stats

ACCURACY = ("ndcg", "recall", "mrr", "hit")
#: Beyond-accuracy metrics and whether higher is better.
BEYOND = {"itemcoverage": True, "giniindex": False, "averagepopularity": False, "tailpercentage": True}
SHORT = {"itemcoverage": "Coverage", "giniindex": "Gini", "averagepopularity": "AvgPop", "tailpercentage": "Tail",
         "ndcg": "NDCG", "recall": "Recall", "mrr": "MRR", "hit": "Hit"}
README_START = "<!-- leaderboard:{dataset}:start -->"
README_END = "<!-- leaderboard:{dataset}:end -->"


def _name(metric):
    base, _, k = metric.partition("@")
    return f"{SHORT.get(base, base)}@{k}" if k else SHORT.get(base, base)


def _fmt(mean, std, digits=4):
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _p(value):
    if value is None or math.isnan(value):
        return "–"
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


def timing_note(records):
    """A line for boards whose runs shared the machine (leaderboard `jobs` > 1), else None."""
    shared = [r for r in records if int(r.get("concurrent_runs") or 1) > 1]
    if not shared:
        return None
    most = max(int(r["concurrent_runs"]) for r in shared)
    return (f"Timing: {len(shared)} of {len(records)} runs ran up to {most} at a time on this machine, sharing its "
            "cores (the board's `jobs`): their train and test seconds are longer than a run alone would take.")


def seed_note(records):
    """A line naming the rows whose model does not use the seed (trained once, that run reported for every seed)."""
    rows = {r["label"]: r["same_run_as_seed"] for r in records if r.get("same_run_as_seed") is not None}
    if not rows:
        return None
    return ("Trained once (the model does not use the seed; that run is reported for every seed): "
            + ", ".join(f"{label} (seed {seed})" for label, seed in rows.items()) + ".")


def run_commits(records) -> str:
    """'a1b2c3d (26 runs), 9f8e7d6 (13 runs)': the commits the cached runs were trained at, most runs first."""
    counts = {}
    for record in records:
        commit = record.get("commit", "not recorded")
        counts[commit] = counts.get(commit, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{commit} ({n} run{'s' if n != 1 else ''})" for commit, n in ordered)


def environment() -> dict:
    versions = {}
    for package in ("torch", "recbole", "implicit", "lightgbm", "transformers", "numpy", "scipy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    commit = provenance.code_commit()
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"mmrecbole": __version__, "python": platform.python_version(), **versions, "commit": commit,
            "code_version": provenance.code_version(), "machine": f"{cpu}, {os.cpu_count()} cores, GPU: {gpu}"}


def _protocol(spec) -> str:
    entry = spec.models[0]
    config = Config(entry.name, spec.dataset, config_dict=spec.row_settings(entry, spec.seeds[0]))
    split = config["eval_args"]
    masking = ("every seen item masked for every model: the user's training items at validation, training + "
               "validation items at test" if config["mask_seen_items"] else "no item masked for any model: items the user "
               "has seen stay candidates, the published protocol of UniSRec, VQ-Rec and MISSRec")
    cold = (f"; cold-start mode: {config['cold_start_item_ratio']:.0%} of items held out of training, test = "
            "interactions targeting them") if config["cold_start_item_ratio"] else ""
    return (f"split {split['split']}, order {split['order']}, {split['mode']['test']} ranking over all items "
            f"({masking}); metrics at {config['topk']}; early stopping and model selection on validation "
            f"{config['valid_metric']} only; test read once per run{cold}")


def _best(values, higher):
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return None
    return max(finite) if higher else min(finite)


def _table(header, rows, bold_columns):
    """Markdown table; `bold_columns` = {column index: (values per row, higher_is_better)}."""
    for column, (values, higher) in bold_columns.items():
        best = _best(values, higher)
        for row, value in zip(rows, values):
            if best is not None and value == best:
                row[column] = f"**{row[column]}**"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


WILCOXON_NOTE = (
    f"Wilcoxon: signed-rank test over users, scipy's zero_method=\"{stats.WILCOXON_ZERO_METHOD}\": leave-one-out "
    "gives most users identical per-user metrics under two models (both miss the single test item); zsplit keeps "
    "those zero differences, splitting their ranks evenly between the positive and negative sums. scipy's default "
    "\"wilcox\" would drop them (testing only the users where the models differ) and \"pratt\" ranks them but drops "
    "them from the statistic; the three p-values can differ a lot.")


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def tuning_section(spec, tuning) -> list:
    """The board's "Tuning" lines: how every tuned row was searched, then one table row per board row."""
    if not tuning or not (tuning.get("studies") or tuning.get("untuned")):
        return []
    from mmrecbole.leaderboard.tuning import SAMPLER_SEED
    from mmrecbole.tuning.study import PRUNER_STARTUP_TRIALS, PRUNER_WARMUP_STEPS

    studies, untuned = tuning.get("studies") or {}, tuning.get("untuned") or {}
    trials = sorted({record["trials"] for record in studies.values()})
    budget = f"{trials[0]} trials each" if len(trials) == 1 else "trials: " + ", ".join(map(str, trials))
    rows = []
    for entry in spec.models:
        record = studies.get(entry.label)
        if record is not None:
            chosen = ", ".join(f"{k}={_value(v)}" for k, v in sorted(record["best_params"].items()))
            rows.append([entry.label, f"{record['trials']} ({record['trials_complete']} / {record['trials_pruned']})",
                         f"{record['trials_seconds']:.0f}", f"{record['best_value']:.4f}", chosen])
        elif entry.label in untuned:
            rows.append([entry.label, "untuned", "–", "–", f"defaults ({untuned[entry.label]})"])
        else:
            rows.append([entry.label, "not tuned yet", "–", "–", "–"])
    table = _table(["Model", "trials (complete / pruned)", "search s", "best valid", "chosen settings"], rows, {})
    return ["## Tuning", "",
            f"Tuned rows ({budget}): one Optuna study per row, TPE sampler (seed {SAMPLER_SEED}) over the model's "
            "search space (properties/search/<Model>.yaml unless the row names one), every trial trained on the "
            f"training split with the board's first seed ({spec.seeds[0]}) and scored on validation only "
            f"(test never read); trials pruned on their per-epoch validation curve (median rule after "
            f"{PRUNER_STARTUP_TRIALS} finished trials and {PRUNER_WARMUP_STEPS} validations). The chosen settings "
            "then trained on every seed (the tables above). Untuned rows run their property-file defaults. "
            "search s: summed trial durations.", "", table, ""]


def _baseline_reason(spec) -> str:
    if spec.baseline:
        return "the reference row declared by the board file (baseline:, fixed before any run)"
    return "the collaborative-filtering row (no item content) with the best mean validation score"


def markdown(spec, summaries, tests, baseline, env, failures, tuning=None) -> str:
    """The board's text. `env`: environment() plus "provenance", the sentence of provenance.summarize on the
    board's runs (a warning about unrecorded runs when missing). `tuning`: {"studies": {label: study record},
    "untuned": {label: why}} on a board with tuned rows."""
    metrics = list(next(iter(summaries.values()))["test"])
    accuracy = [m for m in metrics if m.split("@")[0] in ACCURACY]
    beyond = [m for m in metrics if m.split("@")[0] in BEYOND and m.endswith("@10")]
    sig = spec.significance_metric
    labels = list(summaries)

    tuned = tuning or {}
    studies = tuned.get("studies") or {}
    with_tuning = bool(studies or tuned.get("untuned"))
    header = ["Model", "content"] + (["tuned"] if with_tuning else []) + [_name(m) for m in accuracy] + [
        f"Δ{_name(sig)} vs baseline", "p users (t / Wilcoxon)", "p seeds"]
    first_metric = 3 if with_tuning else 2
    rows, bold = [], {}
    for label in labels:
        s = summaries[label]
        row = [label + (" (baseline)" if label == baseline else ""), "yes" if s["uses_content"] else "–"]
        if with_tuning:
            row.append(f"{studies[label]['trials']} trials" if label in studies else "untuned")
        row += [_fmt(*s["test"][m]) for m in accuracy]
        if baseline and label != baseline and sig in s["test"]:
            base = summaries[baseline]["test"][sig][0]
            # A baseline at 0 (e.g. ID-only models on cold-start items) has no relative change: give the difference.
            delta = f"{(s['test'][sig][0] - base) / base * 100:+.1f}%" if base else f"{s['test'][sig][0] - base:+.4f}"
            t = tests[label]
            row += [delta, f"{_p(t['p_users_t'])} / {_p(t['p_users_wilcoxon'])}", _p(t["p_seeds_t"])]
        else:
            row += ["–", "–", "–"]
        rows.append(row)
    for i, m in enumerate(accuracy):
        bold[first_metric + i] = ([summaries[label]["test"][m][0] for label in labels], True)
    accuracy_table = _table(header, rows, bold)

    # best_valid_score is of the protocol's valid_metric, which need not be the significance metric
    valid_metric = next((s["valid_metric"] for s in summaries.values() if s.get("valid_metric")), None)
    header = ["Model"] + [f"{_name(m)} {'↑' if BEYOND[m.split('@')[0]] else '↓'}" for m in beyond] + [
        f"valid {str(valid_metric).lower() if valid_metric else 'score'}", "best epoch", "train s", "test s",
        "peak MB", "parameters"]
    rows, bold = [], {}
    for label in labels:
        s = summaries[label]
        rows.append([label] + [_fmt(*s["test"][m]) for m in beyond] + [
            _fmt(*s["best_valid_score"]), f"{s['best_epoch'][0]:.0f}", f"{s['train_seconds'][0]:.1f}",
            f"{s['test_seconds'][0]:.1f}", f"{s['peak_memory_mb'][0]:.0f}", f"{s['n_parameters'][0]:,.0f}"])
    for i, m in enumerate(beyond):
        bold[1 + i] = ([summaries[label]["test"][m][0] for label in labels], BEYOND[m.split("@")[0]])
    bold[1 + len(beyond)] = ([summaries[label]["best_valid_score"][0] for label in labels], True)
    cost_table = _table(header, rows, bold)

    seeds = ", ".join(str(s) for s in spec.seeds)
    lines = [
        f"# Leaderboard: {spec.dataset}",
        "",
        f"Seeds: {seeds} (mean ± std over seeds). Protocol: {_protocol(spec)}.",
        "",
        f"Baseline for Δ and p-values: **{baseline or 'none'}**, {_baseline_reason(spec)}. p users: paired tests "
        f"over users of the per-user test {sig} "
        "(each user's value averaged over seeds); p seeds: paired t-test over seeds. Best value per column in bold.",
        "",
        WILCOXON_NOTE,
        "",
        "## Accuracy (test)",
        "",
        accuracy_table,
        "",
        "## Beyond accuracy (test, top-10 lists) and cost",
        "",
        "Coverage: share of items recommended to anyone; Gini: inequality of exposure; AvgPop: mean training "
        "popularity of recommended items; Tail: share of long-tail items in the lists.",
        "",
        cost_table,
        "",
    ] + tuning_section(spec, tuning) + ([env["timing"], ""] if env.get("timing") else []) + [
        "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()
                                    if k not in ("commit", "code_version", "machine", "run_commits",
                                                 "provenance", "timing")) + ".",
        f"Report written at commit {env['commit']} (code version {env.get('code_version', 'not recorded')}); "
        f"machine: {env['machine']}.",
        "",
        env.get("provenance") or provenance.summarize([])["line"],
    ]
    if failures:
        lines += ["", "Runs not in the tables (failed or not run yet):"] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


def csv_text(records) -> str:
    metrics = sorted({m for r in records for m in r["test"]})
    columns = ["label", "model", "seed", "config_hash", "uses_content"] + [f"test_{m}" for m in metrics] + [
        "best_valid_score", "valid_metric", "best_epoch", "epochs_run", "train_seconds", "test_seconds",
        "peak_memory_mb", "n_parameters"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for r in records:
        writer.writerow([r["label"], r["model"], r["seed"], r["config_hash"], r.get("uses_content")] +
                        [r["test"].get(m) for m in metrics] +
                        [r.get(c) for c in columns[5 + len(metrics):]])
    return out.getvalue()


def plot(spec, summaries, baseline, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(summaries)
    available = next(iter(summaries.values()))["test"]
    metrics = [m for m in spec.plot_metrics if m in available]
    if not metrics:  # e.g. topk [5] while plot_metrics names @10: plot what the runs measured instead
        metrics = [m for m in (spec.significance_metric,) if m in available] or list(available)[:1]
    height = max(2.5, 0.45 * len(labels) + 1.4)
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), height), squeeze=False)
    colours = ["#d62728" if label == baseline else "#1f77b4" if summaries[label]["uses_content"] else "#7f7f7f"
               for label in labels]
    positions = range(len(labels))
    for axis, metric in zip(axes[0], metrics):
        means = [summaries[label]["test"][metric][0] for label in labels]
        stds = [summaries[label]["test"][metric][1] for label in labels]
        axis.barh(positions, means, xerr=stds, color=colours, capsize=3, alpha=0.9)
        for y, (mean, std) in enumerate(zip(means, stds)):
            axis.text(mean + std + max(means) * 0.01, y, f"{mean:.3f}", va="center", fontsize=8)
        axis.set_yticks(list(positions))
        axis.set_yticklabels(labels if axis is axes[0][0] else [""] * len(labels))
        axis.invert_yaxis()
        axis.set_xlabel(f"test {_name(metric)} (mean ± std over {len(spec.seeds)} seeds)")
        axis.set_xlim(0, max(m + s for m, s in zip(means, stds)) * 1.18 or 1)
        axis.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("#1f77b4", "#7f7f7f", "#d62728")]
    reference = "baseline (declared by the board)" if spec.baseline else "best CF baseline (by validation)"
    figure.legend(handles, ["reads item text/images", "CF baseline", reference],
                  loc="lower center", ncol=3, fontsize=8, frameon=False)
    cold = float(spec.settings.get("cold_start_item_ratio") or 0.0)
    scope = f"; test on cold-start items ({cold:.0%} held out of training)" if cold else ""
    figure.suptitle(f"{spec.dataset}: leave-one-out, full ranking, seen items masked{scope}", fontsize=10)
    figure.tight_layout(rect=(0, 0.08, 1, 0.95))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=130)
    plt.close(figure)
    write_atomically(path, lambda handle: handle.write(buffer.getvalue()))


def write_report(spec, records, failures, tuning=None) -> dict:
    groups = stats.group_by_label(records, [m.label for m in spec.models])
    summaries = {label: stats.summarize(runs) for label, runs in groups.items()}
    baseline = stats.choose_baseline(summaries, spec.baseline)
    tests = {label: stats.paired_tests(runs, groups[baseline], spec.significance_metric)
             for label, runs in groups.items() if baseline and label != baseline}
    env = environment()
    origin = provenance.summarize(records, env["commit"], env["code_version"])
    env.update(run_commits=run_commits(records), provenance=origin["line"],
               timing=" ".join(filter(None, [timing_note(records), seed_note(records)])))
    paths = {name: os.path.join(spec.output_dir, f"leaderboard.{name}") for name in ("md", "csv", "png")}
    text = markdown(spec, summaries, tests, baseline, env, failures, tuning)
    write_text_atomically(paths["md"], text)
    write_text_atomically(paths["csv"], csv_text(records))
    plot(spec, summaries, baseline, paths["png"])
    return {"paths": paths, "markdown": text, "summaries": summaries, "baseline": baseline, "tests": tests,
            "single_commit": origin["single_commit"], "publishable": origin["publishable"],
            "provenance": origin, "tuning": tuning}


#: Columns of the README's accuracy table (the full board has every metric).
README_COLUMNS = ("Model", "content", "tuned", "Recall@20", "NDCG@10", "ΔNDCG@10 vs baseline",
                  "p users (t / Wilcoxon)", "p seeds")


def _table_columns(table: str, keep) -> str:
    """The markdown `table` with only the columns whose header is in `keep` (in the table's order)."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table.strip().splitlines()]
    chosen = [i for i, name in enumerate(rows[0]) if name in keep]
    lines = ["| " + " | ".join(row[i] for i in chosen) + " |" for row in rows]
    lines[1] = "|" + "---|" * len(chosen)  # the header separator
    return "\n".join(lines)


def readme_section(markdown_text: str, board_link: str) -> str:
    """The README's short form of a board: its seeds/protocol and baseline paragraphs, the accuracy table's main
    columns (README_COLUMNS) and the provenance line; the rest (every metric, beyond-accuracy and cost, the Wilcoxon
    variant, environment) stays in the full board, linked."""
    paragraphs = markdown_text.strip().split("\n\n")
    keep = [p for p in paragraphs if p.startswith(("Seeds:", "Baseline for"))]
    accuracy = paragraphs.index("## Accuracy (test)")
    provenance_line = next((p for p in paragraphs if p.startswith(provenance.SUMMARY_STARTS)), None)
    parts = keep + ["#### Accuracy (test)", _table_columns(paragraphs[accuracy + 1], README_COLUMNS),
                    f"Every metric, beyond-accuracy and cost, environment and the Wilcoxon variant: "
                    f"[full board]({board_link})."]
    return "\n\n".join(parts + ([provenance_line] if provenance_line else [])) + "\n"


def update_readme(readme_path, dataset, markdown_text, command, board_path) -> bool:
    """Replace the README section between the leaderboard markers of `dataset` with the board's short form."""
    with open(readme_path, encoding="utf-8") as f:
        text = f.read()
    start, end = README_START.format(dataset=dataset), README_END.format(dataset=dataset)
    if start not in text or end not in text:
        return False
    link = os.path.relpath(board_path, os.path.dirname(os.path.abspath(readme_path))).replace(os.sep, "/")
    section = f"{start}\nGenerated by `{command}`; do not edit by hand.\n\n{readme_section(markdown_text, link)}{end}"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    write_text_atomically(readme_path, head + section + tail)
    return True
