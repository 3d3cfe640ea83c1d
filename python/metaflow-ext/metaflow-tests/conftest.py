"""Not vendored (stowage's): proves the extension is installed and active
when Metaflow's own serializer tests start, so they run beside it."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def stowage_serializer_is_active():
    import metaflow.plugins  # noqa: F401  (bootstraps the serializers)
    from metaflow.datastore.artifacts.diagnostic import list_serializer_status

    rows = {r["name"]: (r["state"], r["source"]) for r in list_serializer_status()}
    assert rows.get("stowage") == ("active", "stowage-metaflow"), rows
    yield
