"""Manifests: the CSV/TSV/JSONL/XLSX/Parquet readers, the YAML 1.2 loader with its
bounds, YAML expansion (defaults, matrix, templates, repeat, jobs_from) and job building."""
