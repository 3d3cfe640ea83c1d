"""Options of the stowage artifact serializer, read by Metaflow's
``from_conf`` (environment ``METAFLOW_<NAME>``, else the Metaflow config
file).

- ``STOWAGE_CLASSES`` (default false): store class objects through stowage's
  class-source plugin. Off by default because such an artifact loads as
  ``stowage.ClassSource`` (source text; ``.build()`` runs it), not as the
  class pickle would give back.
- ``STOWAGE_PLAIN`` (default false): store plain data (numbers, strings,
  lists, dicts) through stowage's msgpack fallback instead of pickle.
- ``STOWAGE_CONFIG``: the stowage ``plugins.toml`` to use (default: as the
  ``stowage`` command finds it: ``$STOWAGE_CONFIG``, else ``./plugins.toml``;
  the wheel's bundled plugins are always there).
"""

from metaflow.metaflow_config_funcs import from_conf

STOWAGE_CLASSES = from_conf("STOWAGE_CLASSES", False)
STOWAGE_PLAIN = from_conf("STOWAGE_PLAIN", False)
STOWAGE_CONFIG = from_conf("STOWAGE_CONFIG")
