"""Models: loading (bundled, HF folder, GGUF, tiny), the architecture adapters and the canonical site naming."""
from actlab.models.adapter import Adapter, Unsupported
from actlab.models.load import BUNDLED, load_model, wrap
from actlab.models.model import Model, Recording
from actlab.models.sites import SITE_KINDS, SiteMap, SiteSpec
from actlab.models.tiny import TINY, byte_tokenizer

__all__ = ["Adapter", "Unsupported", "BUNDLED", "load_model", "wrap", "Model", "Recording", "SiteMap", "SiteSpec",
           "SITE_KINDS", "TINY", "byte_tokenizer"]
