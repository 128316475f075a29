"""Running per-frame work through dask, locally or on a ``dask.distributed`` cluster.

crystalscope never schedules work itself: it builds dask graphs and hands them to a
dask scheduler.  :func:`compute` picks the scheduler from a
:class:`~crystalscope.config.ComputeConfig` (local threads by default), or uses a
``distributed.Client`` given explicitly, and shows a rich progress bar on long work.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import dask
from dask.callbacks import Callback
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from crystalscope.config import ComputeConfig

__all__ = ["RichProgress", "byte_progress", "compute", "open_client"]


class RichProgress(Callback):  # type: ignore[misc]
    """A dask callback that drives a rich progress bar over the tasks of a graph.

    Parameters
    ----------
    description : str
        Text shown left of the bar.
    enabled : bool
        Show nothing when false (or when stderr is not a terminal and ``force`` is false).
    """

    def __init__(self, description: str = "computing", enabled: bool = True) -> None:
        super().__init__()
        self.description = description
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Progress | None = None
        self._task: Any = None

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        if not self.enabled:
            return
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=total)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=len(state["finished"]))

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@contextlib.contextmanager
def byte_progress(
    description: str = "writing", enabled: bool = True
) -> Iterator[Callable[[int, int], None]]:
    """Yield a ``progress(done, total)`` callback that drives a rich bar in bytes.

    Shows nothing when ``enabled`` is false or stderr is not a terminal.
    """
    if not (enabled and sys.stderr.isatty()):
        yield lambda done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextlib.contextmanager
def open_client(config: ComputeConfig) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for ``scheduler: distributed`` configs, else None.

    With an ``address`` the client connects to that cluster; without one it starts a
    ``LocalCluster`` with ``n_workers`` workers and closes it afterwards.
    """
    if config.scheduler != "distributed":
        yield None
        return
    from distributed import Client, LocalCluster

    if config.address:
        with Client(config.address) as client:
            yield client
        return
    with (
        LocalCluster(n_workers=config.n_workers or 1, threads_per_worker=1, processes=True) as cl,
        Client(cl) as client,
    ):
        yield client


def compute(
    *collections: Any,
    config: ComputeConfig | None = None,
    client: Any = None,
    description: str = "computing",
) -> tuple[Any, ...]:
    """Compute dask collections on the configured scheduler, with a progress bar.

    Parameters
    ----------
    *collections
        Dask arrays, dataframes or delayed objects.
    config : ComputeConfig, optional
        Scheduler choice; defaults to local threads.
    client : distributed.Client, optional
        Use this client (overrides ``config.scheduler``).
    description : str
        Label of the progress bar.

    Returns
    -------
    tuple
        The computed results, one per collection.
    """
    config = config or ComputeConfig()
    if client is not None:
        return tuple(client.compute(list(collections), sync=True))
    if config.scheduler == "distributed":
        with open_client(config) as cl:
            return tuple(cl.compute(list(collections), sync=True))
    kwargs: dict[str, Any] = {"scheduler": config.scheduler}
    if config.n_workers and config.scheduler != "synchronous":
        kwargs["num_workers"] = config.n_workers
    with RichProgress(description, enabled=config.progress):
        return tuple(dask.compute(*collections, **kwargs))
