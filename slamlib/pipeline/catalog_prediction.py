"""Labels for a whole catalogue: chunked, resumable, and every row accounted for.

:func:`predict_catalogue` fits a catalogue chunk by chunk. Each finished chunk is written
(atomically) as ``rows-<start>-<stop>.fits`` in a work folder next to the output; a rerun of
the same command skips chunks already there, then joins all chunks into the output
catalogue and removes the work folder. A chunk file is reused only if it carries the
same *chunk key*: a SHA-256 over the model file's checksum, the label names, the
extrapolation margin and the chunk's input (the flux/ivar bytes of an arrays file, or the
paths, sizes and modification times of the spectrum files); otherwise it is recomputed.

No spectrum stops a run. A row whose file cannot be read gets reason
``"unreadable file: ..."``; a spectrum whose fit raises is fitted again alone and, if it
still fails, gets ``"prediction failed: ..."``. Every row satisfies:

* ``converged`` False implies a non-empty ``reason``;
* labels, errors or chi-square that are not finite imply ``converged`` False;
* ``extrapolated`` is True when a label lies outside the training range widened by
  :data:`EXTRAPOLATION_MARGIN` of that range on each side (SLAM's kernel model is not
  constrained there; such labels are extrapolations, even when the fit converged).

Trustworthy rows are therefore ``converged & ~extrapolated``.
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
from astropy.table import Table, vstack

from slamlib.files import atomic_write
from slamlib.fitting import PredictionResult
from slamlib.model import SlamModel
from slamlib.pipeline.catalog_input import PreparedInput, median_snr
from slamlib.pipeline.progress import make_progress_bar
from slamlib.runner import PredictionRunner

__all__ = ["EXTRAPOLATION_MARGIN", "ChunkSource", "flag_extrapolation", "predict_catalogue", "predict_rows",
           "training_label_range", "write_table_atomically"]

#: Fraction of each label's training range by which a label may exceed that range
#: before the row is flagged ``extrapolated``.
EXTRAPOLATION_MARGIN = 0.05
_CHUNK_FORMAT = 1
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
    """Smallest and largest training value of every label, physical units, shape (n_label,) each."""
    support = model.label_scaler_.inverse_transform(model.training_.expansion.support_labels)
    return support.min(axis=0), support.max(axis=0)


def flag_extrapolation(labels: np.ndarray, low: np.ndarray, high: np.ndarray,
                       margin: float = EXTRAPOLATION_MARGIN) -> np.ndarray:
    """True for rows with a finite label beyond ``[low - margin * span, high + margin * span]``.

    Parameters
    ----------
    labels : ndarray, shape (n_spec, n_label)
    low, high : ndarray, shape (n_label,)
        The training range.
    margin : float
        Allowed excess as a fraction of the span ``high - low``.

    Returns
    -------
    ndarray of bool, shape (n_spec,)
    """
    span = np.asarray(high, dtype=float) - np.asarray(low, dtype=float)
    with np.errstate(invalid="ignore"):
        outside = (labels < low - margin * span) | (labels > high + margin * span)
    return np.any(outside & np.isfinite(labels), axis=1)


def _failed(model: SlamModel, n_spec: int, reason: str) -> PredictionResult:
    n_label = len(model.label_names_)
    return PredictionResult(
        labels=np.full((n_spec, n_label), np.nan), errors=np.full((n_spec, n_label), np.nan),
        cov=np.full((n_spec, n_label, n_label), np.nan), converged=np.zeros(n_spec, dtype=bool),
        rchi2=np.full(n_spec, np.nan), rms=np.full(n_spec, np.nan), n_iter=np.zeros(n_spec, dtype=int),
        n_good_pixels=np.zeros(n_spec, dtype=int), initial_labels=np.full((n_spec, n_label), np.nan),
        reason=np.full(n_spec, reason, dtype=object), label_names=list(model.label_names_),
    )


def _predict_guarded(model: SlamModel, flux: np.ndarray, ivar: np.ndarray, n_jobs: int,
                     runner: PredictionRunner | None = None) -> PredictionResult:
    """``model.predict`` (with ``runner``, e.g. on a cluster, if given); if the batch raises, each
    spectrum alone on this machine, flagging those that fail."""
    n_spec = flux.shape[0]
    # Hostile spectra (huge or tiny values) make numpy warn; the outcome is checked row by row afterwards.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return model.predict(flux, ivar, n_jobs=n_jobs, runner=runner)
        except Exception as batch_error:  # one bad spectrum must not cost the chunk
            _LOG.info("a chunk failed as a whole (%s); fitting its %d spectra one by one.", batch_error, n_spec)
        parts = []
        for row in range(n_spec):
            try:
                parts.append(model.predict(flux[row:row + 1], ivar[row:row + 1], n_jobs=1))
            except Exception as error:
                parts.append(_failed(model, 1, f"prediction failed: {type(error).__name__}: {error}"))
    return PredictionResult.combine(parts, [np.array([row]) for row in range(n_spec)], n_spec)


def predict_rows(
    model: SlamModel,
    prepared: PreparedInput,
    *,
    n_jobs: int = 1,
    margin: float = EXTRAPOLATION_MARGIN,
    runner: PredictionRunner | None = None,
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

    Returns
    -------
    astropy.table.Table
        Columns: one per label and ``<label>_err``, ``rchi2``, ``rms``, ``converged``,
        ``extrapolated``, ``n_iter``, ``n_good_pixels``, ``snr`` (median S/N per pixel of
        the input over the model grid) and ``reason``.
    """
    n_spec = len(prepared)
    input_reason = np.asarray(prepared.reason, dtype=object)
    usable = np.flatnonzero(input_reason == "")
    unusable = np.flatnonzero(input_reason != "")
    parts, positions = [], []
    if usable.size:
        parts.append(_predict_guarded(model, prepared.flux[usable], prepared.ivar[usable], n_jobs, runner))
        positions.append(usable)
    if unusable.size:
        parts.append(dataclasses.replace(_failed(model, unusable.size, ""), reason=input_reason[unusable]))
        positions.append(unusable)
    if not parts:
        parts, positions = [_failed(model, 0, "")], [np.zeros(0, dtype=int)]
    result = PredictionResult.combine(parts, positions, n_spec)

    converged = result.converged.copy()
    reason = np.array([str(text) for text in result.reason], dtype=object)
    finite_labels = np.all(np.isfinite(result.labels), axis=1)
    finite_fit = np.all(np.isfinite(result.errors), axis=1) & np.isfinite(result.rchi2)
    broken = converged & ~(finite_labels & finite_fit)
    converged &= ~broken
    reason[broken & ~finite_labels] = "non-finite labels"
    reason[broken & finite_labels] = "non-finite errors or chi-square"
    reason[~converged & (reason == "")] = "not converged"
    low, high = training_label_range(model)

    table = Table()
    for index, name in enumerate(result.label_names):
        table[name] = result.labels[:, index]
        table[f"{name}_err"] = result.errors[:, index]
    table["rchi2"] = result.rchi2
    table["rms"] = result.rms
    table["converged"] = converged
    table["extrapolated"] = flag_extrapolation(result.labels, low, high, margin)
    table["n_iter"] = result.n_iter.astype(np.int32)
    table["n_good_pixels"] = result.n_good_pixels.astype(np.int32)
    table["snr"] = median_snr(prepared.flux, prepared.ivar)
    table["reason"] = np.array(reason.tolist() or [""], dtype=str)[:n_spec]
    return table


