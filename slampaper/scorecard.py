"""The scorecard: every number the paper quotes beside ours, and whether its claims hold here.

The claims are data: ``data/paper/claims.csv`` has one row per quoted number or claim, with its
section, the record our chapter keeps for it, the paper's value (a number or a key of
``data/paper/constants.yml``) and the criterion of its verdict (:mod:`slampaper.paper`).
:func:`build_scorecard` reads those rows and the recorded results of the chapters
(``<results_dir>/<notebook>.json`` and the tables they saved under ``tables/``) — it re-runs
nothing — and returns one row per quoted number or qualitative claim:

* numbers the paper quotes (abstract, Sections 3, 4, 5.3 and 6, Table 1, the appendix): the paper's
  value, ours, their ratio, and ``holds``: whether ours is within the row's tolerance of the paper's
  (e.g. "within a factor 1.5"), judged on mock data as on real data;
* qualitative claims (SLAM's CV MSE below The Cannon's at most pixels; CV scatter falls with S/N;
  formal errors below the CV scatter; the CODs put Teff on the Balmer lines and log g on the Mg b
  wings; biases at most a quarter of the scatters): ours is the number the claim is judged on
  and ``holds`` says whether it holds here (True/False).

Every row names its data source (records carry ``data_source``; ``mock`` says whether it is mock
data). A missing results file, record, table or column makes its row ``status = "missing"`` with a
note, never an exception. Records with a paper value that no row below covers are appended, so a
chapter that records a new quoted number shows up without changing this module.
"""

from __future__ import annotations

import fnmatch
import html
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slampaper.paper import load_claims, paper_value

__all__ = ["SCORECARD_COLUMNS", "build_scorecard", "discussion_markdown", "scorecard_for_writing",
           "scorecard_html", "scorecard_summary"]

#: Columns of the scorecard table.
SCORECARD_COLUMNS = ["quantity", "claim", "section", "paper", "ours", "unit", "ratio", "holds", "criterion",
                     "data_source", "mock", "status", "source", "note"]
#: Notebooks the scorecard does not read claims from (its own results and the sweeps chapter).
IGNORED_NOTEBOOKS = ("scorecard", "sweeps")
#: Section of the paper each chapter rebuilds, for records appended without a row of their own.
NOTEBOOK_SECTIONS = {"figure1_flux_vs_teff": "§1 (Fig. 1)", "lasp_test": "§3", "apogee_kgiants": "§4", "cost": "§5.3",
                     "cod": "§6", "appendix_hyperparameters": "App. A"}

LASP_LABELS = ("teff", "logg", "feh")
APOGEE_LABELS = ("teff", "logg", "m_h", "alpha_m", "c_m", "n_m")
LABEL_NAMES = {"teff": "Teff", "logg": "log g", "feh": "[Fe/H]", "m_h": "[M/H]", "alpha_m": "[α/M]", "c_m": "[C/M]",
               "n_m": "[N/M]"}
UNITS = {"teff": "K"}
NUMBER_CLAIM = "number quoted by the paper"
FUNNEL_CLAIM = "fractions kept per funnel step, from the paper's counts"
WINDOW_NAMES = {"balmer": "Balmer lines", "mgb_wings": "Mg b wings", "metal_lines": "Fe I λ5709 and λ5782 lines"}


# ------------------------------------------------------------------------------------------ reading


