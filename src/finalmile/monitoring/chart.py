"""The picture of a monitor: score over time with its thresholds, and one window's histograms against the baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finalmile.errors import InvalidInputError
from finalmile.monitoring.config import MonitorConfig

_COLOURS = {"ok": "#2e7d32", "warning": "#f9a825", "alert": "#c62828", "no data": "#9e9e9e"}


def bin_labels(edges: list[float]) -> list[str]:
    """A drift histogram's bins named for people: below the first edge, between edges, above the last."""
    inner = [f"{a:.3g}–{b:.3g}" for a, b in zip(edges, edges[1:], strict=False)]
    return [f"< {edges[0]:.3g}", *inner, f"> {edges[-1]:.3g}"]


def draw(config: MonitorConfig, results: pd.DataFrame, path: Path, window: int = -1) -> Path:
    """Write a PNG to `path`; `window` picks the window whose histograms are drawn (default: the last)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    if results.empty:
        raise InvalidInputError(f"monitor '{config.name}' has no results to chart yet")
    if not -len(results) <= window < len(results):
        raise InvalidInputError(f"window: {window} is out of range; the monitor has {len(results)} results")
    chosen = results.iloc[window]
    shares = "baseline_shares" in chosen["evidence"]
    fig, axes = plt.subplots(1, 2 if shares else 1, figsize=(13 if shares else 8, 4.5), squeeze=False)
    ax = axes[0][0]
    for group, rows in results.groupby("group", sort=True):
        ax.plot(rows["window_end"], rows["score"], marker=None, lw=1.2, label=group or config.metric)
        ax.scatter(rows["window_end"], rows["score"], c=[_COLOURS[s] for s in rows["status"]], s=18, zorder=3)
    estimated = results["evidence"].map(lambda e: isinstance(e, dict) and "lower" in e and "estimate" in e)
    if estimated.any():  # an estimate: its sampling band, and the realised figure once labels came
        band = results[estimated]
        lower = [e["lower"] for e in band["evidence"]]
        upper = [e["upper"] for e in band["evidence"]]
        ax.fill_between(band["window_end"], lower, upper, color="#90caf9", alpha=0.35, label="3σ sampling band")
        realised = [e.get("realised") for e in band["evidence"]]
        if any(r is not None for r in realised):
            ax.plot(band["window_end"], [np.nan if r is None else r for r in realised], color="#37474f", lw=1.2,
                    ls="-.", marker="s", ms=4, label="realised (labels)")  # fmt: skip
    for level, colour in (("warning", _COLOURS["warning"]), ("alert", _COLOURS["alert"])):
        threshold = getattr(config, level)
        if threshold is not None:
            ax.axhline(threshold, color=colour, ls="--", lw=1, label=f"{level} {threshold:g}")
    ax.axvline(chosen["window_end"], color="#555", lw=0.8, ls=":")
    ax.set_title(f"{config.name}: {config.metric} of {config.column or config.kind} on {config.pipeline}")
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("window end (UTC)")
    ax.set_ylabel(config.metric)
    ax.legend(fontsize=8)
    if shares:
        evidence = chosen["evidence"]
        labels = bin_labels(evidence["edges"])
        x = np.arange(len(labels))
        hist = axes[0][1]
        hist.bar(x - 0.2, evidence["baseline_shares"], 0.4, label="baseline", color="#90a4ae")
        hist.bar(x + 0.2, evidence["window_shares"], 0.4, label="window", color=_COLOURS[chosen["status"]])
        hist.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
        hist.set_ylabel("share of rows")
        end = pd.Timestamp(chosen["window_end"]).strftime("%Y-%m-%d %H:%M")
        hist.set_title(f"window ending {end}: {chosen['status']}, score {chosen['score']:.4g}")
        hist.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
