"""docs/performance.png: time to first token against conversation length, with and without
per-channel KV reuse, for 1 and 4 channels (from bench/results/kv_sweep.json; at P2's length,
where the sweep has no point, the 4-channel and cold points of bench.kv_reuse's P2 run, so
make bench measures that point once); and
docs/performance-batching.png: aggregate and per-channel tokens/s against the number of
channels generating at once, through the daemon and raw (from bench/results/batching.json,
when bench.batching has run).

    python -m bench.plot [--tiny]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

from bench.harness import RESULTS, ROOT

STYLE = {
    "cold (whole prompt)": ("black", ":"),
    "1 channel, per-channel reuse": ("tab:green", "-"),
    "1 channel, no per-channel reuse": ("tab:olive", "--"),
    "4 channels, per-channel reuse": ("tab:blue", "-"),
    "4 channels, no per-channel reuse": ("tab:red", "--"),
}


def with_p2(rows: list[dict[str, Any]], p2: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The sweep's rows, and P2's run (bench.kv_reuse: 4 channels taking turns with per-channel
    reuse, and the same prompts cold) at its length when the sweep did not measure it."""
    four = "4 channels, per-channel reuse"
    if p2 is None or p2["channels"] != 4 or p2.get("fixed_seed"):
        return rows
    if any(r["series"] == four and r["length"] == p2["length"] for r in rows):
        return rows
    return [
        *rows,
        {"series": four, "length": p2["length"], "ttft_s": p2["warm_ttft_s"]["p50"]},
        {
            "series": "cold (whole prompt)",
            "length": p2["length"],
            "ttft_s": p2["cold_ttft_s"]["p50"],
        },
    ]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    suffix = "-tiny" if args.tiny else ""
    data = json.loads((RESULTS / f"kv_sweep{suffix}.json").read_text())
    p2 = RESULTS / f"kv_reuse{suffix}.json"
    rows = with_p2(data["rows"], json.loads(p2.read_text()) if p2.exists() else None)
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        series[row["series"]].append((row["length"], row["ttft_s"]))
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name, points in series.items():
        color, line = STYLE.get(name, ("gray", "-"))
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, line, color=color, marker="o", label=name)
    model = data["model"].rsplit("/", 1)[-1]
    ax.set_title(f"Follow-up time to first token\n{model}, 2 CPU cores", fontsize=11)
    ax.set_xlabel("conversation length (prompt tokens)")
    ax.set_ylabel("time to first token (s)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    out = ROOT / "docs" / "performance.png"
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")
    batching = RESULTS / f"batching{'-tiny' if args.tiny else ''}.json"
    if batching.exists():
        plot_batching(json.loads(batching.read_text()), plt)


def plot_batching(data: dict[str, Any], plt: Any) -> None:
    """Tokens/s against N: aggregate (solid) and per channel (dashed), daemon and raw."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for source, color, label in (
        ("daemon", "tab:blue", "hearthbot (whole daemon)"),
        ("raw", "black", "raw llama.cpp batched decode"),
    ):
        for kind, line in (("aggregate", "-"), ("per_channel", "--")):
            points = sorted((int(n), v) for n, v in data[f"{source}_{kind}_tok_s"].items())
            xs, ys = zip(*points, strict=True)
            name = f"{label}, {'aggregate' if kind == 'aggregate' else 'per channel'}"
            ax.plot(xs, ys, line, color=color, marker="o", label=name)
    model = data["model"].rsplit("/", 1)[-1]
    ax.set_title(
        f"Tokens/s with N channels generating at once\n{model}, 2 CPU cores, "
        f"{data['tokens']} tokens a reply",
        fontsize=11,
    )
    ax.set_xlabel("channels generating at once (N)")
    ax.set_ylabel("tokens/s")
    ax.set_xticks(sorted(int(n) for n in data["P6"]))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    out = ROOT / "docs" / "performance-batching.png"
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
