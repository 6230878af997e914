"""Results: JSON per scenario, one Markdown table for the run, PNG plots (matplotlib, Agg).

Files, for a run stamped `<date>` (YYYY-MM-DD-HHMM):
    bench/results/<date>-S1.json … <date>-S5.json   raw figures of each scenario
    bench/results/<date>-summary.md                  the table printed at the end
    bench/results/<date>-S2.png, <date>-S3.png       latency percentiles vs offered load
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVERS = ("tracker", "picows", "socketio")
NAMES = {"tracker": "tracker_ws", "picows": "picows ceiling", "socketio": "python-socketio"}


@dataclass(frozen=True)
class Bound:
    """A sustainable rate known only as a bound: `<` the lowest step (every step failed) or
    `≥` the highest step (no step failed)."""

    value: float
    op: str

    def __str__(self) -> str:
        return f"{self.op} {_fmt(self.value)}"


def sustainable(res: dict[str, Any], key: str = "rate_fixes_per_s") -> float | Bound | None:
    steps = [s for s in res.get("steps", []) if not s.get("superseded")]
    if not steps or res.get("ramp") is False:
        return None  # no step run, or chosen steps (--rates): no ramp, no sustainable rate
    best = res.get("sustainable")
    if not best:
        return Bound(min(s[key] for s in steps), "<")
    if all(s.get("pass") for s in steps):
        return Bound(best[key], "≥")
    value: float = best[key]
    return value


def write_json(out_dir: Path, stamp: str, scenario: str, data: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}-{scenario}.json"
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ formatting


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, Bound):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return str(v)


def _ratio(a: Any, b: Any) -> str:
    op = ""
    if isinstance(a, Bound):
        op = {"<": "< ", "≥": "≥ "}[a.op]
        a = a.value
    if isinstance(b, Bound):
        # a / (< b) is > a/b; a / (≥ b) is ≤ a/b; mixed bounds say nothing.
        if op:
            return "–"
        op = {"<": "> ", "≥": "≤ "}[b.op]
        b = b.value
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return "–"
    return f"{op}{a / b:.2f}×"


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def _step_for(res: dict[str, Any]) -> dict[str, Any]:
    """The step a server is judged on: its highest passing step, else its first step."""
    if res.get("sustainable"):
        return dict(res["sustainable"])
    steps = [s for s in res.get("steps", []) if not s.get("superseded")]
    return dict(steps[0]) if steps else {}


class Table:
    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.verdicts: list[tuple[str, str, bool | None]] = []

    def row(
        self,
        scenario: str,
        metric: str,
        values: dict[str, Any],
        *,
        target: str = "",
        ok: bool | None = None,
        ratios: bool = False,
        digits: int = 1,
    ) -> None:
        t = values.get("tracker")
        r_p = _ratio(t, values.get("picows")) if ratios else ""
        r_s = _ratio(t, values.get("socketio")) if ratios else ""
        self.rows.append(
            [
                scenario,
                metric,
                *(_fmt(values.get(k), digits) for k in SERVERS),
                r_p,
                r_s,
                target,
                _verdict(ok),
            ]
        )
        if target:
            self.verdicts.append((f"{scenario} {metric}", target, ok))

    def markdown(self) -> str:
        head = [
            "Scenario",
            "Metric",
            *(NAMES[k] for k in SERVERS),
            "÷ picows",
            "÷ socketio",
            "Target",
            "Met",
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def build_table(results: dict[str, Any]) -> Table:
    t = Table()
    s1 = results.get("S1")
    if s1:
        tr = s1.get("tracker", {})
        vals = {k: v.get("connections") for k, v in s1.items()}
        t.row(
            "S1",
            "idle connections held",
            vals,
            target="≥ 10,000",
            ok=_ge(vals.get("tracker"), 10_000),
        )
        if tr.get("max_connections"):
            t.row(
                "S1",
                "max connections held",
                {k: (v.get("max_connections") or {}).get("held") for k, v in s1.items()},
            )
        vals = {k: v.get("rss_per_conn_kib") for k, v in s1.items()}
        rss = vals.get("tracker")
        t.row(
            "S1",
            "RSS per idle connection (KiB)",
            vals,
            target="≤ 30 (stretch ≤ 20)",
            ok=None if rss is None else rss <= 30,
            ratios=True,
        )
        vals = {k: v.get("setup_rate_per_s") for k, v in s1.items()}
        t.row(
            "S1",
            "authenticated connections/s",
            vals,
            target="≥ 1,000",
            ok=_ge(vals.get("tracker"), 1000),
            ratios=True,
        )
        t.row(
            "S1",
            "connections per server CPU-s",
            {k: v.get("setup_per_server_cpu_s") for k, v in s1.items()},
            ratios=True,
        )
        t.row("S1", "setup p99 (ms)", {k: v.get("setup_p99_ms") for k, v in s1.items()})
        t.row(
            "S1", "idle CPU (% of a core)", {k: _pct(v.get("idle_cpu_util")) for k, v in s1.items()}
        )

    s2 = {k: v for k, v in (results.get("S2") or {}).items() if "steps" in v}
    if s2:
        nom = {k: (v.get("nominal") or {}) for k, v in s2.items()}
        tn = nom.get("tracker", {})
        shape = next(iter(s2.values())).get("shape", {})
        label = f"@ 1 fix/s ({shape.get('vehicles', '?')} fixes/s)"

        def col(key: str, src: dict[str, dict[str, Any]] = nom) -> dict[str, Any]:
            return {k: v.get(key) for k, v in src.items()}

        t.row("S2", f"p50 ms {label}", col("p50_ms"), target="< 25", ok=_lt(tn.get("p50_ms"), 25))
        t.row("S2", f"p95 ms {label}", col("p95_ms"))
        t.row("S2", f"p99 ms {label}", col("p99_ms"), target="< 100", ok=_lt(tn.get("p99_ms"), 100))
        t.row(
            "S2",
            f"dropped updates {label}",
            col("dropped"),
            target="0",
            ok=None if not tn else tn.get("dropped") == 0,
        )
        t.row("S2", f"updates delivered/s {label}", col("updates_per_s"), ratios=True)
        t.row("S2", f"frames/s {label}", col("frames_per_s"), ratios=True)
        t.row(
            "S2",
            f"updates per server CPU-s {label}",
            col("updates_per_cpu_s"),
            target="≥ 25,000",
            ok=_ge(tn.get("updates_per_cpu_s"), 25_000),
            ratios=True,
        )
        frames = col("frames_per_cpu_s")
        pic = frames.get("picows")
        t.row(
            "S2",
            f"frames per server CPU-s {label}",
            frames,
            target="≥ 0.5× picows",
            ok=None
            if pic is None or frames.get("tracker") is None
            else frames["tracker"] >= 0.5 * pic,
            ratios=True,
        )
        t.row("S2", f"server CPU busy {label} (share of a core)", col("server_cpu_util"), digits=2)
        sus = {k: (v.get("sustainable") or {}) for k, v in s2.items()}
        rates = {k: sustainable(v) for k, v in s2.items()}
        t.row(
            "S2",
            "sustainable fixes/s (p99 < 100 ms, 0 dropped)",
            rates,
            target="≥ 2× socketio",
            ok=_at_least_twice(rates.get("tracker"), rates.get("socketio")),
            ratios=True,
        )
        t.row(
            "S2",
            "sustainable updates/s",
            {k: sustainable(v, "updates_per_s") for k, v in s2.items()},
            ratios=True,
        )
        t.row("S2", "p50/p99 ms at sustainable rate", {k: _pair(v) for k, v in sus.items()})
        t.row(
            "S2",
            "updates per server CPU-s at sustainable rate",
            {k: v.get("updates_per_cpu_s") for k, v in sus.items()},
            ratios=True,
        )
        t.row("S2", "server RSS (MB) with all clients", col("server_rss_mb", s2))

    s3 = {k: v for k, v in (results.get("S3") or {}).items() if "steps" in v}
    if s3:
        sus = {k: (v.get("sustainable") or {}) for k, v in s3.items()}
        shape = next(iter(s3.values())).get("shape", {})
        t.row(
            "S3",
            "sustainable fixes/s (p99 < 100 ms, 0 dropped)",
            {k: sustainable(v) for k, v in s3.items()},
            ratios=True,
        )
        t.row(
            "S3",
            "sustainable updates/s",
            {k: sustainable(v, "updates_per_s") for k, v in s3.items()},
            ratios=True,
        )
        t.row("S3", "p50/p99 ms at sustainable rate", {k: _pair(v) for k, v in sus.items()})
        rate, same = _common_step(s3)
        if same:
            tag = f"@ {rate:g} fixes/s (same load)"
            t.row("S3", f"p50/p99 ms {tag}", {k: _pair(v) for k, v in same.items()})
            t.row(
                "S3",
                f"frames per server CPU-s {tag}",
                {k: v.get("frames_per_cpu_s") for k, v in same.items()},
                ratios=True,
            )
            t.row(
                "S3",
                f"updates per server CPU-s {tag}",
                {k: v.get("updates_per_cpu_s") for k, v in same.items()},
                ratios=True,
            )
        nom = {k: (v.get("nominal") or {}) for k, v in s3.items()}
        t.row(
            "S3",
            f"p99 ms / dropped @ 1 fix/s ({shape.get('vehicles', '?')} fixes/s)",
            {k: f"{_fmt(v.get('p99_ms'))} / {_fmt(v.get('dropped'))}" for k, v in nom.items()},
        )

    s4 = results.get("S4")
    if s4 and "error" not in s4:
        t.row(
            "S4",
            "delivered fraction (routing check, 2 instances)",
            {"tracker": s4.get("delivered_fraction")},
            digits=3,
        )
        if not s4.get("supported"):
            t.row(
                "S4",
                "scaling vs one instance, CPU-normalised",
                {"tracker": "not supported yet"},
                target="≥ 1.7×",
                ok=False,
            )
        else:
            one = (results.get("S2") or {}).get("tracker") or {}
            t.row(
                "S4",
                "sustainable fixes/s: 2 instances vs 1 instance (S2)",
                {"tracker": f"{_fmt(sustainable(s4))} vs {_fmt(sustainable(one))}"},
            )
            rate, two, single = _scaling_steps(s4, one)
            eff = None
            if two and single and two.get("updates_per_cpu_s") and single.get("updates_per_cpu_s"):
                eff = 2 * two["updates_per_cpu_s"] / single["updates_per_cpu_s"]
            tag = f"@ {rate:g} fixes/s" if rate else ""
            t.row(
                "S4",
                f"updates per server CPU-s {tag}: 2 instances vs 1",
                {
                    "tracker": f"{_fmt((two or {}).get('updates_per_cpu_s'))} vs "
                    f"{_fmt((single or {}).get('updates_per_cpu_s'))}"
                },
            )
            t.row(
                "S4",
                f"scaling vs one instance, CPU-normalised {tag} (2 × per-CPU ratio)",
                {"tracker": eff},
                target="≥ 1.7×",
                ok=None if eff is None else eff >= 1.7,
                digits=2,
            )

    s5 = results.get("S5")
    if s5:
        raw = s5.get("raw") or {}
        t.row(
            "S5",
            "GPS agent events/s (1 worker, routing on)",
            {"tracker": s5.get("worker_events_per_s")},
            target="≥ 20,000",
            ok=_ge(s5.get("worker_events_per_s"), 20_000),
        )
        t.row("S5", "GPS agent events per CPU-s", {"tracker": s5.get("worker_events_per_cpu_s")})
        t.row(
            "S5",
            "GPS agent CPU per event (µs)",
            {"tracker": s5.get("worker_cpu_us_per_event")},
            digits=1,
        )
        t.row("S5", "raw aiokafka consumer events/s", {"tracker": raw.get("events_per_s")})
        t.row(
            "S5",
            "agent ÷ raw aiokafka",
            {"tracker": s5.get("ratio_to_raw")},
            target="≥ 0.10×",
            ok=None if s5.get("ratio_to_raw") is None else s5["ratio_to_raw"] >= 0.10,
            digits=3,
        )
        many = s5.get("multi")
        if many:
            n = many.get("workers")
            t.row(
                "S5",
                f"GPS agent events/s ({n} workers)",
                {"tracker": many.get("worker_events_per_s")},
            )
            t.row(
                "S5",
                f"GPS agent events per CPU-s ({n} workers)",
                {"tracker": many.get("worker_events_per_cpu_s")},
            )
            scaling = many.get("scaling_cpu_normalised")
            t.row(
                "S5",
                f"scaling {n} workers vs one, CPU-normalised ({n} × per-CPU ratio)",
                {"tracker": scaling},
                target="≥ 2.5×",
                ok=None if scaling is None else scaling >= 2.5,
                digits=2,
            )
    return t


def _common_step(data: dict[str, Any]) -> tuple[float, dict[str, dict[str, Any]]]:
    """The highest ramp rate every server ran (not the 1 fix/s extra step), and each
    server's step at that rate: per-CPU figures compared at the same offered load."""
    per: dict[str, dict[float, dict[str, Any]]] = {}
    for kind, res in data.items():
        per[kind] = {s["target_rate"]: s for s in res.get("steps", []) if not s.get("superseded")}
    common = set.intersection(*(set(v) for v in per.values())) if per else set()
    if not common:
        return 0.0, {}
    rate = max(common)
    return rate, {k: v[rate] for k, v in per.items()}


