"""Deep Compression (Han et al. 2016), lossy: weight sharing by k-means, then entropy coding.

``ClusterWeights`` replaces each weight tensor's values by ``k`` shared centroids (per layer or per
output channel); the standalone backend then stores each tensor as Huffman codes of centroid
indices plus the centroid tables (``backends/standalone/weights.py``, ``weights="huffman"``). With
calibration inputs the centroids are refit by least squares to each layer's output (``CentroidRefit``).
``scaled=True``: a float16 scale per output channel times one codebook per layer instead.
``assign="gptq"``: each weight's code chosen against the layer's output error (GPTQ, ``gptq_assign``).
"""

from . import huffman
from .assign import ASSIGNMENTS, gptq_assign
from .cluster import ClusterWeights, check_clusters
from .kmeans import kmeans_1d
from .options import ENTROPY_CODERS, CompressOptions, stage_sizes
from .refit import CentroidRefit, solve_centroids
from .sensitivity import allocate_clusters, measure_cluster_sensitivity
from .sharing import cluster_scaled, cluster_tensor, expand_scaled, shared_weight_bytes

__all__ = ["ASSIGNMENTS", "CentroidRefit", "ClusterWeights", "CompressOptions", "ENTROPY_CODERS", "allocate_clusters",
           "check_clusters", "cluster_scaled", "cluster_tensor", "expand_scaled", "gptq_assign", "huffman", "kmeans_1d",
           "measure_cluster_sensitivity", "shared_weight_bytes", "solve_centroids", "stage_sizes"]
