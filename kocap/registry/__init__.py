"""MLflow registry: the pyfunc captioner, lineage on every version, gated promotion."""
