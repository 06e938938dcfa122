"""The emulator's endpoints, auth, records, headers, images and validation, over real sockets."""

from __future__ import annotations

import base64
import struct
import uuid
import zlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer

from asyncsdk.emulator import Emulator

if TYPE_CHECKING:
    from .conftest import Serve

pytestmark = pytest.mark.anyio

NANO = "google/nano-banana"
DETAIL_KEYS = [
    "generationId", "status", "name", "prompt", "aspectRatio", "modelProvider", "outputNumber",
    "outputSuccess", "outputFailed", "currentImage", "deletedImage", "outputImages",
    "creditCost", "failureReason", "predictTime", "totalTime", "createdAt", "isPublic",
    "imageInput",
]  # fmt: skip
LIST_OMITS = {"currentImage", "deletedImage", "failureReason"}
SEED_MESSAGES = {
    "MISSING_API_TOKEN": 'Missing API token. Include it in Authorization header as "Bearer '
    'YOUR_API_TOKEN" or in X-API-Key header.',
    "INVALID_API_TOKEN": "Invalid or expired API token.",
    "AUTHENTICATION_FAILED": "Authentication failed.",
    "ACCOUNT_NOT_FOUND": "Account not found. Please verify your account ID.",
    "INVALID_GENERATION_ID": "Invalid generation ID format. Must be a valid UUID.",
    "GENERATION_NOT_FOUND": "Generation not found or access denied.",
    "INVALID_JSON": "Request body must be valid JSON. Please check your request format.",
}
FAKE_PNG = base64.b64encode(
    b"\x89PNG\r\n\x1a\n" + bytes(16)  # only the signature matters to the emulator
).decode()


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and raw scanlines of a PNG, checking every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) == crc
        chunks.append((kind, body))
        position += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    return width, height, raw


# Endpoints and auth.


@pytest.mark.parametrize("scheme", ["bearer", "x-api-key"])
async def test_status_accepts_both_auth_headers(serve: Serve, scheme: str) -> None:
    emulator, api = await serve()
    token = emulator.tokens[0]
    headers = {"Authorization": f"Bearer {token}"} if scheme == "bearer" else {"X-API-Key": token}
    reply = await api.get("/status", headers=headers)
    assert reply.status == 200
    assert reply.body["success"] is True
    assert reply.body["message"] == "API connection successful"
    assert set(reply.data) == {"accountId", "apiKeyId", "apiKeyName", "timestamp"}
    uuid.UUID(reply.data["accountId"])
    assert datetime.fromisoformat(reply.data["timestamp"].replace("Z", "+00:00")).tzinfo


async def test_account_info_has_the_seed_shape_and_a_fetchable_picture(serve: Serve) -> None:
    emulator, api = await serve(credits=77)
    reply = await api.get("/data/account")
    assert reply.status == 200
    data = reply.data
    assert set(data) == {"account", "credits", "apiKey"}
    assert set(data["account"]) == {
        "id", "name", "email", "isPersonalAccount", "pictureUrl", "createdAt"
    }  # fmt: skip
    assert data["credits"] == {
        "total": 77, "free": 0, "purchased": 77, "refunded": 0, "redeemed": 0, "bonus": 0,
        "affiliate": 0,
    }  # fmt: skip
    assert set(data["apiKey"]) == {"name", "prefix", "createdAt"}
    assert emulator.tokens[0].startswith(data["apiKey"]["prefix"])
    picture = await api.get(data["account"]["pictureUrl"], headers={})
    assert picture.status == 200
    decode_png(picture.body)


