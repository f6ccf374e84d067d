"""Forecast JSON, tables and fan charts."""
