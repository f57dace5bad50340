"""Self-contained HTML reports (figures embedded as data URIs): one per run, the calibration
dashboard, and the demo's summary."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .datadir import data_dir as resolve_data_dir
from .runread import RunData, load_run
from .uncertain import plus_minus

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;font-size:.9em}th{background:#f3f3f3}.bad{color:#b00}.ok{color:#070}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f6f6f6;padding:0 .2em}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(path: Path | bytes, alt: str) -> str:
    """A PNG (a file, or its bytes) embedded as a data URI, with ``alt`` as its caption."""
    raw = path if isinstance(path, bytes) else Path(path).read_bytes()
    data = base64.b64encode(raw).decode()
    return f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{data}">' \
           f"<figcaption>{_esc(alt)}</figcaption></figure>"


def _png(figure: Any) -> bytes:
    """A matplotlib figure (a plain ``Figure``, outside pyplot) as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def generation_sections(run: RunData) -> list[tuple[str, str]]:
    """For a heralded-generation run: what it delivered, its fidelity and entanglement
    verdict, and its figures (herald statistics; the density matrix when X, Y, Z were
    measured). Figures already saved beside the run are not drawn again."""
    from qnetlab.sequences.entanglement import plots
    from qnetlab.sequences.entanglement.verification import (
        entanglement_verdict,
        fidelity_estimate,
        generation_from_run,
        tomography_of,
    )

    gen = generation_from_run(run)
    if gen is None:
        return []
    f, err, reason = fidelity_estimate(gen)
    rows = [("link", f"{gen.link} ({' - '.join(gen.ends)})"), ("protocol", gen.protocol),
            ("pairs delivered", f"{len(gen)} of {gen.requested} requested"),
            ("herald rate", f"{gen.rate_hz:.1f} /s"),
            ("bases", f"{','.join(gen.bases[0])} / {','.join(gen.bases[1])}"),
            ("fidelity to the heralded Bell state (<XX>, <YY>, <ZZ>)",
             plus_minus(f, err) if reason is None else reason)]
    figures = [] if run_figures(run) else [
        (_png(plots.herald_statistics(gen.attempts, gen.pattern, f"{gen.link}: heralds")),
         "herald statistics")]
    if reason is None:
        tomo = tomography_of(gen)
        rows.append(("fidelity, maximum likelihood", plus_minus(tomo.fidelity, tomo.fidelity_err)))
        rows.append(("verdict", entanglement_verdict(tomo.fidelity, tomo.fidelity_err).line()))
        if not run_figures(run):
            figures.append((_png(plots.density_matrix(
                tomo.rho, f"{gen.link}: F = {plus_minus(tomo.fidelity, tomo.fidelity_err)}")),
                "density matrix"))
    sections = [("Entanglement", table(rows, ("quantity", "value")))]
    if figures:
        sections.append(("Generation figures", "".join(image(png, alt) for png, alt in figures)))
    return sections


def page(title: str, sections: Iterable[tuple[str, str]]) -> str:
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    body = "".join(f"<h2>{_esc(h)}</h2>{content}" for h, content in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1><p>written {stamp} by qnetlab</p>{body}</body></html>")


def run_figures(run: RunData) -> list[Path]:
    if run.hdf5_path is None:
        return []
    folder, stem = run.hdf5_path.parent, run.hdf5_path.stem
    return sorted(p for p in folder.glob(f"{stem}*.png"))


def events_of(run: RunData) -> list[dict[str, Any]]:
    raw = run.dataset.metadata.get("qnetlab_events") or run.attrs.get("events")
    return json.loads(raw) if raw else []


def run_sections(run: RunData) -> list[tuple[str, str]]:
    info = [("name", run.name), ("GUID", run.guid), ("QCoDeS run id", run.run_id),
            ("status", run.status), ("HDF5", run.hdf5_path),
            ("started (UTC)", run.attrs.get("created_utc", "")),
            ("ended (UTC)", run.attrs.get("ended_utc", "")),
            ("lab time", f"{run.attrs.get('lab_time_start', '')} -> "
                         f"{run.attrs.get('lab_time_end', '')} s")]
    sections = [("Run", table(info, ("", ""))), *generation_sections(run)]
    if run.metadata:
        sections.append(("Metadata", table(sorted(run.metadata.items()), ("key", "value"))))
    data = run.arrays()
    if data:
        rows = [(dep, ", ".join(data[dep]), next(iter(data[dep].values())).size)
                for dep in data]
        sections.append(("Swept data (QCoDeS)", table(rows, ("measured", "columns", "points"))))
    if run.streams:
        rows = [(name, ", ".join(cols), next(iter(cols.values())).size if cols else 0)
                for name, cols in run.streams.items()]
        sections.append(("Raw streams (HDF5)", table(rows, ("stream", "columns", "rows"))))
    events = events_of(run)
    sections.append(("Interruptions and recoveries", table(
        [(e.get("lab_time"), e.get("kind"), e.get("detail")) for e in events],
        ("lab time (s)", "event", "detail")) if events else "<p>none</p>"))
    if run.calibration:
        rows = [(t, q, v) for t, qs in sorted(run.calibration.items()) for q, v in sorted(qs.items())]
        sections.append(("Calibration state at run start", table(rows, ("target", "quantity",
                                                                          "value"))))
    figures = run_figures(run)
    if figures:
        sections.append(("Figures", "".join(image(p, p.stem) for p in figures)))
    return sections


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)
    return path