async def test_tokens_are_generated_or_taken_as_given(serve: Serve) -> None:
    given = "bye_" + "ab" * 16
    emulator, api = await serve(accounts=3, tokens=[given])
    assert emulator.tokens[0] == given
    assert len(set(emulator.tokens)) == 3
    for token in emulator.tokens:
        assert token.startswith("bye_") and len(token) == 36
        int(token[4:], 16)
        assert (await api.get("/status", token=token)).status == 200
    assert emulator.base_url == f"http://127.0.0.1:{emulator.port}/api/v1"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "MISSING_API_TOKEN"),
        ({"Authorization": "   "}, "MISSING_API_TOKEN"),
        ({"Authorization": "Bearer "}, "MISSING_API_TOKEN"),
        ({"X-API-Key": ""}, "MISSING_API_TOKEN"),
        ({"Authorization": "Bearer sk-not-babysea"}, "INVALID_API_TOKEN"),
        ({"Authorization": "Bearer bye_xyz"}, "INVALID_API_TOKEN"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "INVALID_API_TOKEN"),
        ({"Authorization": "Bearer bye_" + "0" * 32}, "INVALID_API_TOKEN"),
        ({"X-API-Key": "bye_" + "f" * 32}, "INVALID_API_TOKEN"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_auth_failures(serve: Serve, headers: dict[str, str], code: str, method: str) -> None:
    emulator, api = await serve()
    path = "/data/account" if method == "GET" else f"/image-generation/{NANO}"
    reply = await api.call(method, path, headers=headers, json={"prompt": "x"})
    assert (reply.status, reply.error) == (401, code)
    assert reply.body == {"success": False, "error": code, "message": SEED_MESSAGES[code]}
    assert emulator.stats.created == {}


async def test_revoked_token_and_deleted_account(serve: Serve) -> None:
    emulator, api = await serve(accounts=3)
    revoked, deleted, fine = emulator.tokens
    emulator.revoke(revoked)
    emulator.delete_account(deleted)
    for path in ("/status", "/data/account", "/data/list/image"):
        reply = await api.get(path, token=revoked)
        assert (reply.status, reply.error) == (401, "AUTHENTICATION_FAILED")
        assert reply.body["message"] == SEED_MESSAGES["AUTHENTICATION_FAILED"]
        reply = await api.get(path, token=deleted)
        assert (reply.status, reply.error) == (404, "ACCOUNT_NOT_FOUND")
        assert (await api.get(path, token=fine)).status == 200
    assert (await api.submit(token=deleted)).error == "ACCOUNT_NOT_FOUND"
    with pytest.raises(KeyError):
        emulator.revoke("bye_" + "1" * 32)


async def test_every_response_carries_a_fresh_request_id(serve: Serve) -> None:
    _, api = await serve()
    submitted = await api.submit()
    record = await api.wait_for(submitted.data["generationId"], "succeeded")
    replies = [
        await api.get("/status"),
        submitted,
        await api.get("/status", headers={}),  # 401
        await api.get("/no/such/route"),  # 404 unmatched
        await api.call("DELETE", "/status"),  # 405
        await api.get(f"/image-generation/{uuid.uuid4()}"),  # 404 from a handler
        await api.get(record["outputImages"][0], headers={}),  # an image file
        await api.get(api.base_url.replace("/api/v1", "/files/nope/1.png"), headers={}),
    ]
    ids = [reply.headers["X-Request-ID"] for reply in replies]
    assert all(uuid.UUID(value).version == 4 for value in ids)
    assert len(set(ids)) == len(ids)
    unmatched, not_allowed = replies[3], replies[4]
    assert (unmatched.status, unmatched.error) == (404, "NOT_FOUND")
    assert (not_allowed.status, not_allowed.error) == (405, "METHOD_NOT_ALLOWED")
    assert "GET" in not_allowed.headers["Allow"]


# Submissions and records.


async def test_submission_answer_and_rate_limit_headers(serve: Serve) -> None:
    emulator, api = await serve(submissions=5)
    reply = await api.submit(json={"prompt": "a lighthouse", "output_number": 3})
    assert reply.status == 200
    assert set(reply.data) == {"generationId", "status", "creditCost"}
    assert reply.data["status"] == "starting"
    assert reply.data["creditCost"] == 6  # 2 credits per image
    uuid.UUID(reply.data["generationId"])
    assert reply.headers["X-RateLimit-Limit"] == "5"
    assert reply.headers["X-RateLimit-Remaining"] == "4"
    arrival = emulator.stats.arrivals[api.token][0]
    reset = int(reply.headers["X-RateLimit-Reset"])
    assert arrival + 0.5 <= reset < arrival + 0.5 + 1  # whole seconds, rounded up
    assert "Retry-After" not in reply.headers


async def test_lifecycle_and_record_fields(serve: Serve) -> None:
    emulator, api = await serve(starting_time=0.1, processing_time=0.15)
    body = {"prompt": "a quiet harbour at dawn", "name": "Harbour", "aspect_ratio": "16:9"}
    generation_id = (await api.submit(json=body)).data["generationId"]
    seen: list[str] = []
    with anyio.fail_after(3):
        while not seen or seen[-1] != "succeeded":
            record = await api.generation(generation_id)
            if not seen or seen[-1] != record["status"]:
                seen.append(record["status"])
                assert list(record) == DETAIL_KEYS
                if record["status"] != "succeeded":
                    assert record["outputImages"] == []
                    assert record["predictTime"] is None and record["totalTime"] is None
                    assert record["failureReason"] is None
            await anyio.sleep(0.01)
    assert seen == ["starting", "processing", "succeeded"]
    assert record["name"] == "Harbour"
    assert record["prompt"] == body["prompt"]
    assert record["aspectRatio"] == "16:9"
    assert record["modelProvider"] == NANO
    assert (record["outputNumber"], record["outputSuccess"], record["outputFailed"]) == (1, 1, 0)
    assert (record["currentImage"], record["deletedImage"]) == (1, 0)
    assert record["creditCost"] == 2 and record["isPublic"] is False
    assert record["imageInput"] == []
    assert record["predictTime"] == pytest.approx(0.15, abs=1e-6)
    assert record["totalTime"] == pytest.approx(0.25, abs=1e-6)
    created = datetime.fromisoformat(record["createdAt"])
    assert created.tzinfo is None  # naive UTC, as the contract warns
    assert emulator.generations(api.token) == [record]


async def test_generation_ids(serve: Serve) -> None:
    emulator, api = await serve(accounts=2)
    generation_id = (await api.submit()).data["generationId"]
    upper = await api.get(f"/image-generation/{generation_id.upper()}")
    assert upper.status == 200
    for malformed in ("nope", "123", generation_id[:-1], generation_id.replace("-", "")):
        reply = await api.get(f"/image-generation/{malformed}")
        assert (reply.status, reply.error) == (404, "INVALID_GENERATION_ID")
        assert reply.body["message"] == SEED_MESSAGES["INVALID_GENERATION_ID"]
    for missing in (str(uuid.uuid4()),):
        reply = await api.get(f"/image-generation/{missing}")
        assert (reply.status, reply.error) == (404, "GENERATION_NOT_FOUND")
    foreign = await api.get(f"/image-generation/{generation_id}", token=emulator.tokens[1])
    assert (foreign.status, foreign.error) == (404, "GENERATION_NOT_FOUND")


async def test_outputs_are_real_deterministic_pngs(serve: Serve) -> None:
    emulator, api = await serve(concurrent=2)
    body = {"prompt": "two red kites", "output_number": 2, "aspect_ratio": "16:9"}
    first = (await api.submit(json=body)).data["generationId"]
    second = (await api.submit(json=body)).data["generationId"]
    running = await api.get(api.base_url.replace("/api/v1", f"/files/{first}/1.png"), headers={})
    assert (running.status, running.error) == (404, "NOT_FOUND")
    one = await api.wait_for(first, "succeeded")
    two = await api.wait_for(second, "succeeded")
    assert len(one["outputImages"]) == 2
    assert all(url.startswith(f"{emulator.url}/files/{first}/") for url in one["outputImages"])
    files = [(await api.get(url, headers={})) for url in one["outputImages"] + two["outputImages"]]
    for reply in files:
        assert reply.status == 200 and reply.headers["Content-Type"] == "image/png"
        width, height, raw = decode_png(reply.body)
        assert (width, height) == (64, 36)
        assert len(set(raw)) > 2  # not a flat picture
    # Same prompt and index, same picture; another index, another picture.
    assert files[0].body == files[2].body and files[1].body == files[3].body
    assert files[0].body != files[1].body
    beyond = await api.get(one["outputImages"][0].replace("/1.png", "/3.png"), headers={})
    assert beyond.status == 404


async def test_list_pages_newest_first(serve: Serve) -> None:
    emulator, api = await serve(concurrent=5, accounts=2)
    ids = [
        (await api.submit(json={"prompt": f"picture {n}"})).data["generationId"] for n in range(5)
    ]
    await api.submit(token=emulator.tokens[1])  # another account's: never listed
    listing = await api.get("/data/list/image")
    assert listing.status == 200
    assert (listing.data["total"], listing.data["limit"], listing.data["offset"]) == (5, 20, 0)
    generations = listing.data["generations"]
    assert [g["generationId"] for g in generations] == ids[::-1]
    for record in generations:
        assert set(record) == set(DETAIL_KEYS) - LIST_OMITS
    page = await api.get("/data/list/image", params={"limit": "2", "offset": "1"})
    assert [g["generationId"] for g in page.data["generations"]] == [ids[3], ids[2]]
    assert (page.data["total"], page.data["limit"], page.data["offset"]) == (5, 2, 1)
    past = await api.get("/data/list/image", params={"offset": "9"})
    assert past.data["generations"] == [] and past.data["total"] == 5
    edge = await api.get("/data/list/image", params={"limit": "100"})
    assert edge.status == 200


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"limit": "2.5"}, {"offset": "-1"},
     {"offset": "a"}, {"limit": ""}],
)  # fmt: skip
async def test_list_rejects_bad_paging(serve: Serve, params: dict[str, str]) -> None:
    _, api = await serve()
    reply = await api.get("/data/list/image", params=params)
    assert (reply.status, reply.error) == (400, "VALIDATION_ERROR")
    assert reply.body["message"].startswith("One or more request parameters are invalid.")


