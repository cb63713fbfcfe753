"""Training and prediction on a Dask cluster (:mod:`dask.distributed`).

Both halves of SLAM split into independent pieces: training into blocks of pixels (every
pixel's SVR is trained on its own) and prediction into chunks of spectra (every spectrum is
fitted on its own). This module runs those pieces as tasks of a Dask cluster, given the
address of its scheduler (``"tcp://host:8786"``) or a :class:`distributed.Client`; the
cluster itself (``dask scheduler`` plus ``dask worker`` processes, a batch-system deployment
via dask-jobqueue, or a :class:`distributed.LocalCluster`) is set up with Dask's own tools.
The workers need slamlib installed in the same version as the caller.

:class:`DaskRunner` is a runner (:mod:`slamlib.runner`) for both:
``SlamModel.fit(..., runner=DaskRunner("tcp://host:8786"))`` and
``model.predict(flux, ivar, runner=DaskRunner(...))``.

Training (:func:`train_pixels_on_cluster`). The pixels are cut into the blocks of
:mod:`slamlib.pipeline.checkpoint` (``block_size`` consecutive columns, default
:data:`~slamlib.pipeline.checkpoint.CHECKPOINT_BLOCK_SIZE`). The training problem
(:class:`~slamlib.svr.problem.TrainingProblem`) is scattered to every worker once; each block
is then one task, which takes its columns and trains them with the backend single-threaded
(:func:`slamlib.pipeline.checkpoint.train_block`, the unit of the local block-wise training too).
Blocks are merged by :func:`slamlib.pipeline.checkpoint.assemble_blocks`. With a ``checkpoint_dir``
each block is written as soon as it comes back, so a run that dies with the cluster resumes
with only the missing blocks (on the cluster or locally: the checkpoint is the same).

Exactness. The cluster result is bit for bit the result of the local block-wise training
with the same ``block_size`` (``SlamModel.fit(..., runner=ResumableTraining(...))``) for both backends.
It is also bit for bit the result of one local training over all pixels: LIBSVM's pixels do not
depend on each other, and the batched backend solves pixels in fixed groups of
``batched.PIXEL_GROUP`` = 32 consecutive indices, which divide blocks of the default size (any
multiple of 32). With another block size the batched groups follow the blocks, and one call
over all pixels agrees with them to rounding only (~1e-10 in the dual coefficients).

Prediction (:func:`predict_labels_on_cluster`). The spectra are cut into chunks of
``spectra_per_task`` rows, scattered to the workers, each chunk is fitted by
:func:`slamlib.fitting.predict_labels` in one task (the fitted state,
:class:`~slamlib.state.FittedState`, scattered to every worker once), and the parts are merged with :meth:`PredictionResult.combine`. With the
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
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slamlib.fitting import PredictionResult, predict_labels
from slamlib.pipeline.checkpoint import (
    CHECKPOINT_BLOCK_SIZE,
    train_block,
    train_pixel_blocks,
)
from slamlib.state import FittedState
from slamlib.svr.backend import Backend, get_backend
from slamlib.svr.problem import TrainingProblem
from slamlib.svr.result import TrainingResult

if TYPE_CHECKING:  # distributed is imported only when a cluster is used
    from distributed import Client

__all__ = [
    "SPECTRA_PER_TASK",
    "DaskRunner",
    "check_scheduler",
    "connect",
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
def _train_block_on_worker(backend: Backend, problem: _Shipment, columns: np.ndarray) -> dict[str, np.ndarray]:
    """One cluster task: the block ``columns`` of the scattered training problem, trained."""
    return train_block(backend, problem.payload, columns)


def train_pixels_on_cluster(
    problem: TrainingProblem,
    backend: "str | Backend",
    *,
    scheduler: str | Client,
    block_size: int = CHECKPOINT_BLOCK_SIZE,
    checkpoint_dir: str | Path | None = None,
) -> TrainingResult:
    """Train all pixels on a Dask cluster, one task per block of pixels.

    Parameters
    ----------
    problem : TrainingProblem
    backend : str or Backend
        The backend (:func:`slamlib.svr.backend.get_backend`); it must be importable on the workers.
    scheduler : str or distributed.Client
        The scheduler's address (e.g. ``"tcp://127.0.0.1:8786"``) or a connected Client.
    block_size : int
        Pixels per task (and per checkpoint block). Each worker thread trains one block at
        a time with a single-threaded backend.
    checkpoint_dir : str or Path, optional
        Write every finished block to this checkpoint directory (:mod:`slamlib.pipeline.checkpoint`)
        and skip the blocks already there.

    Returns
    -------
    TrainingResult
        Bit for bit that of :class:`slamlib.pipeline.checkpoint.ResumableTraining` with the same
        ``block_size`` (and, for "libsvm", of one local training).

    Raises
    ------
    ValueError
        For an invalid or unreachable scheduler (:func:`connect`).
    CheckpointMismatchError
        If ``checkpoint_dir`` holds the checkpoint of a different training.
    """
    check_scheduler(scheduler)
    if scheduler is None:
        raise ValueError("train_pixels_on_cluster needs a scheduler; train locally with backend.train(problem).")
    backend = get_backend(backend)
    with connect(scheduler) as client:

        def run_on_cluster(pending: dict[int, np.ndarray]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
            from distributed import as_completed

            # The training problem goes to every worker once, not with every task.
            [shipped_problem] = client.scatter([_Shipment(problem)], broadcast=True, hash=False)
            block_of_future = {client.submit(_train_block_on_worker, backend, shipped_problem, columns): number
                               for number, columns in pending.items()}
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

        return train_pixel_blocks(run_on_cluster, problem, backend.name, block_size=block_size,
                                  checkpoint_dir=checkpoint_dir)


# ---------------------------------------------------------------------------- prediction
def _predict_chunk_on_worker(spectra: _Shipment, state: _Shipment, options: dict[str, Any]) -> PredictionResult:
    """One cluster task: the labels of one chunk of spectra, fitted in one thread."""
    flux, ivar = spectra.payload
    return predict_labels(flux, ivar, state.payload, **options, n_jobs=1)


def predict_labels_on_cluster(
    flux: np.ndarray,
    ivar: np.ndarray,
    state: FittedState,
    *,
    scheduler: str | Client,
    spectra_per_task: int = SPECTRA_PER_TASK,
    **options: Any,
) -> PredictionResult:
    """:func:`slamlib.fitting.predict_labels` on a Dask cluster, one task per chunk of spectra.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_spec, n_pix)
        Normalized flux and inverse variance on the model's grid.
    state : FittedState
        The model (sent to every worker once, without its CV sub-models).
    scheduler : str or distributed.Client
        The scheduler's address (e.g. ``"tcp://127.0.0.1:8786"``) or a connected Client.
    spectra_per_task : int
        Spectra fitted by one task (default :data:`SPECTRA_PER_TASK`).
    **options
        The other keyword arguments of :func:`slamlib.fitting.predict_labels` (``prior``,
        ``method``). ``n_jobs`` and ``chunk_size`` are ignored: every task fits its spectra in
        one thread.

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
    options = {name: value for name, value in options.items() if name not in ("n_jobs", "chunk_size")}
    state = state.without_cv_models()
    flux = np.atleast_2d(np.asarray(flux, dtype=float))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=float))
    n_spec = flux.shape[0]
    if n_spec == 0 or flux.shape != ivar.shape or flux.shape[1] != state.n_pix:
        # Nothing to distribute, or input that predict_labels rejects (with its own message).
        return predict_labels(flux, ivar, state, **options, n_jobs=1)
    positions = [np.arange(start, min(start + spectra_per_task, n_spec))
                 for start in range(0, n_spec, spectra_per_task)]
    with connect(scheduler) as client:
        [state_future] = client.scatter([_Shipment(state)], broadcast=True, hash=False)
        chunk_futures = client.scatter([_Shipment((flux[rows], ivar[rows])) for rows in positions], hash=False)
        futures = client.map(_predict_chunk_on_worker, chunk_futures, state=state_future, options=options)
        try:
            parts = client.gather(futures)
        except BaseException:
            # An error or an interruption stops the chunks still queued on the cluster.
            client.cancel(futures)
            raise
    return PredictionResult.combine(parts, positions, n_spec)


