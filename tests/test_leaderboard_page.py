"""The leaderboard page (issue 21 item 3): entries built by hand against ``leaderboard/entry.schema.json`` render as a
ranked, escaped HTML table whose rows link to their cards, the same table in Markdown, the lead-overlap sentence for
both cases, one-line refusals; headless Chromium renders and sorts the table (screenshot under ``test-artifacts/``)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest

from conftest import needs
from defense.cli import main
from leaderboard.entry import SCHEMA_PATH
from leaderboard.page import Board, lead_sentence, render_html, render_markdown, scatter_svg
from leaderboard.threat_model import load_threat_model

TM = "fsdd_wave_linf"
HASH = load_threat_model(TM).config_hash
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def interval(value: float | None, low: float | None, high: float | None, **extra: str) -> dict:
    return {"value": value, "low": low, "high": high, **extra}


def entry(name: str, clean: tuple[float, float, float], robust: tuple[float, float, float], *,
          eps_r: tuple[float, float, float] | None = None, certified: tuple[float, float, float] | None = None,
          parameters: int = 1000, objective: str = "none", threat_model: str = TM, config_hash: str = HASH,
          budget: float = 0.002) -> dict:
    """An entry as ``advaudio benchmark`` writes it, checked against the schema."""
    doc = {
        "schema_version": 1,
        "threat_model": {"name": threat_model, "version": 1, "config_hash": config_hash},
        "model": {"name": name, "source": "advaudio", "checkpoint": f"outputs/checkpoints/{objective}.victim.pt",
                  "checkpoint_sha256": "ab" * 32},
        "card": {"architecture": "resnet18", "representation": "stft_db_128", "objective": objective,
                 "objective_settings": {"eps": 0.5, "steps": 7} if objective != "none" else {},
                 "data": {"dataset": "fsdd", "classes": [str(d) for d in range(10)], "sample_rate": 8000},
                 "parameters": parameters, "training_time_s": 61.4, "code_version": "e315364",
                 "config_hash": "fedcba987654", "smoothing_sigma": None},
        "metrics": {"clean_accuracy": interval(*clean), "robust_accuracy": interval(*robust),
                    "eps_star_median": interval(0.0031, 0.0025, 0.0042),
                    "eps_r": None if eps_r is None else interval(*eps_r, reference="original"),
                    "certified_accuracy": None if certified is None else interval(*certified)},
        "evaluation": {"domain": "waveform", "norm": "linf", "budget": budget, "budget_snr_db": 31.5,
                       "attacks": ["apgd_ce_linf", "fmn_linf"], "per_attack_robust_accuracy": {"apgd_ce_linf": 0.5},
                       "n_clips": 50, "seed": 0, "wall_time_s": 12.0, "mlflow_run_id": None},
        "created": "2026-12-04T00:00:00Z",
    }
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))
    return doc


def four() -> dict[str, dict]:
    """Robust accuracy 0.62 > 0.40 = 0.40 > 0.10 (ranks 1, 2, 2, 4; the tie goes to the higher clean accuracy)."""
    entries = {
        "a.json": entry("original", (0.94, 0.90, 0.97), (0.10, 0.05, 0.17), parameters=11_172_042),
        "b.json": entry("<b>x</b> | pgd", (0.81, 0.75, 0.86), (0.62, 0.55, 0.69), objective="pgd_at",
                        eps_r=(2.5, 2.1, 2.9)),
        "c.json": entry("trades", (0.85, 0.80, 0.90), (0.40, 0.33, 0.47), objective="trades"),
        "d.json": entry("smoothed", (0.70, 0.63, 0.77), (0.40, 0.32, 0.48), objective="smooth_wave",
                        certified=(0.3, 0.22, 0.38)),
    }
    entries["c.json"]["evaluation"]["eps_star_per_clip"] = {"labels": [0, 1, 2], "eps_star": [0.003, "inf", None]}
    jsonschema.validate(entries["c.json"], json.loads(SCHEMA_PATH.read_text()))
    return entries


class Page(HTMLParser):
    """The board's body rows (cell texts and data-sort values) and each row's link, the text of every ``h3`` by
    the id of the element around it, and every in-page link."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str]]] = []
        self.row_links: list[str] = []
        self.ids: set[str] = set()
        self.headings: dict[str, str] = {}
        self._last_id = ""
        self._heading: list[str] | None = None
        self.links: list[str] = []
        self._in_board = self._in_body = False
        self._cell: list[str] | None = None
        self._sort = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
            self._last_id = a["id"]
        if tag == "a" and (a.get("href") or "").startswith("#"):
            self.links.append(a["href"][1:])
            if self._cell is not None:
                self.row_links.append(a["href"][1:])
        if tag == "h3":
            self._heading = []
        self._in_board |= tag == "table" and a.get("id") == "board"
        if self._in_board:
            self._in_body |= tag == "tbody"
            if self._in_body and tag == "tr":
                self.rows.append([])
            elif self._in_body and tag == "td":
                self._cell, self._sort = [], a.get("data-sort") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append(("".join(self._cell), self._sort))
            self._cell = None
        elif tag == "table" and self._in_board:
            self._in_board = self._in_body = False
        elif tag == "h3" and self._heading is not None:
            self.headings[self._last_id] = "".join(self._heading)
            self._heading = None

    def handle_data(self, data: str) -> None:
        for text in (self._cell, self._heading):
            if text is not None:
                text.append(data)


