"""Window mode: isolated windows through the encoder, batch 1 (latency) and 64 (throughput)."""

from benchmarks.workload import CONFIG_NAMES, ISAS, load, model_path, p99_us, signal


class WindowEncode:
    """Time of one `Model.encode` call on `batch` windows."""

    params = (list(CONFIG_NAMES), [1, 64], list(ISAS))
    param_names = ["model", "batch", "isa"]

    def setup(self, name: str, batch: int, isa: str) -> None:
        self.model = load(model_path(name), isa)
        cfg = self.model.config
        x = signal(batch * cfg["window"], cfg["fs"], cfg["in_channels"])
        self.x = x.reshape(cfg["in_channels"], batch, cfg["window"]).transpose(1, 0, 2).copy()

    def time_encode(self, name: str, batch: int, isa: str) -> None:
        self.model.encode(self.x)


class WindowLatency:
    """Tail latency of a single window: the 99th percentile the median hides."""

    params = (list(CONFIG_NAMES), list(ISAS))
    param_names = ["model", "isa"]
    unit = "µs"

    def setup(self, name: str, isa: str) -> None:
        self.model = load(model_path(name), isa)
        cfg = self.model.config
        self.x = signal(cfg["window"], cfg["fs"], cfg["in_channels"])

    def track_p99_encode(self, name: str, isa: str) -> float:
        return p99_us(lambda: self.model.encode(self.x))