def _chunk_key(model_checksum: str, label_names: list[str], margin: float, fingerprint: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"{_CHUNK_FORMAT}|{model_checksum}|{','.join(label_names)}|{margin!r}|{fingerprint}".encode())
    return digest.hexdigest()


def write_table_atomically(table: Table, path: str | Path) -> None:
    """Write a FITS table to a temporary name in the same folder, then rename it into place."""
    atomic_write(path, lambda temporary: table.write(temporary, format="fits", overwrite=True), to_path=True)


def _read_chunk(path: Path, key: str) -> Table | None:
    if not path.exists():
        return None
    try:
        table = Table.read(path, format="fits", mask_invalid=False, character_as_bytes=False)
    except Exception as error:  # a damaged chunk is recomputed
        _LOG.warning("recomputing damaged chunk %s (%s).", path.name, error)
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

    Returns
    -------
    astropy.table.Table
        The catalogue: ``row`` (index in the input), the source's extra columns, then the
        columns of :func:`predict_rows`.
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
    with make_progress_bar(total=source.n_spec, unit="spectrum", desc="predicting") as bar:
        for start in starts:
            stop = min(start + chunk_size, source.n_spec)
            path = work / f"rows-{start:010d}-{stop:010d}.fits"
            key = _chunk_key(model_checksum, label_names, margin, source.fingerprint(start, stop))
            table = _read_chunk(path, key)
            if table is None:
                table = predict_rows(model, source.load(start, stop), n_jobs=n_jobs, margin=margin,
                                     runner=runner)
                table.add_column(np.arange(start, stop, dtype=np.int64), name="row", index=0)
                for position, (name, values) in enumerate((source.columns or {}).items()):
                    table.add_column(np.asarray(values)[start:stop], name=name, index=1 + position)
                table.meta["CHUNKKEY"] = key
                write_table_atomically(table, path)
            else:
                _LOG.debug("chunk %s already done; skipped.", path.name)
            chunks.append(table)
            bar.update(stop - start)
    catalogue = vstack(chunks, metadata_conflicts="silent") if chunks else Table()
    catalogue.meta.clear()
    catalogue.meta["MODELSHA"] = model_checksum
    catalogue.meta["EXTRAPM"] = (margin, "extrapolation margin, fraction of label range")
    output.parent.mkdir(parents=True, exist_ok=True)
    write_table_atomically(catalogue, output)
    if not keep_chunks:
        shutil.rmtree(work, ignore_errors=True)
    n_failed = int(np.count_nonzero(~catalogue["converged"])) if len(catalogue) else 0
    n_extrapolated = int(np.count_nonzero(catalogue["extrapolated"])) if len(catalogue) else 0
    _LOG.info("%d spectra: %d not converged (see 'reason'), %d extrapolated; written to %s.",
              len(catalogue), n_failed, n_extrapolated, output)
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
