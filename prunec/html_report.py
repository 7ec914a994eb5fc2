"""report.json as a page people would rather look at: one self-contained HTML file.

Charts are drawn with matplotlib (the optional `report` extra: pip install 'prunec[report]') and
embedded as SVG data URIs, so the page needs no network and no other file. Without matplotlib the
page still has every table. Every figure shown is read from the report; each table cell that
holds one carries a `data-field` attribute naming its place in report.json, so a test (or a
script) can check the page against the report.
"""
from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from pathlib import Path

GROUP_CHART_LIMIT = 120  # groups drawn in the channel chart (largest first beyond that)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#1d2330;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #dde;
padding-bottom:.2em}.sub{color:#667;margin-top:0}code{background:#f3f4f8;padding:0 .3em;border-radius:3px}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .8em;border-bottom:1px solid #eef;
text-align:left;vertical-align:top}th{background:#f6f7fb}td.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}.card{border:1px solid #dde;border-radius:8px;
padding:.7em 1.1em;min-width:12em}.card .big{font-size:1.6em;font-weight:600}.card .lbl{color:#667;font-size:.9em}
.ok{color:#17803d}.warn{color:#b45309}img.chart{max-width:100%;height:auto;display:block;margin:.5em 0}
details summary{cursor:pointer;color:#335}
"""


def write_html(report: dict, path: str | os.PathLike) -> Path:
    """Write the page atomically; returns its path."""
    path = Path(path)
    page = render(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report.", suffix=".html", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(page)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def render(r: dict) -> str:
    e = html.escape
    charts = _Charts()
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>prunec report: "
             f"{e(Path(str(r.get('input', 'model'))).name)}</title><style>{CSS}</style></head><body>"]
    parts.append(f"<h1>prunec report: {e(Path(str(r.get('input', 'model'))).name)}</h1>")
    sub = [f"{e(str(r.get('input', '')))} &rarr; {e(str(r.get('output', '')))}"]
    if r.get("prunec_version"):
        sub.append(f"prunec {e(str(r['prunec_version']))}")
    parts.append(f"<p class=sub>{' &middot; '.join(sub)}</p>")
    if r.get("command"):
        parts.append(f"<p class=sub><code>{e(r['command'])}</code></p>")
    parts.append(_shapes_section(r))
    if "groups" in r:
        parts.append(_cards(r))
        parts.append(_size_section(r, charts))
        parts.append(_groups_section(r, charts))
    for target, t in (r.get("targets") or {}).items():
        parts.append(_target_section(target, t, r, charts))
    if "groups" in r:
        parts.append(_skipped_section(r))
        parts.append(_verify_section(r))
    if charts.missing:
        parts.append("<p class=warn>Charts need matplotlib: <code>pip install 'prunec[report]'</code> "
                     "(the tables above hold every figure).</p>")
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)


# ----------------------------------------------------------------------------- sections
def _num(value, field: str, fmt: str = "{:,}") -> str:
    text = fmt.format(value) if value is not None else "–"
    return f"<td class=n data-field='{html.escape(field)}' data-value='{html.escape(str(value))}'>{text}</td>"


def _span(value, field: str, fmt: str = "{:,}", tag: str = "span") -> str:
    return (f"<{tag} data-field='{html.escape(field)}' data-value='{html.escape(str(value))}'>"
            f"{fmt.format(value)}</{tag}>")


def _shapes_section(r: dict) -> str:
    shapes = r.get("input_shapes") or {}
    if not shapes:
        return ""
    e = html.escape
    text = ", ".join(f"<code>{e(n)}</code> {'&times;'.join(map(str, s))}" for n, s in shapes.items())
    extra = ""
    if r.get("dynamic_dims"):
        dyn = "; ".join(f"{e(n)}: " + ", ".join(f"axis {a} ({e(p)})" for a, p in d.items())
                        for n, d in r["dynamic_dims"].items())
        src = "; ".join(f"{e(n)}: {e(s)}" for n, s in (r.get("input_shapes_source") or {}).items())
        extra = (f" The model's dynamic dims ({dyn}) stay dynamic in the pruned model; "
                 f"these sizes come from {src}.")
    return f"<p>Figures refer to input shape {text}.{extra}</p>"


def _cards(r: dict) -> str:
    p, m, g = r["params"], r["macs"], r["groups"]
    cards = [(f"{m['before'] / max(m['after'], 1):.2f}&times;", "fewer MACs"),
             (f"{p['before'] / max(p['after'], 1):.2f}&times;", "fewer parameters"),
             (f"{g['pruned']} / {g['prunable']}", "prunable groups pruned"),
             (f"{g['channels_removed']:,}", "channels removed")]
    for target, t in (r.get("targets") or {}).items():
        if t.get("speedup"):
            cards.append((f"{t['speedup']:.2f}&times;", f"faster with TVM ({html.escape(target)})"))
    return "<div class=cards>" + "".join(
        f"<div class=card><div class=big>{big}</div><div class=lbl>{lbl}</div></div>" for big, lbl in cards) + "</div>"


def _size_section(r: dict, charts: "_Charts") -> str:
    p, m = r["params"], r["macs"]
    rows = ("<table><tr><th></th><th>before</th><th>after</th><th>ratio</th></tr>"
            f"<tr><th>parameters</th>{_num(p['before'], 'params.before')}{_num(p['after'], 'params.after')}"
            f"<td class=n>{p['before'] / max(p['after'], 1):.2f}&times;</td></tr>"
            f"<tr><th>MACs</th>{_num(m['before'], 'macs.before')}{_num(m['after'], 'macs.after')}"
            f"<td class=n>{m['before'] / max(m['after'], 1):.2f}&times;</td></tr></table>")
    img = charts.before_after(p, m)
    return "<h2>Size</h2>" + rows + img


def _groups_section(r: dict, charts: "_Charts") -> str:
    e = html.escape
    g = r["groups"]
    per = g.get("per_group") or []
    head = (f"<h2>Channel groups</h2><p>{_span(g['pruned'], 'groups.pruned')} of "
            f"{_span(g['prunable'], 'groups.prunable')} prunable groups pruned "
            f"({_span(g['total'], 'groups.total')} in all); "
            f"{_span(g['channels_removed'], 'groups.channels_removed')} channels removed.</p>")
    if not per:
        return head
    img = charts.groups(per)
    rows = "".join(
        f"<tr><td><code>{e(x['id'])}</code></td>{_num(x['size'], f'groups.per_group.{i}.size')}"
        f"{_num(x['kept'], f'groups.per_group.{i}.kept')}{_num(x['removed'], f'groups.per_group.{i}.removed')}"
        f"<td>{e(x['status'])}</td><td class=n>{100 * x.get('macs_share', 0):.1f}%</td></tr>"
        for i, x in enumerate(per))
    table = ("<details><summary>every group (id, channels, kept, removed, status, share of MACs touched)</summary>"
             "<table><tr><th>group</th><th>channels</th><th>kept</th><th>removed</th><th>status</th>"
             f"<th>MACs touched</th></tr>{rows}</table></details>")
    return head + img + table


def _latency_rows(t: dict) -> list[tuple[str, str, dict]]:
    """(label, report field, latency dict) for every latency the target measured."""
    rows = []
    for name in ("original", "pruned"):
        m = (t.get("models") or {}).get(name) or {}
        if m.get("onnxruntime_latency_ms"):
            rows.append((f"ONNX Runtime {name}", f"models.{name}.onnxruntime_latency_ms", m["onnxruntime_latency_ms"]))
    for name in ("original", "pruned"):
        m = (t.get("models") or {}).get(name) or {}
        if isinstance(m.get("latency_ms"), dict) and m["latency_ms"].get("median") is not None:
            rows.append((f"TVM {name}", f"models.{name}.latency_ms", m["latency_ms"]))
    return rows


def _target_section(target: str, t: dict, r: dict, charts: "_Charts") -> str:
    e = html.escape
    base = f"targets.{target}"
    out = [f"<h2>Latency: {e(target)}</h2>"]
    if not t.get("measured"):
        out.append(f"<p>{e(str(t.get('reason', 'compiled, not measured')))}</p>")
    rows = _latency_rows(t)
    if rows:
        body = "".join(
            f"<tr><th>{e(label)}</th>{_num(lat.get('median'), f'{base}.{field}.median', '{:.3f}')}"
            f"{_num(lat.get('p10'), f'{base}.{field}.p10', '{:.3f}')}{_num(lat.get('p90'), f'{base}.{field}.p90', '{:.3f}')}</tr>"
            for label, field, lat in rows)
        out.append("<table><tr><th>ms</th><th>median</th><th>p10</th><th>p90</th></tr>" + body + "</table>")
        out.append(charts.latency(target, rows))
    if t.get("speedup"):
        out.append(f"<p>TVM speedup {_span(t['speedup'], f'{base}.speedup', '{:.3f}', 'b')}&times;"
                   + (f", MACs ratio {t['macs_ratio']:.2f}&times;, efficiency {t['efficiency']:.2f}"
                      if t.get("efficiency") else "") + ".</p>")
    noise = t.get("timing_noise") or {}
    if noise.get("noisy"):
        out.append("<p class=warn>The host was busy while timing: round medians spread "
                   + ", ".join(f"{e(k)} {v:.2f}&times;" for k, v in noise["spread"].items() if v > noise["threshold"])
                   + ". These figures are uncertain.</p>")
    arts = [(n, m.get("artifact")) for n, m in (t.get("models") or {}).items() if m.get("artifact")]
    if arts:
        out.append("<p>Artifacts: " + ", ".join(f"{e(n)} <code>{e(a)}</code>" for n, a in arts) + "</p>")
    return "\n".join(out)


def _skipped_section(r: dict) -> str:
    e = html.escape
    skipped = r["groups"].get("skipped") or []
    if not skipped:
        return "<h2>Skipped groups</h2><p>None: every group was prunable.</p>"
    rows = "".join(f"<tr><td><code>{e(s['id'])}</code></td><td class=n>{s['size']}</td>"
                   f"<td>{'<br>'.join(e(x) for x in s['reasons'])}</td></tr>" for s in skipped)
    return (f"<h2>Skipped groups ({_span(len(skipped), 'groups.skipped.length')})</h2>"
            "<p>Channels prunec kept because removing them would change what the model computes, or "
            "because it cannot prove it would not:</p>"
            f"<table><tr><th>group</th><th>channels</th><th>why</th></tr>{rows}</table>")


def _verify_section(r: dict) -> str:
    v = r.get("verify") or {}
    items = [f"onnx.checker: {html.escape(str(v.get('checker')))}", f"ONNX Runtime: {html.escape(str(v.get('onnxruntime')))}",
             f"output shapes: {html.escape(str(v.get('output_shapes')))}"]
    other = v.get("other_input_size") or {}
    if other.get("checked"):
        items.append("also ran at input shape " + ", ".join(
            f"{html.escape(n)} {'&times;'.join(map(str, s))}" for n, s in other["input_shapes"].items()))
    cls = "ok" if v.get("ok") else "warn"
    return f"<h2>Verification</h2><p class={cls}>" + "; ".join(items) + ".</p>"


# ----------------------------------------------------------------------------- charts
class _Charts:
    """matplotlib figures as SVG data URIs; empty strings (and `missing`) without matplotlib."""

    def __init__(self):
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            self.plt = plt
            self.missing = False
        except ImportError:
            self.plt = None
            self.missing = True

    def _img(self, fig, alt: str) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", bbox_inches="tight")
        self.plt.close(fig)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return f"<img class=chart alt='{html.escape(alt)}' src='data:image/svg+xml;base64,{data}'>"

    def before_after(self, params: dict, macs: dict) -> str:
        if self.missing:
            return ""
        fig, axes = self.plt.subplots(1, 2, figsize=(8, 2.6))
        for ax, (label, d) in zip(axes, (("parameters", params), ("MACs", macs))):
            bars = ax.bar(["before", "after"], [d["before"], d["after"]], color=["#9aa5b8", "#2f6fdf"])
            ax.bar_label(bars, labels=[_si(d["before"]), _si(d["after"])], padding=2)
            ax.set_title(label)
            ax.set_yticks([])
            ax.spines[["top", "right", "left"]].set_visible(False)
            ax.set_ylim(0, max(d["before"], d["after"], 1) * 1.18)
        return self._img(fig, "parameters and MACs before and after pruning")

    def groups(self, per: list[dict]) -> str:
        if self.missing or not per:
            return ""
        rows = per if len(per) <= GROUP_CHART_LIMIT else sorted(per, key=lambda x: -x["size"])[:GROUP_CHART_LIMIT]
        n = len(rows)
        fig, ax = self.plt.subplots(figsize=(9, 1.0 + 0.22 * n))
        y = list(range(n))[::-1]
        # shares, not counts: a 8000-channel output group would flatten every 32-channel bar
        kept = [100 * x["kept"] / x["size"] for x in rows]
        removed = [100 * x["removed"] / x["size"] for x in rows]
        colors = ["#2f6fdf" if x["status"] != "skipped" else "#b8bfcc" for x in rows]
        ax.barh(y, kept, color=colors, height=0.75)
        ax.barh(y, removed, left=kept, color="#f0a35e", height=0.75)
        for yy, x in zip(y, rows):
            ax.text(101, yy, f"{x['kept']}/{x['size']}", va="center", fontsize=7, color="#333")
        ax.set_yticks(y)
        ax.set_yticklabels([_short(x["id"]) for x in rows], fontsize=7)
        ax.set_xlim(0, 112)
        ax.set_xticks([0, 25, 50, 75, 100])
        ax.set_xlabel("% of the group's channels (labels: kept/total)")
        ax.spines[["top", "right"]].set_visible(False)
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color="#2f6fdf", label="kept"), Patch(color="#f0a35e", label="removed"),
                           Patch(color="#b8bfcc", label="skipped (kept whole)")],
                  loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
        ax.set_ylim(-0.7, n - 0.3)
        title = "channels kept and removed per group" + (
            f" ({GROUP_CHART_LIMIT} largest of {len(per)})" if len(per) > n else "")
        return self._img(fig, title)

    def latency(self, target: str, rows: list[tuple[str, str, dict]]) -> str:
        if self.missing:
            return ""
        fig, ax = self.plt.subplots(figsize=(8, 0.8 + 0.5 * len(rows)))
        y = list(range(len(rows)))[::-1]
        med = [lat["median"] for _, _, lat in rows]
        colors = ["#9aa5b8" if "original" in label else "#2f6fdf" for label, _, _ in rows]
        xerr = None
        if all(lat.get("p10") is not None and lat.get("p90") is not None for _, _, lat in rows):
            # whiskers from p10 to p90 (clipped at the median: a best-round median can sit outside them)
            xerr = [[max(m - lat["p10"], 0) for m, (_, _, lat) in zip(med, rows)],
                    [max(lat["p90"] - m, 0) for m, (_, _, lat) in zip(med, rows)]]
        bars = ax.barh(y, med, color=colors, xerr=xerr, capsize=4, ecolor="#333")
        ax.bar_label(bars, labels=[f"{m:.2f} ms" for m in med], padding=6, fontsize=8)
        ax.set_yticks(y)
        ax.set_yticklabels([label for label, _, _ in rows])
        ax.set_xlabel("latency, ms (median; whiskers p10-p90)")
        ax.set_xlim(0, max(max(med), max((lat.get("p90") or 0) for _, _, lat in rows)) * 1.25)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_title(f"{target}: original vs pruned", fontsize=10)
        return self._img(fig, f"latency on {target}")


def _si(v: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suffix}"
    return f"{v:g}"


def _short(gid: str, n: int = 42) -> str:
    return gid if len(gid) <= n else "…" + gid[-(n - 1):]
