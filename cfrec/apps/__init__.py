"""Command-line applications (Hydra): cfrec-train, cfrec-compare."""
