"""Dose events with NONMEM semantics, and regimens."""
