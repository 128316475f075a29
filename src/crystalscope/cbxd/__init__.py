"""Convergent-beam X-ray crystallography (CBXD): forward model of Bragg streaks from a
lens pupil and a voxel crystal shape (seed 000, section 2), see ``docs/cbxd.md``.

Modules: :mod:`.geometry` (Kossel circles, pupil, MLL pair, detector), :mod:`.shapes`
(voxel shapes and ray projections), :mod:`.intensity` (Eqs. 4, 5, 9-11); the simulator
is :mod:`crystalscope.simulate.cbxd`.
"""
