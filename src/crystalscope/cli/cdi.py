"""``crystalscope cdi simulate|reconstruct|plan``: coherent diffraction imaging.

* ``simulate`` writes a test pattern (CXI-style HDF5 with its mask) and the true object;
* ``reconstruct`` runs N phase retrievals from random starts, keeps the best k by free
  log-likelihood, aligns and averages them, and writes the object, the PRTF and figures;
* ``plan`` prints the sampling table of seed 002 section 4 for a CDI geometry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from crystalscope.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from crystalscope.cdi.runs import RunResult

__all__ = ["app"]

app = typer.Typer(help="Coherent diffraction imaging (phase retrieval).", no_args_is_help=True)
console = Console(highlight=False)

OverwriteOpt = Annotated[bool, typer.Option(help="Replace earlier outputs.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]

_OBJECTS = ("test-pattern", "porous", "octahedra")


@app.command("simulate")
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Pattern file (.cxi/.h5/.npz).")] = Path(
        "pattern.cxi"
    ),
    obj: Annotated[str, typer.Option("--object", help="test-pattern, porous or octahedra.")] = (
        "test-pattern"
    ),
    size: Annotated[int, typer.Option(help="Array size along each axis, pixels.")] = 256,
    dims: Annotated[int, typer.Option(help="2 or 3 dimensions.")] = 2,
    oversampling: Annotated[float, typer.Option(help="Linear oversampling ratio.")] = 3.2,
    photons: Annotated[float, typer.Option(help="Total photons on the detector.")] = 1e8,
    beamstop_px: Annotated[float, typer.Option(help="Beamstop radius, pixels.")] = 2.5,
    gap_px: Annotated[int, typer.Option(help="Module-gap width, pixels.")] = 0,
    module_px: Annotated[int, typer.Option(help="Module period, pixels.")] = 0,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Simulate a far-field pattern; writes OUT and OUT's stem + '.truth.npz'."""
    import numpy as np

    from crystalscope.cdi import simulate as sim
    from crystalscope.cdi.io import write_pattern
    from crystalscope.io.atomic import atomic_path, check_outputs_free

    if obj not in _OBJECTS:
        raise ConfigError(f"unknown object {obj!r}; use {', '.join(_OBJECTS)}", field="--object")
    if dims not in (2, 3):
        raise ConfigError("dims must be 2 or 3", field="--dims")
    if oversampling < 1:
        raise ConfigError("oversampling must be >= 1", field="--oversampling")
    truth_path = out.with_name(out.stem + ".truth.npz")
    check_outputs_free([out, truth_path], overwrite=overwrite)
    shape = (size,) * dims
    makers: dict[str, Callable[..., np.ndarray]] = {
        "test-pattern": sim.resolution_target,
        "porous": sim.porous_particle,
        "octahedra": sim.octahedral_cluster,
    }
    truth = makers[obj](shape, size / oversampling)
    pattern = sim.simulate_pattern(
        truth,
        photons,
        beamstop_radius_px=beamstop_px,
        gap_px=gap_px,
        module_px=module_px,
        seed=seed,
    )
    write_pattern(out, pattern.intensity, pattern.mask, overwrite=overwrite)
    with atomic_path(truth_path, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, object=truth)
    console.print(
        f"{obj} {shape}: oversampling {sim.oversampling_ratio(truth):.2f}, "
        f"{int(pattern.mask.sum())} unknown pixels -> {out}, {truth_path}"
    )


