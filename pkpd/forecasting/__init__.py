"""Individual forecasts, endpoints per lineage, dose recommendation."""
