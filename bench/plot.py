"""docs/performance.png: time to first token against conversation length, with and without
per-channel KV reuse, for 1 and 4 channels (from bench/results/kv_sweep.json).

    python -m bench.plot [--tiny]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from bench.harness import RESULTS, ROOT

STYLE = {
    "cold (whole prompt)": ("black", ":"),
    "1 channel, per-channel reuse": ("tab:green", "-"),
    "1 channel, no per-channel reuse": ("tab:olive", "--"),
    "4 channels, per-channel reuse": ("tab:blue", "-"),
    "4 channels, no per-channel reuse": ("tab:red", "--"),
}


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    data = json.loads((RESULTS / f"kv_sweep{'-tiny' if args.tiny else ''}.json").read_text())
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in data["rows"]:
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


if __name__ == "__main__":
    main()
