"""The Gradio demo (``atoken demo``, ``demos/app.py``). The UI lives in :mod:`.ui` (needs ``gradio``: install the
``demo`` extra); everything it computes is in the UI-free modules :mod:`.tasks`, :mod:`.visuals`, :mod:`.inputs`,
:mod:`.models` and :mod:`.examples`."""

from .inputs import DemoInputError, Limits
from .models import ModelStore

__all__ = ["DemoInputError", "Limits", "ModelStore"]
