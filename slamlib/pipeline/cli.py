"""The ``slam`` command: train, predict, CODs and a mock survey from the shell.

Every command logs through :mod:`logging` (warnings only by default, ``-v`` for progress
messages, ``-vv`` for debugging) and shows tqdm progress bars on a terminal. Errors in
the input stop a command with ``slam: error: ...`` and exit status 1; an interrupted
``train``, ``predict`` or ``cod`` resumes when rerun with the same arguments, and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from slamlib.model import BACKENDS, check_training_labels, duplicate_rows
from slamlib.pipeline.catalog_input import (
    ArraysFile,
    PreparedInput,
    file_fingerprint,
    load_spectrum_files,
    read_table,
    spectrum_paths,
    write_arrays_file,
)
from slamlib.pipeline.checkpoint import ResumableTraining, clear_checkpoint
from slamlib.pipeline.progress import make_progress_bar, progress_bars
from slamlib.pipeline.scaleout import DaskRunner, connect
from slamlib.pipeline.workers import workers_exit_with_parent
from slamlib.preprocess import MAX_BAD_PIXELS, common_wave_grid, count_bad_pixels

__all__ = ["main", "build_parser"]

_LOG = logging.getLogger("slamlib.pipeline.cli")
_ID_COLUMNS = ("obsid", "designation", "id", "specid", "filename")

_MAIN_EPILOG = """\
examples (the whole pipeline offline, on a mock survey):
  slam mock train_set --n-stars 200 --seed 1
  slam mock test_set --n-stars 50 --seed 2
  slam train train_set/labels.csv --labels teff logg m_h --spectra-column path --output model.npz
  slam predict model.npz test_set/labels.csv --spectra-column path --output labels.fits
  slam cod train_set/labels.csv --labels teff logg m_h --spectra-column path --output cods.fits

run "slam COMMAND --help" for the options of each command.
"""

_MOCK_EPILOG = """\
examples:
  slam mock survey --n-stars 100                   # labels.csv + LAMOST-format FITS files in survey/spectra/
  slam mock survey --n-stars 100 --format arrays   # labels.csv + survey/spectra.npz (normalized flux, ivar, wave)
  slam mock survey --n-stars 20 --snr 30 --layout dr9 --seed 7
"""

_TRAIN_EPILOG = """\
examples:
  slam train stars.fits --labels teff logg m_h --spectra-column path --output model.npz
  slam train stars.csv --labels teff logg --arrays spectra.npz --output model.npz \\
      --grid-c 1 10 100 --grid-gamma 0.1 1 --cv 8 --n-jobs 8 --wave-min 4000 --wave-max 5500
  slam train stars.csv --labels teff logg --arrays spectra.npz --output model.npz \\
      --scheduler tcp://10.0.0.1:8786     # one task per block of 32 pixels on a Dask cluster

Spectra with more than --max-bad-pixels bad pixels, unreadable files, rows with missing
labels and rows with sentinel (-9999...) or unphysical labels (outside the ranges of
slamlib.model.LABEL_RANGES, e.g. teff 2000-60000 K; change one with --label-range NAME LOW HIGH)
are left out (the command says how many); repeated rows are reported. Training is checkpointed block by block
in --checkpoint-dir (default MODEL.checkpoint/): if it is interrupted, run the same command
again and it resumes where it stopped, giving the same model as an uninterrupted run. A
checkpoint of other data or parameters is never reused: the command stops with an error;
--restart discards it. The checkpoint is deleted once the model is saved.
"""

_PREDICT_EPILOG = """\
examples:
  slam predict model.npz targets.fits --spectra-column path --output labels.fits
  slam predict model.npz --arrays spectra.npz --output labels.fits --chunk-size 5000 --n-jobs 8
  slam predict model.npz --arrays spectra.npz --output labels.fits --chunk-size 50000 \\
      --scheduler tcp://10.0.0.1:8786     # each chunk fitted on a Dask cluster, 256 spectra per task

