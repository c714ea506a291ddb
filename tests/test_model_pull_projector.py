"""`hearthbot model pull REPO FILE` of a repo that holds a vision projector, against the fake
hub on 127.0.0.1: the repo listed, the projector chosen (`choose_projector`'s rule, a table
here) pulled into models/projectors/ and named in the config lines, as a catalog entry's is;
a repo without one, `--no-projector`, and a repo that cannot be listed: the model alone."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import test_model_pull_vision as vision
from test_model_catalog_cli import env
from test_model_pull import isolated_hf, use
from test_model_pull_vision import left_in

import bot.model.catalog
from bot.app.cli import main
from bot.model.hub_projector import choose_projector, precision
from bot.model.pull import find_local_model
from support.fake_hub import FakeHub

__all__ = ["env", "isolated_hf"]  # fixtures: the data dir in tmp; the fake hub's isolation

REPO = "org/tiny-VL-GGUF"
MODEL = "tiny-vl-Q8_0.gguf"
MATCHING = "mmproj-tiny-vl-Q8_0.gguf"  # the model's precision: chosen over the f16 one
F16 = "mmproj-tiny-vl-f16.gguf"
DATA = {
    MODEL: b"GGUF" + bytes(range(256)) * 24,
    MATCHING: b"GGUF" + bytes(range(255, -1, -1)) * 8,
    F16: b"GGUF" + bytes(range(0, 256, 2)) * 8,
}
TEXT_REPO = "org/tiny-GGUF"
TEXT_MODEL = "tiny-q4_k_m.gguf"


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """No httpx2 request log on stderr: what the command itself says is all that is left."""
    monkeypatch.setenv("HEARTHBOT_LOG__LEVEL", "warning")


def hub_files(*names: str) -> dict[tuple[str, str], bytes]:
    files = {(REPO, name): DATA[name] for name in names}
    files[(REPO, "README.md")] = b"# tiny-VL\n"
    return files


def got(hub: FakeHub) -> list[str]:
    """The files the fake hub sent (GET of a file, not of the listing)."""
    return sorted(r.path.rsplit("/", 1)[-1] for r in hub.gets() if "/resolve/" in r.path)


def listed(hub: FakeHub) -> int:
    return sum(1 for r in hub.gets() if r.path.startswith("/api/"))


@pytest.mark.parametrize(
    ("model", "names", "chosen"),
    [
        ("x-Q4_K_M.gguf", [], None),
        ("x-Q4_K_M.gguf", ["README.md", "x-Q4_K_M.gguf", "x-Q8_0.gguf", "mmproj.json"], None),
        ("x-Q4_K_M.gguf", ["mmproj-x-Q8_0.gguf.part", "x-mmproj-f16.gguf"], None),
        ("x-Q4_K_M.gguf", ["x-Q4_K_M.gguf", "mmproj-model-f16.gguf"], "mmproj-model-f16.gguf"),
        ("x-Q4_K_M.gguf", ["MMPROJ-X-F16.GGUF"], "MMPROJ-X-F16.GGUF"),  # any case
        ("x-Q4_K_M.gguf", ["vision/mmproj-x-f16.gguf"], "vision/mmproj-x-f16.gguf"),
        # No precision matches the model's: f16, bf16, f32, q8_0, then any other.
        ("x-Q4_K_M.gguf", ["mmproj-x-f32.gguf", "mmproj-x-f16.gguf"], "mmproj-x-f16.gguf"),
        ("x-Q4_K_M.gguf", ["mmproj-x-F32.gguf", "mmproj-x-BF16.gguf"], "mmproj-x-BF16.gguf"),
        ("x-Q4_K_M.gguf", ["mmproj-x-q8_0.gguf", "mmproj-x-f32.gguf"], "mmproj-x-f32.gguf"),
        ("x-Q4_K_M.gguf", ["mmproj-x-q4_0.gguf", "mmproj-x-q8_0.gguf"], "mmproj-x-q8_0.gguf"),
        ("x.gguf", ["mmproj-x-q4_0.gguf", "mmproj-x-f16.gguf"], "mmproj-x-f16.gguf"),
        # The model's own precision first, whatever the order above.
        ("x-Q8_0.gguf", ["mmproj-x-f16.gguf", "mmproj-x-Q8_0.gguf"], "mmproj-x-Q8_0.gguf"),
        ("x-f32.gguf", ["mmproj-x-f16.gguf", "mmproj-x-f32.gguf"], "mmproj-x-f32.gguf"),
        ("x-BF16.gguf", ["mmproj-F16.gguf", "mmproj-BF16.gguf"], "mmproj-BF16.gguf"),
        ("x-Q4_K_M.gguf", ["mmproj-x-f16.gguf", "mmproj-x-q4_k_m.gguf"], "mmproj-x-q4_k_m.gguf"),
        ("x-fp16.gguf", ["mmproj-x-f32.gguf", "mmproj-x-f16.gguf"], "mmproj-x-f16.gguf"),
        # Ties (no tag, or the same one) by name: the same choice every time.
        ("x.gguf", ["mmproj-b.gguf", "mmproj-a.gguf"], "mmproj-a.gguf"),
        ("x.gguf", ["b/mmproj-f16.gguf", "a/mmproj-f16.gguf"], "a/mmproj-f16.gguf"),
        # A projector pulled as the model is not its own projector.
        ("mmproj-x-f16.gguf", ["mmproj-x-f16.gguf"], None),
    ],
)
def test_choose_projector(model: str, names: list[str], chosen: str | None) -> None:
    assert choose_projector(model, names) == chosen


@pytest.mark.parametrize(
    ("name", "tag"),
    [
        ("qwen2.5-1.5b-instruct-q4_k_m.gguf", "q4_k_m"),
        ("SmolVLM2-2.2B-Instruct-Q4_K_M.gguf", "q4_k_m"),
        ("mmproj-SmolVLM2-2.2B-Instruct-Q8_0.gguf", "q8_0"),
        ("mmproj-model-f16.gguf", "f16"),
        ("mmproj-model-fp16.gguf", "f16"),
        ("mmproj_BF16.gguf", "bf16"),
        ("Llama-3.2-1B-Instruct-IQ4_XS.gguf", "iq4_xs"),
        ("model-UD-Q4_K_XL.gguf", "q4_k_xl"),
        ("qwen2-vl-2b.gguf", None),
        ("mmproj.gguf", None),
    ],
)
def test_precision(name: str, tag: str | None) -> None:
    assert precision(name) == tag


def test_the_repos_projector_is_pulled_and_the_config_lines_name_it(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeHub(hub_files(MODEL, F16, MATCHING)) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", REPO, MODEL]) == 0
        assert got(hub) == sorted([MODEL, MATCHING]) and listed(hub) == 1
    model, mmproj = env / MODEL, env / "projectors" / MATCHING
    assert model.read_bytes() == DATA[MODEL] and mmproj.read_bytes() == DATA[MATCHING]
    assert left_in(env) == sorted([MODEL, f"projectors/{MATCHING}"])
    out, err = capsys.readouterr()
    # Exactly what a catalog entry's projector prints (test_model_pull_vision.py).
    assert out.splitlines()[:3] == [
        str(model),
        str(mmproj),
        "a vision model: set both in the config file to have it see pictures",
    ]
    config = tomllib.loads(out[out.index("[model]") :])
    assert config == {"model": {"path": str(model), "mmproj": str(mmproj)}}
    assert f"{REPO} holds a vision projector: pulling {MATCHING} too" in err
    assert "--no-projector" in err
    assert find_local_model(env) == model  # a start without [model] path takes the model


def test_a_second_pull_downloads_nothing_again(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeHub(hub_files(MODEL, MATCHING)) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", REPO, MODEL]) == 0
        first = capsys.readouterr().out
        assert main(["model", "pull", REPO, MODEL]) == 0
        assert got(hub) == sorted([MODEL, MATCHING])  # once each
    assert capsys.readouterr().out == first


def test_a_repo_without_a_projector_pulls_the_model_alone(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeHub({(TEXT_REPO, TEXT_MODEL): DATA[MODEL]}) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", TEXT_REPO, TEXT_MODEL]) == 0
        assert got(hub) == [TEXT_MODEL] and listed(hub) == 1
    out, err = capsys.readouterr()
    assert out == f"{env / TEXT_MODEL}\n" and err == ""
    assert left_in(env) == [TEXT_MODEL]


def test_no_projector_pulls_the_model_alone(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeHub(hub_files(MODEL, F16, MATCHING)) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", REPO, MODEL, "--no-projector"]) == 0
        assert got(hub) == [MODEL] and listed(hub) == 0
    assert capsys.readouterr().out == f"{env / MODEL}\n"
    assert left_in(env) == [MODEL]


@pytest.mark.parametrize(("status", "asked"), [(404, 1), (500, 6)])
def test_a_repo_that_cannot_be_listed_pulls_the_model_text_only(
    status: int,
    asked: int,
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """404: a mirror that serves files but not the hub's API; 500: the library asks again
    (without its pauses here) and gives up. One line each, and the model is pulled."""
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=lambda seconds: None))
    with FakeHub(hub_files(MODEL, MATCHING)) as hub:
        use(hub, monkeypatch)
        hub.tree_status = status
        assert main(["model", "pull", REPO, MODEL]) == 0
        assert got(hub) == [MODEL] and listed(hub) == asked
    out, err = capsys.readouterr()
    assert out == f"{env / MODEL}\n"
    assert [line for line in err.splitlines() if line.startswith("hearthbot:")] == [
        f"hearthbot: could not list the files of {REPO} to look for a vision projector: "
        f"HTTP {status} — the model is pulled text-only"
    ]
    assert "Traceback" not in err
    assert left_in(env) == [MODEL]


def test_a_projector_that_fails_says_the_model_is_in_place(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeHub(hub_files(MODEL, MATCHING)) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", REPO, MODEL, "--no-projector"]) == 0
        hub.corrupt = True  # the model is there already: only the projector is downloaded
        assert main(["model", "pull", REPO, MODEL]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"hearthbot: checksum mismatch for {MATCHING}")
    assert err.splitlines()[-1].endswith(f"({MODEL} is in place; --no-projector skips it)")
    assert left_in(env) == [MODEL]


def test_the_configured_pull_does_not_list_the_repo(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`model pull` with no arguments (and `run --pull-missing`) pulls pull_repo / pull_file
    as before: no listing, no projector."""
    monkeypatch.setenv("HEARTHBOT_MODEL__PULL_REPO", REPO)
    monkeypatch.setenv("HEARTHBOT_MODEL__PULL_FILE", MODEL)
    with FakeHub(hub_files(MODEL, MATCHING)) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull"]) == 0
        assert got(hub) == [MODEL] and listed(hub) == 0
    assert capsys.readouterr().out == f"{env / MODEL}\n"


def test_no_projector_skips_a_catalog_entrys_projector(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = vision.catalog(
        tmp_path, model_sha=vision.sha(vision.MODEL), mmproj_sha=vision.sha(vision.MMPROJ)
    )
    monkeypatch.setattr(bot.model.catalog, "CATALOG_PATH", path)
    with FakeHub(vision.HUB) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", "tiny-vl", "--no-projector"]) == 0
        assert got(hub) == [vision.MODEL] and listed(hub) == 0
    assert capsys.readouterr().out == f"{env / vision.MODEL}\n"
    assert left_in(env) == [vision.MODEL]
