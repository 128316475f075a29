"""Unit cell and orientation from found peaks, shared by every modality.

* :mod:`.peaks` -- scattering vectors of found peaks (detector model, per-shot centre,
  ellipticity applied);
* :mod:`.powder` -- virtual powder pattern and within-frame pair-distance histogram of a
  data set; :mod:`.cell_refine` -- a known cell refined against both;
* :mod:`.cell_find` -- the cell without a prior, Bravais lattices ranked;
* :mod:`.stills` -- orientations of still patterns for a known cell, up to two lattices
  per pattern; :mod:`.compare` -- misorientation between orientations;
* :mod:`.assign` -- Miller indices of peaks from orientations;
* :mod:`.ambiguity` -- one indexing setting across a data set (merohedral ambiguity).
"""
