"""Integration of Bragg reflections, shared by every modality.

* :mod:`~crystalscope.integrate.predict`: where each crystal's reflections land
  (orientation, cell, detector model, profile radius);
* :mod:`~crystalscope.integrate.summation`: summation in a circle with a local
  background annulus (plane or mean), flags for masked, saturated, edge and
  overlapping spots;
* :mod:`~crystalscope.integrate.frame`: both for every crystal of one frame, giving an
  observation table (:mod:`~crystalscope.integrate.observations`);
* :mod:`~crystalscope.integrate.partiality`: partiality models ``p(s)``.
"""
