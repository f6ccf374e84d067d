"""The statistical model (population, residual errors) and simulation."""