def _scaling_steps(
    two: dict[str, Any], one: dict[str, Any]
) -> tuple[float, dict[str, Any] | None, dict[str, Any] | None]:
    """Steps of S4 (two instances) and S2 (one) at the same offered load: the highest rate
    both ran without dropping anything (so neither is measured deep in overload); else the
    1 fix/s step."""

    def by_rate(res: dict[str, Any], extra: list[dict[str, Any]]) -> dict[float, dict[str, Any]]:
        out: dict[float, dict[str, Any]] = {}
        for st in [*extra, *res.get("steps", [])]:
            if st and not st.get("superseded") and st.get("dropped") == 0:
                out[st["target_rate"]] = st
        return out

    a = by_rate(two, [two.get("routing_check") or {}])
    b = by_rate(one, [])
    common = set(a) & set(b)
    if common:
        rate = max(common)
        return rate, a[rate], b[rate]
    n2, n1 = two.get("nominal"), one.get("nominal")
    return (n2 or {}).get("target_rate", 0.0), n2, n1


def _at_least_twice(mine: Any, other: Any) -> bool | None:
    if mine is None or other is None:
        return None
    if isinstance(mine, Bound) and mine.op == "<":
        return False
    m = mine.value if isinstance(mine, Bound) else mine
    o = other.value if isinstance(other, Bound) else other
    if isinstance(other, Bound) and other.op == "≥":
        return None if m >= 2 * o else False
    return bool(m > 0 and m >= 2 * o)