class _Results:
    """The result files of one directory, read leniently."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.files: dict[str, dict[str, Any]] = {}
        self.problems: dict[str, str] = {}
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []:
            try:
                content = json.loads(path.read_text())
                if not isinstance(content, dict) or not isinstance(content.get("records", {}), dict):
                    raise ValueError("not a results file")
                self.files[path.stem] = content
            except (OSError, ValueError) as error:
                self.problems[path.stem] = f"{path.name} unreadable ({error})"

    def data_source(self, notebook: str) -> str:
        return str(self.files.get(notebook, {}).get("data_source") or "")

    def record(self, notebook: str, key: str) -> tuple[dict[str, Any] | None, str]:
        """(record, note); the record is None with a note saying why when it is not usable."""
        if notebook not in self.files:
            return None, self.problems.get(notebook, f"no {notebook}.json in {self.directory} (chapter not run)")
        record = self.files[notebook].get("records", {}).get(key)
        if not isinstance(record, dict):
            return None, f"{notebook}.json has no record {key!r}"
        if not isinstance(record.get("value"), (int, float)) or isinstance(record.get("value"), bool):
            return None, f"{notebook}.json: {key} is {record.get('value')!r} (not a finite number)"
        return record, ""

    def keys(self, notebook: str, pattern: str) -> list[str]:
        return [key for key in self.files.get(notebook, {}).get("records", {}) if fnmatch.fnmatchcase(key, pattern)]

    def table(self, notebook: str, name: str):
        """(astropy Table or None, note, relative path)."""
        from astropy.table import Table

        content = self.files.get(notebook)
        relative = f"tables/{notebook}-{name}.ecsv"
        if content is None:
            return None, self.problems.get(notebook, f"no {notebook}.json in {self.directory} (chapter not run)"), relative
        paths = (content.get("tables", {}).get(name) or {}).get("paths") or [relative]
        path = next((p for p in paths if p.endswith(".ecsv")), paths[0])
        try:
            return Table.read(self.directory / path), "", path
        except (OSError, ValueError) as error:
            return None, f"table {path} unreadable or missing ({type(error).__name__})", path


# -------------------------------------------------------------------------------------------- rows


@dataclass
class _Row:
    quantity: str
    claim: str
    section: str
    paper: float = math.nan
    ours: float = math.nan
    unit: str = ""
    holds: bool | None = None
    criterion: str = ""
    data_source: str = ""
    status: str = "ok"
    source: str = ""
    note: str = ""

    def as_tuple(self) -> tuple:
        ratio = self.ours / self.paper if math.isfinite(self.ours) and math.isfinite(self.paper) and self.paper != 0 else math.nan
        mock = "mock" in self.data_source.lower()
        return (self.quantity, self.claim, self.section, self.paper, self.ours, self.unit, ratio, self.holds,
                self.criterion, self.data_source, mock, self.status, self.source, self.note)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _missing(row: _Row, note: str) -> _Row:
    row.status, row.note, row.holds, row.ours = "missing", note, None, math.nan
    return row


#: The tolerance of a quoted number whose claims row states none.
DEFAULT_NUMBER_CRITERION = "within a factor 1.5"


def _number_test(criterion: str) -> Callable[[float, float], bool]:
    """The test of a quoted number: ``"within a factor F"`` (1/F <= ours/paper <= F, same sign),
    ``"within ± X"`` (|ours - paper| <= X) or ``"equal"``."""
    factor = re.fullmatch(r"\s*within a factor ([0-9.]+)\s*", criterion)
    if factor:
        bound = float(factor.group(1))
        return lambda ours, paper: paper != 0 and 1.0 / bound <= ours / paper <= bound
    absolute = re.fullmatch(r"\s*within ±\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*\S*\s*", criterion)
    if absolute:
        bound = float(absolute.group(1))
        return lambda ours, paper: abs(ours - paper) <= bound
    if criterion.strip() == "equal":
        return lambda ours, paper: ours == paper
    raise ValueError(f"data/paper/claims.csv: cannot read the tolerance {criterion!r} of a quoted number "
                     "(want 'within a factor 1.5', 'within ± 0.03' or 'equal').")


def _judge_number(row: _Row) -> _Row:
    """Set ``holds`` of a quoted number from its tolerance (None without a paper value)."""
    if not math.isfinite(row.paper):
        row.criterion, row.holds = "no paper value to compare with", None
    elif math.isfinite(row.ours):
        row.holds = bool(_number_test(row.criterion)(row.ours, row.paper))
    return row


def _value_row(results: _Results, used: set, notebook: str, key: str, *, quantity: str, section: str,
               paper: float | None = None, unit: str = "", claim: str = "",
               criterion: str = DEFAULT_NUMBER_CRITERION) -> _Row:
    """A number the paper quotes: ours, the paper's (the record's, else ``paper``), and whether
    ours is within the tolerance ``criterion`` of it."""
    used.add((notebook, key))
    row = _Row(quantity, claim or NUMBER_CLAIM, section, paper=_float(paper), unit=unit,
               data_source=results.data_source(notebook), source=f"{notebook}.json: {key}",
               criterion=criterion or DEFAULT_NUMBER_CRITERION)
    record, note = results.record(notebook, key)
    if record is None:
        return _missing(row, note)
    row.ours = float(record["value"])
    if record.get("paper") is not None:
        row.paper = _float(record["paper"])
    row.unit = record.get("unit") or unit
    return _judge_number(row)


def _claim_row(results: _Results, used: set, notebook: str, keys: list[str], *, quantity: str, claim: str,
               section: str, combine: Callable[..., float], test: Callable[[float], bool], criterion: str,
               unit: str = "", paper: float | None = None) -> _Row:
    """A qualitative claim judged on a number computed from one or more records (``paper``: the
    paper's bound, when it states one)."""
    used.update((notebook, key) for key in keys)
    row = _Row(quantity, claim, section, paper=_float(paper), unit=unit, criterion=criterion,
               data_source=results.data_source(notebook),
               source=f"{notebook}.json: " + ", ".join(keys))
    values = []
    for key in keys:
        record, note = results.record(notebook, key)
        if record is None:
            return _missing(row, note)
        values.append(float(record["value"]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ours = float(combine(*values))
    if not math.isfinite(ours):
        return _missing(row, f"cannot compute {criterion!r} from {values}")
    row.ours, row.holds = ours, bool(test(ours))
    return row


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import rankdata

    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def _falls_with_snr(results: _Results, notebook: str, table_name: str, label: str, section: str) -> _Row:
    """CV scatter against S/N from a chapter's per-bin table."""
    name = LABEL_NAMES.get(label, label)
    row = _Row(f"CV scatter of {name}: lowest / highest S/N bin", "CV scatter falls with S/N", section,
               criterion="ratio > 1 and Spearman ρ(S/N, scatter) < 0",
               data_source=results.data_source(notebook), source=f"tables/{notebook}-{table_name}.ecsv: {label}_scatter")
    table, note, path = results.table(notebook, table_name)
    row.source = f"{path}: {label}_scatter"
    if table is None:
        return _missing(row, note)
    column = f"{label}_scatter"
    if column not in table.colnames or "snr_center" not in table.colnames:
        return _missing(row, f"{path} has no column {column!r} or 'snr_center'")
    snr = np.asarray(table["snr_center"], dtype=float)
    scatter = np.asarray(table[column], dtype=float)
    good = np.isfinite(snr) & np.isfinite(scatter)
    if good.sum() < 2:
        return _missing(row, f"{path}: fewer than two S/N bins with a {label} scatter")
    snr, scatter = snr[good], scatter[good]
    order = np.argsort(snr)
    snr, scatter = snr[order], scatter[order]
    rho = _spearman(snr, scatter)
    row.ours = float(scatter[0] / scatter[-1]) if scatter[-1] > 0 else math.nan
    row.holds = bool(row.ours > 1 and (not math.isfinite(rho) or rho < 0))
    row.note = f"{good.sum()} bins, S/N {snr[0]:g}–{snr[-1]:g}, Spearman ρ = {rho:.2f}"
    return row


def _largest_share(results: _Results, used: set, label: str, window: str, *, claim: str) -> _Row:
    """Whether ``label`` takes the largest COD share on ``window`` among the recorded labels."""
    key = f"cod_share.{label}.{window}"
    used.add(("cod", key))
    keys = results.keys("cod", f"cod_share.*.{window}")
    used.update(("cod", other) for other in keys)
    others = [other for other in keys if other != key]
    labels = [other.split(".")[1] for other in others]
    criterion = (f"share > 0.5, or larger than the recorded shares of {', '.join(labels)}" if labels
                 else "share > 0.5 (no other label's share recorded)")
    row = _Row(f"{LABEL_NAMES.get(label, label)}'s share of COD_full on the {WINDOW_NAMES.get(window, window)}", claim,
               "§6 (Fig. 10)",
               criterion=criterion, data_source=results.data_source("cod"), source=f"cod.json: {key}")
    record, note = results.record("cod", key)
    if record is None:
        return _missing(row, note)
    share = float(record["value"])
    other_values = [v for v in (results.record("cod", other)[0] for other in others) if v is not None]
    row.ours = share
    if share > 0.5:
        row.holds = True
    elif other_values:
        row.holds = bool(all(share > float(v["value"]) for v in other_values))
        if row.holds and not labels:
            row.note = "no other label's share recorded"
    else:
        row.holds = False
    return row


def _paper_counts(table) -> np.ndarray:
    """The funnel table's paper counts, -1 where the paper gives none (a masked value, or -1 in older tables)."""
    return np.ma.asarray(table["paper"], dtype=float).filled(-1.0)


def _funnel_rows(results: _Results, used: set, paper_funnel: dict[str, int]) -> list[_Row]:
    """The Section 4.2 funnel counts and, from the funnel table, the fraction each paper step keeps."""
    rows: list[_Row] = []
    section = "§4.2"
    source = results.data_source("apogee_kgiants")
    table, note, path = results.table("apogee_kgiants", "funnel")
    keys = [key for key in results.keys("apogee_kgiants", "funnel.*")
            if (results.record("apogee_kgiants", key)[0] or {}).get("paper") is not None]
    if table is not None and {"step", "n_kept", "paper"} <= set(table.colnames):
        ordered = [f"funnel.{step}" for step, paper in zip(table["step"], _paper_counts(table)) if paper >= 0]
        keys = [key for key in ordered if key in keys] + [key for key in keys if key not in ordered]
    if not keys:
        for step, count in paper_funnel.items():
            row = _Row(f"training-set funnel: {step}", NUMBER_CLAIM, section, paper=float(count),
                       data_source=source, source="apogee_kgiants.json: funnel.*")
            rows.append(_missing(row, note or "apogee_kgiants.json records no funnel count with a paper value"))
    for key in keys:
        rows.append(_value_row(results, used, "apogee_kgiants", key, quantity=f"training-set funnel: {key[7:]}",
                               section=section))
    used.update(("apogee_kgiants", key) for key in results.keys("apogee_kgiants", "funnel.*"))
    if table is None or not {"step", "n_kept", "paper"} <= set(table.colnames):
        return rows
    quoted = [(str(step), float(kept), float(paper)) for step, kept, paper in zip(table["step"], table["n_kept"], _paper_counts(table))
              if paper >= 0]
    for (previous, kept_before, paper_before), (step, kept, paper) in zip(quoted, quoted[1:]):
        row = _Row(f"fraction kept from '{previous}' to '{step}'", FUNNEL_CLAIM, section,
                   paper=paper / paper_before if paper_before > 0 else math.nan,
                   ours=kept / kept_before if kept_before > 0 else math.nan, data_source=source,
                   source=f"{path}: n_kept", criterion=DEFAULT_NUMBER_CRITERION)
        rows.append(_judge_number(row))
    return rows


_COMBINE: dict[str, Callable[..., float]] = {
    "value": lambda first: first,
    "ratio": lambda first, second: first / second,
    "abs_ratio": lambda first, second: abs(first) / second,
    "reciprocal": lambda first: 1.0 / first,
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda value, bound: value < bound, "<=": lambda value, bound: value <= bound,
    "≤": lambda value, bound: value <= bound, ">": lambda value, bound: value > bound,
    ">=": lambda value, bound: value >= bound, "≥": lambda value, bound: value >= bound,
}


def _criterion_test(criterion: str, paper: float | None = None) -> Callable[[float], bool]:
    """The test a criterion states: ``"ratio < 1"``, ``"fraction > 0.5"``, ``"< 60 s"``, a bound
    ``"< paper"`` (the paper's value of the row), or a range ``"in [0, 4]"``."""
    interval = re.search(r"in \[\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\]", criterion)
    if interval:
        low, high = float(interval.group(1)), float(interval.group(2))
        return lambda value: low <= value <= high
    match = re.search(r"(<=|>=|≤|≥|<|>)\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?|paper\b)", criterion)
    if match is None:
        raise ValueError(f"data/paper/claims.csv: cannot read the criterion {criterion!r} (want e.g. 'ratio < 1', "
                         "'< paper' or 'in [0, 4]').")
    if match.group(2) == "paper":
        if paper is None or not math.isfinite(paper):
            raise ValueError(f"data/paper/claims.csv: the criterion {criterion!r} needs the row's paper value.")
        bound = float(paper)
    else:
        bound = float(match.group(2))
    compare = _COMPARE[match.group(1)]
    return lambda value: compare(value, bound)


def _paper_number(claim: dict[str, str]) -> float | None:
    """The claim's paper value: a number, a key of the constants, or None."""
    text = claim["paper"].strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return _float(paper_value(text))


def _claim_rows(results: _Results, used: set, claim: dict[str, str]) -> list[_Row]:
    """The scorecard rows of one line of ``data/paper/claims.csv``."""
    kind, notebook, keys = claim["kind"], claim["notebook"], claim["records"].split()
    paper = _paper_number(claim) if kind != "funnel" else None
    if kind == "number":
        row = _value_row(results, used, notebook, keys[0], quantity=claim["quantity"], section=claim["section"],
                         paper=paper, unit=claim["unit"], claim=claim["claim"], criterion=claim["criterion"])
        return [row]
    if kind == "claim":
        return [_claim_row(results, used, notebook, keys, quantity=claim["quantity"], claim=claim["claim"],
                           section=claim["section"], combine=_COMBINE[claim["combine"]],
                           test=_criterion_test(claim["criterion"], paper), criterion=claim["criterion"], unit=claim["unit"],
                           paper=paper)]
    if kind == "falls_with_snr":
        return [_falls_with_snr(results, notebook, claim["table"], claim["label"], claim["section"])]
    if kind == "largest_share":
        return [_largest_share(results, used, claim["label"], claim["window"], claim=claim["claim"])]
    return _funnel_rows(results, used, paper_value(claim["paper"]))


def _rows(results: _Results) -> list[_Row]:
    used: set = set()
    rows: list[_Row] = []
    for claim in load_claims():
        rows += _claim_rows(results, used, claim)
    # Any other record that carries a paper value.
    for notebook, content in results.files.items():
        if notebook in IGNORED_NOTEBOOKS:
            continue
        for key, record in content.get("records", {}).items():
            if (notebook, key) in used or not isinstance(record, dict) or record.get("paper") is None:
                continue
            rows.append(_value_row(results, used, notebook, key, quantity=record.get("description") or key,
                                   section=NOTEBOOK_SECTIONS.get(notebook, notebook)))
    return rows


def build_scorecard(results_dir: str | Path | None = None, *, extra_results_dirs: Iterable[str | Path] = ()):
    """The scorecard table from recorded results.

    Parameters
    ----------
    results_dir : path, optional
        Where the chapters recorded their results (default ``_build/results``).
    extra_results_dirs : paths, optional
        Further result directories (e.g. a run on real data); their rows are added for every
        claim whose chapter ran there.

    Returns
    -------
    astropy.table.Table
        Columns :data:`SCORECARD_COLUMNS`: ``quantity``, ``claim``, ``section``, ``paper``, ``ours``,
        ``unit``, ``ratio`` (ours / paper), ``holds`` (True, False or None: object column),
        ``criterion``, ``data_source``, ``mock``, ``status`` (``"ok"`` or ``"missing"``),
        ``source`` (the record or table), ``note``.
    """
    from astropy.table import Table

    from slampaper.paths import build_dir

    directory = build_dir() / "results" if results_dir in (None, "") else Path(results_dir)
    rows = [row.as_tuple() for row in _rows(_Results(directory))]
    for extra in extra_results_dirs:
        results = _Results(Path(extra))
        rows += [row.as_tuple() for row in _rows(results) if row.status == "ok"]
    columns = list(zip(*rows)) if rows else [[] for _ in SCORECARD_COLUMNS]
    table = Table()
    for name, values in zip(SCORECARD_COLUMNS, columns):
        if name == "holds":
            column = np.empty(len(values), dtype=object)
            column[:] = list(values)
            table[name] = column
        elif name in {"paper", "ours", "ratio"}:
            table[name] = np.asarray(values, dtype=float)
        elif name == "mock":
            table[name] = np.asarray(values, dtype=bool)
        else:
            table[name] = np.asarray(values, dtype=str)
    table.meta["results_dir"] = str(directory)
    return table


def scorecard_summary(table) -> dict[str, int]:
    """Counts: rows; verdicts that hold, that fail, and rows that cannot be judged (missing record,
    or no paper value); rows missing; rows on mock data."""
    holds = list(table["holds"])
    return {"rows": len(table), "missing": int(np.sum(np.asarray(table["status"]) == "missing")),
            "claims_judged": sum(value is not None for value in holds), "claims_holding": sum(value is True for value in holds),
            "claims_failing": sum(value is False for value in holds), "not_judged": sum(value is None for value in holds),
            "mock_rows": int(np.sum(np.asarray(table["mock"])))}


def scorecard_for_writing(table):
    """A copy whose ``holds`` column is text ("yes", "no", "") so it can be written as ECSV, CSV or FITS."""
    copy = table.copy()
    copy["holds"] = np.asarray(["" if value is None else "yes" if value else "no" for value in table["holds"]], dtype=str)
    return copy


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    if value == int(value) and abs(value) < 1e7:
        return f"{int(value):d}"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}"


def scorecard_html(table) -> str:
    """The scorecard as an HTML table for the book.

    Rows are grouped under their claim (with the criterion the verdict uses); mock data is
    highlighted; a missing row shows "missing" and why, in grey.
    """
    header = ["quantity", "§", "paper", "ours", "ours / paper", "holds", "data"]
    lines = ['<div style="overflow-x:auto"><table class="table" style="font-size:0.85em">',
             "<tr>" + "".join(f"<th>{html.escape(name)}</th>" for name in header) + "</tr>"]
    claims = [str(claim) for claim in table["claim"]]
    previous = None
    for index, row in enumerate(table):
        claim = claims[index]
        if claim != previous:
            group = [r for r, c in zip(table, claims) if c == claim]
            criteria = {str(r["criterion"]) for r in group if r["holds"] is not None or r["status"] == "missing"} - {""}
            judged = claim not in (NUMBER_CLAIM, FUNNEL_CLAIM)
            title = f"Claim: {html.escape(claim)}" if judged else html.escape(
                "Numbers the paper quotes" if claim == NUMBER_CLAIM else claim[0].upper() + claim[1:])
            if judged and len(criteria) == 1:
                title += f" <small>(holds if {html.escape(criteria.pop())})</small>"
            lines.append(f'<tr><th colspan="{len(header)}" style="background:#f0f3f6">{title}</th></tr>')
            previous = claim
        holds = row["holds"]
        verdict = "–" if holds is None else ('<span style="color:#1a7f37">✔</span>' if holds
                                              else '<span style="color:#cf222e">✘</span>')
        unit = str(row["unit"])
        quantity = html.escape(str(row["quantity"])) + (f" [{html.escape(unit)}]" if unit and unit != "1" else "")
        if row["note"]:
            quantity += f'<br><small style="color:#666">{html.escape(str(row["note"]))}</small>'
        source = html.escape(str(row["data_source"]) or "–")
        if row["mock"]:
            source = f'<span style="background:#fff3cd;padding:0 3px">{source}</span>'
        missing = row["status"] == "missing"
        ours = "<i>missing</i>" if missing else _number(float(row["ours"]))
        cells = [quantity, html.escape(str(row["section"])), _number(float(row["paper"])), ours,
                 _number(float(row["ratio"])), verdict, source]
        style = ' style="color:#888"' if missing else ""
        lines.append(f"<tr{style}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    lines.append("</table></div>")
    return "\n".join(lines)


def _verdict_sentence(row) -> str:
    unit = str(row["unit"])
    unit = f" {unit}" if unit and unit != "1" else ""
    ours, paper = _number(float(row["ours"])), _number(float(row["paper"]))
    beside = f" (paper: {paper}{unit})" if paper != "–" else ""
    return f"{row['quantity']}: {ours}{unit}{beside}, {row['criterion']}"


def discussion_markdown(notebook: str, results_dir: str | Path | None = None) -> str:
    """The closing discussion of a chapter, in words built from its recorded numbers.

    Every scorecard row of ``notebook`` is listed under what agrees with the paper, what does not and
    what cannot be judged, each with our number, the paper's and the criterion, and, for rows that
    fail on mock data, the reminder that the mock and the profile's sizes are not the paper's.

    Parameters
    ----------
    notebook : str
        The chapter (its records are ``<results_dir>/<notebook>.json``).
    results_dir : path, optional
        Default ``_build/results``.

    Returns
    -------
    str
        Markdown.
    """
    table = build_scorecard(results_dir)
    rows = [row for row in table if str(row["source"]).startswith(f"{notebook}.json") or
            str(row["source"]).startswith(f"tables/{notebook}-")]
    agree = [row for row in rows if row["holds"] is True]
    disagree = [row for row in rows if row["holds"] is False]
    unjudged = [row for row in rows if row["holds"] is None]
    lines = [f"Of the {len(rows)} numbers and claims of the paper this chapter rebuilds (the scorecard's rows), "
             f"{len(agree)} agree with the paper, {len(disagree)} do not and {len(unjudged)} cannot be judged here."]
    for title, group in (("Agrees with the paper", agree), ("Does not agree", disagree), ("Cannot be judged", unjudged)):
        if group:
            lines.append(f"\n**{title}.**\n")
            lines += [f"- {_verdict_sentence(row)}" + (f" — {row['note']}" if row["note"] else "") for row in group]
    if disagree and any(bool(row["mock"]) for row in disagree):
        lines.append("\nOn mock data a disagreement can come from the mock (its spectra and catalogue labels are "
                     "not LAMOST's) or from a profile smaller than the paper's (fewer stars, sparser grids); the "
                     "chapter's text above says which where it is known.")
    return "\n".join(lines)
