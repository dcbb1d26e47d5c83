"""Stream mode: the steady-state cost of pushing 1 s of signal into a running stream."""

from benchmarks.workload import CONFIG_NAMES, ISAS, WEIGHTS, load, p99_us, signal, weights_path


class StreamPush:
    """One `Stream.push` of fs samples (already normalised), after a window has filled every level,
    with the shipped weights and with random ones."""

    params = (list(CONFIG_NAMES), list(WEIGHTS), list(ISAS))
    param_names = ["model", "weights", "isa"]
    unit = "µs"

    def setup(self, name: str, weights: str, isa: str) -> None:
        model = load(weights_path(name, weights), isa)
        cfg = model.config
        self.stream = model.stream(normalize=False)
        self.stream.push(signal(cfg["window"], cfg["fs"], cfg["in_channels"]))
        self.second = signal(int(cfg["fs"]), cfg["fs"], cfg["in_channels"], seed=1)

    def time_push_1s(self, name: str, weights: str, isa: str) -> None:
        self.stream.push(self.second)

    def track_p99_push_1s(self, name: str, weights: str, isa: str) -> float:
        return p99_us(lambda: self.stream.push(self.second))
