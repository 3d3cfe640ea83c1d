"""``StowageSerializer``: stowage's serializer plugins (tensor → safetensors,
arrow → Arrow IPC, class-source → Python source) as a Metaflow artifact
serializer (SPEC §12.4), following the rules Metaflow's
``metaflow.datastore.artifacts.serializer`` states:

- One blob per artifact (Metaflow stores exactly one): ``can_serialize`` asks
  stowage's dispatch which serializer would take the value and says yes only
  for a plugin (plain data stays with pickle unless ``STOWAGE_PLAIN``; classes
  only with ``STOWAGE_CLASSES``) and never for a composite (several blobs).
- ``serialize`` is side-effect free (no store, no files: stowage's in-memory
  serialize) and never compresses (Metaflow gzips every blob). Its metadata:
  ``obj_type`` is the Python type (``module.qualname[params]``, as stowage
  records it), ``encoding`` starts ``stowage:<encoding>``, ``size`` is the
  blob's length; stowage's own fields go into ``serializer_info`` under
  ``stowage_*`` keys. ``source`` is never set: Metaflow stamps the
  distribution's name there for its missing-serializer hint.

Decision: the encoding also carries everything a load needs, as
``;key=value`` fields after ``stowage:<encoding>`` (values percent-encoded):
``v`` (encoding version), ``obj_type`` (stowage's, e.g. ``tensor`` vs
``tensor_map``), ``blob`` (the blob's name), ``by`` (``serializer@version``)
and ``info.<key>`` for each of the plugin's own ``serializer_info`` pairs
(the class-source plugin's ``qualname`` and ``module``). Metaflow's client
(``Flow(...).latest_run[step].task.data.x``) loads an artifact knowing only
its encoding (the metadata provider's ``content_type``; ``serializer_info``
does not reach ``deserialize`` there), so ``serializer_info`` cannot be what
a load depends on. Routing (``can_deserialize``) uses the part before the
first ``;``. Example: ``stowage:safetensors;v=1;obj_type=tensor;blob=data;by=tensor@0.1.0``.
- ``SerializationFormat.WIRE`` raises ``NotImplementedError``, as pickle's does.
- ``can_deserialize`` is true for a ``stowage:`` encoding that an active
  stowage serializer reads; with that plugin missing or disabled Metaflow
  raises its "No deserializer claimed artifact" error, whose
  ``serializer_info`` names the stowage serializer.
- Loads behave like pickle's for the next step: numpy arrays come back as
  writable copies (a step may do ``self.arr += 1``), Arrow as
  ``pyarrow.Table`` (immutable anyway, zero-copy over the loaded blob),
  classes as ``stowage.ClassSource``.

Decision: since a load must give the next step what it saved, only values
that come back as themselves are claimed: an exact ``numpy.ndarray``, a
``dict`` (or ``stowage.TensorMap``) of them, an exact ``pyarrow.Table``.
Subclasses (masked arrays, ``np.matrix``), other Arrow producers (pandas and
polars frames, record batches, readers) and dict subclasses stay with
pickle: stowage would load them as a plain array or a ``pyarrow.Table``.

One ``stowage.Host`` per process (config as :mod:`..config.mfextinit_stowage`
says), made on first use; it never opens a store.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote, unquote

from metaflow.datastore.artifacts.serializer import (
    ArtifactSerializer,
    SerializationFormat,
    SerializationMetadata,
    SerializedBlob,
)

ENCODING_PREFIX = "stowage:"
_SAFE = "@._-"


def encode(meta: dict[str, Any], blob_name: str) -> str:
    """The Metaflow encoding of a stowage ``serialize`` result (module docs)."""
    fields = [
        ("v", str(meta["encoding_version"])),
        ("obj_type", meta["obj_type"]),
        ("blob", blob_name),
        ("by", "%s@%s" % (meta["serializer"], meta["serializer_version"])),
    ]
    fields += [("info." + key, value) for key, value in sorted(meta["serializer_info"].items())]
    return ENCODING_PREFIX + meta["encoding"] + "".join(
        ";%s=%s" % (quote(key, safe=_SAFE), quote(value, safe=_SAFE)) for key, value in fields
    )


def decode(encoding: str) -> tuple[dict[str, Any], str]:
    """``(meta, blob_name)`` for ``stowage.Host.deserialize`` from an encoding."""
    head, *pairs = encoding.split(";")
    fields = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError("stowage encoding field %r has no '='" % pair)
        fields[unquote(key)] = unquote(value)
    serializer, _, version = fields.get("by", "").partition("@")
    meta = {
        "obj_type": fields["obj_type"],
        "encoding": head[len(ENCODING_PREFIX) :],
        "encoding_version": int(fields["v"]),
        "serializer": serializer,
        "serializer_version": version,
        "serializer_info": {k[len("info.") :]: v for k, v in fields.items() if k.startswith("info.")},
    }
    return meta, fields["blob"]


_PLAIN_KINDS = frozenset(["null", "bool", "int", "float", "string", "bytes", "list", "map"])


def _option(name: str, default: Any) -> Any:
    from metaflow import metaflow_config

    return getattr(metaflow_config, name, default)


class StowageSerializer(ArtifactSerializer):
    """Artifacts through stowage's plugins: numpy arrays as safetensors,
    Arrow tables as Arrow IPC, classes (opt-in) as source. Never pickle."""

    TYPE = "stowage"
    PRIORITY = 50

    _lock = threading.Lock()
    _hosts: dict[Any, Any] = {}

    @classmethod
    def setup_imports(cls, context=None):
        # An ImportError here parks the serializer until `stowage` imports.
        cls.lazy_import("stowage")
        cls.lazy_import("numpy")

    @classmethod
    def host(cls) -> Any:
        """This process's ``stowage.Host`` (one per config path)."""
        config = _option("STOWAGE_CONFIG", None)
        with cls._lock:
            host = cls._hosts.get(config)
            if host is None:
                host = cls.stowage.Host(config=config)
                cls._hosts[config] = host
            return host

    @classmethod
    def can_serialize(cls, obj: Any) -> bool:
        is_table = (type(obj).__module__, type(obj).__qualname__) == ("pyarrow.lib", "Table")
        if hasattr(obj, "__arrow_c_stream__") and not is_table:
            return False  # before explain: exporting a reader's stream consumes it
        try:
            decision = cls.host().explain(obj)
        except TypeError:
            return False  # not a value stowage stores: pickle's
        winner = decision["winner"]
        if winner is None or winner == "composite":
            return False
        kind = decision["subject"][len("a ") : -len(" value")]
        if winner == "msgpack" or kind in _PLAIN_KINDS:
            return bool(_option("STOWAGE_PLAIN", False))
        if kind == "class_source":
            return bool(_option("STOWAGE_CLASSES", False))
        ndarray = cls.numpy.ndarray
        if kind == "tensor":
            return type(obj) is ndarray
        if kind == "tensor_map":
            return type(obj) in (dict, cls.stowage.TensorMap) and all(type(v) is ndarray for v in obj.values())
        if kind == "arrow":
            return is_table
        return True

    @classmethod
    def can_deserialize(cls, metadata: SerializationMetadata) -> bool:
        encoding = metadata.encoding or ""
        if not encoding.startswith(ENCODING_PREFIX):
            return False
        wanted = encoding.split(";", 1)[0][len(ENCODING_PREFIX) :]
        return any(
            row["state"] == "active" and wanted in row["encodings"]
            for row in cls.host().status()["serializers"]
        )

    @classmethod
    def serialize(cls, obj: Any, format: SerializationFormat = SerializationFormat.STORAGE):
        if format == SerializationFormat.WIRE:
            raise NotImplementedError(
                "StowageSerializer does not support the WIRE format; its blobs "
                "are binary files (safetensors, Arrow IPC), not text."
            )
        blobs, meta = cls.host().serialize(obj)
        if len(blobs) != 1:
            raise ValueError(
                "stowage serializer %s wrote %d blobs (%s); Metaflow stores one per artifact"
                % (meta["serializer"], len(blobs), ", ".join(sorted(blobs)))
            )
        ((blob_name, blob),) = blobs.items()
        info = {
            "stowage_obj_type": meta["obj_type"],
            "stowage_encoding_version": meta["encoding_version"],
            "stowage_serializer": meta["serializer"],
            "stowage_serializer_version": meta["serializer_version"],
            "stowage_blob": blob_name,
        }
        if meta["serializer_info"]:
            info["stowage_info"] = dict(meta["serializer_info"])
        return (
            [SerializedBlob(blob, is_reference=False)],
            SerializationMetadata(
                obj_type=meta["caller_type"],
                size=len(blob),
                encoding=encode(meta, blob_name),
                serializer_info=info,
            ),
        )

    @classmethod
    def deserialize(cls, data, metadata=None, format: SerializationFormat = SerializationFormat.STORAGE):
        if format == SerializationFormat.WIRE:
            raise NotImplementedError("StowageSerializer does not support the WIRE format.")
        meta, blob_name = decode(metadata.encoding)
        value = cls.host().deserialize({blob_name: bytes(data[0])}, meta)
        return cls._writable(value)

    @classmethod
    def _writable(cls, value: Any) -> Any:
        """Arrays as writable copies, as pickle would give them."""
        np = cls.numpy
        if isinstance(value, np.ndarray):
            return value.copy()
        if isinstance(value, cls.stowage.TensorMap):
            return cls.stowage.TensorMap({k: v.copy() for k, v in value.items()}, value.metadata)
        return value