The catalogue has one row per input row: row, identifiers (obsid... if in the table), the
labels and <label>_err, rchi2, rms, max_residual, converged, good_fit, extrapolated, trusted,
n_iter, n_good_pixels, n_clipped, snr and reason. A spectrum that cannot be read or fitted is
kept with converged = False and its reason (e.g. "unreadable file: ..."); good_fit is False
when the fit's rchi2 or its worst pixel is far beyond what the model's CV residuals allow, or
the flux is not continuum-normalized; extrapolated marks labels beyond the training range
(widened by 5% of it). Use the rows with trusted (= converged & good_fit & ~extrapolated);
reason says why any other row is not trusted. --clip-sigma 5 refits without pixels more than
5 sigma off (cosmic rays). Results are written chunk by chunk to OUTPUT.chunks/; rerunning an
interrupted command skips the finished chunks.
"""

_COD_EPILOG = """\
examples:
  slam cod stars.csv --labels teff logg m_h --arrays spectra.npz --output cods.fits

Writes per pixel: wave, mse_full, cod_full and, for every label, cod_<label> and
mse_without_<label> (SLAM trained without that label; paper Section 6). The n_label + 1
trainings are checkpointed block by block in --checkpoint-dir (default OUTPUT.checkpoint/,
one sub-folder per training: all-labels, without-teff, ...): an interrupted run resumes when
the same command is run again (it says so), and gives the same CODs as an uninterrupted run.
"""


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _logging_to_stderr(verbosity: int) -> Iterator[None]:
    """Send slamlib's log records to standard error for the duration of a command."""
    logger = logging.getLogger("slamlib")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("slam: %(levelname)s: %(message)s"))
    previous_level, previous_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        logger.propagate = previous_propagate


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of workers, got {text!r}") from None
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be a positive number of workers or -1 for all cores, got {text}")
    return value


def _same_file(first: Path, second: Path) -> bool:
    try:
        return first.exists() and second.exists() and os.path.samefile(first, second)
    except OSError:
        return False


def check_output_path(output: str | Path, inputs: Sequence[str | Path | None], *, what: str = "--output") -> Path:
    """Refuse an output path before any work: an input file, a directory, or a folder that cannot be written.

    Parameters
    ----------
    output : str or Path
    inputs : sequence of paths (None entries are ignored)
        Files the command reads; the output must not overwrite any of them.
    what : str
        The option's name, for the message.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        Naming the path and what to do.
    """
    output = Path(output)
    if str(output).strip() == "":
        raise ValueError(f"{what} is empty; give a file name.")
    if output.is_dir():
        raise ValueError(f"{what} {output} is a directory; give a file name inside it, e.g. {output / 'labels.fits'}.")
    for path in inputs:
        if path is not None and (_same_file(output, Path(path)) or output.resolve() == Path(path).resolve()):
            raise ValueError(f"{what} {output} is also an input of this command ({path}); writing it would destroy "
                             "the input. Choose another output file.")
    folder = output.parent if str(output.parent) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} {output}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {output}: the folder {existing} is not writable; choose a folder you can write to.")
    if output.exists() and not os.access(output, os.W_OK) and not os.access(folder, os.W_OK):
        raise ValueError(f"{what} {output} exists and cannot be replaced (read-only); choose another output file.")
    return output


def _label_range_options(values: list[list[str]] | None) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}
    for name, low, high in values or []:
        try:
            ranges[name] = (float(low), float(high))
        except ValueError:
            raise ValueError(f"--label-range {name} {low} {high}: LOW and HIGH must be numbers.") from None
        if not ranges[name][0] < ranges[name][1]:
            raise ValueError(f"--label-range {name} {low} {high}: LOW must be below HIGH.")
    return ranges


def _wave_grid(args: argparse.Namespace) -> np.ndarray:
    return common_wave_grid(3900.0 if args.wave_min is None else args.wave_min,
                            5800.0 if args.wave_max is None else args.wave_max,
                            1.0 if args.wave_step is None else args.wave_step)


@dataclass(frozen=True)
class TrainingSet:
    """Training spectra and labels after the quality cuts."""

    flux: np.ndarray
    ivar: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    wave: np.ndarray


