"""Dose fractionation: one indexing solution, integrated on exposures of several lengths.

Seed 004, section 3.3.3: when each crystal was recorded as a movie of dose fractions, the
orientation does not change between fractions, so the crystals indexed on one aggregation
(the ``preprocessed.h5`` that ``serial index`` read) are valid for every sum of the
same movie.  For each exposure ``n`` of ``dose.exposures``, the raw fractions
``first .. first + n - 1`` of every crystal are summed
(:meth:`crystalscope.dataset.Dataset.aggregate`, grouped by ``dose.by``), the crystals are
carried over through those key columns, and every crystal is integrated on the sum with a
plane background (the sums are not background-subtracted) and the geometry's bad-pixel
mask.  Each exposure gives its own observation table, merged and compared by
``crystalscope merge --series`` (:mod:`crystalscope.merge.series`), which recommends the
exposure to use.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd

from crystalscope.config import relative_to_config
from crystalscope.dataset import Dataset
from crystalscope.dataset.aggregate import group_rows
from crystalscope.errors import ConfigError, CrystalscopeError, DataError
from crystalscope.integrate.observations import empty_observations
from crystalscope.parallel import compute
from crystalscope.serial.integrate_config import DoseSeriesSection, IntegrateConfig
from crystalscope.serial.integration import (
    FRAMES_PER_TASK,
    IntegrationInput,
    IntegrationJob,
    IntegrationResult,
    integrate_block,
)

__all__ = ["DoseExposure", "carry_crystals", "integrate_dose_series"]


@dataclass
class DoseExposure:
    """Integration of one exposure length."""

    n_fractions: int
    dose_e_per_a2: float
    result: IntegrationResult


def _raw_movie(section: DoseSeriesSection, base: Path | None) -> Dataset:
    assert section.input is not None
    path = relative_to_config(section.input, base)
    if not path.is_file():
        raise CrystalscopeError("dose-series input not found", path=path, field="dose.input")
    raw = Dataset.open(path)
    needed = [*section.by, section.fraction_column]
    missing = [c for c in needed if c not in raw.shots.columns]
    if missing:
        raise ConfigError(
            f"the movie frames lack shots column(s) {', '.join(missing)}", path=path,
            field="dose.by",
        )  # fmt: skip
    return raw


def carry_crystals(
    crystals: pd.DataFrame, indexed_shots: pd.DataFrame, new_shots: pd.DataFrame, by: list[str]
) -> pd.DataFrame:
    """The crystals of ``indexed_shots``' frames moved to the frames of ``new_shots`` with
    the same values of the ``by`` columns (crystals without a match are dropped)."""
    missing = [c for c in by if c not in indexed_shots.columns]
    if missing:
        raise ConfigError(
            f"the indexed data lack shots column(s) {', '.join(missing)} to match movies",
            field="dose.by",
        )  # fmt: skip
    old = indexed_shots[["frame", *by]].rename(columns={"frame": "old_frame"})
    new = new_shots[["frame", *by]].rename(columns={"frame": "new_frame"})
    key = old.merge(new, on=by, how="inner")[["old_frame", "new_frame"]]
    moved = crystals.merge(key, left_on="frame", right_on="old_frame", how="inner")
    moved["frame"] = moved["new_frame"].astype(np.int64)
    return moved.drop(columns=["old_frame", "new_frame"]).reset_index(drop=True)


def _exposure_dose(raw: Dataset, section: DoseSeriesSection, n: int) -> float:
    """Accumulated dose (e/A^2) at the end of an exposure of ``n`` fractions.

    ``n * dose.per_fraction`` when configured; else from a ``dose_e_per_a2`` shots column
    holding, as the simulator writes it, the accumulated dose at the middle of each
    fraction (the last used fraction's value plus half a fraction); NaN without either.
    """
    if section.dose_per_fraction is not None:
        return (section.first + n) * section.dose_per_fraction
    if "dose_e_per_a2" not in raw.shots.columns:
        return float("nan")
    shots = raw.shots
    frac = shots[section.fraction_column]
    per_fraction = shots.groupby(frac)["dose_e_per_a2"].median().sort_index()
    if len(per_fraction) == 0:
        return float("nan")
    step = (
        float(np.median(np.diff(per_fraction.to_numpy())))
        if len(per_fraction) > 1
        else float(2 * per_fraction.iloc[0])
    )
    last = per_fraction[per_fraction.index < section.first + n]
    return float(last.iloc[-1] + 0.5 * step) if len(last) else float("nan")


def _exposure_query(section: DoseSeriesSection, n: int) -> str:
    col = section.fraction_column
    return f"`{col}` >= {section.first} and `{col}` < {section.first + n}"


def _integrate_movies(
    movies: list[Any],
    fractions: list[np.ndarray],
    crystals: list[list[pd.DataFrame | None]],
    job: IntegrationJob,
    limits: list[int],
) -> list[pd.DataFrame]:
    """Observations per exposure for a block of movies, each read once.

    ``movies[i]`` holds the fractions ``fractions[i]`` (sorted) of one crystal's movie;
    the exposure ending before fraction ``limits[e]`` is the sum of the fractions below
    it, integrated for ``crystals[i][e]`` (None: not on that exposure).
    """
    tables: list[list[pd.DataFrame]] = [[] for _ in limits]
    for movie, frac, wanted in zip(movies, fractions, crystals, strict=True):
        total = np.zeros(movie.shape[1:], np.float32)
        used = 0
        for e, limit in enumerate(limits):
            n = int(np.searchsorted(frac, limit))
            for k in range(used, n):
                total += movie[k]
            used = n
            if wanted[e] is not None and n > 0:
                tables[e].append(integrate_block(total[np.newaxis], None, [wanted[e]], job))
    return [
        pd.concat([t for t in ts if len(t)], ignore_index=True)
        if any(len(t) for t in ts)
        else empty_observations()
        for ts in tables
    ]


def _movie_tasks(
    raw: Dataset,
    section: DoseSeriesSection,
    exposures: list[int],
    crystals: list[pd.DataFrame],
    summed: list[Dataset],
    job: Any,
) -> list[Any]:
    """One dask task per :data:`FRAMES_PER_TASK` movies: read the fractions of the longest
    exposure once and integrate every exposure of each movie."""
    sel = raw.select(_exposure_query(section, max(exposures)))
    by, col = list(section.by), section.fraction_column
    by_frame = [dict(tuple(c.groupby("frame", sort=False))) for c in crystals]
    frame_of = [
        dict(zip(map(tuple, s.shots[by].to_numpy().tolist()), s.shots["frame"], strict=True))
        for s in summed
    ]
    limits = [section.first + n for n in exposures]
    movies, fractions, wanted = [], [], []
    for rows in group_rows(sel.shots, by):
        key = tuple(sel.shots[by].iloc[rows[0]].tolist())
        per_exposure = [by_frame[e].get(frame_of[e].get(key, -1)) for e in range(len(exposures))]
        if all(w is None for w in per_exposure):
            continue
        frac = sel.shots[col].to_numpy()[rows]
        order = np.argsort(frac, kind="stable")
        rows, frac = rows[order], frac[order]
        part = sel.data[rows] if np.any(np.diff(rows) != 1) else sel.data[rows[0] : rows[-1] + 1]
        movies.append(part)
        fractions.append(frac)
        wanted.append(per_exposure)
    tasks = []
    for i in range(0, len(movies), FRAMES_PER_TASK):
        block = slice(i, i + FRAMES_PER_TASK)
        task = dask.delayed(_integrate_movies, pure=True)
        tasks.append(task(movies[block], fractions[block], wanted[block], job, limits))
    return tasks


def integrate_dose_series(
    data: IntegrationInput,
    reference: IntegrationResult,
    cfg: IntegrateConfig,
    *,
    base: Path | None = None,
    client: Any = None,
) -> list[DoseExposure]:
    """Integrate every crystal of ``data`` on each exposure of ``cfg.dose`` (module doc).

    ``reference`` is the integration of the indexed frames: its resolution range,
    parameters and crystal numbers are reused so that the exposures differ only in dose.
    Every movie is read once: the exposures are its running sums.

    Raises
    ------
    DataError
        If no crystal of the indexed data is found in the movie frames.
    """
    t0 = time.perf_counter()
    section = cfg.dose
    raw = _raw_movie(section, base)
    detector = data.frames.detector
    params = dataclasses.replace(reference.params, background="plane")
    job = IntegrationJob(
        detector, reference.wavelength, params, reference.d_min, reference.d_max,
        data.space_group.xhm(), detector.bad_pixel_mask(detector.raw_shape),
    )  # fmt: skip
    exposures = sorted(set(section.exposures))
    summed = [
        raw.aggregate(section.by, "sum", query=_exposure_query(section, n), stacks=[])
        for n in exposures
    ]
    crystals = [
        carry_crystals(reference.crystals, data.frames.dataset.shots, s.shots, section.by)
        for s in summed
    ]
    if all(c.empty for c in crystals):
        raise DataError(
            "no indexed crystal was found in the movie frames (matched by "
            f"{', '.join(section.by)})", path=section.input, field="dose.by",
        )  # fmt: skip
    shared: Any = client.scatter(job, broadcast=True) if client is not None else dask.delayed(job)
    tasks = _movie_tasks(raw, section, exposures, crystals, summed, shared)
    done = compute(*tasks, config=cfg.compute, client=client, description="dose series")
    seconds = (time.perf_counter() - t0) / len(exposures)
    out = []
    for e, n in enumerate(exposures):
        parts = [d[e] for d in done if len(d[e])]
        obs = pd.concat(parts, ignore_index=True) if parts else empty_observations()
        result = dataclasses.replace(
            reference, observations=obs, crystals=crystals[e], params=params,
            seconds=seconds, notes=[],
        )  # fmt: skip
        out.append(DoseExposure(n, _exposure_dose(raw, section, n), result))
    return out
