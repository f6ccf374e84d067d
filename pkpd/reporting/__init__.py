"""Reporting: forecast JSON, tables and fan charts (``forecast``); HTML reports of fits and
forecasts (``report``, with ``simulation``, ``diagnostics``, ``gof``, ``npde``, ``shrinkage``,
``vpc``, ``individual``, ``figures``, ``html``)."""
