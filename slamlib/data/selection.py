"""The paper's sample selections as named criteria, with the count after each step.

A selection is a list of :class:`Criterion` applied one after another;
:func:`apply_criteria` returns a :class:`Selection`: the kept rows, the boolean mask,
and the *funnel*, the number of rows left after each criterion (a book prints it
like the paper's 86,552 -> 17,703 -> ...). NaN (missing) values fail every
criterion that reads them. Tables are those of :func:`slamlib.data.lamost_catalog`,
:func:`slamlib.data.apogee_catalog` and :func:`slamlib.data.crossmatch`.

* Section 3.2, LASP parameters (:func:`lasp_criteria`): 4000 < Teff < 8000 K,
  0.5 < log g < 5.5, -2.5 < [Fe/H] < 1.0, errors below 200 K, 0.1 dex and 0.1 dex;
  training set 120 < S/N_g < 140 (:func:`select_lasp_training`), test sets in the six
  S/N_g bins of :data:`LASP_TEST_SNR_BINS` (:func:`select_lasp_test`).
* Section 4.2, APOGEE-LAMOST common stars (:func:`apogee_common_criteria`): the paper's
  ten criteria, in its order, each a keyword you can change: S/N_APOGEE > 100,
  S/N_g > 40, ASPCAPFLAG = 0, 3000 < Teff < 5500 K, -1 < log g < 5, -4 < [M/H] < 2,
  -1 < [alpha/M] < 1, -0.4 < [C/Fe] < 1, -0.5 < [N/Fe] < 1 and
  |Teff_APOGEE - Teff_LAMOST| < 800 K. The paper cuts on [C/Fe] and [N/Fe] but trains on
  [C/M] and [N/M]; a table without ``c_fe``/``n_fe`` columns gets them from
  [X/M] + [M/H] - [Fe/H] when it has ``fe_h``, else as [X/M] (our reading: ASPCAP's [M/H]
  tracks [Fe/H]). The later cuts of the paper (at most 50 bad pixels, 4-sigma clipping
  after a leave-1/10-out run) need the spectra and a model and live elsewhere. The
  defaults equal ``data/paper/constants.yml`` (a test checks it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from astropy.table import Table

__all__ = [
    "APOGEE_LABEL_ERROR_LIMITS",
    "ASPCAPFLAG_STAR_BAD_BIT",
    "Criterion",
    "EXTRATARG_DUPLICATE_BIT",
    "FunnelStep",
    "LASP_TEST_SNR_BINS",
    "LASP_TRAINING_SNR_RANGE",
    "Selection",
    "above_criterion",
    "apogee_common_criteria",
    "apply_criteria",
    "below_criterion",
    "bit_unset_criterion",
    "finite_criterion",
    "lasp_criteria",
    "range_criterion",
    "select_apogee_common",
    "select_lasp_test",
    "select_lasp_training",
]

#: S/N_g range of the LASP training set (paper Section 3.2): 120 < S/N_g < 140.
LASP_TRAINING_SNR_RANGE: tuple[float, float] = (120.0, 140.0)

#: S/N_g bins of the LASP test sets (paper Section 3.2); a star is in a bin when low < S/N_g <= high.
LASP_TEST_SNR_BINS: tuple[tuple[float, float], ...] = (
    (5.0, 20.0), (20.0, 40.0), (40.0, 60.0), (60.0, 80.0), (80.0, 100.0), (100.0, 120.0),
)

#: ASPCAPFLAG bit STAR_BAD (REFERENCE.md Section 4); the paper keeps only ASPCAPFLAG = 0.
ASPCAPFLAG_STAR_BAD_BIT = 23

#: EXTRATARG bit set on every entry of a duplicated APOGEE_ID but the highest-S/N one (for a custom
#: :func:`bit_unset_criterion`; not one of the paper's ten).
EXTRATARG_DUPLICATE_BIT = 4

#: Upper limits (exclusive) on the APOGEE label errors, for a custom :func:`below_criterion`; the
#: paper's ten criteria do not cut on label errors.
APOGEE_LABEL_ERROR_LIMITS: dict[str, float] = {
    "teff_err": 200.0, "logg_err": 0.2, "m_h_err": 0.1, "alpha_m_err": 0.1, "c_m_err": 0.2, "n_m_err": 0.2,
}


@dataclass(frozen=True)
class Criterion:
    """One named selection criterion.

    Attributes
    ----------
    name : str
        Short identifier, e.g. ``"teff_range"``.
    description : str
        What it keeps, e.g. ``"4000 < teff < 8000"``.
    columns : tuple of str
        Columns it reads (checked before it runs).
    keep : callable
        ``keep(table)`` -> bool ndarray, shape (n_row,): True for rows that pass.
    """

    name: str
    description: str
    columns: tuple[str, ...]
    keep: Callable[[Table], np.ndarray]


@dataclass(frozen=True)
class FunnelStep:
    """Rows left after one step of a selection (the first step is the input)."""

    name: str
    description: str
    n_remaining: int


@dataclass(frozen=True)
class Selection:
    """The result of a selection.

    Attributes
    ----------
    table : astropy.table.Table, length n_selected
        The kept rows (a copy, with the input's ``meta``).
    mask : ndarray of bool, shape (n_input,)
        Which input rows were kept.
    funnel : tuple of FunnelStep
        ``("input", n_input)`` then the rows left after each criterion, in order.
    """

    table: Table
    mask: np.ndarray
    funnel: tuple[FunnelStep, ...]

    @property
    def counts(self) -> dict[str, int]:
        """Rows left after each step, by step name."""
        return {step.name: step.n_remaining for step in self.funnel}

    def funnel_table(self) -> Table:
        """The funnel as a table: ``step``, ``description``, ``n_remaining``, ``n_removed``."""
        remaining = np.array([step.n_remaining for step in self.funnel], dtype=int)
        removed = np.concatenate([[0], -np.diff(remaining)]).astype(int)
        return Table({
            "step": [step.name for step in self.funnel],
            "description": [step.description for step in self.funnel],
            "n_remaining": remaining,
            "n_removed": removed,
        })


def _floats(table: Table, name: str) -> np.ndarray:
    """Column as float64 with masked entries as NaN."""
    return np.asarray(np.ma.asarray(table[name]).astype(float).filled(np.nan), dtype=float)


def _flags(table: Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer flag column (masked entries as 0) and its validity mask."""
    column = np.ma.asarray(table[name])
    return np.asarray(column.filled(0), dtype=np.int64), ~np.ma.getmaskarray(column)


def range_criterion(name: str, column: str, low: float, high: float) -> Criterion:
    """Keep ``low < column < high`` (strict)."""
    return Criterion(name, f"{low:g} < {column} < {high:g}", (column,),
                     lambda t: (_floats(t, column) > low) & (_floats(t, column) < high))


def below_criterion(name: str, limits: Mapping[str, float]) -> Criterion:
    """Keep rows with every ``column < limit`` (strict)."""
    limits = dict(limits)
    description = ", ".join(f"{column} < {limit:g}" for column, limit in limits.items())

    def keep(table: Table) -> np.ndarray:
        result = np.ones(len(table), dtype=bool)
        for column, limit in limits.items():
            result &= _floats(table, column) < limit
        return result

    return Criterion(name, description, tuple(limits), keep)


def above_criterion(name: str, column: str, floor: float) -> Criterion:
    """Keep ``column > floor`` (strict)."""
    return Criterion(name, f"{column} > {floor:g}", (column,), lambda t: _floats(t, column) > floor)


def finite_criterion(name: str, columns: Sequence[str]) -> Criterion:
    """Keep rows whose ``columns`` are all finite and not the -9999 sentinel."""
    columns = tuple(columns)

    def keep(table: Table) -> np.ndarray:
        result = np.ones(len(table), dtype=bool)
        for column in columns:
            values = _floats(table, column)
            result &= np.isfinite(values) & (np.abs(values + 9999.0) >= 0.5)
        return result

    return Criterion(name, f"{', '.join(columns)} finite and not -9999", columns, keep)


def bit_unset_criterion(name: str, column: str, bit: int) -> Criterion:
    """Keep rows whose flag ``column`` has ``bit`` unset (a missing flag fails)."""

    def keep(table: Table) -> np.ndarray:
        flags, known = _flags(table, column)
        return known & ((flags & (1 << bit)) == 0)

    return Criterion(name, f"{column} bit {bit} not set", (column,), keep)


def apply_criteria(table: Table, criteria: Sequence[Criterion]) -> Selection:
    """Apply ``criteria`` in order and record the rows left after each.

    Parameters
    ----------
    table : astropy.table.Table, length n_input
        Input rows (not modified).
    criteria : sequence of Criterion
        Applied in order; names must be unique.

    Returns
    -------
    Selection

    Raises
    ------
    ValueError
        If a criterion needs a column the table lacks, or names repeat.
    """
    names = [criterion.name for criterion in criteria]
    if len(set(names)) != len(names) or "input" in names:
        raise ValueError(f"Criterion names must be unique and not 'input', got {names}.")
    for criterion in criteria:
        missing = [column for column in criterion.columns if column not in table.colnames]
        if missing:
            raise ValueError(
                f"Criterion {criterion.name!r} ({criterion.description}) needs columns {missing}, which the "
                f"table lacks (it has {table.colnames}); add them (e.g. cross-match LAMOST with APOGEE first "
                "using slamlib.data.crossmatch) or leave this criterion out."
            )
    mask = np.ones(len(table), dtype=bool)
    funnel = [FunnelStep("input", "all rows", len(table))]
    for criterion in criteria:
        passed = np.asarray(criterion.keep(table), dtype=bool)
        if passed.shape != mask.shape:
            raise ValueError(f"Criterion {criterion.name!r} returned shape {passed.shape}, expected {mask.shape}.")
        mask &= passed
        funnel.append(FunnelStep(criterion.name, criterion.description, int(mask.sum())))
    selected = table[mask]
    selected.meta = dict(table.meta)
    return Selection(table=selected, mask=mask, funnel=tuple(funnel))


def lasp_criteria(
    *,
    teff_range: tuple[float, float] = (4000.0, 8000.0),
    logg_range: tuple[float, float] = (0.5, 5.5),
    feh_range: tuple[float, float] = (-2.5, 1.0),
    max_teff_err: float = 200.0,
    max_logg_err: float = 0.1,
    max_feh_err: float = 0.1,
) -> list[Criterion]:
    """The LASP parameter and error cuts of paper Section 3.2 (defaults are the paper's).

    Returns
    -------
    list of Criterion
        ``teff_range``, ``logg_range``, ``feh_range``, ``teff_err``, ``logg_err``, ``feh_err``.
    """
    return [
        range_criterion("teff_range", "teff", *teff_range),
        range_criterion("logg_range", "logg", *logg_range),
        range_criterion("feh_range", "feh", *feh_range),
        below_criterion("teff_err", {"teff_err": max_teff_err}),
        below_criterion("logg_err", {"logg_err": max_logg_err}),
        below_criterion("feh_err", {"feh_err": max_feh_err}),
    ]


def select_lasp_training(
    table: Table,
    *,
    criteria: Sequence[Criterion] | None = None,
    snr_range: tuple[float, float] = LASP_TRAINING_SNR_RANGE,
) -> Selection:
    """The LASP training set of paper Section 3.2: the parameter cuts and 120 < S/N_g < 140.

    Parameters
    ----------
    table : astropy.table.Table
        A :func:`slamlib.data.lamost_catalog` table (``teff``, ``logg``, ``feh``,
        their ``_err`` columns and ``snrg``).
    criteria : sequence of Criterion, optional
        Quality cuts (default :func:`lasp_criteria`).
    snr_range : (float, float)
        Open S/N_g interval.

    Returns
    -------
    Selection
        Funnel steps: the quality cuts, then ``snrg_training``.
    """
    steps = list(lasp_criteria() if criteria is None else criteria)
    steps.append(range_criterion("snrg_training", "snrg", *snr_range))
    return apply_criteria(table, steps)


def select_lasp_test(
    table: Table,
    *,
    criteria: Sequence[Criterion] | None = None,
    snr_bins: Sequence[tuple[float, float]] = LASP_TEST_SNR_BINS,
) -> Selection:
    """The LASP test sets of paper Section 3.2: the parameter cuts and S/N_g in one of six bins.

    Parameters
    ----------
    table : astropy.table.Table
        A :func:`slamlib.data.lamost_catalog` table.
    criteria : sequence of Criterion, optional
        Quality cuts (default :func:`lasp_criteria`).
    snr_bins : sequence of (float, float), length n_bin
        S/N_g bins; a star is in a bin when ``low < snrg <= high`` (our reading for
        the shared edges of the paper's bins); bins must not overlap.

    Returns
    -------
    Selection
        Funnel steps: the quality cuts, then ``snrg_test_bins``. The table gains a
        column ``snr_bin`` (int, index into ``snr_bins``) and ``meta["snr_bins"]``
        (the bins as a JSON string); count stars per bin with
        ``numpy.bincount(selection.table["snr_bin"], minlength=n_bin)``.
    """
    bins = [(float(low), float(high)) for low, high in snr_bins]
    ordered = sorted(bins)
    if any(low >= high for low, high in bins) or any(a[1] > b[0] for a, b in zip(ordered, ordered[1:])):
        raise ValueError(f"snr_bins must be non-empty, non-overlapping (low, high) pairs, got {bins}.")

    def bin_index(table: Table) -> np.ndarray:
        snr = _floats(table, "snrg")
        index = np.full(len(table), -1, dtype=int)
        for number, (low, high) in enumerate(bins):
            index[(snr > low) & (snr <= high)] = number
        return index

    in_bins = Criterion("snrg_test_bins", "snrg in one of " + ", ".join(f"({lo:g}, {hi:g}]" for lo, hi in bins),
                        ("snrg",), lambda t: bin_index(t) >= 0)
    steps = list(lasp_criteria() if criteria is None else criteria) + [in_bins]
    selection = apply_criteria(table, steps)
    selection.table["snr_bin"] = bin_index(selection.table)
    selection.table.meta["snr_bins"] = json.dumps(bins)  # a string, so the table can be written to FITS
    return selection


def _abundance_over_iron(table: Table, element: str) -> np.ndarray:
    """[X/Fe] for ``element`` "c" or "n": the ``x_fe`` column, else [X/M] + [M/H] - [Fe/H], else [X/M]."""
    if f"{element}_fe" in table.colnames:
        return _floats(table, f"{element}_fe")
    over_metals = _floats(table, f"{element}_m")
    if "fe_h" in table.colnames and "m_h" in table.colnames:
        return over_metals + _floats(table, "m_h") - _floats(table, "fe_h")
    return over_metals


def _abundance_criterion(element: str, low: float, high: float) -> Criterion:
    name = f"{element}_fe"
    return Criterion(name, f"{low:g} < [{element.upper()}/Fe] < {high:g}", (f"{element}_m",),
                     lambda table: (lambda values: (values > low) & (values < high))(_abundance_over_iron(table, element)))


def _flag_zero_criterion(name: str, column: str) -> Criterion:
    """Keep rows whose flag ``column`` is 0 (a missing flag fails)."""

    def keep(table: Table) -> np.ndarray:
        flags, known = _flags(table, column)
        return known & (flags == 0)

    return Criterion(name, f"{column} = 0", (column,), keep)


def _teff_consistency_criterion(max_difference: float, lamost_column: str) -> Criterion:
    def keep(table: Table) -> np.ndarray:
        return np.abs(_floats(table, "teff") - _floats(table, lamost_column)) < max_difference

    return Criterion("teff_consistency", f"|teff - {lamost_column}| < {max_difference:g}", ("teff", lamost_column), keep)


def apogee_common_criteria(
    *,
    min_apogee_snr: float = 100.0,
    min_lamost_snrg: float = 40.0,
    teff_range: tuple[float, float] = (3000.0, 5500.0),
    logg_range: tuple[float, float] = (-1.0, 5.0),
    m_h_range: tuple[float, float] = (-4.0, 2.0),
    alpha_m_range: tuple[float, float] = (-1.0, 1.0),
    c_fe_range: tuple[float, float] = (-0.4, 1.0),
    n_fe_range: tuple[float, float] = (-0.5, 1.0),
    max_teff_difference: float = 800.0,
    lamost_teff_column: str = "teff_lamost",
) -> list[Criterion]:
    """The ten criteria of paper Section 4.2 for the APOGEE x LAMOST training set, in its order.

    Limits are strict; a missing (NaN, masked) or -9999 value fails every range. The defaults
    are the paper's.

    Parameters
    ----------
    min_apogee_snr : float
        APOGEE ``snr`` floor (criterion 1: 100).
    min_lamost_snrg : float
        LAMOST ``snrg`` floor (criterion 2: 40).
    teff_range, logg_range, m_h_range, alpha_m_range : (float, float)
        The ASPCAP label ranges (criteria 4-7).
    c_fe_range, n_fe_range : (float, float)
        The [C/Fe] and [N/Fe] ranges (criteria 8-9; see the module notes for tables without
        ``c_fe``/``n_fe``).
    max_teff_difference : float
        Criterion 10: |Teff_APOGEE - Teff_LAMOST| below this (800 K).
    lamost_teff_column : str
        The LAMOST Teff column (``teff_lamost`` in a :func:`slamlib.data.crossmatch` result).

    Returns
    -------
    list of Criterion
        ``apogee_snr``, ``lamost_snrg``, ``aspcapflag_zero``, ``teff``, ``logg``, ``m_h``,
        ``alpha_m``, ``c_fe``, ``n_fe``, ``teff_consistency``.
    """
    return [
        above_criterion("apogee_snr", "snr", min_apogee_snr),
        above_criterion("lamost_snrg", "snrg", min_lamost_snrg),
        _flag_zero_criterion("aspcapflag_zero", "aspcapflag"),
        range_criterion("teff", "teff", *teff_range),
        range_criterion("logg", "logg", *logg_range),
        range_criterion("m_h", "m_h", *m_h_range),
        range_criterion("alpha_m", "alpha_m", *alpha_m_range),
        _abundance_criterion("c", *c_fe_range),
        _abundance_criterion("n", *n_fe_range),
        _teff_consistency_criterion(max_teff_difference, lamost_teff_column),
    ]


def select_apogee_common(table: Table, *, criteria: Sequence[Criterion] | None = None) -> Selection:
    """The APOGEE x LAMOST training stars of paper Section 4.2 (its ten criteria).

    Parameters
    ----------
    table : astropy.table.Table
        A :func:`slamlib.data.crossmatch` result (APOGEE labels and flags plus LAMOST
        ``snrg``).
    criteria : sequence of Criterion, optional
        Default :func:`apogee_common_criteria`; pass a modified list, e.g.
        ``apogee_common_criteria(min_lamost_snrg=20)``, or drop entries by name.

    Returns
    -------
    Selection
        Kept rows and the funnel after each of the ten criteria.
    """
    return apply_criteria(table, list(apogee_common_criteria() if criteria is None else criteria))
