"""``compile(..., compress={...})``: the Deep Compression options, checked once, in the CLI's words."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InputError
from .cluster import ClusterWeights, check_assign, check_clusters, check_sparsity

ENTROPY_CODERS = ("huffman",)
# With calibration inputs and the refit: GPTQ, better in every case measured (assign.py's docstring).
DEFAULT_ASSIGN = "gptq"


@dataclass(frozen=True)
class CompressOptions:
    """``clusters``: k of every clustered layer (``--cluster``); ``layers``: {name pattern: k} to cluster
    only those (``--cluster-layers``); ``keep``: name patterns left fine; ``max_error``: choose each
    layer's k (from ``clusters`` up) by measured sensitivity on the calibration inputs, at most this
    summed relative output error (``--cluster-max-error``); ``refit``: with calibration inputs, refit the
    centroids by least squares on them (refit.py; ``--no-cluster-refit`` turns it off); ``sparsity``:
    {name pattern: fraction} (or one fraction) of the clustered layers' smallest weights pruned to exactly
    zero before clustering (``--cluster-sparsity``, sharing.py); ``entropy``: the
    coder of the standalone artifact's weights (``--entropy``); ``scaled``: a scale per output channel
    times one codebook per layer instead of a codebook of raw values (``--cluster-scaled``, sharing.py);
    ``assign``: how each weight's code is chosen (``--cluster-assign``): ``"nearest"`` entry (k-means'),
    or ``"gptq"``, against the layer's output error on the calibration inputs (assign.py; needs them and
    the refit). Default (None): ``DEFAULT_ASSIGN`` when the refit runs, else nearest."""

    clusters: int | None = None
    layers: dict[str, int] = field(default_factory=dict)
    keep: list[str] | None = None
    entropy: str | None = None
    seed: int = 0
    max_error: float | None = None
    refit: bool = True
    sparsity: dict[str, float] = field(default_factory=dict)
    scaled: bool = False
    assign: str | None = None

    @classmethod
    def coerce(cls, given: dict | None) -> CompressOptions:
        given = dict(given or {})
        unknown = set(given) - {"clusters", "layers", "keep", "entropy", "seed", "max_error", "refit",
                                "sparsity", "scaled", "assign"}
        if unknown:
            raise InputError(f"compress={{...}}: unknown option(s) {sorted(unknown)}; give clusters, layers, keep, "
                             f"max_error, refit, sparsity, scaled, assign, entropy or seed")
        max_error = given.get("max_error")
        if max_error is not None and not (isinstance(max_error, (int, float)) and max_error > 0):
            raise InputError(f"--cluster-max-error {max_error!r}: give a positive relative output error, e.g. 0.01")
        entropy = given.get("entropy")
        if entropy is not None and entropy not in ENTROPY_CODERS:
            raise InputError(f"--entropy {entropy!r}: choose {', '.join(ENTROPY_CODERS)}")
        clusters = given.get("clusters")
        scaled = given.get("scaled", False)
        if not isinstance(scaled, bool):
            raise InputError(f"compress={{'scaled': {scaled!r}}}: give True (a scale per output channel times a "
                             f"codebook per layer, --cluster-scaled) or False")
        if scaled and clusters is None and not given.get("layers") and max_error is None:
            raise InputError("compress={'scaled': True} (--cluster-scaled) shapes the clustered layers' codebooks: "
                             "give clusters, layers or max_error too (--cluster K, --cluster-layers PATTERN=K,... "
                             "or --cluster-max-error E)")
        if given.get("sparsity") and clusters is None and not given.get("layers") and max_error is None:
            raise InputError("compress={'sparsity': ...} prunes the clustered layers before clustering: give clusters "
                             "or layers too (--cluster K or --cluster-layers PATTERN=K,...)")
        return cls(check_clusters(clusters) if clusters is not None else None, dict(given.get("layers") or {}),
                   given.get("keep"), entropy, int(given.get("seed", 0)),
                   float(max_error) if max_error is not None else None, bool(given.get("refit", True)),
                   check_sparsity(given.get("sparsity")), scaled,
                   check_assign(given["assign"]) if given.get("assign") is not None else None)

    @property
    def requested(self) -> bool:
        """Whether these options ask for any compression (the compile report then sizes each stage)."""
        return self.clustering or self.entropy is not None

    @property
    def clustering(self) -> bool:
        """Whether these options ask for weight clustering (not only entropy coding)."""
        return self.clusters is not None or bool(self.layers) or self.max_error is not None

    def cluster_pass(self, evaluate=None, samples: list | None = None) -> ClusterWeights | None:
        """The clustering pass these options ask for, None when they ask for none (``evaluate`` and
        ``samples``: the calibration of ``max_error``'s measurements and of the refit)."""
        if not self.clustering:
            return None
        default = 16 if self.max_error is None else 4
        assign = self.assign or (DEFAULT_ASSIGN if self.refit and evaluate is not None and samples else "nearest")
        return ClusterWeights(self.clusters or default, layers=self.layers, keep=self.keep, seed=self.seed,
                              max_error=self.max_error, evaluate=evaluate, samples=samples, refit=self.refit,
                              sparsity=self.sparsity, scaled=self.scaled, assign=assign)


def stage_sizes(fp32_bytes: int, pruned_bytes: int, quantized_bytes: int, findings: dict | None) -> dict:
    """Weight bytes after each stage (fp32 -> pruned -> int8 -> clustered -> coded): the clustered and coded
    stages change the clustered layers only, as ClusterWeights measured them."""
    layers = (findings or {}).get("layers", [])
    before = sum(layer["bytes"] for layer in layers)
    clustered = quantized_bytes - before + sum(layer["clustered_bytes"] for layer in layers)
    coded = quantized_bytes - before + sum(layer["coded_bytes"] for layer in layers)
    stages = {"fp32": fp32_bytes, "pruned": pruned_bytes, "quantized": quantized_bytes, "clustered": clustered,
              "coded": coded}
    return {"bytes": stages, "ratio_to_fp32": {k: round(fp32_bytes / v, 2) if v else None for k, v in stages.items()}}
