"""Models: components, the coupled system, model cards, PK and PD families."""
