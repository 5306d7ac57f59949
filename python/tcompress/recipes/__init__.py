"""Model -> model transforms, each driven by a versioned config dataclass: ``compress_(model, *configs)``."""

from .compress import compress_
from .config import RecipeConfig, config_from_dict
from .factorize import FactorizeConfig, factorize_
from .quantize import QuantizeConfig
from .rotate import RotateConfig
from .serialize import load_compressed, read_manifest, save_compressed
from .substitute import SubstituteConfig, SubstitutedBlock, SubstitutionReport, substitute_

__all__ = [
    "FactorizeConfig",
    "QuantizeConfig",
    "RecipeConfig",
    "RotateConfig",
    "SubstituteConfig",
    "SubstitutedBlock",
    "SubstitutionReport",
    "compress_",
    "config_from_dict",
    "factorize_",
    "load_compressed",
    "read_manifest",
    "save_compressed",
    "substitute_",
]
