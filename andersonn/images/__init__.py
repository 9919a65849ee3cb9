"""Images stage: structures -> fixed-size node-neighbour graph images (C, H, W) float32."""

from andersonn.images.batch import FeaturizeResult, featurize_many
from andersonn.images.encode import encode, encode_labelled, encode_with_atoms
from andersonn.images.spec import (
    CHANNELS,
    DEFAULT_TASK,
    FEATURIZER_VERSION,
    IMAGE_SPECS,
    ImageSpec,
    get_spec,
)

__all__ = ["CHANNELS", "DEFAULT_TASK", "FEATURIZER_VERSION", "IMAGE_SPECS", "FeaturizeResult",
           "ImageSpec", "encode", "encode_labelled", "encode_with_atoms", "featurize_many",
           "get_spec"]
