"""Parameters of scaling, post-refinement and merging (private; re-exported by merging)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from crystalscope.errors import ConfigError
from crystalscope.integrate.observations import FLAGS_EXCLUDED_BY_DEFAULT
from crystalscope.integrate.partiality import PARTIALITY_MODELS

__all__ = ["MergeParams"]


@dataclass(frozen=True)
class MergeParams:
    """How observations are scaled, post-refined and merged.

    Parameters
    ----------
    partiality : {"xsphere", "gaussian", "unity"}
        Partiality model (:func:`crystalscope.integrate.partiality.partiality`);
        ``"unity"`` is plain (Monte-Carlo) averaging.
    n_cycles : int
        Scaling (+ post-refinement) cycles, each against a reference merged from the
        previous cycle's parameters.  0: merge with the initial parameters only.
    scale, b_factor : bool
        Refine each crystal's scale ``G`` and relative B factor (A^2).
    post_refine : bool
        Refine each crystal's two tilt angles (about lab x and y) and its profile radius
        ``R``; ignored for ``"unity"``.
    bandwidth : float
        ``w`` (1/A) of the ``xsphere`` model (0 for a monochromatic beam).
    min_partiality : float
        Observations whose model partiality, or whose model fraction of the full
        intensity (partiality times the crystal's relative B attenuation
        ``exp(-B / 2d^2)``), is below this are not merged (but they take part in
        post-refinement, where they tell that a reflection is *not* excited).
    min_cc_z : float or None
        Reject crystals whose intensities do not correlate with the reference of the
        other crystals: ``atanh(CC) sqrt(n - 3) < min_cc_z`` (Fisher's z of the
        per-crystal CC over its ``n`` usable observations; 3 is a 3-sigma test that the
        CC is positive).  Catches false lattices and split solutions, which scaling alone
        would keep with a tiny scale after they have spoilt the reference.  ``None``:
        off.
    reject_delta_cc : float or None
        Reject crystals whose delta-CC1/2 is negative (their removal raises CC1/2) and
        below ``mean - reject_delta_cc * std`` of all kept crystals (Assmann et al.
        2016); ``None`` switches it off.
    min_observations : int
        Crystals with fewer usable observations are rejected.
    exclude_flags : int
        Observations with any of these flag bits are ignored.
    d_min, d_max : float or None
        Resolution range (A) of the observations used.
    max_abs_b : float
        Bound of ``|B|`` (A^2).
    max_tilt_deg : float
        Bound of each post-refined tilt angle (degrees); also the half-width of the grid
        searched in the first post-refinement cycle.
    max_radius_factor : float
        The refined profile radius stays within ``[R0 / f, R0 * f]`` of the crystal's
        initial radius ``R0`` (from the observation table).
    error_fraction : float or None
        Relative model error ``e`` in the scaling weights
        ``1 / (sigma^2 + (e G exp(-B/2d^2) I_ref)^2)``; ``None``: 1.0 for ``unity``
        (the partiality is not modelled, so the model error is of the order of the
        intensity itself) and 0.1 for the partiality models.
    """

    partiality: str = "xsphere"
    n_cycles: int = 3
    scale: bool = True
    b_factor: bool = True
    post_refine: bool = True
    bandwidth: float = 0.0
    min_partiality: float = 0.1
    min_cc_z: float | None = 3.0
    reject_delta_cc: float | None = 3.0
    min_observations: int = 10
    exclude_flags: int = FLAGS_EXCLUDED_BY_DEFAULT
    d_min: float | None = None
    d_max: float | None = None
    max_abs_b: float = 100.0
    max_tilt_deg: float = 0.5
    max_radius_factor: float = 4.0
    error_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.partiality not in PARTIALITY_MODELS:
            raise ConfigError(
                f"unknown partiality model {self.partiality!r}; choose one of "
                f"{', '.join(PARTIALITY_MODELS)}",
                field="partiality",
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) and f.name not in ("scale", "b_factor", "post_refine"):
                raise ConfigError(f"must be a number, got {value!r}", field=f.name)
        _integer(self.n_cycles, "n_cycles", 0)
        _integer(self.min_observations, "min_observations", 1)
        _integer(self.exclude_flags, "exclude_flags", 0)
        _number(self.bandwidth, "bandwidth", 0.0, lower_open=False)
        _number(self.min_partiality, "min_partiality", 0.0, upper=1.0, lower_open=False)
        _number(self.max_abs_b, "max_abs_b", 0.0)
        _number(self.max_tilt_deg, "max_tilt_deg", 0.0, upper=10.0)
        _number(self.max_radius_factor, "max_radius_factor", 1.0, lower_open=False)
        if self.error_fraction is not None:
            _number(self.error_fraction, "error_fraction", 0.0, lower_open=False)
        if self.reject_delta_cc is not None:
            _number(self.reject_delta_cc, "reject_delta_cc", 0.0)
        if self.min_cc_z is not None:
            _number(self.min_cc_z, "min_cc_z", -math.inf, lower_open=False)
        for name in ("d_min", "d_max"):
            if getattr(self, name) is not None:
                _number(getattr(self, name), name, 0.0, upper=math.inf)
        if self.d_min is not None and self.d_max is not None and self.d_max <= self.d_min:
            raise ConfigError(
                f"d_max ({self.d_max} A) must exceed d_min ({self.d_min} A)", field="d_max"
            )

    @property
    def model_error(self) -> float:
        """The relative model error ``e`` used (see ``error_fraction``)."""
        if self.error_fraction is not None:
            return float(self.error_fraction)
        return 1.0 if self.partiality == "unity" else 0.1

    @property
    def refines_geometry(self) -> bool:
        """Whether tilts and profile radius are post-refined."""
        return self.post_refine and self.partiality != "unity"


def _integer(value: object, name: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}, got {value!r}", field=name)


def _number(
    value: object,
    name: str,
    lower: float,
    *,
    upper: float = math.inf,
    lower_open: bool = True,
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    number = float(value) if ok else math.nan  # type: ignore[arg-type]
    below = number <= lower if lower_open else number < lower
    if not ok or math.isnan(number) or below or number > upper or math.isinf(number):
        interval = f"{'(' if lower_open else '['}{lower}, {upper}]"
        raise ConfigError(f"must be a finite number in {interval}, got {value!r}", field=name)
