"""Readers and writers, one module per file-format family (see docs/formats/)."""
