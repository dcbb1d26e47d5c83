"""Stream mode: the steady-state cost of pushing 1 s of signal into a running stream."""

from benchmarks.workload import CONFIG_NAMES, ISAS, load, model_path, p99_us, signal


class StreamPush:
    """One `Stream.push` of fs samples (already normalised), after a window has filled every level."""

    params = (list(CONFIG_NAMES), list(ISAS))
    param_names = ["model", "isa"]
    unit = "µs"

    def setup(self, name: str, isa: str) -> None:
        model = load(model_path(name), isa)
        cfg = model.config
        self.stream = model.stream(normalize=False)
        self.stream.push(signal(cfg["window"], cfg["fs"], cfg["in_channels"]))
        self.second = signal(int(cfg["fs"]), cfg["fs"], cfg["in_channels"], seed=1)

    def time_push_1s(self, name: str, isa: str) -> None:
        self.stream.push(self.second)

    def track_p99_push_1s(self, name: str, isa: str) -> float:
        return p99_us(lambda: self.stream.push(self.second))
