"""Loss curves: the train and validation loss of one or more runs, from their `metrics.jsonl`.

`curves` reads the records (a run still training can be read at any time: the file is
rewritten atomically, one record per evaluation); `render` draws them with matplotlib's
headless Agg backend into a PNG or SVG, nats on the left axis and bits per character on
the right, each run's best validation point marked; `terminal` draws the same in text
with plotext.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from charnn.errors import UsageError
from charnn.run import checkpoint

AXES = {"tokens": "characters seen (millions)", "time": "training time (minutes)", "step": "optimizer step"}
FORMATS = (".png", ".svg")
LN2 = math.log(2)


@dataclass
class Curve:
    """One run's points: x in the unit of `AXES[x]`, losses in nats."""

    run: str
    x: str
    train: list[tuple[float, float]] = field(default_factory=list)
    val: list[tuple[float, float]] = field(default_factory=list)

    @property
    def best(self) -> tuple[float, float] | None:
        """The (x, val loss) of the lowest validation loss: the point `best.pt` holds."""
        return min(self.val, key=lambda p: p[1]) if self.val else None


def _x_of(record: dict[str, float], x: str) -> float:
    if x == "tokens":
        return record["tokens"] / 1e6
    if x == "time":
        return record["elapsed"] / 60
    return float(record["step"])


def where(at: float, x: str) -> str:
    """A point on the x axis in words: '2.41M characters', '3.5 minutes', 'step 400'."""
    return {"tokens": f"{at:.2f}M characters", "time": f"{at:.1f} minutes"}.get(x, f"step {at:g}")


def curve(run_dir: Path, x: str = "tokens") -> Curve:
    """The points of one run; a run with no evaluation yet is refused."""
    if x not in AXES:
        raise UsageError(f"--x must be one of {', '.join(AXES)}, not '{x}'")
    records = checkpoint.read_metrics(run_dir)
    if not records:
        raise UsageError(f"run '{run_dir.name}' has no evaluations yet ({checkpoint.METRICS} is empty) — "
                         "plot it after its first one (every --eval-every steps)")
    result = Curve(run_dir.name, x)
    for r in records:
        at = _x_of(r, x)
        if r.get("train_loss") is not None:
            result.train.append((at, float(r["train_loss"])))
        result.val.append((at, float(r["val_loss"])))
    return result


def default_out(run_dirs: list[Path]) -> Path:
    """Beside the run (`RUN/loss.png`); for several runs, in the first one's parent folder."""
    if len(run_dirs) == 1:
        return run_dirs[0] / "loss.png"
    return run_dirs[0].parent / ("loss-" + "-vs-".join(r.name for r in run_dirs)[:120] + ".png")


def check_out(out: Path) -> None:
    if out.suffix.lower() not in FORMATS:
        raise UsageError(f"--out '{out}' must end in .png or .svg (matplotlib writes those)")
    checkpoint.check_writable(out)


def render(curves: list[Curve], out: Path) -> Path:
    """Draw `curves` into `out` (.png or .svg) atomically; returns `out`."""
    check_out(out)
    buffer = io.BytesIO()
    figure(curves).savefig(buffer, format=out.suffix.lower()[1:])
    checkpoint.atomic_write(out, lambda f: f.write(buffer.getvalue()))
    return out


def figure(curves: list[Curve]) -> Figure:
    """The loss figure of `curves` (a notebook shows it inline; `savefig` writes it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]  # the default cycle: tab10
    for i, c in enumerate(curves):
        color = colors[i % len(colors)]
        label = c.run if len(curves) > 1 else ""
        if c.train:
            ax.plot(*zip(*c.train, strict=True), color=color, alpha=0.45, linestyle="--", linewidth=1.2,
                    label=f"{label} train".strip(), gid=f"train-{i}")
        best = c.best
        ax.plot(*zip(*c.val, strict=True), color=color, linewidth=2, marker="o", markersize=2.5,
                label=f"{label} validation".strip() + (f", best {best[1]:.3f} ({best[1] / LN2:.3f} bpc)" if best else ""),
                gid=f"val-{i}")
        if best is not None:
            ax.plot([best[0]], [best[1]], marker="*", markersize=13, color=color, markeredgecolor="black",
                    linestyle="none", gid=f"best-{i}")
    ax.set_xlabel(AXES[curves[0].x])
    ax.set_ylabel("loss (nats per character)")
    bits = ax.secondary_yaxis("right", functions=(_to_bits, _to_nats))
    bits.set_ylabel("bits per character")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("charnn: " + ", ".join(c.run for c in curves), fontsize=10)
    return inline(fig)


def inline(fig: Figure) -> Figure:
    """`fig` with a PNG form, so a notebook shows it inline whichever matplotlib backend is active (a figure made
    without pyplot is otherwise shown as its repr)."""

    def png() -> bytes:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()

    fig._repr_png_ = png  # type: ignore[attr-defined]
    return fig


def copy_rates(out: Path, temperatures: list[float], fractions: list[float], longest: list[int], title: str) -> Path:
    """`charnn originality --out`: the copied share (left axis) and the longest copy (right) against temperature."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    check_out(out)
    fig = Figure(figsize=(7, 4.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(temperatures, [100 * f for f in fractions], marker="o", linewidth=2, color="C0", label="copied (%)")
    ax.set_xlabel("temperature")
    ax.set_ylabel("generated characters inside copied spans (%)", color="C0")
    right = ax.twinx()
    right.plot(temperatures, longest, marker="s", linestyle="--", color="C3", label="longest copy")
    right.set_ylabel("longest copy (characters)", color="C3")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=out.suffix.lower()[1:])
    checkpoint.atomic_write(out, lambda f: f.write(buffer.getvalue()))
    return out


def _to_bits(nats: Any) -> Any:
    return nats / LN2


def _to_nats(bits: Any) -> Any:
    return bits * LN2


def terminal(curves: list[Curve], width: int | None = None, height: int | None = None) -> str:
    """The same curves drawn in text for a terminal (plotext)."""
    import plotext as plt

    plt.clear_figure()
    plt.theme("clear")
    if width and height:
        plt.plotsize(width, height)
    for c in curves:
        prefix = f"{c.run} " if len(curves) > 1 else ""
        if c.train:
            plt.plot(*map(list, zip(*c.train, strict=True)), label=f"{prefix}train", marker="dot")
        plt.plot(*map(list, zip(*c.val, strict=True)), label=f"{prefix}validation", marker="braille")
        if (best := c.best) is not None:
            plt.scatter([best[0]], [best[1]], marker="*", label=f"{prefix}best {best[1]:.3f}")
    plt.xlabel(AXES[curves[0].x])
    plt.ylabel("nats per character")
    text: str = plt.build()
    plt.clear_figure()
    return text
