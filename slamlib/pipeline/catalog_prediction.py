"""Labels for a whole catalogue: chunked, resumable, and every row accounted for.

:func:`predict_catalogue` fits a catalogue chunk by chunk. Each finished chunk is written
(atomically) as ``rows-<start>-<stop>.fits`` in a work folder next to the output; a rerun of
the same command skips chunks already there, then joins all chunks into the output
catalogue and removes the work folder. A chunk file is reused only if it carries the
same *chunk key*: a SHA-256 over the model file's checksum, the label names, the
extrapolation margin and the chunk's input (the flux/ivar bytes of an arrays file, or the
paths, sizes and modification times of the spectrum files); otherwise it is recomputed.

Every chunk file also carries the FITS ``CHECKSUM``/``DATASUM`` of its table: a chunk whose
bytes changed after it was written (a flipped bit, a truncated copy) is recomputed, never reused.

No spectrum stops a run. A row whose file cannot be read gets reason
``"unreadable file: ..."``; a spectrum whose fit raises is fitted again alone and, if it
still fails, gets ``"prediction failed: ..."``. Every row satisfies:

* labels, errors or chi-square that are not finite imply ``converged`` False;
* ``good_fit`` is True when the fit's rchi2 and largest normalized pixel residual lie within
  what the model's own CV residuals allow and the flux looks continuum-normalized
  (:class:`slamlib.fitting.TrustLimits`): a spike, a cosmic ray, an un-normalized spectrum or a
  wrong redshift fails it even when the optimizer converged;
* ``extrapolated`` is True when a label lies outside the training range widened by
  :data:`EXTRAPOLATION_MARGIN` of that range on each side (SLAM's kernel model is not
  constrained there; such labels are extrapolations, even when the fit converged);
* ``trusted = converged & good_fit & ~extrapolated``, and ``reason`` is empty exactly for
  trusted rows (otherwise it says every reason the row is not trusted).

Use the rows with ``trusted``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

import slamlib
from slamlib import fitting
from slamlib.files import atomic_write
from slamlib.fitting import (
    EXTRAPOLATION_MARGIN,
    NotNormalizedWarning,
    PredictionResult,
    extrapolated_labels,
)
from slamlib.model import SlamModel
from slamlib.pipeline.catalog_input import PreparedInput, median_snr
from slamlib.pipeline.progress import make_progress_bar
from slamlib.runner import PredictionRunner

__all__ = ["EXTRAPOLATION_MARGIN", "LABEL_UNITS", "ChunkSource", "add_units", "flag_extrapolation", "predict_catalogue", "predict_rows",
           "training_label_range", "write_table_atomically"]

#: Spectra fitted per call on this machine: the progress bar advances batch by batch within a chunk.
PREDICTION_BATCH = 128

_CHUNK_FORMAT = 3  # 3: the <label>_err_cv and err_cv_extrapolated columns
_OUTSIDE_RANGE = "labels outside the training range"
_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ChunkSource:
    """Where the spectra of a catalogue come from.

    Attributes
    ----------
    n_spec : int
        Number of rows.
    fingerprint : callable (start, stop) -> str
        A digest that changes whenever the input of rows ``start:stop`` changes (cheap
        compared with fitting them).
    load : callable (start, stop) -> PreparedInput
        The normalized spectra of those rows on the model's grid.
    columns : dict of str to ndarray, optional
        Extra per-row columns copied into the output (identifiers such as ``obsid``).
    """

    n_spec: int
    fingerprint: Callable[[int, int], str]
    load: Callable[[int, int], PreparedInput]
    columns: dict[str, np.ndarray] | None = None


def training_label_range(model: SlamModel) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest training value of every label (:func:`slamlib.fitting.training_label_range`)."""
    return fitting.training_label_range(model.state_)


def flag_extrapolation(labels: np.ndarray, low: np.ndarray, high: np.ndarray,
                       margin: float = EXTRAPOLATION_MARGIN) -> np.ndarray:
    """True for rows with a finite label beyond the training range widened by ``margin`` of its span
    (:func:`slamlib.fitting.extrapolated_labels`)."""
    return np.any(fitting.extrapolated_labels(np.atleast_2d(labels), low, high, margin), axis=1)