def _label_array(table: Table, names: list[str]) -> np.ndarray:
    missing = [name for name in names if name not in table.colnames]
    if missing:
        raise ValueError(f"the table has no label column(s) {missing}; its columns are {table.colnames}.")
    columns = []
    for name in names:
        column = table[name]
        try:
            values = np.ma.filled(np.ma.asarray(column, dtype=float), np.nan)
        except (TypeError, ValueError):
            values = np.full(len(column), np.nan)
            bad_rows = []
            for row, value in enumerate(column):
                if np.ma.is_masked(value):
                    continue
                try:
                    values[row] = float(value)
                except (TypeError, ValueError):
                    bad_rows.append(row)
            shown = ", ".join(f"row {row} ({str(column[row])!r})" for row in bad_rows[:5])
            raise ValueError(
                f"label column {name!r} holds {len(bad_rows)} value(s) that are not numbers: {shown}"
                f"{' ...' if len(bad_rows) > 5 else ''} (rows counted from 0, after the header). Leave missing "
                "values empty (or NaN), and those rows are left out of the training set.") from None
        columns.append(np.asarray(values, dtype=float))
    return np.column_stack(columns)


def _load_inputs(args: argparse.Namespace, table: Table | None, n_jobs: int) -> tuple[PreparedInput, np.ndarray]:
    """All spectra of a training table (arrays file or spectrum files) and their grid."""
    if args.arrays is not None:
        if args.wave_step is not None:
            raise ValueError("--wave-step applies to spectrum files only; an arrays file keeps its own grid.")
        with ArraysFile(args.arrays) as arrays:
            if table is not None and arrays.n_spec != len(table):
                raise ValueError(f"{args.arrays} has {arrays.n_spec} spectra, the table {len(table)} rows; "
                                 "they must match row by row.")
            low = -np.inf if args.wave_min is None else args.wave_min
            high = np.inf if args.wave_max is None else args.wave_max
            columns = np.flatnonzero((arrays.wave >= low) & (arrays.wave <= high))
            if columns.size < 2:
                raise ValueError(f"no pixels of {args.arrays} lie within --wave-min/--wave-max "
                                 f"(its grid spans {arrays.wave[0]:g}-{arrays.wave[-1]:g} Angstrom).")
            flux, ivar = arrays.read(0, arrays.n_spec)
            wave = arrays.wave[columns]
        prepared = PreparedInput(flux[:, columns], ivar[:, columns], np.full(flux.shape[0], "", dtype=str))
        return prepared, wave
    if args.spectra_column is None:
        raise ValueError("give the spectra: --spectra-column COLUMN (paths in the table) or --arrays FILE.npz.")
    wave = _wave_grid(args)
    paths = spectrum_paths(table, args.spectra_column, args.table)
    _LOG.info("reading and preparing %d spectrum files onto %d pixels.", len(paths), wave.size)
    return load_spectrum_files(paths, wave, n_jobs=n_jobs, progress=True), wave