def run_report(ref: int | str | os.PathLike[str] | RunData,
               data_dir: str | os.PathLike[str] | None = None, out: Path | None = None) -> Path:
    """One self-contained HTML page for a run (by id, GUID, HDF5 path or already loaded)."""
    run = ref if isinstance(ref, RunData) else load_run(ref, data_dir)
    folder = resolve_data_dir(data_dir) / "reports"
    out = out or folder / f"run_{run.run_id:05d}_{run.name}.html"
    return write(out, page(f"qnetlab run {run.run_id}: {run.name}", run_sections(run)))


def dashboard(store: Any, graph: Any, now: float, out: Path) -> Path:
    """Current state of every calibration target of ``graph`` (a ``CalibrationGraph``), with
    its staleness by the engine's own rule (``graph.fresh``)."""
    states = store.node_states()
    rows = []
    for key in graph.keys():
        st, cal = states.get(key), graph.calibrations[key[0]]
        age = "never" if st is None or st.last_success is None else \
            f"{(now - st.last_success) / 3600:.2f} h"
        fresh = "fresh" if graph.fresh(key, states, now) else "stale"
        rows.append((f"{key[0]}:{key[1]}", st.last_outcome if st else "-", age,
                     f"{cal.timeout_s / 3600:g} h", fresh, st.detail if st else ""))
    records = [(f"{q}:{t}", plus_minus(r.value, r.uncertainty, r.unit), r.status,
                f"{r.lab_time:.0f}", r.source_run or "")
               for (q, t), r in sorted(store.state().items())]
    held = [(r.id, f"{r.quantity}:{r.target}", r.value, r.note) for r in store.held()]
    sections = [("Calibration nodes", table(rows, ("node", "last outcome", "age", "timeout",
                                                   "state", "detail"))),
                ("Current values", table(records, ("quantity:target", "value", "status",
                                                   "lab time (s)", "source run"))),
                ("Held for approval", table(held, ("record", "quantity:target", "value",
                                                   "reason")) if held else "<p>none</p>")]
    return write(out, page("qnetlab calibration dashboard", sections))


def schedule_figure(schedule: Sequence[Any]) -> Any:
    """A Gantt chart of a calibration's schedule (``Report.schedule``: slots with ``cal``,
    ``target``, ``start``, ``end``): one row per target, one bar per calibration step, in lab
    time, so what ran at the same time is seen at a glance. A plain matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    targets = list(dict.fromkeys(s.target for s in schedule))
    cals = list(dict.fromkeys(s.cal for s in schedule))
    colors = {c: f"C{i % 10}" for i, c in enumerate(cals)}
    fig = Figure(figsize=(9, 1.2 + 0.3 * len(targets)))
    ax = fig.add_subplot()
    for slot in schedule:
        row = targets.index(slot.target)
        ax.barh(row, max(slot.end - slot.start, 0.5), left=slot.start, height=0.7,
                color=colors[slot.cal], label=slot.cal)
    ax.set_yticks(range(len(targets)), targets)
    ax.invert_yaxis()
    ax.set_xlabel("lab time (s)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize="small", loc="upper left",
              bbox_to_anchor=(1.01, 1.0))  # beside the chart: bars stay visible
    span = max((s.end for s in schedule), default=0) - min((s.start for s in schedule),
                                                           default=0)
    ax.set_title(f"calibration schedule: makespan {span:.0f} s of lab time")
    fig.tight_layout()
    return fig


def calibration_report(report: Any, out: Path) -> Path:
    """The HTML page of one calibration (a ``Report``): each node's outcome, the schedule
    (start and end in lab time of each step) and its Gantt chart."""
    rows = [(r.key, r.status + ("*" if r.diagnosed else ""), r.detail) for r in report.results]
    slots = [(s.key, f"{s.start:.0f}", f"{s.end:.0f}", f"{s.end - s.start:.0f}",
              ", ".join(s.resources)) for s in report.schedule]
    sections = [
        ("Outcome", f"<p>{len(report.results)} nodes; makespan {report.makespan_s:.0f} s of "
                    f"lab time for {report.busy_s:.0f} s of steps; {report.wall_s:.1f} s wall"
                    "</p>" + table(rows, ("calibration:target", "status", "detail"))),
        ("Schedule", image(_png(schedule_figure(report.schedule)), "schedule (Gantt)")
         + table(slots, ("calibration:target", "start (s)", "end (s)", "lab time (s)",
                         "resources"))),
    ]
    return write(out, page("qnetlab calibration", sections))
