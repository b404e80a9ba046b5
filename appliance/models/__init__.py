"""The model library: provenance records, verification, and the registry of model files."""
