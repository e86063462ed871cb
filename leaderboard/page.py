"""The leaderboard page (issue 21 item 3): the entries of one threat model side by side, as RobustBench shows image
models (Croce et al. 2021, "RobustBench: a standardized adversarial robustness benchmark").

Two renderings of one ranked :class:`Board` (robust accuracy descending, then clean accuracy, then name):

* ``index.html``: a static, self-contained page (inline CSS, JS and SVG; nothing fetched) with the threat model's
  protocol, whether the leader's robust-accuracy interval clears the runner-up's, a table sortable by any column
  (click a header; ``?sort=KEY&dir=asc|desc`` in the address does the same on load), a robust-vs-clean accuracy
  scatter with 95 % interval bars in both directions, and one model card per entry that its table row links to.
* ``leaderboard.md``: the same header, table (same order) and cards in GitHub-flavoured Markdown, with the scatter
  as ``scatter.svg`` beside it.

Every text taken from an entry is escaped (model names are user input).
"""
from __future__ import annotations

import functools
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from leaderboard.entry import load_entry, read_entry
from training.files import atomic_write
from victims.registry import ConfigError

NORMS = {"linf": "L∞", "l2": "L2", "l0": "L0", "perceptual": "perceptual distance"}
PROTOCOL = ("domain", "norm", "budget", "budget_snr_db", "attacks", "n_clips", "seed")
"""The evaluation keys every entry of a board must share: the page's header states them once."""
DASH = "—"


@dataclass(frozen=True)
class Column:
    """A table column: its key (also the ``?sort=`` value), header, whether it sorts as a number, and the direction
    a first click sorts it in (better first)."""

    key: str
    title: str
    numeric: bool
    first: str


COLUMNS = (
    Column("rank", "Rank", True, "asc"),
    Column("name", "Model", False, "asc"),
    Column("architecture", "Architecture", False, "asc"),
    Column("representation", "Representation", False, "asc"),
    Column("objective", "Objective", False, "asc"),
    Column("clean_accuracy", "Clean accuracy", True, "desc"),
    Column("robust_accuracy", "Robust accuracy", True, "desc"),
    Column("eps_star_median", "Median ε*", True, "desc"),
    Column("eps_r", "ε_r vs reference", True, "desc"),
    Column("certified_accuracy", "Certified accuracy", True, "desc"),
    Column("parameters", "Parameters", True, "desc"),
)


def _tm(entry: Mapping[str, Any]) -> str:
    tm = entry["threat_model"]
    return f"{tm['name']} v{tm['version']} ({tm['config_hash']})"


def _real(value: float | None) -> float | None:
    """``value`` if it is a finite number, else ``None`` (the schema's null: infinite or undetermined)."""
    return value if value is not None and math.isfinite(value) else None


def _robust(entry: Mapping[str, Any]) -> float:
    value = _real(entry["metrics"]["robust_accuracy"]["value"])
    return -math.inf if value is None else value


def _rank_key(entry: Mapping[str, Any]) -> tuple[float, float, str]:
    clean = _real(entry["metrics"]["clean_accuracy"]["value"])
    return -_robust(entry), -math.inf if clean is None else -clean, entry["model"]["name"]


def _anchor_ids(names: Iterable[str]) -> dict[str, str]:
    """A distinct ``card-<slug>`` id per model name (``-2``, ``-3`` ... where two names give one slug)."""
    ids: dict[str, str] = {}
    for name in names:
        slug = "card-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model")
        anchor, n = slug, 1
        while anchor in ids.values():
            n += 1
            anchor = f"{slug}-{n}"
        ids[name] = anchor
    return ids