def load_training_set(args: argparse.Namespace) -> TrainingSet:
    """Read, prepare and clean the training set named by the command-line arguments."""
    table = read_table(args.table)
    labels = _label_array(table, args.labels)
    prepared, wave = _load_inputs(args, table, args.n_jobs)
    n_bad = count_bad_pixels(prepared.ivar, axis=1)
    unreadable = prepared.reason != ""
    missing_labels = ~np.all(np.isfinite(labels), axis=1) & ~unreadable
    label_check = check_training_labels(labels, list(args.labels),
                                        label_ranges=_label_range_options(getattr(args, "label_range", None)))
    unphysical = label_check.bad & ~unreadable & ~missing_labels
    too_bad = (n_bad > args.max_bad_pixels) & ~unreadable & ~missing_labels & ~unphysical
    keep = ~(unreadable | missing_labels | unphysical | too_bad)
    if not keep.all():
        _LOG.warning(
            "left out %d of %d training spectra: %d unreadable or unusable, %d with missing or non-finite "
            "labels, %d with sentinel or unphysical labels, %d with more than %d bad pixels.", int((~keep).sum()),
            keep.size, int(unreadable.sum()), int(missing_labels.sum()), int(unphysical.sum()), int(too_bad.sum()),
            args.max_bad_pixels,
        )
        for reason in sorted(set(prepared.reason[unreadable]))[:5]:
            _LOG.info("  %s", reason)
        if unphysical.any():
            _LOG.warning("  sentinel or unphysical labels: %s", dataclasses.replace(
                label_check, bad=unphysical).summary())
    duplicates = duplicate_rows(np.where(prepared.ivar[keep] > 0, prepared.flux[keep], np.nan), labels[keep])
    if duplicates:
        kept_rows = np.flatnonzero(keep)
        _LOG.warning("%d training rows repeat another row's labels and spectrum (table rows %s); they are kept, "
                     "but drop the copies: a repeated star weighs twice and makes the CV scores optimistic.",
                     sum(group.size - 1 for group in duplicates),
                     ", ".join(str(kept_rows[group].tolist()) for group in duplicates[:5]))
    if keep.sum() < 2 * args.cv:
        raise ValueError(f"only {int(keep.sum())} usable training spectra remain; {args.cv}-fold CV needs at "
                         f"least {2 * args.cv}.")
    _LOG.info("training set: %d spectra, %d pixels, labels %s.", int(keep.sum()), wave.size, args.labels)
    return TrainingSet(prepared.flux[keep], prepared.ivar[keep], labels[keep], list(args.labels), wave)


def _model_parameters(args: argparse.Namespace) -> dict:
    return {"param_grid": {"C": args.grid_c, "gamma": args.grid_gamma}, "epsilon": args.epsilon, "cv": args.cv,
            "n_jobs": args.n_jobs, "random_state": args.seed, "backend": args.backend}


# ----------------------------------------------------------------------------- commands
def command_mock(args: argparse.Namespace) -> int:
    """``slam mock``: a mock survey (labels table plus FITS files or an arrays file)."""
    from slamlib.mock import lasp_test_sample, synthesize, write_lamost_fits
    from slamlib.preprocess import prepare

    directory = Path(args.directory)
    directory.mkdir(parents=True, exist_ok=True)
    sample = lasp_test_sample(args.n_stars, 0, args.seed)
    keep = ["obsid", "ra", "dec", "teff", "logg", "m_h", "alpha_m", "c_m", "n_m", "rv", "snr_g"]
    labels = sample[keep]
    if args.snr is not None:
        labels["snr_g"] = float(args.snr)
    _LOG.info("synthesizing %d mock spectra (seed %d).", len(labels), args.seed)
    table_path = directory / "labels.csv"
    # Two stages of n_stars spectra each: synthesis, then writing the FITS files (or normalizing them).
    with make_progress_bar(total=2 * len(labels), unit="spectrum", desc="mock: synthesizing") as bar:
        batch = synthesize(labels, seed=args.seed)
        bar.update(len(labels))
        if args.format == "fits":
            bar.set_description_str("mock: writing FITS files")
            paths = write_lamost_fits(batch, directory / "spectra", layout=args.layout, overwrite=True)
            labels["path"] = [str(path.relative_to(directory)) for path in paths]
            written = f"{len(paths)} FITS files in {directory / 'spectra'}"
        else:
            bar.set_description_str("mock: normalizing")
            prepared = prepare(batch, _wave_grid(args), n_jobs=args.n_jobs)
            arrays_path = write_arrays_file(directory / "spectra.npz", prepared.wave, prepared.flux, prepared.ivar)
            written = f"{arrays_path} ({len(labels)} x {prepared.wave.size} normalized spectra)"
        bar.update(len(labels))
    labels.write(table_path, format="ascii.csv", overwrite=True)
    print(f"wrote {table_path} and {written}")
    return 0


