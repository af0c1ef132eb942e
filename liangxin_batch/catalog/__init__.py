"""The model catalog: spec dataclasses, loading and validating catalog YAML
(`catalog.yaml` ships the built-in models), input validation and pricing."""
