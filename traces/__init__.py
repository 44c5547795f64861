"""Per-layer records, exporters and plots."""
