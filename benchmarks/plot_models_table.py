"""The models table as a picture: what each model costs at inference and what it reaches on CamVid.

Reads the latency table that ``models_table.py`` wrote (``results/models_table.json``: 500x500, batch 1,
fp32, time as a ratio to the seed FCN-8s in the same run) and the metrics logs of the 30-minute CamVid runs
(``results/camvid_30min/<model>.jsonl``: the ``camvid`` recipe from scratch, the last validation's mean IU),
and draws two panels: the time against the seed's (log scale), and mean IU against that time, each point
sized by the model's parameter count. The documentation build draws it (``docs/hooks.py``); by hand:

    python benchmarks/plot_models_table.py --out models_table.png

Only matplotlib is needed (no torch): the figures are read, not measured.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: models_table.json's candidate label -> (the label shown, the CamVid log's file stem).
MODELS = {
    "fcn8s": ("fcn8s (width 1)", "fcn8s"),
    "fcn8s_w0.25": ("fcn8s width 0.25", "fcn8s_width0.25"),
    "fcn_alexnet": ("fcn_alexnet", "fcn_alexnet"),
    "fcn8s_resnet18": ("fcn8s_resnet18", "fcn8s_resnet18"),
    "fcn8s_resnet50": ("fcn8s_resnet50", "fcn8s_resnet50"),
    "fcn8s_mobilenet_v3_large": ("fcn8s_mobilenet_v3_large", "fcn8s_mobilenet_v3_large"),
}
#: Where a point's label starts (time vs seed, mean IU), with a line to the point: the points of the light models
#: lie close together. A model not named here is labelled just right of its point.
LABEL_AT = {
    "fcn8s_mobilenet_v3_large": (0.0115, 0.625),
    "fcn8s_resnet18": (0.07, 0.6),
    "fcn8s width 0.25": (0.0115, 0.46),
    "fcn8s_resnet50": (0.2, 0.535),
    "fcn8s (width 1)": (0.06, 0.27),
}


@dataclass(frozen=True)
class ModelRow:
    """One model of the picture: its latency-table figures and, where a run exists, its CamVid result."""

    label: str
    parameters: int
    gflop: float
    time_vs_seed: float
    camvid_mean_iu: float | None
    camvid_steps: int | None


def last_validation(log: Path) -> tuple[float, int] | None:
    """The mean IU and step of the last validation in a ``metrics.jsonl``, or None without one."""
    found = None
    for line in log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        if "val" in record:
            found = (float(record["val"]["mean_iu"]), int(record["step"]))
    return found


def read_rows(
    table: Path = RESULTS / "models_table.json", camvid_dir: Path = RESULTS / "camvid_30min"
) -> list[ModelRow]:
    """The models of ``table`` (the seed excluded, it has no CamVid run), fastest last, with their CamVid results."""
    rows = []
    for result in json.loads(table.read_text(encoding="utf-8"))["results"]:
        if result["candidate"] not in MODELS:
            continue
        label, stem = MODELS[result["candidate"]]
        log = camvid_dir / f"{stem}.jsonl"
        validation = last_validation(log) if log.is_file() else None
        rows.append(
            ModelRow(
                label,
                int(result["parameters"]),
                float(result["gflop"]),
                float(result["time_vs_seed"]),
                validation[0] if validation else None,
                validation[1] if validation else None,
            )
        )
    return sorted(rows, key=lambda row: -row.time_vs_seed)


def plot(rows: Sequence[ModelRow], out: Path) -> Path:
    """Draw the two panels into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, scatter) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 1.1]})
    positions = range(len(rows))
    bars.barh(list(positions), [row.time_vs_seed for row in rows], color="#4a7ab5")
    bars.set_yticks(list(positions), [row.label for row in rows])
    bars.set_xscale("log")
    bars.set_xlabel("time of one 500x500 forward / the seed FCN-8s's (log scale; CPU, fp32, batch 1)")
    for position, row in zip(positions, rows, strict=True):
        bars.annotate(
            f"{row.time_vs_seed:.3f}  ({row.parameters / 1e6:.1f} M params, {row.gflop:g} GFLOP)",
            (row.time_vs_seed, position),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    bars.set_xlim(right=max(row.time_vs_seed for row in rows) * 40)
    bars.set_title("Inference cost")

    measured = [row for row in rows if row.camvid_mean_iu is not None]
    scatter.scatter(
        [row.time_vs_seed for row in measured],
        [row.camvid_mean_iu for row in measured],
        s=[30 + row.parameters / 1e6 * 2 for row in measured],
        color="#d9822b",
        alpha=0.75,
        edgecolors="black",
        linewidths=0.5,
    )
    for row in measured:
        text = f"{row.label}: {row.camvid_mean_iu:.3f} ({row.camvid_steps} steps)"
        point = (row.time_vs_seed, row.camvid_mean_iu)
        if row.label in LABEL_AT:
            scatter.annotate(
                text,
                point,
                xytext=LABEL_AT[row.label],
                textcoords="data",
                fontsize=8,
                va="center",
                arrowprops={"arrowstyle": "-", "color": "0.5", "linewidth": 0.6},
            )
        else:
            scatter.annotate(text, point, xytext=(8, -3), textcoords="offset points", fontsize=8)
    scatter.set_xscale("log")
    scatter.set_xlim(0.01, max(row.time_vs_seed for row in measured) * 4)
    scatter.set_ylim(0.1, 0.66)
    scatter.set_xlabel("time vs the seed FCN-8s (log scale)")
    scatter.set_ylabel("CamVid val mean IU after 30 CPU minutes")
    scatter.set_title("CamVid from scratch, 30 minutes (area: parameters)")
    scatter.grid(alpha=0.3)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models_table.png"), help="the PNG to write")
    parser.add_argument("--table", type=Path, default=RESULTS / "models_table.json", help="models_table.py's JSON")
    parser.add_argument(
        "--camvid-dir",
        type=Path,
        default=RESULTS / "camvid_30min",
        help="the folder of the 30-minute CamVid runs' metrics logs",
    )
    args = parser.parse_args(argv)
    print(plot(read_rows(args.table, args.camvid_dir), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
