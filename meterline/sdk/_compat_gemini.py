"""The Gemini drop-in (``meterline.sdk.compat.TrackedGemini``), apart so that only
its users need google-genai installed."""

from __future__ import annotations

from typing import Any

from google import genai

from meterline.sdk._recorder import Recorder
from meterline.sdk.compat import _accept_seed_keywords
from meterline.sdk.providers.gemini import wrap_gemini


class TrackedGemini(genai.Client):
    """``google.genai.Client``, metered (``models`` and ``aio.models``), accepting the
    seeds' per-call keywords on ``generate_content`` and ``generate_content_stream``.

    ``TrackedGemini(api_key=...).models.generate_content(model=..., contents=...,
    customer_id="acme")``; the async client is the same object's ``.aio``, as in
    google-genai. google-genai has no ``with_options()``: per-request options go in
    ``config=``, on the same metered client.
    """

    def __init__(self, *args: Any, meter: Recorder | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        wrap_gemini(self, meter)
        for models in (self.models, self.aio.models):
            _accept_seed_keywords(models, "generate_content", "generate_content_stream")
