"""Coming from cmdrdata: images and audio transcription through the OpenAI wrapper and drop-in.

``client.images.generate(...)`` becomes an image event (count, size, quality), priced
by the book's image rules; ``client.audio.transcriptions.create(...)`` becomes audio
seconds priced per model by a units rule (``$0.006`` a minute = ``$0.0001`` a second),
the duration taken from the ``verbose_json`` response, else from a WAV upload's
header. Real openai clients against a fake provider server; real gateway, processor
and chDB; rows and money read back.
"""

from __future__ import annotations

import asyncio
import io
import uuid
import wave
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from meterline.sdk import Meter, customer, wrap
from meterline.sdk.compat import AsyncTrackedOpenAI, TrackedOpenAI
from tests.meterline.sdk.fakes.emitter_fake_server import FakeServer, Reply
from tests.meterline.sdk.fakes.emitter_payloads import CREATED, openai_error
from tests.support.stack import MeterlineProcess

BOOK = """
format: 1
images:
  - {provider: openai, model: dall-e-3, size: 1024x1024, quality: hd,
     cost_usd: 0.08, price_usd: 0.10}
  - {provider: openai, model: dall-e-3, cost_usd: 0.04}
units:
  - {unit: audio_second, model: whisper-1, cost_usd: 0.0001}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterlineProcess]:
    root = tmp_path_factory.mktemp("media")
    book = root / "book.yaml"
    book.write_text(BOOK)
    env = {
        "METERLINE_LOG": "embedded",
        "METERLINE_STORE": "chdb",
        "METERLINE_PARTITIONS": "2",
        "METERLINE_PRICE_BOOK": str(book),
    }
    process = MeterlineProcess(root / "data", env).start()
    yield process
    process.stop()


@pytest.fixture
def provider() -> Iterator[FakeServer]:
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def meter(stack: MeterlineProcess) -> Iterator[Meter]:
    meter = Meter(url=stack.url, source="/compat/media", flush_interval=0.05)
    yield meter
    meter.close()


def _rows(stack: MeterlineProcess, meter: Meter, subject: str, n: int) -> list[dict[str, Any]]:
    assert meter.flush(timeout=30)
    return stack.subject_rows(
        subject,
        n,
        (
            "type, model, images, image_size, image_quality, unit, "
            "toString(quantity) AS quantity, input_tokens, toString(cost_usd) AS cost, "
            "toString(price_usd) AS price, priced, status, error_type, http_status, metadata "
        ),
    )


def _images(n: int) -> Reply:
    return Reply(body={"created": CREATED, "data": [{"url": f"https://img/{i}"} for i in range(n)]})


def _wav(seconds_x_1000: int, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\0\0" * (rate * seconds_x_1000 // 1000))
    return buffer.getvalue()


def test_images_generate_on_the_drop_in_is_an_image_event_priced_by_size_and_quality(
    stack: MeterlineProcess, provider: FakeServer, meter: Meter
) -> None:
    subject = f"img-{uuid.uuid4().hex[:8]}"
    provider.expect("/images/generations", _images(2), _images(1))
    client: Any = TrackedOpenAI(
        api_key="sk-test", base_url=provider.url + "/v1", max_retries=0, meter=meter
    )
    hd = client.images.generate(
        model="dall-e-3",
        prompt="a lighthouse",
        n=2,
        size="1024x1024",
        quality="hd",
        customer_id=subject,  # cmdrdata's per-call keyword
    )
    assert len(hd.data) == 2  # the caller's response, untouched
    client.with_options(timeout=30).images.generate(
        model="dall-e-3", prompt="a boat", customer_id=subject
    )
    # Told apart by content, not by order: an image event's time is the provider's
    # `created` (whole seconds), so both calls usually share it and `id` decides.
    rows = _rows(stack, meter, subject, 2)
    (hd_row,) = [r for r in rows if r["image_quality"] == "hd"]
    (plain,) = [r for r in rows if r["image_quality"] != "hd"]
    assert (hd_row["type"], hd_row["model"], hd_row["images"]) == (
        "io.meterline.usage.image",
        "dall-e-3",
        "2",
    )
    assert (hd_row["image_size"], hd_row["image_quality"], hd_row["status"]) == (
        "1024x1024",
        "hd",
        "ok",
    )
    assert (Decimal(hd_row["cost"]), Decimal(hd_row["price"])) == (Decimal("0.16"), Decimal("0.2"))
    # No size or quality asked: the model's general rule, not a guessed size.
    assert (plain["images"], plain["image_size"], Decimal(plain["cost"])) == (
        "1",
        "",
        Decimal("0.04"),
    )


def test_a_verbose_json_transcription_is_priced_per_second_from_its_duration(
    stack: MeterlineProcess, provider: FakeServer, meter: Meter
) -> None:
    subject = f"stt-{uuid.uuid4().hex[:8]}"
    # OpenAI reports float32 seconds: kept to the millisecond.
    verbose = {"text": "hello", "language": "english", "duration": 61.50000023841858}
    provider.expect("/audio/transcriptions", Reply(body=verbose))
    client: Any = wrap(
        openai.OpenAI(api_key="sk-test", base_url=provider.url + "/v1", max_retries=0), meter
    )
    with customer(subject):
        result = client.audio.transcriptions.create(
            model="whisper-1", file=("talk.mp3", b"not really mp3"), response_format="verbose_json"
        )
    assert result.duration == verbose["duration"]
    (row,) = _rows(stack, meter, subject, 1)
    assert (row["type"], row["model"], row["unit"], Decimal(row["quantity"])) == (
        "io.meterline.usage.units",
        "whisper-1",
        "audio_second",
        Decimal("61.5"),
    )
    # 61.5 s x $0.0001 (= $0.006 a minute).
    assert Decimal(row["cost"]) == Decimal("0.00615") and row["priced"] == 1


def test_a_plain_json_transcription_of_a_wav_file_takes_the_duration_from_the_file(
    stack: MeterlineProcess, provider: FakeServer, meter: Meter, tmp_path: Path
) -> None:
    subject = f"wav-{uuid.uuid4().hex[:8]}"
    provider.expect("/audio/transcriptions", Reply(body={"text": "hi"}), Reply(body={"text": "x"}))
    path = tmp_path / "note.wav"
    path.write_bytes(_wav(2500))

    async def main() -> None:
        client: Any = AsyncTrackedOpenAI(
            api_key="sk-test", base_url=provider.url + "/v1", max_retries=0, meter=meter
        )
        with path.open("rb") as file:  # closed before the event is built on the sender
            await client.audio.transcriptions.create(
                model="whisper-1", file=file, customer_id=subject
            )
        # Not a WAV, no duration in the answer: recorded, never guessed.
        await client.audio.transcriptions.create(
            model="whisper-1", file=("a.mp3", b"ID3..."), customer_id=subject
        )
        await client.close()

    asyncio.run(main())
    rows = _rows(stack, meter, subject, 2)
    (known,) = [r for r in rows if Decimal(r["quantity"]) != 0]
    (unknown,) = [r for r in rows if Decimal(r["quantity"]) == 0]
    assert (Decimal(known["quantity"]), Decimal(known["cost"])) == (
        Decimal("2.5"),
        Decimal("0.00025"),
    )
    assert unknown["metadata"] == {"duration_unknown": "true"}
    assert Decimal(unknown["cost"]) == 0


def test_a_failed_image_call_is_recorded_with_its_error_and_not_charged(
    stack: MeterlineProcess, provider: FakeServer, meter: Meter
) -> None:
    subject = f"img-err-{uuid.uuid4().hex[:8]}"
    provider.expect("/images/generations", openai_error(400, "Your request was rejected"))
    client: Any = TrackedOpenAI(
        api_key="sk-test", base_url=provider.url + "/v1", max_retries=0, meter=meter
    )
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="dall-e-3", prompt="x", customer_id=subject)
    (row,) = _rows(stack, meter, subject, 1)
    assert (row["model"], row["status"], row["error_type"], row["http_status"]) == (
        "dall-e-3",
        "error",
        "BadRequestError",
        400,
    )
    assert (Decimal(row["cost"]), Decimal(row["price"])) == (Decimal(0), Decimal(0))
