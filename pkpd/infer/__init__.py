"""Population inference: NUTS, SVI, MAP; the Fit result."""