def command_train(args: argparse.Namespace) -> int:
    """``slam train``: train a model, checkpointed, and save it."""
    from slamlib.model import DuplicateTrainingRowsWarning, SlamModel

    output = check_output_path(args.output, [args.table, args.arrays])
    checkpoint_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else output.with_name(output.name + ".checkpoint")
    model = SlamModel(**_model_parameters(args))  # checks the parameters before the data are read
    with connect(args.scheduler) as client:  # an unreachable scheduler stops the command before the data are read
        training = load_training_set(args)
        if args.restart:
            clear_checkpoint(checkpoint_dir)
        runner = (ResumableTraining(checkpoint_dir) if client is None
                  else DaskRunner(client, checkpoint_dir=checkpoint_dir))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DuplicateTrainingRowsWarning)  # load_training_set reported them
            model.fit(training.flux, training.ivar, training.labels, training.label_names, wave=training.wave,
                      runner=runner, label_ranges=_label_range_options(args.label_range))
    model.save(output, include_cv_models=not args.no_cv_models)
    if not args.keep_checkpoint:
        clear_checkpoint(checkpoint_dir)
    n_trained = int(np.count_nonzero(model.trained_))
    print(f"wrote {output}: {training.flux.shape[0]} stars, {n_trained} of {model.n_pix_} pixels trained "
          f"in {model.training_seconds_:.1f} s")
    return 0


class _ArraysChunks:
    """Chunks of an arrays file on the model's grid (one-chunk cache: fingerprint, then load)."""

    def __init__(self, arrays: ArraysFile, columns: np.ndarray) -> None:
        self.arrays, self.columns = arrays, columns
        self._cached: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def _rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is None or self._cached[0] != (start, stop):
            flux, ivar = self.arrays.read(start, stop)
            self._cached = ((start, stop), np.ascontiguousarray(flux[:, self.columns]),
                            np.ascontiguousarray(ivar[:, self.columns]))
        return self._cached[1], self._cached[2]

    def fingerprint(self, start: int, stop: int) -> str:
        flux, ivar = self._rows(start, stop)
        digest = hashlib.sha256(flux.tobytes())
        digest.update(ivar.tobytes())
        return digest.hexdigest()

    def load(self, start: int, stop: int) -> PreparedInput:
        flux, ivar = self._rows(start, stop)
        return PreparedInput(flux, ivar, np.full(flux.shape[0], "", dtype=str))


def _model_columns(arrays: ArraysFile, model_wave: np.ndarray | None) -> np.ndarray:
    """Columns of an arrays file that hold the model's wavelength grid."""
    if model_wave is None:
        _LOG.warning("the model stores no wavelength grid; assuming %s is on the training grid.", arrays.path)
        return np.arange(arrays.n_pix)
    position = np.clip(np.searchsorted(arrays.wave, model_wave), 0, arrays.n_pix - 1)
    nearest = np.where(np.abs(arrays.wave[np.maximum(position - 1, 0)] - model_wave)
                       < np.abs(arrays.wave[position] - model_wave), np.maximum(position - 1, 0), position)
    if not np.allclose(arrays.wave[nearest], model_wave, rtol=0, atol=1e-6 * np.median(np.diff(model_wave))):
        raise ValueError(
            f"the wavelength grid of {arrays.path} ({arrays.n_pix} pixels, {arrays.wave[0]:g}-{arrays.wave[-1]:g} A) "
            f"does not contain the model's grid ({model_wave.size} pixels, {model_wave[0]:g}-{model_wave[-1]:g} A); "
            "resample the spectra onto the model grid (slamlib.preprocess.resample) or give spectrum files."
        )
    return nearest