@dataclass(frozen=True)
class Board:
    """The entries of one threat model (one name, version and config hash, one protocol, distinct model names),
    ranked: robust accuracy descending, then clean accuracy, then name; equal robust accuracy shares a rank."""

    entries: tuple[dict, ...]

    @classmethod
    def of(cls, entries: Mapping[str, dict]) -> Board:
        """A board of ``entries`` (keyed by where each came from, e.g. its file name, for the error messages).

        Raises:
            ConfigError: one line: no entries, entries of several threat models or config hashes, entries whose
                protocols differ, or two entries with one model name.
        """
        if not entries:
            raise ConfigError("no leaderboard entries")
        (first_label, first), *others = entries.items()
        seen = {first["model"]["name"]: first_label}
        for label, entry in others:
            if entry["threat_model"] != first["threat_model"]:
                raise ConfigError(f"entries of different threat models in one page: {first_label} is {_tm(first)}, "
                                  f"{label} is {_tm(entry)}")
            for key in PROTOCOL:
                if entry["evaluation"][key] != first["evaluation"][key]:
                    raise ConfigError(f"entries of {_tm(first)} with different protocols: {first_label} has "
                                      f"{key} {first['evaluation'][key]!r}, {label} {entry['evaluation'][key]!r}")
            name = entry["model"]["name"]
            if name in seen:
                raise ConfigError(f"two entries with the model name {name!r}: {seen[name]} and {label}")
            seen[name] = label
        return cls(tuple(sorted(entries.values(), key=_rank_key)))

    @classmethod
    def load(cls, folder: Path, threat_model: str | None = None) -> Board:
        """The board of the entry files (``*.json``) in ``folder``.

        Args:
            folder: the entries folder.
            threat_model: if given, the threat model name the entries must have.

        Raises:
            ConfigError: one line: a missing folder, no entries, a malformed entry, any refusal of :meth:`of`, or a
                config hash that is not the threat model's current one (:func:`leaderboard.entry.load_entry`).
        """
        if not folder.is_dir():
            raise ConfigError(f"leaderboard entries folder {folder} does not exist")
        files = sorted(folder.glob("*.json"))
        if not files:
            raise ConfigError(f"no leaderboard entries (*.json) in {folder}")
        board = cls.of({path.name: read_entry(path) for path in files})
        if threat_model is not None and board.threat_model["name"] != threat_model:
            raise ConfigError(f"the entries in {folder} are of threat model {board.threat_model['name']!r}, "
                              f"not {threat_model!r}")
        load_entry(files[0])  # all share its config hash (of): is it the threat model's current one?
        return board

    @property
    def threat_model(self) -> dict:
        return self.entries[0]["threat_model"]

    @property
    def protocol(self) -> dict:
        return self.entries[0]["evaluation"]

    @functools.cached_property
    def ranks(self) -> tuple[int, ...]:
        """Competition ranks (1, 1, 3, ...) by robust accuracy."""
        robust = [_robust(e) for e in self.entries]
        return tuple(1 + sum(other > value for other in robust) for value in robust)

    @functools.cached_property
    def anchors(self) -> dict[str, str]:
        """Model name -> the id of its card."""
        return _anchor_ids(e["model"]["name"] for e in self.entries)


def _interval(interval: Mapping[str, float | None], percent: bool) -> str:
    """``value [low, high]`` (in % with one decimal, or 3 significant digits); ``—`` for a null or non-finite
    number."""
    def text(x: float | None) -> str:
        x = _real(x)
        return DASH if x is None else f"{100 * x:.1f}" if percent else f"{x:.3g}"

    shown = f"{text(interval['value'])} [{text(interval['low'])}, {text(interval['high'])}]"
    return shown + " %" if percent else shown


def _pct(interval: Mapping[str, float | None]) -> str:
    return _interval(interval, percent=True)


def _num(interval: Mapping[str, float | None]) -> str:
    return _interval(interval, percent=False)


def _budget(protocol: Mapping[str, Any], snr: bool = True) -> str:
    text = f"{NORMS[protocol['norm']]} ≤ {protocol['budget']:g}"
    if snr and protocol["budget_snr_db"] is not None:
        text += f" (median SNR {protocol['budget_snr_db']:.1f} dB on the test clips)"
    return text


@dataclass(frozen=True)
class Cell:
    """A table cell: the text shown, the value it sorts by (``None`` sorts last) and a note shown after the text
    (the HTML page puts it on a line of its own)."""

    text: str
    sort: float | str | None
    note: str = ""

    @property
    def full(self) -> str:
        return f"{self.text} {self.note}" if self.note else self.text