# Validation.


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "ok", "name": "ab"}, "name"),
        ({"prompt": "ok", "name": "x" * 31}, "name"),
        ({"prompt": "ok", "output_number": 0}, "output_number"),
        ({"prompt": "ok", "output_number": 5}, "output_number"),
        ({"prompt": "ok", "output_number": 2.0}, "output_number"),
        ({"prompt": "ok", "output_number": True}, "output_number"),
        ({"prompt": "ok", "aspect_ratio": "2:1"}, "aspect_ratio"),
        ({"prompt": "ok", "aspect_ratio": "match_input_image"}, "aspect_ratio"),
        ({"prompt": "ok", "output_format": "gif"}, "output_format"),
        ({"prompt": "ok", "image_input": []}, "image_input"),
        ({"prompt": "ok", "image_input": "https://example.com/a.png"}, "image_input"),
        ({"prompt": "ok", "image_input": ["ftp://example.com/a.png"]}, "image_input"),
        ({"prompt": "ok", "image_input": ["https://"]}, "image_input"),
        ({"prompt": "ok", "image_input": [7]}, "image_input"),
        ({"prompt": "ok", "image_input": ["data:image/png;base64,@@@"]}, "image_input"),
        ({"prompt": "ok", "image_input": ["data:text/plain;base64,aGk="]}, "image_input"),
        ({"prompt": "ok", "image_input": ["https://example.com/a.png"] * 11}, "image_input"),
        ([{"prompt": "ok"}], "body"),
    ],
)
async def test_validation_errors_name_the_field(serve: Serve, body: Any, field: str) -> None:
    emulator, api = await serve()
    reply = await api.call("POST", f"/image-generation/{NANO}", json=body)
    assert (reply.status, reply.error) == (400, "VALIDATION_ERROR")
    assert f"({field}:" in reply.body["message"]
    assert emulator.stats.created == {}
    assert reply.headers["X-RateLimit-Remaining"] == "10"


