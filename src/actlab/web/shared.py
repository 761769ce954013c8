"""The one model the server uses, loaded on first need (never at start-up) and shared by every request; a lock makes
the load happen once and serialises forward passes (hooks are per model, so two live requests must not overlap)."""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)


class SharedModel:
    """``get()`` loads the model named at start-up (or given ready-made) once; ``lock`` guards its use."""

    def __init__(self, name: str | None = None, model: Model | None = None, device: str | None = None):
        self.name = name or (model.name if model is not None else None)
        self._model = model
        self.device = device
        self.lock = threading.RLock()
        self.loads = 0

    @property
    def available(self) -> bool:
        return self._model is not None or bool(self.name)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> Model:
        with self.lock:
            if self._model is None:
                if not self.name:
                    raise LookupError("no model to run: start the server with --model NAME (or serve a cache/"
                                      "dictionary that names its model)")
                from actlab import load_model

                log.info("loading %s (first use)", self.name)
                self._model = load_model(self.name, device=self.device) if self.device else load_model(self.name)
                self.loads += 1
            return self._model

    def tokenizer(self):
        """The model's tokenizer, or None when no model can be named."""
        return self.get().tokenizer if self.available else None
