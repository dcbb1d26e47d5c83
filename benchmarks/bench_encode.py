"""Window mode: isolated windows through the encoder, batch 1 (latency) and 64 (throughput)."""

from benchmarks.workload import CONFIG_NAMES, ISAS, STDS, WEIGHTS, load, model_path, p99_us, signal, weights_path


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


class ShippedWeights:
    """One window, batch 1, shipped vs random weights at input std 0.3, 1 and 3.

    The two cost the same unless the data slows some operations down: the
    shipped models once ran 15-70x slower than random weights on an Intel
    core because their activations underflowed into subnormals (csrc/fpmode.h).
    """

    params = (list(CONFIG_NAMES), list(WEIGHTS), list(STDS), list(ISAS))
    param_names = ["model", "weights", "std", "isa"]

    def setup(self, name: str, weights: str, std: float, isa: str) -> None:
        self.model = load(weights_path(name, weights), isa)
        cfg = self.model.config
        self.x = signal(cfg["window"], cfg["fs"], cfg["in_channels"], std=std)

    def time_encode(self, name: str, weights: str, std: float, isa: str) -> None:
        self.model.encode(self.x)

    def track_p99_encode(self, name: str, weights: str, std: float, isa: str) -> float:
        return p99_us(lambda: self.model.encode(self.x))

    track_p99_encode.unit = "µs"