def cells(entry: Mapping[str, Any], rank: int) -> dict[str, Cell]:
    """Column key -> cell, for one table row."""
    card, metrics = entry["card"], entry["metrics"]
    eps_r, certified = metrics["eps_r"], metrics["certified_accuracy"]
    return {
        "rank": Cell(str(rank), rank),
        "name": Cell(entry["model"]["name"], entry["model"]["name"].lower()),
        "architecture": Cell(card["architecture"], card["architecture"].lower()),
        "representation": Cell(card["representation"], card["representation"].lower()),
        "objective": Cell(card["objective"], card["objective"].lower()),
        "clean_accuracy": Cell(_pct(metrics["clean_accuracy"]), _real(metrics["clean_accuracy"]["value"])),
        "robust_accuracy": Cell(_pct(metrics["robust_accuracy"]), _real(metrics["robust_accuracy"]["value"])),
        "eps_star_median": Cell(_num(metrics["eps_star_median"]), _real(metrics["eps_star_median"]["value"])),
        "eps_r": Cell(DASH, None) if eps_r is None else Cell(_num(eps_r), _real(eps_r["value"]),
                                                              f"vs {eps_r['reference']}"),
        "certified_accuracy": Cell(DASH, None) if certified is None else Cell(_pct(certified),
                                                                               _real(certified["value"])),
        "parameters": Cell(f"{card['parameters']:,}", card["parameters"]),
    }


def lead_sentence(board: Board) -> str:
    """Whether the leader's robust-accuracy interval lies above the runner-up's (disjoint 95 % intervals: a
    conservative test of a difference) or the two overlap."""
    leader = board.entries[0]
    if len(board.entries) == 1:
        return f"{leader['model']['name']} is the only entry: no runner-up to compare with."
    runner = board.entries[1]
    lead, second = leader["metrics"]["robust_accuracy"], runner["metrics"]["robust_accuracy"]
    both = (f"{leader['model']['name']} leads with robust accuracy {_pct(lead)} over the runner-up "
            f"{runner['model']['name']} with {_pct(second)}")
    if _real(lead["low"]) is None or _real(second["high"]) is None:
        return f"{both}: an interval is undetermined, so whether the lead is outside the intervals is not known."
    if lead["low"] > second["high"]:
        return f"{both}: the lead is outside the intervals."
    return f"{both}: the intervals overlap, so the lead is not outside the intervals."