@app.command("reconstruct")
def reconstruct(
    pattern: Annotated[Path, typer.Argument(help="Pattern file (.cxi/.h5/.npz/.npy/.tif).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("cdi"),
    mask: Annotated[Path | None, typer.Option(help="Mask file (non-zero = unknown).")] = None,
    dataset: Annotated[str | None, typer.Option(help="HDF5 dataset of the pattern.")] = None,
    algorithm: Annotated[str | None, typer.Option(help="Algorithm string.")] = None,
    runs: Annotated[int, typer.Option(help="Independent runs.")] = 8,
    keep: Annotated[int, typer.Option(help="Best runs kept for the average.")] = 4,
    positivity: Annotated[bool, typer.Option(help="Real, non-negative object.")] = False,
    free_fraction: Annotated[float, typer.Option(help="Reserved free pixels.")] = 0.05,
    backend: Annotated[str, typer.Option(help="auto, numpy or cupy.")] = "auto",
    workers: Annotated[int, typer.Option(help="Parallel runs (threads).")] = 1,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Phase-retrieve PATTERN: object.npz, runs.csv, object.png, prtf.png in OUT."""
    from crystalscope.cdi.io import read_pattern
    from crystalscope.cdi.runs import DEFAULT_ALGORITHM, run_many
    from crystalscope.io.atomic import check_outputs_free

    if not 1 <= keep <= runs:
        raise ConfigError(f"keep must be in 1..runs ({runs}), got {keep}", field="--keep")
    names = ("object.npz", "runs.csv", "object.png", "prtf.png")
    if not out.is_dir():
        out.mkdir(parents=True)
    check_outputs_free([out / n for n in names], overwrite=overwrite)
    iobs, m = read_pattern(pattern, dataset=dataset, mask_path=mask)
    alg = algorithm or DEFAULT_ALGORITHM
    results = run_many(
        iobs,
        m,
        alg,
        n_runs=runs,
        seed=seed,
        n_workers=workers,
        positivity=positivity,
        free_fraction=free_fraction,
        backend=backend,
    )
    _write_results(out, results, keep, iobs, m, overwrite)


def _write_results(
    out: Path,
    results: list[RunResult],
    keep: int,
    iobs: np.ndarray,
    mask: np.ndarray,
    overwrite: bool,
) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from crystalscope.cdi.io import write_reconstruction
    from crystalscope.cdi.plots import plot_object, plot_resolution
    from crystalscope.cdi.runs import align, prtf, resolution_at
    from crystalscope.io.atomic import atomic_write

    kept = results[:keep]
    ref = kept[0].obj
    aligned = [align(ref, r.obj)[0] for r in kept]
    avg = np.mean(aligned, axis=0)
    q, p = prtf(aligned, iobs, mask)
    res = resolution_at(q, p, q_min=2.0 / min(iobs.shape))
    write_reconstruction(out / "object.npz", avg, kept[0].support, overwrite=overwrite, q=q, prtf=p)
    with atomic_write(out / "runs.csv", overwrite=overwrite) as fh:
        fh.write("rank,seed,llk,llk_free,kept\n")
        for i, r in enumerate(results):
            fh.write(f"{i + 1},{r.seed},{r.llk:.6g},{r.llk_free:.6g},{int(i < keep)}\n")
    plot_object(out / "object.png", avg, kept[0].support, overwrite=overwrite)
    plot_resolution(out / "prtf.png", q, {"PRTF": p}, resolution=res, overwrite=overwrite)
    console.print(
        f"kept {keep}/{len(results)} runs (free LLK {kept[0].llk_free:.3g}.."
        f"{kept[-1].llk_free:.3g}); PRTF 1/e at q = {res:.3f} cycles/pixel "
        f"(resolution {1 / res:.2f} pixels) -> {out}"
    )


@app.command("plan")
def plan(
    distance_mm: Annotated[float, typer.Option(help="Sample-detector distance, mm.")],
    pixel_um: Annotated[float, typer.Option(help="Detector pixel size, micrometres.")],
    n_pixels: Annotated[int, typer.Option(help="Detector pixels along one axis.")],
    sample_um: Annotated[float, typer.Option(help="Sample size, micrometres.")],
    wavelength_a: Annotated[float | None, typer.Option(help="Wavelength, A.")] = None,
    energy_kev: Annotated[float | None, typer.Option(help="Photon energy, keV.")] = None,
) -> None:
    """Print oversampling, resolution element and depth of field (seed 002 sec. 4)."""
    from crystalscope.cdi.plan import plan_sampling

    p = plan_sampling(
        distance_mm=distance_mm,
        pixel_size_um=pixel_um,
        n_pixels=n_pixels,
        sample_size_um=sample_um,
        wavelength_a=wavelength_a,
        energy_kev=energy_kev,
    )
    console.print(p.table())
