"""Exports of one stream's range to other tools' formats: hftbacktest (``.npz`` events), a Nautilus
``ParquetDataCatalog`` and Tardis-style CSV. ``from actors.export import export`` (or
:meth:`actors.restore.restorer.Restorer.export`); ``mode=export`` on the command line."""
from actors.export.driver import FORMATS, ExportError, ExportSummary, export

__all__ = ["FORMATS", "ExportError", "ExportSummary", "export"]
