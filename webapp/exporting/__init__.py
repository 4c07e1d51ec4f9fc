"""Dataset export: pure code that turns plain item records into rows and files.

No database and no Django here: the caller (the export service) reads items in chunks and hands
them over as `records.ExportItem`; `formats` builds rows, `writers` writes JSONL, Parquet and
Hugging Face dataset directories. Every output is deterministic: the same items and options give
byte-identical files.
"""
