"""Decoder: reconstructing one window with the pretraining mask (80 % of 5-sample patches lost)."""

from benchmarks.workload import CONFIG_NAMES, ISAS, load, model_path, p99_us, patch_mask, signal


class Reconstruct:
    """One `Model.reconstruct` call, batch 1: encoder, decoder and head."""

    params = (list(CONFIG_NAMES), list(ISAS))
    param_names = ["model", "isa"]
    unit = "µs"

    def setup(self, name: str, isa: str) -> None:
        self.model = load(model_path(name), isa)
        cfg = self.model.config
        self.x = signal(cfg["window"], cfg["fs"], cfg["in_channels"])
        self.mask = patch_mask(cfg["window"], cfg["patch_size"], cfg["mask_ratio"])

    def time_reconstruct(self, name: str, isa: str) -> None:
        self.model.reconstruct(self.x, self.mask)

    def track_p99_reconstruct(self, name: str, isa: str) -> float:
        return p99_us(lambda: self.model.reconstruct(self.x, self.mask))
