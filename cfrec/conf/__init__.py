"""The presets of every app (yaml over the schemas of `cfrec.apps.schema`, registered on import)."""

import cfrec.apps  # noqa: F401 (registers the schemas with Hydra's ConfigStore)
