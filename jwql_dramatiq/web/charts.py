"""Server-side SVG charts from the stored task states (no JavaScript, no network assets).

- tasks per hour by state over the last day (stacked bars);
- duration per actor over the last day (a bar per actor: median, with the maximum as a tick).
"""

from __future__ import annotations

import statistics
from html import escape

from ..broker import states

#: Fill colour of each state (also used by the CSS badges).
COLOURS = {states.QUEUED: "#8a8f98", states.SCHEDULED: "#b58900", states.RUNNING: "#268bd2",
           states.SUCCEEDED: "#2aa198", states.FAILED: "#dc322f", states.PURGED: "#6c71c4",
           states.REVOKED: "#d33682"}


def tasks_per_hour(rows: list[tuple[str, dict[str, str]]], now_s: float, hours: int = 24) -> str:
    """Stacked bars: tasks per hour of their last change, by state, over the last ``hours``."""
    width, height, left, bottom = 720, 200, 40, 24
    counts = [dict.fromkeys(states.ALL_STATES, 0) for _ in range(hours)]
    for _, row in rows:
        try:
            age_h = int((now_s - float(row.get("updated_at") or 0)) // 3600)
        except ValueError:
            continue
        if 0 <= age_h < hours and row.get("state") in counts[0]:
            counts[hours - 1 - age_h][row["state"]] += 1
    peak = max([sum(c.values()) for c in counts] + [1])
    bar_w = (width - left) / hours
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height + bottom}" '
             f'role="img" aria-label="tasks per hour by state">',
             f'<text x="0" y="12" class="axis">{peak}</text><text x="0" y="{height}" class="axis">0</text>']
    for i, c in enumerate(counts):
        y = height
        for state in states.ALL_STATES:
            if c[state]:
                h = c[state] / peak * (height - 16)
                y -= h
                parts.append(f'<rect x="{left + i * bar_w + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" '
                             f'height="{h:.1f}" fill="{COLOURS[state]}"><title>{c[state]} {state}, '
                             f'{hours - 1 - i} h ago</title></rect>')
        if i % 4 == 0:
            parts.append(f'<text x="{left + i * bar_w:.1f}" y="{height + 16}" class="axis">-{hours - i} h</text>')
    legend_x = left
    for state in states.ALL_STATES:
        parts.append(f'<rect x="{legend_x}" y="2" width="10" height="10" fill="{COLOURS[state]}"/>'
                     f'<text x="{legend_x + 13}" y="11" class="axis">{state}</text>')
        legend_x += 85
    parts.append("</svg>")
    return "".join(parts)


def duration_per_actor(rows: list[tuple[str, dict[str, str]]]) -> str:
    """A horizontal bar per actor: median run time of tasks finished in the window, max as a tick."""
    runs: dict[str, list[float]] = {}
    for _, row in rows:
        try:
            start, end = float(row.get("started_at") or 0), float(row.get("finished_at") or 0)
        except ValueError:
            continue
        if start > 0 and end >= start:
            runs.setdefault(row.get("actor", "?"), []).append(end - start)
    if not runs:
        return '<p class="muted">No finished tasks in the last day.</p>'
    width, row_h, label_w = 720, 22, 220
    longest = max(max(v) for v in runs.values()) or 1.0
    height = row_h * len(runs) + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="duration per actor">']
    scale = (width - label_w - 120) / longest
    for i, (actor, values) in enumerate(sorted(runs.items())):
        y = i * row_h + 2
        median = statistics.median(values)
        parts.append(f'<text x="0" y="{y + 14}" class="axis">{escape(actor[:32])}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{max(median * scale, 1):.1f}" height="{row_h - 8}" '
                     f'fill="#268bd2"><title>median {median:.2f} s of {len(values)}</title></rect>'
                     f'<rect x="{label_w + max(values) * scale:.1f}" y="{y + 1}" width="2" height="{row_h - 4}" '
                     f'fill="#dc322f"><title>max {max(values):.2f} s</title></rect>'
                     f'<text x="{label_w + max(values) * scale + 6:.1f}" y="{y + 14}" class="axis">'
                     f'median {median:.1f} s, max {max(values):.1f} s, n={len(values)}</text>')
    parts.append("</svg>")
    return "".join(parts)
