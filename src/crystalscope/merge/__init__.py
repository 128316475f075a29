"""Scaling, merging, validation and export of integrated observations.

* :mod:`~crystalscope.merge.merging`: per-crystal scale and B factor, partiality
  (post-)refinement, rejection, merged intensities and half-sets;
* :mod:`~crystalscope.merge.stats`: figures of merit per resolution shell (CC1/2, CC*,
  Rsplit, completeness, multiplicity, I/sigma) and the Wilson plot;
* :mod:`~crystalscope.merge.compare`: two merged sets against each other;
* :mod:`~crystalscope.merge.export`: MTZ, SHELX and CrystFEL files.
"""