def _what(rate: Any) -> str:
    return f"at {rate:g} fixes/s" if isinstance(rate, int | float) else str(rate)


def _ge(v: Any, x: float) -> bool | None:
    return None if v is None else v >= x


def _lt(v: Any, x: float) -> bool | None:
    return None if v is None else v < x


def _pct(v: Any) -> float | None:
    return None if v is None else round(100 * v, 2)


def _pair(step: dict[str, Any]) -> str:
    if not step:
        return "–"
    return f"{_fmt(step.get('p50_ms'))}/{_fmt(step.get('p99_ms'))}"


# ------------------------------------------------------------------------------ plots


def plot(out_dir: Path, stamp: str, scenario: str, data: dict[str, Any]) -> Path | None:
    """Latency percentiles vs offered load, one colour per server, one style per percentile."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = {"tracker": "tab:blue", "picows": "tab:green", "socketio": "tab:red"}
    styles = {"p50_ms": ":", "p95_ms": "--", "p99_ms": "-"}
    drawn = False
    for kind, res in data.items():
        if not isinstance(res, dict):
            continue
        steps = [s for s in res.get("steps", []) if not s.get("superseded")]
        if res.get("nominal") and res["nominal"] not in steps:
            steps.append(res["nominal"])
        steps.sort(key=lambda s: s["rate_fixes_per_s"])
        if not steps:
            continue
        xs = [s["rate_fixes_per_s"] for s in steps]
        for key, style in styles.items():
            ys = [s.get(key) or float("nan") for s in steps]
            ax.plot(
                xs,
                ys,
                style,
                marker="o" if key == "p99_ms" else None,
                color=colours.get(kind, "black"),
                label=f"{NAMES.get(kind, kind)} {key[:3]}",
            )
        fails = [s for s in steps if not s.get("pass")]
        if fails:
            ax.scatter(
                [s["rate_fixes_per_s"] for s in fails],
                [s.get("p99_ms") or 1 for s in fails],
                marker="x",
                s=80,
                color=colours.get(kind, "black"),
            )
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(100, color="grey", linewidth=1)
    ax.text(ax.get_xlim()[0], 105, " p99 limit 100 ms", color="grey", fontsize=8)
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("offered load (fixes/s); x = step failed (p99 ≥ 100 ms, drops or disconnects)")
    ax.set_ylabel("latency fix → client (ms)")
    ax.set_title(f"{scenario}: latency percentiles vs offered load ({stamp})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}-{scenario}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def steps_markdown(scenario: str, data: dict[str, Any]) -> str:
    """Per-step detail of a ramp scenario."""
    head = (
        "| server | step | fixes/s | updates/s | frames/s | p50 | p95 | p99 | dropped | "
        "server CPU | upd/CPU-s | frames/CPU-s | loadgen CPU | pass |"
    )
    lines = [f"### {scenario} steps", "", head, "|" + "---|" * 14]
    for kind, res in data.items():
        if not isinstance(res, dict):
            continue
        steps = list(res.get("steps", []))
        if res.get("nominal") and res["nominal"] not in steps:
            steps.append(res["nominal"])
        for s in steps:
            lines.append(
                "| "
                + " | ".join(
                    [
                        NAMES.get(kind, kind),
                        s["label"] + (" (repeated)" if s.get("superseded") else ""),
                        _fmt(s["rate_fixes_per_s"]),
                        _fmt(s["updates_per_s"]),
                        _fmt(s["frames_per_s"]),
                        _fmt(s["p50_ms"]),
                        _fmt(s["p95_ms"]),
                        _fmt(s["p99_ms"]),
                        _fmt(s["dropped"]),
                        f"{s['server_cpu_util']:.0%}",
                        _fmt(s["updates_per_cpu_s"]),
                        _fmt(s["frames_per_cpu_s"]),
                        f"{s['loadgen_cpu_util']:.0%}",
                        "yes" if s["pass"] else "no",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def noise(results: dict[str, Any]) -> tuple[float | None, float | None]:
    """Median share of the server core used by *other* processes during ramp steps, and the
    median busy share of the load core: how much the machine was shared during the run."""
    others: list[float] = []
    load: list[float] = []
    for name in ("S2", "S3", "S4"):
        data = results.get(name) or {}
        groups = [data] if name == "S4" else list(data.values())
        for res in groups:
            if not isinstance(res, dict):
                continue
            for st in res.get("steps", []):
                if "server_core_busy" in st:
                    others.append(max(0.0, st["server_core_busy"] - st["server_cpu_util"]))
                    load.append(st["load_core_busy"])

    def med(v: list[float]) -> float | None:
        v = sorted(v)
        return v[len(v) // 2] if v else None

    return med(others), med(load)


def summary_markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    table = build_table(results)
    other, load = noise(results)
    errors = []
    for name in ("S1", "S2", "S3", "S4", "S5"):
        data = results.get(name)
        if not isinstance(data, dict):
            continue
        if data.get("error"):
            errors.append(f"- {name}: {data['error']}")
            continue
        if name in ("S1", "S2", "S3"):
            errors += [
                f"- {name} {NAMES.get(k, k)}: {v['error']}"
                for k, v in data.items()
                if isinstance(v, dict) and v.get("error")
            ]
    parts = [
        f"# tracker_ws benchmark — {meta.get('stamp')}",
        "",
        f"Machine: {meta.get('cpus')} CPUs, servers pinned to {meta.get('server_cpus')}, "
        f"load/producer/broker/Redis on {meta.get('load_cpus')}; commit {meta.get('commit')}"
        f"{' (+ local changes)' if meta.get('dirty') else ''}; mode "
        f"{'quick' if meta.get('quick') else 'full'}; worker loop "
        f"{meta.get('worker_loop', 'asyncio')}; wall {meta.get('wall_s', '?')} s.",
        "",
        (
            f"Machine sharing during ramp steps (median): other processes used "
            f"{other:.0%} of the server core; the load core was {load:.0%} busy."
            if other is not None and load is not None
            else ""
        ),
        "",
        table.markdown(),
        "",
    ]
    if errors:
        parts += ["Scenarios that failed:", "", *errors, ""]
    for name in ("S2", "S3", "S4"):
        data = results.get(name)
        if isinstance(data, dict):
            ramp = {k: v for k, v in data.items() if isinstance(v, dict) and "steps" in v}
            if name == "S4" and data.get("steps"):
                ramp = {"tracker": data}
            if ramp:
                parts += [steps_markdown(name, ramp), ""]
    s4 = results.get("S4")
    if s4 and s4.get("note"):
        parts += [f"S4: {s4['note']}", ""]
    s1 = results.get("S1") or {}
    profiles = [
        (f"S1 {label}", kind, res[key])
        for kind, res in s1.items()
        if isinstance(res, dict)
        for key, label in (("profile", "connect"), ("idle_profile", "idle"))
        if res.get(key)
    ]
    profiles += [
        (name, kind, res["profile"])
        for name in ("S2", "S3")
        for kind, res in (results.get(name) or {}).items()
        if isinstance(res, dict) and res.get("profile")
    ]
    if (results.get("S5") or {}).get("profile"):
        profiles.append(("S5", "tracker", {**results["S5"]["profile"], "rate": "backlog"}))
    for name, kind, prof in profiles:
        parts += [
            f"### py-spy profile, {name} {NAMES.get(kind, kind)}: {_what(prof.get('rate'))}",
            "",
            f"Flame graph: `{prof.get('svg')}`. Self time (top functions):",
            "",
        ]
        parts += [f"- {pct}% {name_}" for name_, pct in prof.get("top_self", [])]
        if prof.get("callbacks"):
            parts += ["", "Event-loop callbacks (main thread) and other threads:", ""]
            parts += [f"- {pct}% {k}" for k, pct in prof["callbacks"]]
        if prof.get("inclusive"):
            parts += ["", "Inclusive time of stack frames containing:", ""]
            parts += [f"- {pct}% `{k}`" for k, pct in prof["inclusive"].items()]
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Rebuild the summary and plots of a run from its `<date>-all.json`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("all_json", type=Path)
    args = parser.parse_args(argv)
    results = json.loads(args.all_json.read_text(encoding="utf-8"))
    meta = results.pop("meta", {})
    out_dir = args.all_json.parent
    stamp = meta.get("stamp") or args.all_json.name.removesuffix("-all.json")
    for name in ("S2", "S3"):
        if isinstance(results.get(name), dict):
            plot(out_dir, stamp, name, results[name])
    text = summary_markdown(results, meta)
    (out_dir / f"{stamp}-summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
