"""PK components: closed form, from data, or integrated ODE states."""