class DaskRunner:
    """A runner (:mod:`slamlib.runner`) that trains and predicts on a Dask cluster.

    Parameters
    ----------
    scheduler : str or distributed.Client
        The scheduler's address (e.g. ``"tcp://127.0.0.1:8786"``) or a connected Client
        (checked here, connected to when work starts).
    checkpoint_dir : str or Path, optional
        Training writes every finished block to this checkpoint directory and skips the
        blocks already there (:mod:`slamlib.pipeline.checkpoint`).
    block_size : int
        Pixels per training task.
    spectra_per_task : int
        Spectra per prediction task.
    """

    def __init__(self, scheduler: str | Client, *, checkpoint_dir: str | Path | None = None,
                 block_size: int = CHECKPOINT_BLOCK_SIZE, spectra_per_task: int = SPECTRA_PER_TASK) -> None:
        check_scheduler(scheduler)
        if scheduler is None:
            raise ValueError("DaskRunner needs a scheduler address or a distributed.Client; leave runner=None to "
                             "run in this process.")
        self.scheduler = scheduler
        self.checkpoint_dir = checkpoint_dir
        self.block_size = block_size
        self.spectra_per_task = spectra_per_task

    def __repr__(self) -> str:
        return f"DaskRunner({self.scheduler!r}, checkpoint_dir={self.checkpoint_dir!r})"

    def train(self, problem: TrainingProblem, backend: Backend, *, n_jobs: int) -> TrainingResult:
        """:func:`train_pixels_on_cluster` (``n_jobs`` is the cluster's business and is ignored)."""
        return train_pixels_on_cluster(problem, backend, scheduler=self.scheduler, block_size=self.block_size,
                                       checkpoint_dir=self.checkpoint_dir)

    def predict_labels(self, flux: np.ndarray, ivar: np.ndarray, state: FittedState, **options: Any) -> PredictionResult:
        """:func:`predict_labels_on_cluster`."""
        return predict_labels_on_cluster(flux, ivar, state, scheduler=self.scheduler,
                                         spectra_per_task=self.spectra_per_task, **options)
