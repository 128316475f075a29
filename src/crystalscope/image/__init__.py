"""Per-frame image kernels: arrays in, arrays or tables out."""
