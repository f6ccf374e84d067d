"""PD systems: one module per model family."""