async def test_model_identifiers(serve: Serve) -> None:
    _, api = await serve(concurrent=4)
    for model in ("acme/unknown", "nano-banana", "google/nano-banana/extra"):
        reply = await api.submit(model)
        assert (reply.status, reply.error) == (400, "VALIDATION_ERROR"), model
        assert "(model:" in reply.body["message"]
    assert (await api.submit("bfl/flux-schnell")).data["creditCost"] == 1
    assert (await api.submit("bfl/flux-1.1-pro")).data["creditCost"] == 4
    short = await api.submit("bfl/flux-1.1-pro-ultra", json={"prompt": "too short"})
    assert short.error == "VALIDATION_ERROR" and "40" in short.body["message"]
    long_prompt = {"prompt": "a very long and detailed prompt about a seaside town at dusk"}
    assert (await api.submit("bfl/flux-1.1-pro-ultra", json=long_prompt)).status == 200


@pytest.mark.parametrize("raw", [b"", b"{", b"prompt=a", b"\xff\xfe", b"{'prompt': 'x'}"])
async def test_invalid_json(serve: Serve, raw: bytes) -> None:
    _, api = await serve()
    reply = await api.call(
        "POST",
        f"/image-generation/{NANO}",
        data=raw,
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
    )
    assert (reply.status, reply.error) == (400, "INVALID_JSON")
    assert reply.body["message"] == SEED_MESSAGES["INVALID_JSON"]