def md_table(text: str) -> list[list[str]]:
    """The Markdown table's body rows, cells split at unescaped pipes and unescaped (GFM)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")][1:]
    return [[re.sub(r"\\(.)", r"\1", cell.strip()) for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


@pytest.mark.timeout(30)
def test_html_table_is_ranked_escaped_and_links_to_every_card() -> None:
    board = Board.of(four())
    page = Page(render_html(board))
    names = ["<b>x</b> | pgd", "trades", "smoothed", "original"]
    assert [row[1][0] for row in page.rows] == names
    assert [row[0][0] for row in page.rows] == ["1", "2", "2", "4"]
    assert page.rows[0][5:] == [("81.0 [75.0, 86.0] %", "0.81"), ("62.0 [55.0, 69.0] %", "0.62"),
                                ("0.0031 [0.0025, 0.0042]", "0.0031"), ("2.5 [2.1, 2.9]vs original", "2.5"),
                                ("—", ""), ("1,000", "1000")]
    assert page.rows[2][9] == ("30.0 [22.0, 38.0] %", "0.3")
    assert page.rows[3][10] == ("11,172,042", "11172042")
    text = render_html(board)
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt; | pgd" in text
    assert [page.headings[link] for link in page.row_links] == names  # each row opens its own card
    assert sorted(page.links) == sorted(page.row_links * 2)  # and each scatter point opens the same card
    card = text.split('id="card-trades"')[1].split("</article>")[0]
    for shown in ("ab" * 32, "outputs/checkpoints/trades.victim.pt", "eps=0.5, steps=7", "8000 Hz", "e315364",
                  "10: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9", "fedcba987654", "61 s", "85.0 [80.0, 90.0] %",
                  'robust accuracy under apgd_ce_linf</td><td class="wrap">50.0 %', "2026-12-04T00:00:00Z",
                  f"fsdd_wave_linf v1 ({HASH})", "per-clip ε*</td><td class=\"wrap\">stored for 3 clips"):
        assert shown in card, shown
    assert "src=" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "fsdd_wave_linf (version 1)" in text and HASH in text and "L∞ ≤ 0.002 (median SNR 31.5 dB" in text


@pytest.mark.timeout(30)
def test_markdown_table_has_the_same_rows_and_numbers() -> None:
    board = Board.of(four())
    text = render_markdown(board)
    rows = md_table(text)
    assert [row[1] for row in rows] == ["[<b>x</b> | pgd](#card-b-x-b-pgd)", "[trades](#card-trades)",
                                        "[smoothed](#card-smoothed)", "[original](#card-original)"]
    assert rows[0] == ["1", "[<b>x</b> | pgd](#card-b-x-b-pgd)", "resnet18", "stft_db_128", "pgd_at",
                       "81.0 [75.0, 86.0] %", "62.0 [55.0, 69.0] %", "0.0031 [0.0025, 0.0042]",
                       "2.5 [2.1, 2.9] vs original", "—", "1,000"]
    assert [row[0] for row in rows] == ["1", "2", "2", "4"] and rows[3][-1] == "11,172,042"
    assert r"\<b\>x\</b\> \| pgd" in text and "<b>x</b>" not in text
    assert "| 62.0 [55.0, 69.0] % |" in text  # numbers as they are: an interval's brackets are no link
    for anchor in ("card-b-x-b-pgd", "card-trades", "card-smoothed", "card-original"):
        assert f'<a id="{anchor}"></a>' in text
    assert "| Rank | Model |" in text and "![Robust vs clean accuracy with 95 % intervals](scatter.svg)" in text


@pytest.mark.timeout(30)
def test_scatter_places_each_point_and_its_two_interval_bars() -> None:
    svg = scatter_svg(Board.of(four()))
    # axes: clean 60-100 % over x 70..550, robust 0-70 % over y 400..20 (plot 480 x 380 pixels)
    point = svg.split('<a href="#card-original" class="point">')[1].split("</a>")[0]
    assert '<line x1="430.0" y1="345.7" x2="514.0" y2="345.7"/>' in point  # clean 90-97 % at robust 10 %
    assert '<line x1="478.0" y1="372.9" x2="478.0" y2="307.7"/>' in point  # robust 5-17 % at clean 94 %
    assert '<circle cx="478.0" cy="345.7" r="4"/>' in point and ">original</text>" in point
    assert svg.count('class="point"') == 4 and "&lt;b&gt;x&lt;/b&gt; | pgd</text>" in svg


@pytest.mark.timeout(30)
def test_lead_sentence_says_whether_the_intervals_overlap() -> None:
    apart = Board.of(four())  # 0.62 [0.55, 0.69] against 0.40 [0.33, 0.47]
    assert lead_sentence(apart).endswith(": the lead is outside the intervals.")
    close = four()
    close["c.json"] = entry("trades", (0.85, 0.80, 0.90), (0.56, 0.49, 0.63))  # 0.55 <= 0.63
    assert lead_sentence(Board.of(close)).endswith("the intervals overlap, so the lead is not outside the intervals.")
    assert lead_sentence(Board.of({"a.json": close["a.json"]})).endswith("no runner-up to compare with.")


@pytest.mark.timeout(30)
def test_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["leaderboard", "--help"])
    assert done.value.code == 0 and "usage: advaudio leaderboard" in capsys.readouterr().out


@pytest.mark.timeout(30)
def test_null_numbers_show_as_dashes_and_sort_last() -> None:
    entries = four()
    unbroken = entries["c.json"]  # trades: eps* beyond the search range on most clips, robust interval undetermined
    unbroken["metrics"]["eps_star_median"] = interval(None, 0.004, None)
    unbroken["metrics"]["robust_accuracy"] = interval(0.7, None, None)
    jsonschema.validate(unbroken, json.loads(SCHEMA_PATH.read_text()))
    board = Board.of(entries)
    rows = Page(render_html(board)).rows
    assert rows[0][1][0] == "trades" and rows[0][6] == ("70.0 [—, —] %", "0.7")
    assert rows[0][7] == ("— [0.004, —]", "")  # no sort value: last whichever way the column is sorted
    assert lead_sentence(board).endswith("an interval is undetermined, so whether the lead is outside the intervals "
                                         "is not known.")
    point = scatter_svg(board).split('<a href="#card-trades" class="point">')[1].split("</a>")[0]
    assert point.count("<line") == 1  # the clean accuracy's bar only


def write_entries(folder: Path, entries: dict[str, dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, doc in entries.items():
        (folder / name).write_text(json.dumps(doc))
    return folder


@pytest.mark.timeout(60)
def test_cli_writes_the_pages_and_prints_their_paths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_entries(tmp_path / "leaderboard" / TM, four())
    assert main(["leaderboard", TM, "--outputs", str(tmp_path), "--out", str(tmp_path / "site")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "site" / n) for n in ("index.html", "leaderboard.md", "scatter.svg")]
    assert Page(Path(printed[0]).read_text()).rows[0][1][0] == "<b>x</b> | pgd"
    assert md_table(Path(printed[1]).read_text())[3][1] == "[original](#card-original)"
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == ["index.html", "leaderboard.md", "scatter.svg"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case, message", [
    ("empty", "no leaderboard entries (*.json) in "),
    ("other threat model", f"entries of different threat models in one page: a.json is fsdd_wave_linf v1 ({HASH}), "
                           f"b.json is fsdd_wave_l2 v1 ({HASH})"),
    ("other hash", f"entries of different threat models in one page: a.json is fsdd_wave_linf v1 ({HASH}), "
                   "b.json is fsdd_wave_linf v1 (ffffffffffff)"),
    ("stale hash", f"with config hash ffffffffffff, but its current hash is {HASH}"),
    ("other budget", "with different protocols: a.json has budget 0.002, b.json 0.004"),
    ("same name", "two entries with the model name 'original': a.json and b.json"),
    ("malformed", "b.json violates entry.schema.json, field 'metrics.robust_accuracy': 'low' is a required property"),
    ("other name", "are of threat model 'fsdd_wave_l2', not 'fsdd_wave_linf'"),
])
def test_refusals_are_one_line_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture, case: str,
                                                message: str) -> None:
    first = entry("original", (0.9, 0.8, 0.95), (0.1, 0.05, 0.2))
    second = {"empty": None,
              "other threat model": entry("pgd", (0.8, 0.7, 0.9), (0.5, 0.4, 0.6), threat_model="fsdd_wave_l2"),
              "other hash": entry("pgd", (0.8, 0.7, 0.9), (0.5, 0.4, 0.6), config_hash="f" * 12),
              "stale hash": entry("pgd", (0.8, 0.7, 0.9), (0.5, 0.4, 0.6), config_hash="f" * 12),
              "other budget": entry("pgd", (0.8, 0.7, 0.9), (0.5, 0.4, 0.6), budget=0.004),
              "same name": entry("original", (0.8, 0.7, 0.9), (0.5, 0.4, 0.6)),
              "malformed": entry("pgd", (0.8, 0.7, 0.9), (0.5, 0.4, 0.6)),
              "other name": None}[case]
    entries = {} if case == "empty" else {"a.json": first}
    if case in ("other name", "stale hash"):
        entries = {"a.json": entry("original", (0.9, 0.8, 0.95), (0.1, 0.05, 0.2), **(
            {"threat_model": "fsdd_wave_l2"} if case == "other name" else {"config_hash": "f" * 12}))}
    if second is not None:
        if case == "malformed":
            del second["metrics"]["robust_accuracy"]["low"]
        entries["b.json"] = second
    folder = write_entries(tmp_path / "entries", entries)
    assert main(["leaderboard", TM, "--entries", str(folder), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("advaudio leaderboard: error: ") and message in err, err
    assert not (tmp_path / "site").exists()


def chromium(url: str, *extra: str) -> str:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--window-size=1400,1000", "--virtual-time-budget=5000", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90).stdout


@pytest.mark.timeout(240)
@needs("Debian's chromium (.ci/run installs it)", CHROMIUM is not None)
def test_chromium_renders_and_sorts_the_table(tmp_path: Path) -> None:
    page = render_html(Board.of(four()))
    index = tmp_path / "index.html"
    index.write_text(page)
    url = index.as_uri()
    shown = Page(chromium(url, "--dump-dom"))
    assert [row[1][0] for row in shown.rows] == ["<b>x</b> | pgd", "trades", "smoothed", "original"]
    by_clean = Page(chromium(url + "?sort=clean_accuracy", "--dump-dom"))  # first click: best first
    assert [row[1][0] for row in by_clean.rows] == ["original", "trades", "<b>x</b> | pgd", "smoothed"]
    by_name = Page(chromium(url + "?sort=name&dir=desc", "--dump-dom"))
    assert [row[1][0] for row in by_name.rows] == ["trades", "smoothed", "original", "<b>x</b> | pgd"]
    by_certified = Page(chromium(url + "?sort=certified_accuracy&dir=asc", "--dump-dom"))  # '—' last either way
    assert [row[1][0] for row in by_certified.rows] == ["smoothed", "<b>x</b> | pgd", "trades", "original"]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "leaderboard_page.png"
    shot.unlink(missing_ok=True)
    chromium(url, f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