def command_predict(args: argparse.Namespace) -> int:
    """``slam predict``: labels for a catalogue, chunked and resumable."""
    from slamlib.model import SlamModel
    from slamlib.pipeline.catalog_prediction import ChunkSource, predict_catalogue

    check_output_path(args.output, [args.model, args.table, args.arrays])
    model = SlamModel.load(args.model)
    table = read_table(args.table) if args.table is not None else None
    columns: dict[str, np.ndarray] = {}
    if table is not None:
        names = args.id_columns if args.id_columns is not None else [n for n in _ID_COLUMNS if n in table.colnames]
        if args.spectra_column is not None and args.spectra_column not in names:
            names = [*names, args.spectra_column]
        missing = [name for name in names if name not in table.colnames]
        if missing:
            raise ValueError(f"the table has no column(s) {missing}; its columns are {table.colnames}.")
        columns = {name: np.asarray(np.ma.filled(table[name])) for name in names}
        if args.spectra_column is not None:
            paths_given = spectrum_paths(table, args.spectra_column, args.table)
            inputs = {path.resolve() for path in paths_given if str(path)}
            if Path(args.output).resolve() in inputs:
                raise ValueError(f"--output {args.output} is one of the spectrum files; choose another output file.")
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(connect(args.scheduler))
        if args.arrays is not None:
            arrays = stack.enter_context(ArraysFile(args.arrays))
            if table is not None and arrays.n_spec != len(table):
                raise ValueError(f"{args.arrays} has {arrays.n_spec} spectra, the table {len(table)} rows.")
            chunks = _ArraysChunks(arrays, _model_columns(arrays, model.wave_))
            source = ChunkSource(arrays.n_spec, chunks.fingerprint, chunks.load, columns)
        else:
            if table is None or args.spectra_column is None:
                raise ValueError("give the spectra: TABLE --spectra-column COLUMN, or --arrays FILE.npz.")
            if model.wave_ is None:
                raise ValueError(f"{args.model} stores no wavelength grid, so spectrum files cannot be resampled "
                                 "onto it; give --arrays on the training grid instead.")
            paths = spectrum_paths(table, args.spectra_column, args.table)
            wave = model.wave_
            source = ChunkSource(
                len(paths),
                lambda start, stop: file_fingerprint(paths[start:stop]),
                lambda start, stop: load_spectrum_files(paths[start:stop], wave, n_jobs=args.n_jobs),
                columns,
            )
        catalogue = predict_catalogue(model, source, args.output, chunk_size=args.chunk_size, n_jobs=args.n_jobs,
                                      keep_chunks=args.keep_chunks,
                                      runner=None if client is None else DaskRunner(client),
                                      clip_sigma=args.clip_sigma)
    n_good = int(np.count_nonzero(catalogue["trusted"])) if len(catalogue) else 0
    print(f"wrote {args.output}: {len(catalogue)} spectra, {n_good} trusted (converged, good fit, within the "
          f"training range), {len(catalogue) - n_good} flagged (see columns trusted and reason)")
    return 0


def _cod_checkpoint_name(name: str) -> str:
    """The sub-directory of one leave-one-label-out training: ``all-labels``, ``without-teff``..."""
    return "".join(character if character.isalnum() or character in "_.-" else "-" for character in name)


def command_cod(args: argparse.Namespace) -> int:
    """``slam cod``: leave-one-label-out coefficients of dependence per pixel, every training checkpointed."""
    from slamlib.cod import leave_one_label_out
    from slamlib.model import DuplicateTrainingRowsWarning, SlamModel
    from slamlib.pipeline.catalog_prediction import write_table_atomically
    output = check_output_path(args.output, [args.table, args.arrays])
    checkpoint_root = (Path(args.checkpoint_dir) if args.checkpoint_dir
                       else output.with_name(output.name + ".checkpoint"))
    SlamModel(**_model_parameters(args))  # checks the parameters before the data are read
    training = load_training_set(args)
    n_trainings = len(training.label_names) + 1
    directories: list[Path] = []
    with make_progress_bar(total=n_trainings, unit="training", desc="cod trainings") as bar:
        def train_model(name: str, fit) -> SlamModel:
            directory = checkpoint_root / _cod_checkpoint_name(name)
            directories.append(directory)
            if args.restart:
                clear_checkpoint(directory)
            _LOG.info("cod: training %d of %d (%s), checkpoint %s.", len(directories), n_trainings, name, directory)
            bar.set_postfix_str(name, refresh=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DuplicateTrainingRowsWarning)  # load_training_set reported them
                model = fit(SlamModel(**_model_parameters(args)), runner=ResumableTraining(directory))
            bar.update(1)
            return model

        result = leave_one_label_out(training.flux, training.ivar, training.labels, training.label_names,
                                     model_parameters=_model_parameters(args), train_model=train_model)
    table = Table()
    table["wave"] = training.wave
    table["mse_full"] = result.mse_full
    table["cod_full"] = result.cod_full
    for index, name in enumerate(result.label_names):
        table[f"cod_{name}"] = result.cod_label[index]
        table[f"mse_without_{name}"] = result.mse_without_label[index]
    output.parent.mkdir(parents=True, exist_ok=True)
    write_table_atomically(table, output)
    if not args.keep_checkpoint:
        for directory in directories:
            clear_checkpoint(directory)
        with contextlib.suppress(OSError):
            checkpoint_root.rmdir()  # only when empty
    print(f"wrote {output}: CODs of {len(table)} pixels for labels {result.label_names}")
    return 0