def protocol_rows(board: Board) -> list[tuple[str, str]]:
    """The header: threat model and evaluation protocol, as (label, text)."""
    tm, protocol = board.threat_model, board.protocol
    return [
        ("threat model", f"{tm['name']} (version {tm['version']})"),
        ("config hash", tm["config_hash"]),
        ("domain", protocol["domain"]),
        ("norm", NORMS[protocol["norm"]]),
        ("budget", _budget(protocol)),
        ("attacks", ", ".join(protocol["attacks"]) + " (per-clip worst case)"),
        ("clips", str(protocol["n_clips"])),
        ("seed", str(protocol["seed"])),
    ]


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def card_sections(entry: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """A model card: every field of the entry's model, card, metrics and evaluation, as (section, [(label, text)])."""
    model, card, evaluation = entry["model"], entry["card"], entry["evaluation"]
    data = card["data"]
    settings = card["objective_settings"]
    what = [
        ("source", model["source"]),
        ("checkpoint", model["checkpoint"]),
        ("checkpoint SHA-256", model["checkpoint_sha256"]),
        ("architecture", card["architecture"]),
        ("representation", card["representation"]),
        ("training objective", card["objective"]),
        ("objective settings", ", ".join(f"{k}={_value(v)}" for k, v in settings.items()) or "none"),
        ("data set", data["dataset"]),
        ("classes", f"{len(data['classes'])}: {', '.join(data['classes'])}"),
        ("sample rate", f"{data['sample_rate']} Hz"),
        *((f"data {key}", _value(value)) for key, value in data.items()
          if key not in ("dataset", "classes", "sample_rate")),
        ("parameters", f"{card['parameters']:,}"),
        ("training time", "unknown" if card["training_time_s"] is None else f"{card['training_time_s']:.0f} s"),
        ("code version", card["code_version"]),
        ("training config hash", card["config_hash"] or f"{DASH} (external module)"),
    ]
    if card.get("smoothing_sigma") is not None:
        what.append(("smoothing σ", f"{card['smoothing_sigma']:g}"))
    row = cells(entry, 0)
    results = [(label, row[key].full) for key, label in (
        ("clean_accuracy", "clean accuracy"), ("robust_accuracy", "robust accuracy"),
        ("eps_star_median", f"median ε* ({NORMS[evaluation['norm']]})"), ("eps_r", "ε_r"),
        ("certified_accuracy", "certified accuracy"))]
    stored = evaluation.get("eps_star_per_clip")
    protocol = [
        ("threat model", _tm(entry)),
        ("domain", evaluation["domain"]),
        ("budget", _budget(evaluation)),
        ("attacks", ", ".join(evaluation["attacks"])),
        *((f"robust accuracy under {attack}", f"{100 * value:.1f} %")
          for attack, value in evaluation.get("per_attack_robust_accuracy", {}).items()),
        ("clips", str(evaluation["n_clips"])),
        ("seed", str(evaluation["seed"])),
        *([("per-clip ε*", f"stored for {len(stored['eps_star'])} clips (an ε_r reference)")] if stored else []),
        ("evaluation wall time", f"{evaluation['wall_time_s']:.0f} s"),
        ("MLflow run", evaluation.get("mlflow_run_id") or DASH),
        ("entry written", entry["created"]),
    ]
    return [("Model", what), ("Results (95 % intervals over the clips)", results), ("Evaluation protocol", protocol)]


def _sort_attr(value: float | str | None) -> str:
    return "" if value is None else str(value)


def _axis(intervals: list[Mapping[str, float]]) -> tuple[float, float]:
    """An axis range in tenths of [0, 1] covering every finite interval end."""
    ends = [x for i in intervals for x in (i["low"], i["value"], i["high"]) if _real(x) is not None] or [0.0, 1.0]
    low, high = max(0.0, math.floor(min(ends) * 10) / 10), min(1.0, math.ceil(max(ends) * 10) / 10)
    if high - low < 0.1:
        low, high = (low, low + 0.1) if low + 0.1 <= 1.0 else (high - 0.1, high)
    return low, high


def scatter_svg(board: Board) -> str:
    """Robust vs clean accuracy, one labelled point per model with its two 95 % intervals as bars, each point
    linking to its card; a standalone SVG document that is also valid inline in HTML."""
    width, height, left, right, top, bottom = 720, 460, 70, 170, 20, 60
    clean = [e["metrics"]["clean_accuracy"] for e in board.entries]
    robust = [e["metrics"]["robust_accuracy"] for e in board.entries]
    (x0, x1), (y0, y1) = _axis(clean), _axis(robust)

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def py(v: float) -> float:
        return height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="scatter" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="robust accuracy against clean accuracy">',
           f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
           'fill="none" stroke="#888"/>']
    for lo, hi, horizontal in ((x0, x1, True), (y0, y1, False)):
        steps = round((hi - lo) / 0.1) * (2 if hi - lo < 0.35 else 1)
        for k in range(steps + 1):
            v = lo + (hi - lo) * k / steps
            if horizontal:
                out.append(f'<line x1="{px(v):.1f}" y1="{height - bottom}" x2="{px(v):.1f}" y2="{top}" class="grid"/>'
                           f'<text x="{px(v):.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                           f'{100 * v:.0f}</text>')
            else:
                out.append(f'<line x1="{left}" y1="{py(v):.1f}" x2="{width - right}" y2="{py(v):.1f}" class="grid"/>'
                           f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{100 * v:.0f}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 18}" text-anchor="middle">clean accuracy (%)'
               '</text>')
    out.append(f'<text transform="translate(18 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
               f'robust accuracy (%) at {html.escape(_budget(board.protocol, snr=False))}</text>')
    for entry, c, r in zip(board.entries, clean, robust):
        name = entry["model"]["name"]
        if _real(c["value"]) is None or _real(r["value"]) is None:
            continue
        x, y = px(c["value"]), py(r["value"])
        bars = []
        if _real(c["low"]) is not None and _real(c["high"]) is not None:
            bars.append(f'<line x1="{px(c["low"]):.1f}" y1="{y:.1f}" x2="{px(c["high"]):.1f}" y2="{y:.1f}"/>')
        if _real(r["low"]) is not None and _real(r["high"]) is not None:
            bars.append(f'<line x1="{x:.1f}" y1="{py(r["low"]):.1f}" x2="{x:.1f}" y2="{py(r["high"]):.1f}"/>')
        out.append(f'<a href="#{board.anchors[name]}" class="point"><title>{html.escape(name)}: clean {_pct(c)}, '
                   f'robust {_pct(r)}</title>{"".join(bars)}<circle cx="{x:.1f}" cy="{y:.1f}" r="4"/>'
                   f'<text x="{x + 7:.1f}" y="{y - 7:.1f}">{html.escape(name)}</text></a>')
    out.append("<style>text{font:12px sans-serif;fill:#222}.grid{stroke:#e4e4e4}.point line{stroke:#3465a4;"
               "stroke-width:1.5}.point circle{fill:#204a87}</style></svg>")
    return "\n".join(out)


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin-top:32px}h3{font-size:15px;margin:20px 0 6px}
dl.protocol{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0}
dl.protocol dt{color:#555}dl.protocol dd{margin:0}
#lead{font-weight:600}
table{border-collapse:collapse}
#board{font-size:13px}
#board th,#board td{border-bottom:1px solid #ddd;padding:5px 7px;text-align:left;white-space:nowrap}
#board th{cursor:pointer;user-select:none;background:#f4f4f4;white-space:normal;vertical-align:bottom}
#board th[aria-sort=ascending]::after{content:" ▲"}#board th[aria-sort=descending]::after{content:" ▼"}
#board td.num{text-align:right;font-variant-numeric:tabular-nums}
#board tbody tr:hover{background:#f8f8ff}
table.card td{padding:2px 10px;vertical-align:top}table.card td:first-child{color:#555;white-space:nowrap}
table.card th{text-align:left;padding:8px 10px 2px;font-size:13px}
article.card{border-top:1px solid #ddd}article.card:target{background:#fffbe6}
td.wrap{word-break:break-all}
"""

JS = """
(function () {
  var table = document.getElementById("board"), body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function sortBy(head, dir) {
    var i = heads.indexOf(head), numeric = head.dataset.numeric === "1";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[i].dataset.sort, y = b.cells[i].dataset.sort, c;
      if (x === "" || y === "") {
        c = (x === "") - (y === "");
      } else {
        c = numeric ? parseFloat(x) - parseFloat(y) : (x < y ? -1 : x > y ? 1 : 0);
        if (dir === "desc") c = -c;
      }
      return c || a.dataset.order - b.dataset.order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
    head.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
  }
  heads.forEach(function (head) {
    head.addEventListener("click", function () {
      var now = head.getAttribute("aria-sort");
      sortBy(head, now === "descending" ? "asc" : now === "ascending" ? "desc" : head.dataset.first);
    });
  });
  var query = new URLSearchParams(window.location.search), key = query.get("sort");
  var chosen = heads.filter(function (h) { return h.dataset.key === key; })[0];
  if (chosen) sortBy(chosen, query.get("dir") === "asc" || query.get("dir") === "desc" ? query.get("dir")
                                                                                      : chosen.dataset.first);
})();
"""


def render_html(board: Board) -> str:
    """The self-contained HTML page (see the module docstring)."""
    esc = html.escape
    tm = board.threat_model
    default = {"robust_accuracy": ' aria-sort="descending"'}
    head = "".join(f'<th data-key="{c.key}" data-numeric="{int(c.numeric)}" data-first="{c.first}"'
                   f'{default.get(c.key, "")}>{esc(c.title)}</th>' for c in COLUMNS)
    rows = []
    for order, (entry, rank) in enumerate(zip(board.entries, board.ranks)):
        row = cells(entry, rank)
        tds = []
        for column in COLUMNS:
            cell = row[column.key]
            shown = (f'<a href="#{board.anchors[entry["model"]["name"]]}">{esc(cell.text)}</a>'
                     if column.key == "name" else esc(cell.text))
            if cell.note:
                shown += f"<br><small>{esc(cell.note)}</small>"
            align = ' class="num"' if column.numeric else ""
            tds.append(f'<td{align} data-sort="{esc(_sort_attr(cell.sort))}">{shown}</td>')
        rows.append(f'<tr data-order="{order}">{"".join(tds)}</tr>')
    cards = []
    for entry in board.entries:
        name = entry["model"]["name"]
        body = "".join(f'<tr><th colspan="2">{esc(section)}</th></tr>' + "".join(
            f'<tr><td>{esc(label)}</td><td class="wrap">{esc(text)}</td></tr>' for label, text in fields)
            for section, fields in card_sections(entry))
        cards.append(f'<article class="card" id="{board.anchors[name]}"><h3>{esc(name)}</h3>'
                     f'<table class="card">{body}</table></article>')
    protocol = "".join(f"<dt>{esc(label)}</dt><dd>{esc(text)}</dd>" for label, text in protocol_rows(board))
    title = f"advaudio leaderboard: {tm['name']} (version {tm['version']})"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f'<header><h1>{esc(title)}</h1><dl class="protocol">{protocol}</dl>',
        f'<p id="lead">{esc(lead_sentence(board))}</p></header>',
        f"<p>{len(board.entries)} models, ranked by robust accuracy (the per-clip worst case over the attacks at the "
        "budget); 95 % intervals over the clips in brackets (— where a number is undetermined or not finite). "
        "Click a column header to sort by it; a model's name opens its card.</p>",
        f'<table id="board"><thead><tr>{head}</tr></thead><tbody>',
        *rows,
        "</tbody></table>",
        f"<h2>Robust vs clean accuracy</h2><figure>{scatter_svg(board)}</figure>",
        '<h2>Model cards</h2><section id="cards">',
        *cards,
        "</section>",
        f"<script>{JS}</script>",
        "</body></html>",
        "",
    ])


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def md_escape(text: str) -> str:
    """``text`` as literal GitHub-flavoured Markdown inside a table cell or paragraph: the characters that start
    emphasis, links, code, HTML or entities, and the cell separator, backslash-escaped; line breaks as spaces."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))


def _md_cell(cell: Cell, numeric: bool) -> str:
    """A table cell in Markdown: a number's text as it is (brackets of an interval are no link), entry text
    escaped."""
    text = cell.text if numeric else md_escape(cell.text)
    return f"{text} {md_escape(cell.note)}" if cell.note else text


def render_markdown(board: Board, scatter: str | None = "scatter.svg") -> str:
    """The GitHub-flavoured Markdown page: header, table (the HTML page's default order), the scatter (if
    ``scatter`` names its file) and the model cards."""
    tm = board.threat_model
    lines = [f"# advaudio leaderboard: {tm['name']} (version {tm['version']})", ""]
    lines += [f"- **{label}**: {md_escape(text)}" for label, text in protocol_rows(board)]
    lines += ["", f"**{md_escape(lead_sentence(board))}**", "",
              "| " + " | ".join(md_escape(c.title) for c in COLUMNS) + " |",
              "|" + "|".join("---:" if c.numeric else "---" for c in COLUMNS) + "|"]
    for entry, rank in zip(board.entries, board.ranks):
        row = cells(entry, rank)
        texts = [f"[{md_escape(row[c.key].text)}](#{board.anchors[entry['model']['name']]})" if c.key == "name"
                 else _md_cell(row[c.key], c.numeric) for c in COLUMNS]
        lines.append("| " + " | ".join(texts) + " |")
    if scatter is not None:
        lines += ["", f"![Robust vs clean accuracy with 95 % intervals]({scatter})"]
    lines += ["", "## Model cards"]
    for entry in board.entries:
        name = entry["model"]["name"]
        lines += ["", f'<a id="{board.anchors[name]}"></a>', "", f"### {md_escape(name)}"]
        for section, fields in card_sections(entry):
            lines += ["", f"**{section}**", ""]
            lines += [f"- {md_escape(label)}: {md_escape(text)}" for label, text in fields]
    return "\n".join(lines) + "\n"


def write_pages(board: Board, out: Path) -> list[Path]:
    """Write ``index.html``, ``leaderboard.md`` and ``scatter.svg`` into ``out``, each whole or not at all (all are
    rendered before the first is written).

    Raises:
        OutputError: the folder or a file cannot be written.
    """
    pages = {"index.html": render_html(board), "leaderboard.md": render_markdown(board),
             "scatter.svg": scatter_svg(board) + "\n"}
    return [atomic_write(out / name, lambda f, text=text: f.write(text.encode("utf-8")), f"leaderboard {name}")
            for name, text in pages.items()]
