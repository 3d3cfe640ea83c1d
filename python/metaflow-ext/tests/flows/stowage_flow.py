"""The flow the stowage-metaflow tests run: a numpy array, a tensor map, a
pyarrow table, a class (with METAFLOW_STOWAGE_CLASSES on) and plain data,
and a later step that mutates the array in place, as pickled arrays allow."""

import numpy as np
import pyarrow as pa
from metaflow import FlowSpec, step


class Scaler:
    """A class artifact: stored as source, loaded as stowage.ClassSource."""

    factor = 3

    def apply(self, x):
        return self.factor * x


class StowageFlow(FlowSpec):
    @step
    def start(self):
        self.arr = np.arange(12, dtype=np.float32).reshape(3, 4)
        self.weights = {"w": np.ones((2, 2), dtype=np.float16), "b": np.arange(3, dtype=np.int64)}
        self.table = pa.table({"x": pa.array([1, 2, None], pa.int64()), "s": ["a", "b", "c"]})
        self.scaler = Scaler
        self.plain = {"lr": 0.1, "tags": ["a", "b"]}
        self.next(self.mutate)

    @step
    def mutate(self):
        self.arr += 1
        self.weights["w"] *= 2
        self.rows = self.table.num_rows
        self.next(self.end)

    @step
    def end(self):
        assert float(self.arr[0, 0]) == 1.0


if __name__ == "__main__":
    StowageFlow()
