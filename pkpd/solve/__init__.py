"""Solver options and the batched, segmented ODE solves."""