def _failed(model: SlamModel, n_spec: int, reason: str) -> PredictionResult:
    n_label = len(model.label_names_)
    return PredictionResult(
        labels=np.full((n_spec, n_label), np.nan), errors=np.full((n_spec, n_label), np.nan),
        cov=np.full((n_spec, n_label, n_label), np.nan), converged=np.zeros(n_spec, dtype=bool),
        rchi2=np.full(n_spec, np.nan), rms=np.full(n_spec, np.nan), n_iter=np.zeros(n_spec, dtype=int),
        n_good_pixels=np.zeros(n_spec, dtype=int), initial_labels=np.full((n_spec, n_label), np.nan),
        reason=np.full(n_spec, reason, dtype=object), label_names=list(model.label_names_),
        good_fit=np.zeros(n_spec, dtype=bool), max_residual=np.full(n_spec, np.nan),
        n_clipped=np.zeros(n_spec, dtype=int), extrapolated=np.zeros(n_spec, dtype=bool),
        snr=np.full(n_spec, np.nan), errors_cv=np.full((n_spec, n_label), np.nan),
        errors_cv_extrapolated=np.zeros(n_spec, dtype=bool),
    )


def _predict_guarded(model: SlamModel, flux: np.ndarray, ivar: np.ndarray, n_jobs: int,
                     runner: PredictionRunner | None = None, clip_sigma: float | None = None) -> PredictionResult:
    """``model.predict`` (with ``runner``, e.g. on a cluster, if given); if the batch raises, each
    spectrum alone on this machine, flagging those that fail."""
    n_spec = flux.shape[0]
    # Hostile spectra (huge or tiny values) make numpy warn; the outcome is checked row by row afterwards.
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("always", NotNormalizedWarning)
        try:
            result = model.predict(flux, ivar, n_jobs=n_jobs, runner=runner, clip_sigma=clip_sigma)
        except Exception as batch_error:  # one bad spectrum must not cost the chunk
            _LOG.info("a chunk failed as a whole (%s); fitting its %d spectra one by one.", batch_error, n_spec)
            parts = []
            for row in range(n_spec):
                try:
                    parts.append(model.predict(flux[row:row + 1], ivar[row:row + 1], n_jobs=1, clip_sigma=clip_sigma))
                except Exception as error:
                    parts.append(_failed(model, 1, f"prediction failed: {type(error).__name__}: {error}"))
            result = PredictionResult.combine(parts, [np.array([row]) for row in range(n_spec)], n_spec)
    unnormalized = [warning for warning in caught if issubclass(warning.category, NotNormalizedWarning)]
    if unnormalized:
        _LOG.warning("%s", unnormalized[0].message)
    return result


