"""Plot the samples of a benchmark soak run, one PNG per figure.

A soak run writes a CSV (comma-separated, header row) with one row per
10-second sample: t_s (seconds since the soak began), completed, failed, retried,
throughput_per_s, overhead_p50_ms, ... retention_deleted. An empty cell means
"no data in that sample" and is drawn as a gap in the line.

Run it through the wrapper, which brings its own matplotlib:

    scripts/bench/plot_soak.sh SOAK.csv OUTDIR

or directly with any Python 3.11 that has matplotlib:

    python3 scripts/bench/plot_soak.py SOAK.csv OUTDIR

It writes soak-throughput.png, soak-overhead.png, soak-pg-time.png,
soak-rows-read.png, soak-wal.png, soak-sizes.png, soak-dead-tuples.png,
soak-rss.png, soak-connections.png and soak-stuck.png into OUTDIR (created if
need be) and prints each path. The x axis is minutes since the soak began;
samples in which retention deleted rows are shaded light grey.
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
from pathlib import Path
from typing import NoReturn

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

# Seconds covered by one sample: what the soak run writes.
SAMPLE_SECONDS = 10.0

COLUMNS = [
    "t_s", "completed", "failed", "retried", "throughput_per_s",
    "overhead_p50_ms", "overhead_p99_ms", "pg_ms_per_job",
    "ack_rows_read", "claim_rows_read", "wal_bytes_per_job",
    "jobs_mib", "jobs_index_mib", "operations_mib", "operations_index_mib",
    "messages_mib", "messages_index_mib",
    "jobs_dead", "operations_dead", "messages_dead", "jobs_rows",
    "rss_api_mib", "rss_worker_1_mib", "rss_worker_2_mib",
    "conns_api", "conns_worker_1", "conns_worker_2",
    "stuck_operations", "retention_deleted",
]

Series = list[float]
Data = dict[str, Series]


def fail(message: str) -> NoReturn:
    """Prints the message to stderr and exits with status 1."""
    sys.exit(f"plot_soak: {message}")


# ---------------------------------------------------------------------------
# Reading


def parse_cell(text: str, column: str, line: int) -> float:
    """A number, or NaN for an empty cell."""
    text = text.strip()
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        fail(f"line {line}, column {column}: not a number: {text!r}")


def read_csv(path: Path) -> Data:
    """The CSV's columns, each a list of floats (NaN where the cell is empty).

    Columns missing from the header are all NaN (with a warning); rows
    without t_s are skipped.
    """
    if not path.is_file():
        fail(f"no such CSV file: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "t_s" not in header:
            fail(f"{path}: no header row with a t_s column")
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            print(f"plot_soak: warning: {path} has no column(s) {', '.join(missing)}; "
                  "they are plotted as missing", file=sys.stderr)
        data: Data = {c: [] for c in COLUMNS}
        for row in reader:
            line = reader.line_num
            t = parse_cell(row.get("t_s") or "", "t_s", line)
            if math.isnan(t):
                continue
            for c in COLUMNS:
                data[c].append(parse_cell(row.get(c) or "", c, line))
    if not data["t_s"]:
        fail(f"{path}: no data rows")
    return data


def minutes(data: Data) -> Series:
    return [t / 60.0 for t in data["t_s"]]


def scaled(values: Series, factor: float) -> Series:
    return [v * factor for v in values]


# ---------------------------------------------------------------------------
# Drawing


def retention_spans(data: Data) -> list[tuple[float, float]]:
    """(start, end) in minutes of the samples with retention_deleted > 0.

    A sample at t_s covers the preceding sample interval; adjacent samples
    are merged into one span.
    """
    t = data["t_s"]
    steps = [b - a for a, b in zip(t, t[1:]) if b > a]
    step = statistics.median(steps) if steps else SAMPLE_SECONDS
    spans: list[tuple[float, float]] = []
    for t_s, deleted in zip(t, data["retention_deleted"]):
        if not deleted > 0:  # also false for NaN
            continue
        start, end = max(t_s - step, 0.0) / 60.0, t_s / 60.0
        if spans and start <= spans[-1][1] + 1e-9:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def isolated(values: Series) -> list[int]:
    """Indexes of values with missing neighbours on both sides.

    A line through NaN gaps does not show such a point, so it gets a marker.
    """
    def missing(i: int) -> bool:
        return i < 0 or i >= len(values) or math.isnan(values[i])

    return [i for i in range(len(values))
            if not missing(i) and missing(i - 1) and missing(i + 1)]


def chart(outdir: Path, name: str, title: str, ylabel: str, data: Data,
          series: list[tuple[str, Series]]) -> Path:
    """Draws one figure of the given (label, values) lines against minutes."""
    x = minutes(data)
    fig, ax = plt.subplots(figsize=(12, 5), dpi=100)
    for i, (start, end) in enumerate(retention_spans(data)):
        ax.axvspan(start, end, color="0.88", linewidth=0, zorder=0,
                   label="retention deleting" if i == 0 else "_nolegend_")
    has_data = False
    for label, values in series:
        (line,) = ax.plot(x, values, label=label, linewidth=1.2)
        lone = isolated(values)
        if lone:
            ax.plot([x[i] for i in lone], [values[i] for i in lone], linestyle="none",
                    marker="o", markersize=3, color=line.get_color(), label="_nolegend_")
        has_data = has_data or any(not math.isnan(v) for v in values)
    if not has_data:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center",
                color="0.5")
    all_values = [v for _, values in series for v in values if not math.isnan(v)]
    if all_values and min(all_values) >= 0:
        ax.set_ylim(bottom=0)
    ax.set_xlim(left=0, right=max(x) if max(x) > 0 else None)
    ax.set_title(title)
    ax.set_xlabel("time since the soak began (min)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.4)
    handles, _ = ax.get_legend_handles_labels()
    if len(series) > 1 or len(handles) > 1:
        ax.legend(loc="best")
    fig.tight_layout()
    path = outdir / name
    fig.savefig(path)
    plt.close(fig)
    print(path)
    return path


# ---------------------------------------------------------------------------
# Figures


def plot_throughput(data: Data, outdir: Path) -> None:
    chart(outdir, "soak-throughput.png", "Throughput", "jobs/s", data, [
        ("completed per second", data["throughput_per_s"]),
        ("failed per second", scaled(data["failed"], 1 / SAMPLE_SECONDS)),
        ("retried per second", scaled(data["retried"], 1 / SAMPLE_SECONDS)),
    ])


def plot_overhead(data: Data, outdir: Path) -> None:
    chart(outdir, "soak-overhead.png",
          "Candidate's overhead (answer minus the model; first-try questions)",
          "overhead (ms)", data, [
              ("p50", data["overhead_p50_ms"]),
              ("p99", data["overhead_p99_ms"]),
          ])


def plot_pg_time(data: Data, outdir: Path) -> None:
    chart(outdir, "soak-pg-time.png", "PostgreSQL statement time per job",
          "statement time per job (ms)", data, [
              ("PostgreSQL time per job", data["pg_ms_per_job"]),
          ])


def plot_rows_read(data: Data, outdir: Path) -> None:
    chart(outdir, "soak-rows-read.png", "Rows read per acknowledgement and per claim",
          "rows read (rows per statement)", data, [
              ("per acknowledgement", data["ack_rows_read"]),
              ("per claim", data["claim_rows_read"]),
          ])


def plot_wal(data: Data, outdir: Path) -> None:
    chart(outdir, "soak-wal.png", "WAL written per job", "WAL per job (KiB)", data, [
        ("WAL per job", scaled(data["wal_bytes_per_job"], 1 / 1024)),
    ])


def plot_sizes(data: Data, outdir: Path) -> None:
    chart(outdir, "soak-sizes.png", "Table and index sizes", "size (MiB)", data, [
        ("jobs", data["jobs_mib"]),
        ("jobs indexes", data["jobs_index_mib"]),
        ("operations", data["operations_mib"]),
        ("operations indexes", data["operations_index_mib"]),
        ("messages", data["messages_mib"]),
        ("messages indexes", data["messages_index_mib"]),
    ])


def plot_dead_tuples(data: Data, outdir: Path) -> None:
    chart(outdir, "soak-dead-tuples.png", "Dead tuples", "dead tuples (rows)", data, [
        ("jobs", data["jobs_dead"]),
        ("operations", data["operations_dead"]),
        ("messages", data["messages_dead"]),
    ])


def plot_rss(data: Data, outdir: Path) -> None:
    chart(outdir, "soak-rss.png", "Resident memory of the processes", "RSS (MiB)", data, [
        ("api", data["rss_api_mib"]),
        ("worker 1", data["rss_worker_1_mib"]),
        ("worker 2", data["rss_worker_2_mib"]),
    ])


def plot_connections(data: Data, outdir: Path) -> None:
    chart(outdir, "soak-connections.png", "Open PostgreSQL connections",
          "connections", data, [
              ("api", data["conns_api"]),
              ("worker 1", data["conns_worker_1"]),
              ("worker 2", data["conns_worker_2"]),
          ])


def plot_stuck(data: Data, outdir: Path) -> None:
    chart(outdir, "soak-stuck.png", "Stuck operations", "stuck operations", data, [
        ("stuck operations", data["stuck_operations"]),
    ])


FIGURES = [
    plot_throughput, plot_overhead, plot_pg_time, plot_rows_read, plot_wal,
    plot_sizes, plot_dead_tuples, plot_rss, plot_connections, plot_stuck,
]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {Path(argv[0]).name} CSV OUTDIR", file=sys.stderr)
        return 2
    data = read_csv(Path(argv[1]))
    outdir = Path(argv[2])
    outdir.mkdir(parents=True, exist_ok=True)
    for figure in FIGURES:
        figure(data, outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
