"""Result media: real images of the prompt, real playable videos, and the simulate CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from liangxin_batch import simulator
from liangxin_batch.cli import main
from liangxin_batch.simulator import VIDEO_BACKEND, SimConfig
from liangxin_batch.simulator._media import output_size, render_image
from tests.sim_support import harness, result_urls


@pytest.mark.parametrize(
    ("aspect", "size"),
    [
        ("1:1", (512, 512)),
        ("16:9", (512, 288)),
        ("9:16", (288, 512)),
        ("21:9", (512, 218)),  # 219.4, made even for video encoders
        ("auto", (512, 512)),
        (None, (512, 512)),
        ("0:5", (512, 512)),
    ],
)
def test_output_size_honours_the_aspect_ratio(aspect: str | None, size: tuple[int, int]) -> None:
    assert output_size(aspect, 512) == size


def test_images_are_deterministic_and_coloured_by_prompt() -> None:
    first = render_image("a blue whale", "label", (64, 64), "png")
    assert first == render_image("a blue whale", "label", (64, 64), "png")
    corner = Image.open(io.BytesIO(first)).getpixel((0, 0))
    other = Image.open(io.BytesIO(render_image("a red kite", "label", (64, 64), "png")))
    assert other.getpixel((0, 0)) != corner


def test_long_prompts_are_wrapped_into_the_picture() -> None:
    text = "word " * 2000 + "x" * 300
    image = Image.open(io.BytesIO(render_image(text, "l", (512, 288), "jpeg")))
    assert (image.format, image.size) == ("JPEG", (512, 288))


@pytest.mark.anyio
async def test_video_task_yields_a_playable_mp4() -> None:
    av = pytest.importorskip("av")
    assert VIDEO_BACKEND == "pyav"
    async with harness() as h:
        task_id = await h.create_id("a kite over hills", model="kling-3.0/video", duration="3")
        (url,) = result_urls(await h.finish(task_id))
        assert url.endswith(".mp4")
        response = await h.client.get(url)
        assert response.headers["content-type"] == "video/mp4"
        with av.open(io.BytesIO(response.content)) as container:
            stream = container.streams.video[0]
            frames = list(container.decode(stream))
            assert (stream.codec_context.width, stream.codec_context.height) == (160, 90)
        assert len(frames) == 3 * 12  # duration "3" at 12 fps
        assert response.content == h.sim.file_bytes(task_id, 0)
        assert h.sim.ledger.creates()[0].credits == 54  # 18 credits/s x 3 s (pro, no sound)


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, Any]]:
    seen: dict[str, Any] = {}

    def fake_run(config: SimConfig, host: str, port: int, **kw: Any) -> None:
        seen.update(config=config, host=host, port=port)
        kw["on_ready"](f"http://{host}:{port}")

    monkeypatch.setattr(simulator, "run_simulator", fake_run)
    result = CliRunner().invoke(main, ["simulate", *args])
    return result, seen


def test_simulate_prints_the_exports_and_builds_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "faults.json"
    profile.write_text(json.dumps({"fail": 0.1}))
    monkeypatch.setenv("LIANGXIN_SIM_API_KEY", "sk-from-env")
    result, seen = run_cli(
        [
            "--port",
            "9999",
            "--faults",
            str(profile),
            "--credits",
            "50",
            "--hmac-key",
            "h",
            "--latency-scale",
            "0.5",
            "--seed",
            "3",
            "--upload-lifetime",
            "600",
            "--foreign-inputs",
            "fail",
        ],
        monkeypatch,
    )
    assert result.exit_code == 0, result.output
    assert "export LIANGXIN_BASE_URL=http://127.0.0.1:9999" in result.output
    assert "export LIANGXIN_API_KEY=sk-from-env" in result.output
    assert "export LIANGXIN_UPLOAD_BASE_URL=http://127.0.0.1:9999/upload-host" in result.output
    assert "Faults: fail=0.1" in result.output
    config: SimConfig = seen["config"]
    assert (config.api_key, config.credits, config.latency_scale) == ("sk-from-env", 50, 0.5)
    assert (config.hmac_key, config.seed, config.faults.fail) == ("h", 3, 0.1)
    assert (config.upload_lifetime_seconds, config.foreign_inputs) == (600, "fail")


def test_simulate_rejects_a_bad_fault_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "faults.yaml"
    profile.write_text("fial: 0.1\n")
    result, seen = run_cli(["--faults", str(profile)], monkeypatch)
    assert result.exit_code == 2 and "fial" in result.output
    assert seen == {}