def predict_rows(
    model: SlamModel,
    prepared: PreparedInput,
    *,
    n_jobs: int = 1,
    margin: float = EXTRAPOLATION_MARGIN,
    runner: PredictionRunner | None = None,
    clip_sigma: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Table:
    """Fit prepared spectra and return one flagged catalogue row per spectrum.

    Parameters
    ----------
    model : SlamModel
        A fitted model.
    prepared : PreparedInput
        Normalized spectra on the model's grid; rows with a ``reason`` are not fitted.
    n_jobs : int
    margin : float
        See :func:`flag_extrapolation`.
    runner : PredictionRunner, optional
        Where the fits run (:meth:`SlamModel.predict`); None: on this machine.
    clip_sigma : float, optional
        Iterative outlier clipping (:func:`slamlib.fitting.predict_labels`); None: none.
    progress : callable (n_done) -> None, optional
        Called with the number of spectra just finished: after every :data:`PREDICTION_BATCH`
        spectra fitted on this machine (with a ``runner``: once the runner returns, which spreads
        the whole set over its workers), and for the rows that are not fitted.

    Returns
    -------
    astropy.table.Table
        Columns: one per label, ``<label>_err`` (formal: from the fit's Jacobian, about half the
        actual scatter), ``<label>_err_cv`` (the errors to quote: the model's CV error model of
        paper Table 1 at the row's ``snr``, :attr:`slamlib.fitting.PredictionResult.errors_cv`),
        ``rchi2``, ``rms``, ``max_residual``, ``converged``, ``good_fit``, ``extrapolated``,
        ``trusted``, ``n_iter``, ``n_good_pixels``, ``n_clipped``, ``snr`` (median S/N per pixel
        of the input over the model grid), ``err_cv_extrapolated`` (``snr`` outside the training
        stars' S/N range, where ``<label>_err_cv`` is an extrapolation) and ``reason`` (empty
        exactly when ``trusted``).
    """
    n_spec = len(prepared)
    input_reason = np.asarray(prepared.reason, dtype=object)
    usable = np.flatnonzero(input_reason == "")
    unusable = np.flatnonzero(input_reason != "")
    parts, positions = [], []
    report = progress if progress is not None else (lambda n_done: None)
    batch = usable.size if runner is not None else PREDICTION_BATCH
    for begin in range(0, usable.size, max(batch, 1)):
        rows = usable[begin:begin + batch]
        parts.append(_predict_guarded(model, prepared.flux[rows], prepared.ivar[rows], n_jobs, runner, clip_sigma))
        positions.append(rows)
        report(rows.size)
    if unusable.size:
        parts.append(dataclasses.replace(_failed(model, unusable.size, ""), reason=input_reason[unusable]))
        positions.append(unusable)
        report(unusable.size)
    if not parts:
        parts, positions = [_failed(model, 0, "")], [np.zeros(0, dtype=int)]
    result = PredictionResult.combine(parts, positions, n_spec)

    converged = result.converged.copy()
    finite_labels = np.all(np.isfinite(result.labels), axis=1)
    finite_fit = np.all(np.isfinite(result.errors), axis=1) & np.isfinite(result.rchi2)
    broken = converged & ~(finite_labels & finite_fit)
    converged &= ~broken
    low, high = training_label_range(model)
    extrapolated = flag_extrapolation(result.labels, low, high, margin)
    outside = extrapolated_labels(result.labels, low, high, margin)
    good_fit = result.good_fit & finite_labels & finite_fit
    trusted = converged & good_fit & ~extrapolated
    reason = []
    for row in range(n_spec):
        # The core judged the range with its default margin; this catalogue's margin decides here.
        parts = [part for part in str(result.reason[row]).split("; ") if part and not part.startswith(_OUTSIDE_RANGE)]
        if broken[row]:
            parts.insert(0, "non-finite labels" if not finite_labels[row] else "non-finite errors or chi-square")
        if extrapolated[row]:
            names = [name for name, flag in zip(result.label_names, outside[row]) if flag]
            parts.append(f"{_OUTSIDE_RANGE}: {', '.join(names)}")
        if not trusted[row] and not parts:
            parts.append("not converged" if not converged[row] else "poor fit")
        reason.append("; ".join(parts))

    table = Table()
    for index, name in enumerate(result.label_names):
        table[name] = result.labels[:, index]
        table[f"{name}_err"] = result.errors[:, index]
        table[f"{name}_err_cv"] = result.errors_cv[:, index]
    table["rchi2"] = result.rchi2
    table["rms"] = result.rms
    table["max_residual"] = result.max_residual
    table["converged"] = converged
    table["good_fit"] = good_fit
    table["extrapolated"] = extrapolated
    table["trusted"] = trusted
    table["n_iter"] = result.n_iter.astype(np.int32)
    table["n_good_pixels"] = result.n_good_pixels.astype(np.int32)
    table["n_clipped"] = result.n_clipped.astype(np.int32)
    table["snr"] = median_snr(prepared.flux, prepared.ivar)
    table["err_cv_extrapolated"] = result.errors_cv_extrapolated
    table["reason"] = np.array(reason or [""], dtype=str)[:n_spec]
    return table


def _chunk_key(model_checksum: str, label_names: list[str], margin: float, fingerprint: str,
               clip_sigma: float | None = None) -> str:
    digest = hashlib.sha256()
    digest.update(f"{_CHUNK_FORMAT}|{model_checksum}|{','.join(label_names)}|{margin!r}|{fingerprint}".encode())
    if clip_sigma is not None:
        digest.update(f"|clip={clip_sigma!r}".encode())
    return digest.hexdigest()


def write_table_atomically(table: Table, path: str | Path) -> None:
    """Write a FITS table (with ``CHECKSUM``/``DATASUM``) to a temporary name in the same folder, then rename it."""
    def write(handle) -> None:
        hdu = fits.table_to_hdu(table)
        hdu.add_checksum(when="HDU checksum")  # a fixed comment (astropy's default is the time): same bytes every run
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(handle)

    atomic_write(path, write)


def _read_chunk(path: Path, key: str) -> Table | None:
    if not path.exists():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged file is judged by its checksum below
            with fits.open(path, memmap=False, checksum=False) as hdul:
                hdu = hdul[1]
                intact = hdu.verify_checksum() == 1
                table = Table.read(hdu, mask_invalid=False, character_as_bytes=False) if intact else None
    except Exception as error:  # a damaged chunk is recomputed
        _LOG.warning("recomputing damaged chunk %s (%s).", path.name, error)
        return None
    if table is None:
        _LOG.warning("recomputing chunk %s: its checksum does not match its content (the file was damaged or "
                     "modified).", path.name)
        return None
    if table.meta.get("CHUNKKEY") != key:
        _LOG.info("recomputing chunk %s: its input or the model changed.", path.name)
        return None
    return table


def predict_catalogue(
    model: SlamModel,
    source: ChunkSource,
    output: str | Path,
    *,
    chunk_size: int = 1000,
    n_jobs: int = 1,
    work_dir: str | Path | None = None,
    keep_chunks: bool = False,
    margin: float = EXTRAPOLATION_MARGIN,
    runner: PredictionRunner | None = None,
    clip_sigma: float | None = None,
) -> Table:
    """Predict labels for every row of a catalogue, resumably, and write a FITS catalogue.

    Parameters
    ----------
    model : SlamModel
        A fitted model (loaded from a file, so that its checksum keys the chunks).
    source : ChunkSource
    output : str or Path
        The FITS catalogue to write.
    chunk_size : int
        Rows per chunk file.
    n_jobs : int
        Workers for preparing and fitting.
    work_dir : str or Path, optional
        Folder of the chunk files (default: ``<output>.chunks``).
    keep_chunks : bool
        Keep the chunk files after the catalogue is written.
    margin : float
        See :func:`flag_extrapolation`.
    runner : PredictionRunner, optional
        Where every chunk is fitted (:meth:`SlamModel.predict`), e.g. a Dask cluster
        (:class:`slamlib.pipeline.scaleout.DaskRunner`); None: on this machine. Spectra are
        read and prepared here either way.
    clip_sigma : float, optional
        Iterative outlier clipping of every fit (:func:`slamlib.fitting.predict_labels`).

    Returns
    -------
    astropy.table.Table
        The catalogue: ``row`` (index in the input), the source's extra columns, then the
        columns of :func:`predict_rows`, with units (:data:`LABEL_UNITS`) and, in its header,
        the model's checksum (``MODELSHA``), label names (``LABELS``), the slamlib version
        (``SLAMVER``), the extrapolation margin (``EXTRAPM``), ``CLIPSIG`` and the CV error
        model's S/N range (``ERRSNRLO``, ``ERRSNRHI``).
    """
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    if source.n_spec == 0:
        raise ValueError("the input holds no spectra; nothing to predict.")
    output = Path(output)
    work = Path(work_dir) if work_dir is not None else output.with_name(output.name + ".chunks")
    work.mkdir(parents=True, exist_ok=True)
    header = getattr(model, "file_header_", None)
    model_checksum = header["sha256"] if header else _unsaved_model_checksum(model)
    label_names = list(model.label_names_)
    starts = range(0, source.n_spec, chunk_size)
    chunks: list[Table] = []
    n_reused = 0
    with make_progress_bar(total=source.n_spec, unit="spectrum", desc="predicting") as bar:
        for start in starts:
            stop = min(start + chunk_size, source.n_spec)
            path = work / f"rows-{start:010d}-{stop:010d}.fits"
            key = _chunk_key(model_checksum, label_names, margin, source.fingerprint(start, stop), clip_sigma)
            table = _read_chunk(path, key)
            if table is None:
                table = predict_rows(model, source.load(start, stop), n_jobs=n_jobs, margin=margin,
                                     runner=runner, clip_sigma=clip_sigma, progress=bar.update)
                table.add_column(np.arange(start, stop, dtype=np.int64), name="row", index=0)
                for position, (name, values) in enumerate((source.columns or {}).items()):
                    table.add_column(np.asarray(values)[start:stop], name=name, index=1 + position)
                _ascii_text_columns(table)
                table.meta["CHUNKKEY"] = key
                write_table_atomically(table, path)
            else:
                _LOG.debug("chunk %s already done; skipped.", path.name)
                n_reused += 1
                bar.update(stop - start)
            chunks.append(table)
    if n_reused:
        # A warning, so that the command says it by default: this run resumed an earlier one.
        _LOG.warning("resumed: %d of %d chunks (%s) were finished by an earlier run and reused.", n_reused,
                     len(starts), work)
    catalogue = vstack(chunks, metadata_conflicts="silent") if chunks else Table()
    catalogue.meta.clear()
    catalogue.meta["MODELSHA"] = model_checksum
    catalogue.meta["LABELS"] = (",".join(label_names), "labels fitted, in column order")
    catalogue.meta["SLAMVER"] = (slamlib.__version__, "slamlib version")
    catalogue.meta["EXTRAPM"] = (margin, "extrapolation margin, fraction of label range")
    catalogue.meta["CLIPSIG"] = (0.0 if clip_sigma is None else float(clip_sigma), "outlier clipping, sigma (0: off)")
    catalogue.meta["TRUSTED"] = "converged & good_fit & ~extrapolated"
    catalogue.meta["LABUNITS"] = " ".join(f"{name}[{LABEL_UNITS.get(name, '?')}]" for name in label_names)
    error_model = model.state_.error_model
    catalogue.meta["ERRCV"] = ("a*exp(-b*snr)+c fitted on the model's CV labels" if error_model is not None
                               else "none (model saved before slamlib fitted one)", "<label>_err_cv")
    if error_model is not None:
        catalogue.meta["ERRSNRLO"] = (float(error_model.snr_range[0]), "lowest S/N of the _err_cv model")
        catalogue.meta["ERRSNRHI"] = (float(error_model.snr_range[1]), "highest S/N of the _err_cv model")
    add_units(catalogue, label_names)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_table_atomically(catalogue, output)
    if not keep_chunks:
        shutil.rmtree(work, ignore_errors=True)
    n_failed = int(np.count_nonzero(~catalogue["converged"])) if len(catalogue) else 0
    n_poor = int(np.count_nonzero(catalogue["converged"] & ~catalogue["good_fit"])) if len(catalogue) else 0
    n_extrapolated = int(np.count_nonzero(catalogue["extrapolated"])) if len(catalogue) else 0
    _LOG.info("%d spectra: %d not converged, %d poor fits, %d extrapolated (see 'reason'); written to %s.",
              len(catalogue), n_failed, n_poor, n_extrapolated, output)
    return catalogue


def _ascii_text_columns(table: Table) -> None:
    """Make text columns FITS-safe in place: non-ASCII characters (e.g. in file paths) become ``\\xe9``-style escapes."""
    for name in table.colnames:
        column = table[name]
        if column.dtype.kind not in "UO":
            continue
        texts = [str(value) for value in column]
        escaped = [text.encode("ascii", "backslashreplace").decode("ascii") for text in texts]
        if escaped != texts:
            _LOG.info("column %s holds non-ASCII text, which FITS cannot store; written with \\x escapes.", name)
            table[name] = np.array(escaped or [""], dtype=str)[:len(texts)]


#: Units of the paper's labels. Columns get the astropy unit where FITS has one (K); the logarithmic
#: labels are in dex, which FITS does not define, so they are named in the header card ``LABUNITS``.
LABEL_UNITS = {"teff": "K", "logg": "dex", "feh": "dex", "m_h": "dex", "alpha_m": "dex", "c_m": "dex", "n_m": "dex"}


def add_units(catalogue: Table, label_names: list[str]) -> Table:
    """Set the FITS-expressible units (K) of label and error columns in place; returns ``catalogue``."""
    for name in label_names:
        unit = LABEL_UNITS.get(name)
        if unit is None or unit == "dex":
            continue
        for column in (name, f"{name}_err", f"{name}_err_cv"):
            if column in catalogue.colnames:
                catalogue[column].unit = unit
    return catalogue


def _unsaved_model_checksum(model: SlamModel) -> str:
    """A digest of a model that was never saved (its arrays and parameters)."""
    from slamlib import modelfile

    result = model.training_
    arrays = {"dual_coef": result.expansion.dual_coef, "intercept": result.expansion.intercept,
              "gamma": result.expansion.gamma, "support": result.expansion.support_labels,
              "flux_mean": model.flux_scaler_.mean, "flux_scale": model.flux_scaler_.scale,
              "label_mean": model.label_scaler_.mean, "label_scale": model.label_scaler_.scale,
              "cv_mse": result.cv_mse, "trained": result.trained}
    return modelfile.array_checksum(arrays)