# ----------------------------------------------------------------------------- parser
def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="say more: -v progress messages, -vv debugging details")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show progress bars (default: only on a terminal)")
    parser.add_argument("--n-jobs", type=_worker_count, default=-1, help="parallel workers, -1 for all cores (default)")


def _add_scheduler(parser: argparse.ArgumentParser, work: str) -> None:
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help=f"{work} on the Dask cluster whose scheduler listens at ADDRESS "
                             "(e.g. tcp://10.0.0.1:8786); default: on this machine")


def _add_spectra(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("spectra (one of)")
    group.add_argument("--spectra-column", metavar="COLUMN",
                       help="table column of LAMOST FITS file paths (relative to the table's folder)")
    group.add_argument("--arrays", metavar="FILE.npz",
                       help="npz with wave (n_pix,), flux and ivar (n_spec, n_pix): normalized spectra, "
                            "rows in table order")


def _add_wave(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("wavelength grid")
    group.add_argument("--wave-min", type=float, help="first wavelength in Angstrom (default 3900)")
    group.add_argument("--wave-max", type=float, help="last wavelength in Angstrom (default 5800)")
    group.add_argument("--wave-step", type=float, help="pixel step in Angstrom for spectrum files (default 1)")


def _add_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="training table (.fits, .csv or .ecsv), one row per star")
    parser.add_argument("--labels", nargs="+", required=True, metavar="NAME", help="label columns, e.g. teff logg m_h")
    parser.add_argument("--output", required=True, help="file to write")
    _add_spectra(parser)
    _add_wave(parser)
    group = parser.add_argument_group("model")
    group.add_argument("--grid-c", type=float, nargs="+", default=[10.0, 100.0], metavar="C",
                       help="SVR C values searched per pixel (default 10 100)")
    group.add_argument("--grid-gamma", type=float, nargs="+", default=[0.1, 0.01], metavar="GAMMA",
                       help="RBF gamma values searched per pixel (default 0.1 0.01)")
    group.add_argument("--epsilon", type=float, default=0.05, help="SVR tube half-width, standardized flux (0.05)")
    group.add_argument("--cv", type=int, default=5, help="cross-validation folds (default 5)")
    group.add_argument("--seed", type=int, default=0, help="seed of the CV folds (default 0)")
    group.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0],
                       help="training engine: batched (default, fast) or libsvm (one scikit-learn SVR per "
                            "pixel, the reference; needs less memory)")
    group.add_argument("--max-bad-pixels", type=int, default=MAX_BAD_PIXELS,
                       help=f"leave out spectra with more bad pixels (default {MAX_BAD_PIXELS})")
    group.add_argument("--label-range", nargs=3, action="append", metavar=("NAME", "LOW", "HIGH"),
                       help="physical range of a label (replaces its default, e.g. --label-range logg 0 5.5); "
                            "training rows outside it are left out")
    _add_common(parser)


def _add_checkpoint(parser: argparse.ArgumentParser, layout: str) -> None:
    group = parser.add_argument_group("checkpoint")
    group.add_argument("--checkpoint-dir", metavar="DIR",
                       help="checkpoint folder (default OUTPUT.checkpoint" + (f"; {layout}" if layout else "") + ")")
    group.add_argument("--restart", action="store_true", help="discard an existing checkpoint and start afresh")
    group.add_argument("--keep-checkpoint", action="store_true", help="keep the checkpoint after writing the output")


