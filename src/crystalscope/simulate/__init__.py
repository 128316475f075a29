"""Forward models: physically faithful diffraction simulators (see docs/simulate.md).

* :mod:`~crystalscope.simulate.structure_factors`: |F|^2 from structures or MTZ files.
* :mod:`~crystalscope.simulate.kinematics`: which reflections diffract in a still, where
  they land and how many counts they carry (kinematic theory, exact Ewald sphere).
* :mod:`~crystalscope.simulate.render`: detector image formation and detector effects.
* :mod:`~crystalscope.simulate.presets`: detector presets (LAMBDA 750K, Timepix quad).
* :mod:`~crystalscope.simulate.rotation`, :mod:`~crystalscope.simulate.rotation_sim`,
  :mod:`~crystalscope.simulate.rotation_output`: continuous-rotation series.
* :mod:`~crystalscope.simulate.serial`: serial (still) data sets written as Datasets.

The simulators share the physics models of :mod:`crystalscope.model` but none of the
processing code they are used to check.
"""
