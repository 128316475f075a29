"""Continuous-rotation (cRED / 3D ED) data: scan description, hand-off files for XDS,
DIALS and REDp, Instamatic-style experiment directories, and running DIALS or XDS.

* :mod:`~crystalscope.rotation.scan`: :class:`RotationScanInfo`, the geometry of a series
  and its conversions to the conventions of XDS, DIALS, NeXus and Instamatic/REDp;
* :mod:`~crystalscope.rotation.handoff`: SMV frames, NXmx and the processing inputs;
* :mod:`~crystalscope.rotation.xds_input`, :mod:`~crystalscope.rotation.dials_script`,
  :mod:`~crystalscope.rotation.redp`: the individual input files;
* :mod:`~crystalscope.rotation.instamatic`: write and read Instamatic-style cRED
  directories (``cRED_log.txt``, ``tiff/``, ``SMV/``, ``RED/``, ``tiff_image/``);
* :mod:`~crystalscope.rotation.cred_import`: such a directory -> hand-off files;
* :mod:`~crystalscope.rotation.process`: run DIALS or XDS and parse their results.
"""

from crystalscope.rotation.scan import RotationScanInfo

__all__ = ["RotationScanInfo"]
