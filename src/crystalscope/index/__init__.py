"""Unit cell and orientation from found peaks, shared by every modality.

* :mod:`.peaks` -- scattering vectors of found peaks (detector model, per-shot centre,
  ellipticity applied).
"""
