"""`hearthbot model pull <short-name>` of a vision model against the fake hub on 127.0.0.1:
the model and its projector both fetched, each checked against the catalog's sha256, and a
projector that is not the listed one refused with nothing left behind."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest
from test_model_catalog_cli import env
from test_model_pull import isolated_hf, use

import bot.model.catalog
from bot.app.cli import main
from bot.model.catalog import CatalogError, load_catalog
from bot.model.pull import find_local_model
from support.fake_hub import FakeHub

__all__ = ["env", "isolated_hf"]  # fixtures: the data dir in tmp; the fake hub's isolation

REPO = "org/tiny-VL-GGUF"
MODEL = "tiny-vl-q4_k_m.gguf"
MMPROJ = "mmproj-tiny-vl-q8_0.gguf"
DATA = {MODEL: b"GGUF" + bytes(range(256)) * 24, MMPROJ: b"GGUF" + bytes(range(255, -1, -1)) * 8}
HUB = {(REPO, name): data for name, data in DATA.items()}


def sha(name: str) -> str:
    return hashlib.sha256(DATA[name]).hexdigest()


def catalog(tmp_path: Path, *, model_sha: str, mmproj_sha: str | None) -> Path:
    """A catalog of one vision model, "tiny-vl", whose projector is in the same repo."""
    pin = "" if mmproj_sha is None else f'mmproj_sha256 = "{mmproj_sha}"\n'
    path = tmp_path / "catalog.toml"
    path.write_text(
        '[arch."tiny-vl"]\nparams = "1B"\nn_layer = 2\nn_head_kv = 1\nhead_dim = 8\n'
        'config = "the test"\n\n'
        f'[[model]]\nname = "tiny-vl"\nquant = "Q4_K_M"\nrepo = "{REPO}"\nfile = "{MODEL}"\n'
        f'size = {len(DATA[MODEL])}\nsha256 = "{model_sha}"\n'
        f'mmproj_file = "{MMPROJ}"\nmmproj_size = {len(DATA[MMPROJ])}\n{pin}'
        'source = "the test"\n'
    )
    return path


def left_in(models: Path) -> list[str]:
    return sorted(str(p.relative_to(models)) for p in models.rglob("*") if p.is_file())


def test_both_files_are_pulled_and_the_config_lines_printed(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = catalog(tmp_path, model_sha=sha(MODEL), mmproj_sha=sha(MMPROJ))
    monkeypatch.setattr(bot.model.catalog, "CATALOG_PATH", path)
    with FakeHub(HUB) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", "tiny-vl"]) == 0
        gets = sorted(r.path.rsplit("/", 1)[-1] for r in hub.requests if r.method == "GET")
    assert gets == [MMPROJ, MODEL]
    model, mmproj = env / MODEL, env / "projectors" / MMPROJ
    assert model.read_bytes() == DATA[MODEL] and mmproj.read_bytes() == DATA[MMPROJ]
    assert left_in(env) == sorted([MODEL, f"projectors/{MMPROJ}"])
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == [str(model), str(mmproj)]
    config = tomllib.loads(out[out.index("[model]") :])
    assert config == {"model": {"path": str(model), "mmproj": str(mmproj)}}
    # A start without [model] path takes the model, never its projector.
    assert find_local_model(env) == model


def test_a_projector_that_is_not_the_listed_one_is_refused_and_nothing_kept(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = hashlib.sha256(b"another projector").hexdigest()
    path = catalog(tmp_path, model_sha=sha(MODEL), mmproj_sha=listed)
    monkeypatch.setattr(bot.model.catalog, "CATALOG_PATH", path)
    with FakeHub(HUB) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", "tiny-vl"]) == 1
        gets = [r for r in hub.requests if r.method == "GET"]
    err = capsys.readouterr().err
    assert f"{REPO}/{MMPROJ} on the hub has sha256" in err and "nothing was downloaded" in err
    assert err.splitlines()[-1].startswith("hearthbot: ") and "Traceback" not in err
    assert gets == []
    assert not env.exists() or left_in(env) == []


def test_projector_bytes_that_differ_from_the_listed_sha256_are_deleted(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hub announces the listed sha256 but serves other bytes: nothing kept of either."""
    path = catalog(tmp_path, model_sha=sha(MODEL), mmproj_sha=sha(MMPROJ))
    monkeypatch.setattr(bot.model.catalog, "CATALOG_PATH", path)
    with FakeHub(HUB) as hub:
        use(hub, monkeypatch)
        hub.corrupt = True
        assert main(["model", "pull", "tiny-vl"]) == 1
    err = capsys.readouterr().err
    assert f"checksum mismatch for {MMPROJ}" in err and "deleted" in err
    assert left_in(env) == []


def test_a_model_that_is_not_the_listed_one_is_refused_after_its_projector(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each file is checked against its own pin: the model's mismatch is refused too (its
    verified projector stays, as a verified file of any interrupted pull does)."""
    listed = hashlib.sha256(b"another model").hexdigest()
    monkeypatch.setattr(
        bot.model.catalog,
        "CATALOG_PATH",
        catalog(tmp_path, model_sha=listed, mmproj_sha=sha(MMPROJ)),
    )
    with FakeHub(HUB) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", "tiny-vl"]) == 1
    assert f"{REPO}/{MODEL} on the hub has sha256" in capsys.readouterr().err
    assert left_in(env) == [f"projectors/{MMPROJ}"]


def test_an_unpinned_projector_is_refused_like_an_unpinned_model(tmp_path: Path) -> None:
    path = catalog(tmp_path, model_sha=sha(MODEL), mmproj_sha=None)
    with pytest.raises(CatalogError, match="lacks 'mmproj_sha256'"):
        load_catalog(path)
    path = catalog(tmp_path, model_sha=sha(MODEL), mmproj_sha="not-a-sha256")
    with pytest.raises(CatalogError, match="projector has no valid sha256"):
        load_catalog(path)


def test_the_shipped_vision_entry_is_pinned_and_has_no_text_neighbours() -> None:
    from bot.model.catalog import neighbours, params_value, resolve

    entries = load_catalog()
    vision = resolve("smolvlm2-2.2b", entries)
    assert vision.projector is not None and vision.projector.repo == vision.repo
    assert vision.needed_bytes(0) > vision.size_bytes + vision.projector.size_bytes
    _, above = neighbours(entries, params_value("1.7B"), "Q4_K_M")
    assert above is not None and above.projector is None
