"""Metaflow extension entry point of ``stowage-metaflow``: registers
:class:`StowageSerializer` (priority 50, ahead of Metaflow's pickle at 9999)."""

ARTIFACT_SERIALIZERS_DESC = [
    ("stowage", ".stowage_serializer.StowageSerializer"),
]