async def test_extra_keys_pass_and_images_allow_match_input_image(serve: Serve) -> None:
    _, api = await serve()
    body = {
        "prompt": "the same room, brighter",
        "aspect_ratio": "match_input_image",
        "image_input": [f"data:image/png;base64,{FAKE_PNG}"],
        "output_format": "webp",
        "seed": 7,
        "go_fast": True,
        "name": None,
    }
    reply = await api.submit(json=body)
    assert reply.status == 200, reply.body
    record = await api.generation(reply.data["generationId"])
    assert record["aspectRatio"] == "match_input_image"
    assert record["imageInput"] == [
        f"input/{record['generationId']}/user_upload_image_1.png"
    ]  # a storage path, not the data URI
    assert record["name"] == body["prompt"][:30]


@pytest.mark.parametrize("prompt", ["a NUDE figure", "explicit scene", "so nsfw."])
async def test_nsfw_prompts(serve: Serve, prompt: str) -> None:
    emulator, api = await serve()
    reply = await api.submit(json={"prompt": prompt})
    assert (reply.status, reply.error) == (400, "NSFW_CONTENT_DETECTED")
    assert reply.body["message"].startswith("Your prompt contains content that violates")
    assert emulator.stats.created == {}
    # Whole words only: "nudes" is not on the list, "explicitly" is not "explicit".
    assert (await api.submit(json={"prompt": "stated explicitly"})).status == 200


async def test_make_app_serves_through_aiohttp_test_utilities() -> None:
    emulator = Emulator(processing_time=0.01, starting_time=0.0)
    token = emulator.tokens[0]
    async with TestClient(TestServer(emulator.make_app())) as client:
        response = await client.get("/api/v1/status", headers={"X-API-Key": token})
        assert response.status == 200
        assert "X-Request-ID" in response.headers
        assert emulator.stats.requests[("GET", "/api/v1/status")] == 1
    with pytest.raises(RuntimeError):
        _ = emulator.base_url  # never started as a server
