"""Every error the service can answer reaches the caller as the right class, with its data."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

import asyncsdk
from asyncsdk import AsyncClient
from asyncsdk.emulator import Emulator

from .test_client import FAST, MODEL, client_for

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    # Server-side image limits below the SDK's, so that the service's own check answers.
    async with Emulator(max_image_bytes=1000, max_total_image_bytes=1500, **FAST) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncClient]:
    async with client_for(emu, max_retries=0) as c:
        yield c


def check(error: asyncsdk.APIError, status: int, code: str) -> None:
    assert (error.status, error.code) == (status, code)
    assert error.message and error.request_id and error.request_id in str(error)


@pytest.mark.parametrize(
    ("token", "code"),
    [("not-a-token", "INVALID_API_TOKEN"), ("bye_" + "ab" * 16, "INVALID_API_TOKEN")],
)
async def test_bad_tokens(emu: Emulator, token: str, code: str) -> None:
    async with client_for(emu, token) as c:
        with pytest.raises(asyncsdk.AuthenticationError) as caught:
            await c.status()
    check(caught.value, 401, code)
    assert token not in str(caught.value)


async def test_revoked_key_and_deleted_account(emu: Emulator, client: AsyncClient) -> None:
    emu.revoke(emu.tokens[0])
    with pytest.raises(asyncsdk.AuthenticationError) as caught:
        await client.account()
    check(caught.value, 401, "AUTHENTICATION_FAILED")
    other = emu.add_account()
    emu.delete_account(other)
    async with client_for(emu, other) as c:
        with pytest.raises(asyncsdk.NotFoundError) as missing:
            await c.account()
    check(missing.value, 404, "ACCOUNT_NOT_FOUND")


@pytest.mark.parametrize(
    ("kwargs", "cls", "code"),
    [
        ({"aspect_ratio": "7:3"}, asyncsdk.BadRequestError, "VALIDATION_ERROR"),
        ({"output_number": 9}, asyncsdk.BadRequestError, "VALIDATION_ERROR"),
        ({"prompt": "a nude portrait"}, asyncsdk.ContentPolicyError, "NSFW_CONTENT_DETECTED"),
        ({"images": PNG + b"\x00" * 2000}, asyncsdk.ImageInputError, "IMAGE_SIZE_LIMIT_EXCEEDED"),
        ({"images": [PNG + b"\x00" * 900] * 2}, asyncsdk.ImageInputError,
         "IMAGE_SIZE_LIMIT_EXCEEDED"),
    ],
)  # fmt: skip
async def test_submission_rejections(
    client: AsyncClient, emu: Emulator, kwargs: dict[str, object], cls: type, code: str
) -> None:
    prompt = str(kwargs.pop("prompt", "a harmless kite"))
    with pytest.raises(cls) as caught:
        await client.submit(MODEL, prompt, **kwargs)  # type: ignore[arg-type]
    check(caught.value, 400, code)
    assert emu.stats.created[emu.tokens[0]] == 0
    assert (await client.account()).credits.total == 1000  # nothing charged


async def test_a_bad_name_is_refused_before_anything_is_sent(
    client: AsyncClient, emu: Emulator
) -> None:
    # The name becomes the prefix of the submission's tag, so the SDK checks it itself.
    with pytest.raises(asyncsdk.BadRequestError) as caught:
        await client.submit(MODEL, "a harmless kite", name="x")
    assert (caught.value.status, caught.value.code) == (None, "VALIDATION_ERROR")
    assert "name" in str(caught.value)
    assert emu.stats.created[emu.tokens[0]] == 0
    assert not emu.stats.arrivals.get(emu.tokens[0])


async def test_unknown_model_is_a_validation_error(client: AsyncClient) -> None:
    with pytest.raises(asyncsdk.BadRequestError) as caught:
        await client.submit("nobody/nothing", "a kite")
    check(caught.value, 400, "VALIDATION_ERROR")


async def test_image_url_that_cannot_be_fetched(client: AsyncClient, emu: Emulator) -> None:
    missing = emu.url + "/files/00000000-0000-4000-8000-000000000000/1.png"
    with pytest.raises(asyncsdk.ImageInputError) as caught:
        await client.submit(MODEL, "from a missing picture", images=missing)
    check(caught.value, 400, "IMAGE_DOWNLOAD_FAILED")


async def test_data_uri_passes_through(client: AsyncClient) -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    generation = await client.generate(MODEL, "from a data uri", images=[uri])
    assert len(generation.image_input) == 1


async def test_insufficient_credits(client: AsyncClient, emu: Emulator) -> None:
    emu.set_credits(emu.tokens[0], 1)
    with pytest.raises(asyncsdk.InsufficientCreditsError) as caught:
        await client.submit(MODEL, "too expensive")
    check(caught.value, 402, "INSUFFICIENT_CREDITS")
    assert "2 credits" in caught.value.message


@pytest.mark.parametrize(
    ("generation_id", "code"),
    [("not-a-uuid", "INVALID_GENERATION_ID"),
     ("00000000-0000-4000-8000-000000000000", "GENERATION_NOT_FOUND")],
)  # fmt: skip
async def test_unknown_generations(client: AsyncClient, generation_id: str, code: str) -> None:
    with pytest.raises(asyncsdk.NotFoundError) as caught:
        await client.get_generation(generation_id)
    check(caught.value, 404, code)


async def test_another_accounts_generation_is_not_found(emu: Emulator) -> None:
    second = emu.add_account()
    async with client_for(emu) as mine, client_for(emu, second) as theirs:
        generation = await mine.generate(MODEL, "mine")
        with pytest.raises(asyncsdk.NotFoundError) as caught:
            await theirs.get_generation(generation.generation_id)
    check(caught.value, 404, "GENERATION_NOT_FOUND")


@pytest.mark.parametrize(
    "code",
    ["FAILED_TO_VALIDATE_TOKEN", "FETCH_FAILED", "IMAGE_UPLOAD_FAILED",
     "GENERATION_UPDATE_FAILED", "INTERNAL_SERVER_ERROR"],
)  # fmt: skip
async def test_server_errors_on_reads(client: AsyncClient, emu: Emulator, code: str) -> None:
    emu.faults.fail_reads(1, code=code)
    with pytest.raises(asyncsdk.ServerError) as caught:
        await client.status()
    check(caught.value, 500, code)


@pytest.mark.parametrize(
    "code", ["GENERATION_INIT_FAILED", "CREDIT_PROCESSING_FAILED", "GENERATION_START_FAILED"]
)
async def test_server_errors_on_submissions(client: AsyncClient, emu: Emulator, code: str) -> None:
    emu.faults.fail_submissions(1, code=code)
    with pytest.raises(asyncsdk.ServerError) as caught:
        await client.submit(MODEL, "unlucky")
    check(caught.value, 500, code)
    assert emu.stats.created[emu.tokens[0]] == 0


async def test_rate_limit_and_concurrency_errors_reach_a_client_that_ignores_the_limits(
    emu: Emulator,
) -> None:
    # A client told the account may do more than it can: the service's 429s come through.
    lax = asyncsdk.Limits(submissions=50, window=2.0, concurrent=50, generation_timeout=3.0)
    emu.faults.stick(1)
    async with client_for(emu, limits=lax, max_retries=0) as c:
        await c.submit(MODEL, "running")
        with pytest.raises(asyncsdk.ConcurrencyLimitError) as busy:
            await c._transport.request("POST", f"/image-generation/{MODEL}", json_body={
                "prompt": "second"})  # fmt: skip
    check(busy.value, 429, "CONCURRENT_GENERATION_ERROR")
    assert busy.value.rate_limit is not None


async def test_rate_limit_error_carries_reset_at(emu: Emulator) -> None:
    async with Emulator(submissions=1, window=30.0, starting_time=0.0, processing_time=0.0) as e:
        lax = asyncsdk.Limits(submissions=5, window=30.0)
        async with client_for(e, limits=lax, max_retries=0) as c:
            await c.submit(MODEL, "first")
            with pytest.raises(asyncsdk.RateLimitError) as caught:
                await c._transport.request(
                    "POST", f"/image-generation/{MODEL}", json_body={"prompt": "second"}
                )
    check(caught.value, 429, "RATE_LIMIT_ERROR")
    assert caught.value.reset_at is not None


async def test_connection_refused_is_an_api_connection_error() -> None:
    async with AsyncClient(
        "bye_" + "0" * 32, base_url="http://127.0.0.1:9/api/v1", max_retries=0
    ) as c:
        with pytest.raises(asyncsdk.APIConnectionError) as caught:
            await c.status()
    assert caught.value.request_sent is False
