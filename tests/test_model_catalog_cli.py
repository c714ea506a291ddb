"""`hearthbot model pull <short-name>` against the fake hub on 127.0.0.1, through a catalog
file naming the fake hub's files with their real sha256; and `hearthbot model suggest` with
the tiny model measured on this box."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_model_pull import isolated_hf, use

import bot.model.catalog
from bot.app.cli import main
from support.fake_hub import FakeHub

__all__ = ["isolated_hf"]  # the fake hub's isolation, autouse

REPO = "org/tiny-GGUF"
FILES = {"Q4_K_M": "tiny-q4_k_m.gguf", "Q8_0": "tiny-q8_0.gguf"}
DATA = {"Q4_K_M": b"GGUF" + bytes(range(256)) * 24, "Q8_0": b"GGUF" + bytes(range(256)) * 40}


def catalog(tmp_path: Path, sha256: dict[str, str]) -> Path:
    """A catalog of the fake hub's two files of one model, "tiny-1b"."""
    rows = [
        '[arch."tiny-1b"]\nparams = "1B"\nn_layer = 2\nn_head_kv = 1\nhead_dim = 8\n'
        'config = "the test"\n'
    ]
    for quant, file in FILES.items():
        rows.append(
            f'[[model]]\nname = "tiny-1b"\nquant = "{quant}"\nrepo = "{REPO}"\n'
            f'file = "{file}"\nsize = {len(DATA[quant])}\nsha256 = "{sha256[quant]}"\n'
            'source = "the test"\n'
        )
    path = tmp_path / "catalog.toml"
    path.write_text("\n".join(rows))
    return path


def real_sha256() -> dict[str, str]:
    return {quant: hashlib.sha256(data).hexdigest() for quant, data in DATA.items()}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No config file, the data directory in tmp; returns where pulls land."""
    monkeypatch.delenv("HEARTHBOT_CONFIG", raising=False)
    monkeypatch.setenv("HEARTHBOT_BOT__DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data" / "models"


@pytest.mark.parametrize(("spec", "quant"), [("tiny-1b", "Q4_K_M"), ("tiny-1b:q8_0", "Q8_0")])
def test_pull_by_short_name(
    spec: str,
    quant: str,
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(bot.model.catalog, "CATALOG_PATH", catalog(tmp_path, real_sha256()))
    hub_files = {(REPO, FILES[q]): DATA[q] for q in FILES}
    with FakeHub(hub_files) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", spec]) == 0
    assert capsys.readouterr().out.strip() == str(env / FILES[quant])
    assert (env / FILES[quant]).read_bytes() == DATA[quant]
    assert [p.name for p in env.iterdir()] == [FILES[quant]]


def test_a_hub_file_that_is_not_the_listed_one_is_refused(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = real_sha256()
    listed["Q4_K_M"] = hashlib.sha256(b"another file").hexdigest()
    monkeypatch.setattr(bot.model.catalog, "CATALOG_PATH", catalog(tmp_path, listed))
    with FakeHub({(REPO, FILES["Q4_K_M"]): DATA["Q4_K_M"]}) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", "tiny-1b"]) == 1
        gets = [r for r in hub.requests if r.method == "GET"]
    err = capsys.readouterr().err
    assert f"{REPO}/{FILES['Q4_K_M']} on the hub has sha256" in err
    assert f"the model catalog lists {listed['Q4_K_M'][:16]}" in err
    assert "nothing was downloaded" in err and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"hearthbot: {REPO}/")  # one line, the last
    assert gets == []
    assert not env.exists() or list(env.iterdir()) == []
    # By repo and file, the same hub file is taken as it is, as before.
    with FakeHub({(REPO, FILES["Q4_K_M"]): DATA["Q4_K_M"]}) as hub:
        use(hub, monkeypatch)
        assert main(["model", "pull", REPO, FILES["Q4_K_M"]]) == 0
    assert (env / FILES["Q4_K_M"]).read_bytes() == DATA["Q4_K_M"]


def test_bytes_that_differ_from_the_listed_sha256_are_not_kept(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hub announces the listed sha256 but serves other bytes: deleted after download."""
    monkeypatch.setattr(bot.model.catalog, "CATALOG_PATH", catalog(tmp_path, real_sha256()))
    with FakeHub({(REPO, FILES["Q4_K_M"]): DATA["Q4_K_M"]}) as hub:
        use(hub, monkeypatch)
        hub.corrupt = True
        assert main(["model", "pull", "tiny-1b"]) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "deleted" in err
    assert list(env.iterdir()) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tiny-2b", "unknown model 'tiny-2b': the catalog knows tiny-1b"),
        ("tiny-1b:q5_k_m", "the catalog has no Q5_K_M of tiny-1b: it lists q4_k_m, q8_0"),
    ],
)
def test_an_unknown_short_name_is_one_line(
    spec: str,
    message: str,
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(bot.model.catalog, "CATALOG_PATH", catalog(tmp_path, real_sha256()))
    assert main(["model", "pull", spec]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"hearthbot: {message}"


def test_suggest_prints_the_table_with_a_measured_speed(
    env: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEARTHBOT_MODEL__PATH", str(tiny_model))
    monkeypatch.setenv("HEARTHBOT_MODEL__N_CTX", "512")
    monkeypatch.setenv("HEARTHBOT_MODEL__PARALLEL", "2")
    assert main(["model", "suggest"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("box: ") and " cores, " in out[0]
    assert out[1].startswith("KV cache: 1,024 tokens of f16 (a window of n_ctx 512")
    header = next(i for i, line in enumerate(out) if line.split()[:2] == ["model", "params"])
    rows = out[header + 1 : header + 1 + len(bot.model.catalog.load_catalog())]
    assert any("qwen2.5-3b:q4_k_m" in row for row in rows)
    speeds = [row.split()[-1] for row in rows if row.split()[-2] == "CPU"]
    assert speeds and all(s.startswith("~") for s in speeds)
    assert any(line.startswith("tokens/s: measured here") for line in out)


def test_suggest_without_a_model_states_the_rough_figure(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "suggest"]) == 0
    out = capsys.readouterr().out
    assert "tokens/s: a rough figure (no model here to measure)" in out
