"""Serial electron diffraction: pre-processing and the serial pipeline."""