def build_parser() -> argparse.ArgumentParser:
    """The ``slam`` argument parser with its subcommands."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="slam", formatter_class=formatter, epilog=_MAIN_EPILOG,
        description="The Stellar LAbel Machine (Zhang, Liu & Deng 2020): train per-pixel SVR models of "
                    "normalized spectra and derive stellar labels for whole catalogues.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mock = commands.add_parser("mock", help="write a mock survey to try the pipeline offline",
                               formatter_class=formatter, epilog=_MOCK_EPILOG,
                               description="Synthesize mock LAMOST spectra and write labels.csv plus FITS files "
                                           "(or one arrays file).")
    mock.add_argument("directory", help="output folder")
    mock.add_argument("--n-stars", type=_positive_int, default=100, help="number of stars (default 100)")
    mock.add_argument("--seed", type=int, default=0, help="seed of labels and noise (default 0)")
    mock.add_argument("--snr", type=float, help="S/N_g of every spectrum (default: 120-140)")
    mock.add_argument("--format", choices=("fits", "arrays"), default="fits",
                      help="fits: LAMOST files and a path column; arrays: spectra.npz of normalized spectra")
    mock.add_argument("--layout", choices=("dr1", "dr5", "dr9"), default="dr5", help="FITS layout (default dr5)")
    _add_wave(mock)
    _add_common(mock)
    mock.set_defaults(handler=command_mock)

    train = commands.add_parser("train", help="train a model from a table of labels and spectra",
                                formatter_class=formatter, epilog=_TRAIN_EPILOG,
                                description="Train SLAM (one SVR per pixel, C and gamma by CV) and save the model.")
    _add_training(train)
    _add_checkpoint(train, "")
    train.add_argument("--no-cv-models", action="store_true",
                       help="do not store the CV fold models (smaller file; no CV labels later)")
    _add_scheduler(train, "train the pixel blocks")
    train.set_defaults(handler=command_train)

    predict = commands.add_parser("predict", help="derive labels for a catalogue of spectra",
                                  formatter_class=formatter, epilog=_PREDICT_EPILOG,
                                  description="Fit the labels of every spectrum and write a FITS catalogue.")
    predict.add_argument("model", help="model file written by slam train")
    predict.add_argument("table", nargs="?", help="table of the spectra (needed with --spectra-column)")
    predict.add_argument("--output", required=True, help="FITS catalogue to write")
    _add_spectra(predict)
    predict.add_argument("--chunk-size", type=_positive_int, default=1000, help="spectra per chunk (default 1000)")
    predict.add_argument("--id-columns", nargs="*", metavar="NAME",
                         help=f"table columns copied to the catalogue (default: those of {list(_ID_COLUMNS)} present)")
    predict.add_argument("--keep-chunks", action="store_true", help="keep OUTPUT.chunks/ after writing the catalogue")
    predict.add_argument("--clip-sigma", type=float, metavar="K",
                         help="refit without pixels more than K sigma from the model (cosmic rays, spikes; K >= 3, "
                              "5 is a good choice; default: no clipping)")
    _add_scheduler(predict, "fit the spectra")
    _add_common(predict)
    predict.set_defaults(handler=command_predict)

    cod = commands.add_parser("cod", help="leave-one-label-out coefficients of dependence",
                              formatter_class=formatter, epilog=_COD_EPILOG,
                              description="Train with all labels and without each label; write per-pixel CODs.")
    _add_training(cod)
    _add_checkpoint(cod, "one sub-folder per training")
    cod.set_defaults(handler=command_cod)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``slam`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "arrays", None) is not None and getattr(args, "spectra_column", None) is not None:
        parser.error("give either --spectra-column or --arrays, not both")
    with _logging_to_stderr(args.verbose), progress_bars(args.progress), warnings.catch_warnings(), \
            workers_exit_with_parent():  # a killed slam leaves no joblib workers behind
        # slamlib's warnings (un-normalized flux, repeated training rows) are messages to the user here.
        warnings.showwarning = lambda message, category, *rest, **options: _LOG.warning("%s", message)
        try:
            return args.handler(args)
        except (ValueError, OSError) as error:
            print(f"slam: error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("slam: interrupted; run the same command again to resume where it stopped.", file=sys.stderr)
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
