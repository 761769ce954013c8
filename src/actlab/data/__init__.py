"""Text sources and context packing: documents from .txt/.jsonl/.parquet/local HF datasets, packed into fixed-length
token contexts that remember which document and position every token came from; real images (bundled digits)."""
from actlab.data.corpus import demo_corpus
from actlab.data.digits import Digits, load_digits
from actlab.data.pack import Packed, doc_tokens, iter_contexts, pack_contexts
from actlab.data.sources import DEMO, data_fingerprint, load_texts, resolve_data

__all__ = ["load_texts", "pack_contexts", "iter_contexts", "doc_tokens", "Packed", "demo_corpus", "data_fingerprint",
           "resolve_data", "DEMO", "Digits", "load_digits"]
