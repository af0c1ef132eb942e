"""The pure decisions about uploads of local inputs (core/_uploads.py), in virtual time:
the time is a number passed in, never read."""

from __future__ import annotations

from typing import Any

import pytest

from liangxin_batch.core._local_files import file_token
from liangxin_batch.core._settings import RunSettings, parse_duration
from liangxin_batch.core._states import TRANSITIONS, Event, JobState, sources_of, target_of
from liangxin_batch.core._uploads import (
    DEFAULT_UPLOAD_LIFETIME,
    DEFAULT_UPLOAD_MARGIN,
    Upload,
    account_fingerprint,
    effective_margin,
    expiry_of,
    input_fetch_failed,
    is_fresh,
    parse_expires_at,
    should_refresh_inputs,
    with_upload_urls,
)
from liangxin_batch.errors import ConfigError

SHA_A = "a" * 64
SHA_B = "b" * 64
T0 = 1_760_000_000.0


def _upload(expires_at: float) -> Upload:
    return Upload(SHA_A, "acct", "https://files.example/a.png", T0, expires_at)


def test_expiry_is_the_answers_own_when_given() -> None:
    assert expiry_of(T0, expires_at=T0 + 3 * 86400, lifetime=86400) == T0 + 3 * 86400
    assert expiry_of(T0, expires_at=T0 + 600, lifetime=86400) == T0 + 600


def test_expiry_is_upload_time_plus_lifetime_without_one() -> None:
    assert expiry_of(T0, expires_at=None, lifetime=86400) == T0 + 86400
    # An expiry at or before the upload is a misread clock or format: the lifetime.
    assert expiry_of(T0, expires_at=T0 - 5, lifetime=3600) == T0 + 3600
    assert expiry_of(T0, expires_at=T0, lifetime=3600) == T0 + 3600


def test_an_absurd_expiry_is_not_believed() -> None:
    """A host saying its temporary file lives for years (a misread unit, a placeholder
    year 9999) is not taken at its word: the configured lifetime applies."""
    assert expiry_of(T0, expires_at=T0 + 10 * 365 * 86400, lifetime=86400) == T0 + 86400
    assert expiry_of(T0, expires_at=253402300799.0, lifetime=86400) == T0 + 86400
    assert expiry_of(T0, expires_at=T0 + 30 * 86400, lifetime=86400) == T0 + 30 * 86400


def test_defaults_plan_for_24_hours_with_a_6_hour_margin() -> None:
    assert DEFAULT_UPLOAD_LIFETIME == 24 * 3600
    assert DEFAULT_UPLOAD_MARGIN == 6 * 3600


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-01-01T12:00:00.000Z", 1735732800.0),
        ("2025-01-01T12:00:00+00:00", 1735732800.0),
        (1735732800, 1735732800.0),
        (1735732800000, 1735732800.0),  # milliseconds
        ("1735732800", 1735732800.0),
        ("2025-01-01T12:00:00", None),  # no zone: not guessed
        ("tomorrow", None),
        ("", None),
        (None, None),
        (True, None),
        (-5, None),
        ({"at": 1}, None),
    ],
)
def test_parse_expires_at(value: object, expected: float | None) -> None:
    assert parse_expires_at(value) == expected


def test_fresh_only_with_more_than_the_margin_left() -> None:
    margin = 6 * 3600.0
    expires = T0 + 24 * 3600
    assert is_fresh(_upload(expires), now=T0, margin=margin)
    assert is_fresh(_upload(expires), now=expires - margin - 1, margin=margin)
    assert not is_fresh(_upload(expires), now=expires - margin, margin=margin)
    assert not is_fresh(_upload(expires), now=expires + 1, margin=margin)
    assert not is_fresh(None, now=T0, margin=margin)


def test_a_life_shorter_than_the_margin_leaves_a_just_made_upload_fresh() -> None:
    """The host's own expiresAt (24 h) inside a 30 h margin: half its life applies."""
    margin = 30 * 3600.0
    expires = T0 + 24 * 3600
    assert effective_margin(_upload(expires), margin) == 12 * 3600
    assert is_fresh(_upload(expires), now=T0 + 1, margin=margin)
    assert is_fresh(_upload(expires), now=expires - 12 * 3600 - 1, margin=margin)
    assert not is_fresh(_upload(expires), now=expires - 12 * 3600, margin=margin)
    # A margin shorter than half the life is the margin.
    assert effective_margin(_upload(expires), 3600.0) == 3600.0


def test_account_fingerprint_is_stable_short_and_does_not_hold_the_key() -> None:
    key = "sk-live-0123456789abcdef"
    one = account_fingerprint("https://upload.example", key)
    assert one == account_fingerprint("https://upload.example", key)
    assert len(one) == 16 and int(one, 16) >= 0
    assert key not in one and "0123456789abcdef" not in one
    assert one != account_fingerprint("https://upload.example", key + "x")
    assert one != account_fingerprint("https://other.example", key)


def test_with_upload_urls_replaces_tokens_and_leaves_the_rest() -> None:
    given: dict[str, Any] = {
        "prompt": "make it red",
        "image_urls": [file_token(SHA_A), "https://public.example/x.png", file_token(SHA_B)],
        "elements": [{"element_input_urls": [file_token(SHA_A)]}],
        "n": 2,
    }
    urls = {SHA_A: "https://up/a.png", SHA_B: "https://up/b.jpg"}
    sent = with_upload_urls(given, urls)
    assert sent == {
        "prompt": "make it red",
        "image_urls": ["https://up/a.png", "https://public.example/x.png", "https://up/b.jpg"],
        "elements": [{"element_input_urls": ["https://up/a.png"]}],
        "n": 2,
    }
    assert given["image_urls"][0] == file_token(SHA_A)  # the stored input keeps its tokens
    with pytest.raises(KeyError):
        with_upload_urls({"image_urls": [file_token(SHA_A)]}, {})


