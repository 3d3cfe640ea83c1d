"""Metaflow's S3 datastore, timed for the S3 bench (tests/benches/s3.rs).

The bench starts s3s-fs, measures stowage on it, then runs this script with
the interop venv's Python against the same server (same bucket, its own
prefix) and prints the ratios. It times Metaflow's own datastore API the way
``python/bench.py`` times Metaflow's local datastore, with the S3 storage
implementation instead: a ``TaskDataStore`` (``FlowDataStore`` with
``S3Storage``) and its ``save_artifacts`` / ``load_artifacts`` (pickle, then
Metaflow's gzip, through boto3), on

- ``count`` small dicts, the same as the Rust bench's (``step``, ``loss``,
  ``tag``), saved in one ``save_artifacts`` call and loaded in one
  ``load_artifacts`` call (checked equal);
- a float32 array of ``tensor_bytes`` with the Rust bench's values
  (``i * 0.5``), saved, then loaded (checked equal).

Then, for where the tensor's time goes, what the server does for a client
that only moves the same bytes (boto3, no pickle, no gzip): one PUT, a
multipart upload (boto3's defaults: 8 MiB parts, 10 threads), one GET, and
a download in parallel ranges (same defaults); and the size of the object
Metaflow stored for the tensor (gzip shrinks the bench's values).

Prints one JSON object: ``small_save`` and ``small_load`` (artifacts per
second), ``tensor_save``, ``tensor_load``, ``raw_put``, ``raw_put_multipart``,
``raw_get``, ``raw_get_parallel`` (seconds) and ``tensor_stored`` (bytes).

Metaflow reads its configuration when it is imported, so the caller passes
``METAFLOW_DATASTORE_SYSROOT_S3``, ``METAFLOW_S3_ENDPOINT_URL`` and the AWS
credentials in the environment, and runs it in a scratch directory: Metaflow's
S3 client spools its transfers under the working directory it was imported
in (``METAFLOW_ARTIFACT_LOCALROOT``'s default).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time

import boto3
import numpy as np
from metaflow.datastore.flow_datastore import FlowDataStore
from metaflow.metaflow_config import DATASTORE_SYSROOT_S3, S3_ENDPOINT_URL
from metaflow.plugins.datastores.s3_storage import S3Storage


def task_datastore(task: int):
    """A writable task datastore on Metaflow's S3 storage under the
    configured root, with Metaflow's default (pickle) serialization."""
    flow = FlowDataStore(flow_name="BenchFlow", environment=None, metadata=None, event_logger=None,
                         monitor=None, storage_impl=S3Storage, ds_root=DATASTORE_SYSROOT_S3)
    task_ds = flow.get_task_datastore(run_id="1", step_name="start", task_id=str(task), attempt=0, mode="w")
    task_ds.init_task()
    return task_ds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--tensor-bytes", type=int, required=True)
    args = parser.parse_args()
    if not DATASTORE_SYSROOT_S3 or not S3_ENDPOINT_URL:
        print("error: METAFLOW_DATASTORE_SYSROOT_S3 and METAFLOW_S3_ENDPOINT_URL must be set", file=sys.stderr)
        return 1

    items = [(f"small-{i}", {"step": i, "loss": 1.0 / (i + 1), "tag": f"run-{i}"}) for i in range(args.count)]
    task_ds = task_datastore(1)
    start = time.perf_counter()
    task_ds.save_artifacts(iter(items), len_hint=len(items))
    small_save = len(items) / (time.perf_counter() - start)
    start = time.perf_counter()
    loaded = dict(task_ds.load_artifacts([name for name, _ in items]))
    small_load = len(items) / (time.perf_counter() - start)
    if loaded != dict(items):
        print("error: Metaflow loaded different small artifacts than it saved", file=sys.stderr)
        return 1

    array = np.arange(args.tensor_bytes // 4, dtype=np.int64).astype(np.float32) * np.float32(0.5)
    task_ds = task_datastore(2)
    start = time.perf_counter()
    task_ds.save_artifacts(iter([("tensor", array)]))
    tensor_save = time.perf_counter() - start
    start = time.perf_counter()
    back = dict(task_ds.load_artifacts(["tensor"]))["tensor"]
    tensor_load = time.perf_counter() - start
    if not np.array_equal(back, array):
        print("error: Metaflow loaded a different array than it saved", file=sys.stderr)
        return 1

    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT_URL)
    bucket, _, prefix = DATASTORE_SYSROOT_S3[len("s3://"):].partition("/")
    sizes = [obj["Size"]
             for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
             for obj in page.get("Contents", [])]
    raw = array.tobytes()
    single, multi = f"{prefix}-raw/single", f"{prefix}-raw/multipart"

    def timed(work) -> float:
        start = time.perf_counter()
        work()
        return time.perf_counter() - start

    raw_put = timed(lambda: s3.put_object(Bucket=bucket, Key=single, Body=raw))
    raw_put_multipart = timed(lambda: s3.upload_fileobj(io.BytesIO(raw), bucket, multi))
    raw_get = timed(lambda: s3.get_object(Bucket=bucket, Key=single)["Body"].read())
    raw_get_parallel = timed(lambda: s3.download_fileobj(bucket, single, io.BytesIO()))

    print(json.dumps({"small_save": small_save, "small_load": small_load,
                      "tensor_save": tensor_save, "tensor_load": tensor_load,
                      "raw_put": raw_put, "raw_put_multipart": raw_put_multipart,
                      "raw_get": raw_get, "raw_get_parallel": raw_get_parallel,
                      "tensor_stored": max(sizes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
