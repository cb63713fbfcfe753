"""Training and prediction on a Dask cluster (:mod:`dask.distributed`).

Both halves of SLAM split into independent pieces: training into blocks of pixels (every
pixel's SVR is trained on its own) and prediction into chunks of spectra (every spectrum is
fitted on its own). This module runs those pieces as tasks of a Dask cluster, given the
address of its scheduler (``"tcp://host:8786"``) or a :class:`distributed.Client`; the
cluster itself (``dask scheduler`` plus ``dask worker`` processes, a batch-system deployment
via dask-jobqueue, or a :class:`distributed.LocalCluster`) is set up with Dask's own tools.
The workers need slamlib installed in the same version as the caller.

Training (:func:`train_pixels_on_cluster`). The pixels are cut into the blocks of
:mod:`slamlib.checkpoint` (``block_size`` consecutive columns, default
:data:`~slamlib.checkpoint.CHECKPOINT_BLOCK_SIZE`). The standardized labels, flux, good-pixel
mask and CV folds are scattered to every worker once; each block is then one task, which
takes its columns and trains them with the backend single-threaded
(:func:`slamlib.checkpoint.train_block`, the unit of the local block-wise training too).
Blocks are merged by :func:`slamlib.checkpoint.assemble_blocks`. With a ``checkpoint_dir``
each block is written as soon as it comes back, so a run that dies with the cluster resumes
with only the missing blocks (on the cluster or locally: the checkpoint is the same).

Exactness. The cluster result is bit for bit the result of the local block-wise training
with the same ``block_size`` (``SlamModel.fit(..., checkpoint_dir=...)``) for both backends.
For the "libsvm" backend, whose pixels do not depend on each other, it is also bit for bit
the result of one local ``train_pixels`` call. The "batched" backend solves the pixels of a
call together, so its result depends (at the rounding level, ~1e-10 in the dual
coefficients) on which pixels share a call: blocks on a cluster or in a checkpoint agree with
each other, not with one call over all pixels.

Prediction (:func:`predict_labels_on_cluster`). The spectra are cut into chunks of
``spectra_per_task`` rows, scattered to the workers, each chunk is fitted by
:func:`slamlib.fitting.predict_labels` in one task (the model's arrays scattered to every
worker once), and the parts are merged with :meth:`PredictionResult.combine`. With the
"reference" method (one Levenberg-Marquardt fit per spectrum) the result equals the local one
bit for bit whatever the chunk size. The default "batched" method advances the spectra of a
batch together, so it is bit-identical only where the tasks batch the spectra as the local
call does (e.g. at most :data:`SPECTRA_PER_TASK` spectra); otherwise it agrees to rounding
(up to ~1e-7 relative, below 1e-4 of the formal errors), as it does with itself for other
batch sizes.

Data sent to the workers are realigned on arrival (:class:`_Shipment`): Dask may deliver
small arrays at odd byte offsets, on which numpy's matrix products bypass BLAS and round
differently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slamlib.checkpoint import CHECKPOINT_BLOCK_SIZE, TrainPixels, train_block, train_pixel_blocks
from slamlib.fitting import PredictionResult, predict_labels
from slamlib.svr.result import TrainingResult

if TYPE_CHECKING:  # distributed is imported only when a cluster is used
    from distributed import Client

__all__ = [
    "SPECTRA_PER_TASK",
    "check_scheduler",
    "connect",
    "label_predictor",
    "predict_labels_on_cluster",
    "train_pixels_on_cluster",
]

#: Spectra fitted by one prediction task (a multiple of the initial-guess chunk of
#: :mod:`slamlib.fitting`, so tasks cut the spectra where the local code does too).
SPECTRA_PER_TASK = 256

_LOG = logging.getLogger(__name__)


def _is_client(value: Any) -> bool:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    return isinstance(value, Client)


def check_scheduler(scheduler: Any) -> None:
    """Check a ``scheduler`` argument without connecting.

    Parameters
    ----------
    scheduler : str, distributed.Client or None
        None (run locally), the address of a Dask scheduler such as
        ``"tcp://127.0.0.1:8786"``, or a connected :class:`distributed.Client`.

    Raises
    ------
    ValueError
        If ``scheduler`` is of another type, an empty or malformed address, an address with a
        protocol Dask does not know, or a Client that is closed.
    """
    if scheduler is None:
        return
    if isinstance(scheduler, str):
        address = scheduler.strip()
        if not address:
            raise ValueError('scheduler is an empty string; give a Dask scheduler address such as '
                             '"tcp://127.0.0.1:8786", or None to run locally.')
        from distributed.comm import parse_address
        from distributed.comm.registry import get_backend

        try:
            protocol, location = parse_address(address, strict=False)
            get_backend(protocol)
        except ValueError as error:
            raise ValueError(f"scheduler {scheduler!r} is not a Dask scheduler address ({error}); give one such "
                             'as "tcp://127.0.0.1:8786".') from error
        if not location:
            raise ValueError(f'scheduler {scheduler!r} names no host; give an address such as "tcp://127.0.0.1:8786".')
        return
    if _is_client(scheduler):
        if scheduler.status != "running":
            raise ValueError(f"the distributed.Client given as scheduler is {scheduler.status}, not running; "
                             "pass a connected Client or the scheduler address.")
        return
    raise ValueError(
        f"scheduler must be a Dask scheduler address (str, e.g. \"tcp://127.0.0.1:8786\") or a distributed.Client, "
        f"got {type(scheduler).__name__} {scheduler!r}; for a LocalCluster pass cluster.scheduler_address."
    )


@contextlib.contextmanager
def connect(scheduler: str | Client | None) -> Iterator[Client | None]:
    """A Client for ``scheduler`` for the duration of a ``with`` block.

    Parameters
    ----------
    scheduler : str, distributed.Client or None
        See :func:`check_scheduler`. An address is connected to here and the connection is
        closed at the end of the block; a Client is used as it is and left open; None yields
        None (local work).

    Yields
    ------
    distributed.Client or None

    Raises
    ------
    ValueError
        If ``scheduler`` is invalid (:func:`check_scheduler`) or no scheduler answers at the
        address within Dask's connect timeout (``distributed.comm.timeouts.connect``).
    """
    check_scheduler(scheduler)
    if scheduler is None or _is_client(scheduler):
        yield scheduler
        return
    from distributed import Client

    address = scheduler.strip()
    try:
        client = Client(address, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise ValueError(f"no Dask scheduler answers at {address!r} ({error}); start one (\"dask scheduler\" and "
                         "\"dask worker ADDRESS\", or a distributed.LocalCluster) or correct the address.") from error
    try:
        yield client
    finally:
        client.close()


# ------------------------------------------------------------------- shipping data
def _aligned(value: Any) -> Any:
    """``value`` with every ndarray inside it that is not aligned for its dtype replaced by an aligned copy.

    Looks into lists, tuples, dicts and dataclass instances (a dataclass with a misaligned
    array is rebuilt, so that what it derives from its arrays is recomputed from aligned ones).
    Aligned arrays are kept as they are (no copy).
    """
    if isinstance(value, np.ndarray):
        return value if value.flags.aligned else np.require(value, requirements="A")
    if isinstance(value, list):
        return [_aligned(item) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_aligned(item) for item in value)
    if isinstance(value, dict):
        return {key: _aligned(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        changes = {field.name: _aligned(getattr(value, field.name)) for field in fields if field.init}
        derived_misaligned = any(isinstance(getattr(value, field.name, None), np.ndarray)
                                 and not getattr(value, field.name).flags.aligned
                                 for field in fields if not field.init)
        if derived_misaligned or any(changes[name] is not getattr(value, name) for name in changes):
            return dataclasses.replace(value, **changes)
    return value


class _Shipment:
    """Data sent to the workers, realigned once when a worker unpacks it.

    Dask packs small arrays into its messages at arbitrary byte offsets, so a worker can
    receive float arrays that are not even 8-byte aligned. numpy computes on such arrays
    without BLAS, which changes the rounding of matrix products and would make cluster
    results differ from local ones in the last bits. Unpickling a shipment copies exactly
    the misaligned arrays (:func:`_aligned`), once per worker and payload.
    """

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __reduce__(self) -> tuple[Callable[[Any], "_Shipment"], tuple[Any]]:
        return _unpack_shipment, (self.payload,)


def _unpack_shipment(payload: Any) -> _Shipment:
    return _Shipment(_aligned(payload))


# ------------------------------------------------------------------------------ training
def _train_block_on_worker(
    train_pixels: TrainPixels,
    training_set: _Shipment,
    columns: np.ndarray,
    param_grid: dict[str, list[float]],
    epsilon: float,
    min_good_stars: int,
) -> dict[str, np.ndarray]:
    """One cluster task: the block ``columns`` of the scattered training set, trained."""
    labels_std, flux_std, good, folds = training_set.payload
    return train_block(train_pixels, labels_std, flux_std[:, columns], good[:, columns], columns, folds, param_grid,
                       epsilon, min_good_stars)


def train_pixels_on_cluster(
    train_pixels: TrainPixels,
    labels_std: np.ndarray,
    flux_std: np.ndarray,
    good: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    param_grid: dict[str, list[float]],
    epsilon: float,
    *,
    min_good_stars: int,
    scheduler: str | Client,
    block_size: int = CHECKPOINT_BLOCK_SIZE,
    checkpoint_dir: str | Path | None = None,
    backend: str = "",
) -> TrainingResult:
    """Train all pixels on a Dask cluster, one task per block of pixels.

    Parameters
    ----------
    train_pixels : callable
        A backend's ``train_pixels`` (:func:`slamlib.svr.libsvm.train_pixels` or
        :func:`slamlib.svr.batched.train_pixels`); it must be importable on the workers.
    labels_std : ndarray, shape (n_star, n_label)
    flux_std : ndarray, shape (n_star, n_pix)
    good : ndarray of bool, shape (n_star, n_pix)
    folds : list of (train_index, test_index)
    param_grid : dict with keys "C" and "gamma"
    epsilon : float
    min_good_stars : int
    scheduler : str or distributed.Client
        The scheduler's address (e.g. ``"tcp://127.0.0.1:8786"``) or a connected Client.
    block_size : int
        Pixels per task (and per checkpoint block). Each worker thread trains one block at
        a time with a single-threaded backend.
    checkpoint_dir : str or Path, optional
        Write every finished block to this checkpoint directory (:mod:`slamlib.checkpoint`)
        and skip the blocks already there.
    backend : str
        The backend's name; part of the checkpoint's training key.

    Returns
    -------
    TrainingResult
        Bit for bit that of :func:`slamlib.checkpoint.train_pixels_resumable` with the same
        ``block_size`` (and, for "libsvm", of one local ``train_pixels`` call).

    Raises
    ------
    ValueError
        For an invalid or unreachable scheduler (:func:`connect`).
    CheckpointMismatchError
        If ``checkpoint_dir`` holds the checkpoint of a different training.
    """
    check_scheduler(scheduler)
    if scheduler is None:
        raise ValueError("train_pixels_on_cluster needs a scheduler; call train_pixels for local training.")
    with connect(scheduler) as client:

        def run_on_cluster(pending: dict[int, np.ndarray]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
            from distributed import as_completed

            # The training set goes to every worker once, not with every task.
            [training_set] = client.scatter([_Shipment((labels_std, flux_std, np.asarray(good, dtype=bool), folds))],
                                            broadcast=True, hash=False)
            block_of_future = {
                client.submit(_train_block_on_worker, train_pixels, training_set, columns, param_grid, epsilon,
                              min_good_stars): number
                for number, columns in pending.items()
            }
            _LOG.info("training %d pixel blocks on the Dask cluster at %s.", len(block_of_future),
                      client.scheduler.address)
            try:
                for future in as_completed(list(block_of_future), loop=client.loop):
                    number = block_of_future.pop(future)
                    yield number, future.result()
            finally:
                # An error or an interruption stops the blocks still queued on the cluster.
                if block_of_future:
                    client.cancel(list(block_of_future))

        return train_pixel_blocks(run_on_cluster, labels_std, flux_std, good, folds, param_grid, epsilon,
                                  min_good_stars=min_good_stars, block_size=block_size,
                                  checkpoint_dir=checkpoint_dir, backend=backend)


# ---------------------------------------------------------------------------- prediction
def _predict_chunk_on_worker(spectra: _Shipment, model_arguments: _Shipment,
                             options: dict[str, Any]) -> PredictionResult:
    """One cluster task: the labels of one chunk of spectra, fitted in one thread."""
    flux, ivar = spectra.payload
    return predict_labels(flux, ivar, **model_arguments.payload, **options, n_jobs=1)


# predict_labels arguments that hold the model (scattered to every worker once); the others
# (prior, method, label names...) are small and travel with the tasks.
_MODEL_ARGUMENTS = ("expansion", "flux_scaler", "label_scaler", "model_variance", "usable", "training_model_flux",
                    "training_labels_std")


def predict_labels_on_cluster(
    flux: np.ndarray,
    ivar: np.ndarray,
    *,
    scheduler: str | Client,
    spectra_per_task: int = SPECTRA_PER_TASK,
    **prediction_arguments: Any,
) -> PredictionResult:
    """:func:`slamlib.fitting.predict_labels` on a Dask cluster, one task per chunk of spectra.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_spec, n_pix)
        Normalized flux and inverse variance on the model's grid.
    scheduler : str or distributed.Client
        The scheduler's address (e.g. ``"tcp://127.0.0.1:8786"``) or a connected Client.
    spectra_per_task : int
        Spectra fitted by one task (default :data:`SPECTRA_PER_TASK`).
    **prediction_arguments
        The keyword arguments of :func:`slamlib.fitting.predict_labels` (``expansion``,
        ``flux_scaler``... ``method``). ``n_jobs`` and ``chunk_size`` are ignored: every task
        fits its spectra in one thread.

    Returns
    -------
    PredictionResult
        The same as :func:`slamlib.fitting.predict_labels` with the same arguments: bit for
        bit with ``method="reference"``; with ``method="batched"`` bit for bit when one task
        holds all spectra, otherwise to rounding (see the module notes).

    Raises
    ------
    ValueError
        For an invalid or unreachable scheduler, a bad ``spectra_per_task``, or the errors of
        :func:`slamlib.fitting.predict_labels` (raised by the task that met them).
    """
    check_scheduler(scheduler)
    if scheduler is None:
        raise ValueError("predict_labels_on_cluster needs a scheduler; call predict_labels for local prediction.")
    if isinstance(spectra_per_task, bool) or not isinstance(spectra_per_task, (int, np.integer)) \
            or spectra_per_task < 1:
        raise ValueError(f"spectra_per_task must be a positive integer, got {spectra_per_task!r}.")
    missing = [name for name in _MODEL_ARGUMENTS if name not in prediction_arguments]
    if missing:
        raise ValueError(f"predict_labels_on_cluster needs the model arguments {missing} of predict_labels.")
    flux = np.atleast_2d(np.asarray(flux, dtype=float))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=float))
    options = {name: value for name, value in prediction_arguments.items()
               if name not in _MODEL_ARGUMENTS and name not in ("n_jobs", "chunk_size")}
    model_arguments = {name: prediction_arguments[name] for name in _MODEL_ARGUMENTS}
    n_spec = flux.shape[0]
    if n_spec == 0 or flux.shape != ivar.shape or flux.shape[1] != model_arguments["expansion"].n_pix:
        # Nothing to distribute, or input that predict_labels rejects (with its own message).
        return predict_labels(flux, ivar, **model_arguments, **options, n_jobs=1)
    positions = [np.arange(start, min(start + spectra_per_task, n_spec))
                 for start in range(0, n_spec, spectra_per_task)]
    with connect(scheduler) as client:
        [model_future] = client.scatter([_Shipment(model_arguments)], broadcast=True, hash=False)
        chunk_futures = client.scatter([_Shipment((flux[rows], ivar[rows])) for rows in positions], hash=False)
        futures = client.map(_predict_chunk_on_worker, chunk_futures, model_arguments=model_future,
                             options=options)
        try:
            parts = client.gather(futures)
        except BaseException:
            # An error or an interruption stops the chunks still queued on the cluster.
            client.cancel(futures)
            raise
    return PredictionResult.combine(parts, positions, n_spec)


def label_predictor(scheduler: str | Client | None) -> Callable[..., PredictionResult]:
    """The label prediction function to use for ``scheduler``.

    Parameters
    ----------
    scheduler : str, distributed.Client or None
        See :func:`check_scheduler`; checked here, before any work.

    Returns
    -------
    callable
        :func:`slamlib.fitting.predict_labels` for None, otherwise
        :func:`predict_labels_on_cluster` bound to ``scheduler``; both take the arguments of
        :func:`slamlib.fitting.predict_labels`.
    """
    check_scheduler(scheduler)
    if scheduler is None:
        return predict_labels
    return functools.partial(predict_labels_on_cluster, scheduler=scheduler)