@pytest.mark.parametrize(
    ("code", "msg"),
    [
        # The simulator's (liangxin_batch/simulator/_uploads.py, failCode "400"):
        (
            "400",
            "Failed to fetch input image: https://h/tempfile/a/b.png (HTTP 403: file "
            "expired or not found)",
        ),
        (
            "400",
            "Failed to fetch input image: https://x/a.png (host not reachable from the service)",
        ),
        (None, "Failed to download image from url"),
        ("500", "failed to fetch input image: HTTP 403"),
        (None, "Unable to retrieve the input file"),
        (None, "The image url is not accessible"),
        (None, "image_url is unreachable"),
        (None, "Input image URL has expired"),
        (None, "the file URL has expired or is invalid"),
        (None, "expired upload url"),
        (None, "Image download failed: timed out"),
        (None, "Cannot access image URL"),
        (None, "Could not load image from the provided link"),
        (None, "input url returned HTTP 404"),
        ("INPUT_DOWNLOAD_FAILED", "task failed"),
        ("url_expired", None),
    ],
)
def test_fetch_failures_are_recognised(code: str | None, msg: str | None) -> None:
    assert input_fetch_failed(code, msg)


@pytest.mark.parametrize(
    ("code", "msg"),
    [
        (None, None),
        ("500", "generation failed"),
        ("500", "Internal error, please try again later"),
        (None, "Image generation failed"),
        (None, "Content violates our moderation policy"),
        (None, "The image was flagged as NSFW"),
        (None, "Failed to download image: sensitive content detected"),
        (None, "Prompt rejected by the safety system"),
        (None, "prompt too long"),
        (None, "Task timed out"),
        (None, "insufficient credits"),
        (None, "upload your photo again for better results"),  # no failure to fetch
        (None, "The output file could not be saved"),
        ("422", "image_urls: expected at most 10 items"),
        # The simulator's input refusals a fresh upload cannot cure:
        (
            "400",
            "Unsupported input image type: https://h/tempfile/a/x.webp is image/webp; "
            "image_urls takes image/jpeg, image/png",
        ),
        (
            "400",
            "Input image too large: https://h/tempfile/a/x.png is 12000000 bytes; "
            "image_urls takes at most 10 MB per image",
        ),
    ],
)
def test_other_failures_are_not(code: str | None, msg: str | None) -> None:
    assert not input_fetch_failed(code, msg)


def test_refresh_once_only_for_unbilled_fetch_failures_of_jobs_with_local_files() -> None:
    base = {
        "fail_code": None,
        "fail_msg": "Failed to download image",
        "has_local_files": True,
        "refreshes_before": 0,
        "credits_consumed": None,
    }
    assert should_refresh_inputs(**base)  # type: ignore[arg-type]
    assert should_refresh_inputs(**{**base, "credits_consumed": 0})  # type: ignore[arg-type]
    assert not should_refresh_inputs(**{**base, "refreshes_before": 1})  # type: ignore[arg-type]
    assert not should_refresh_inputs(**{**base, "has_local_files": False})  # type: ignore[arg-type]
    assert not should_refresh_inputs(**{**base, "credits_consumed": 4.0})  # type: ignore[arg-type]
    assert not should_refresh_inputs(**{**base, "fail_msg": "NSFW"})  # type: ignore[arg-type]


def test_input_refresh_leaves_only_failed_and_goes_only_to_pending() -> None:
    assert sources_of(Event.INPUT_REFRESH) == {JobState.FAILED}
    assert target_of(Event.INPUT_REFRESH) is JobState.PENDING
    back = {e for a, b, e in TRANSITIONS if a is JobState.FAILED and b is JobState.PENDING}
    assert back == {Event.RETRY, Event.CONTENT_CHANGED, Event.INPUT_REFRESH}


def test_upload_settings_refuse_a_margin_over_half_the_lifetime() -> None:
    RunSettings(upload_lifetime=24 * 3600, upload_margin=12 * 3600)
    with pytest.raises(ValueError, match="--upload-margin"):
        RunSettings(upload_lifetime=24 * 3600, upload_margin=12 * 3600 + 1)
    with pytest.raises(ValueError, match="upload_method"):
        RunSettings(upload_method="ftp")


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400.0), ("90m", 5400.0), ("3d", 259200.0), ("45", 45.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, flag="--upload-lifetime") == seconds


def test_a_bad_duration_names_its_flag() -> None:
    with pytest.raises(ConfigError, match="--upload-margin"):
        parse_duration("soon", flag="--upload-margin")


def test_a_zero_upload_lifetime_is_refused_for_what_it_is(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from liangxin_batch.cli import main

    manifest = tmp_path / "m.csv"
    manifest.write_text("id,model,prompt,aspect_ratio\nj,z-image,cat,1:1\n")
    args = ["run", str(manifest), "--out", str(tmp_path / "out"), "--upload-lifetime", "0"]
    result = CliRunner().invoke(main, args, env={"LIANGXIN_API_KEY": "sk-x"})
    assert result.exit_code == 2, result.output
    assert "--upload-lifetime 0: an upload must live longer than zero" in result.output
    assert "margin" not in result.output
    assert not (tmp_path / "out").exists()
