"""bot/personas.py: bundled personas (as package data), user overrides, errors naming file+field."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from bot.personas import (
    Persona,
    PersonaError,
    Sampling,
    load_personas,
    parse_persona,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ("assistant", "coder", "storyteller", "goofy")


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_personas_load() -> None:
    personas = load_personas()
    assert set(BUNDLED) <= set(personas.names())
    assert personas.names() == sorted(personas.names())
    for name in BUNDLED:
        persona = personas.get(name)
        assert persona is not None
        assert persona.name == name
        assert persona.system_prompt
        assert persona.description


def test_bundled_temperatures_are_ordered() -> None:
    personas = load_personas()
    temps = [personas.get(name).temperature for name in ("coder", "assistant", "storyteller")]
    temps.append(personas.get("goofy").temperature)
    assert temps == [0.2, 0.7, 1.0, 1.2]


def test_unknown_persona_is_none() -> None:
    assert load_personas().get("nobody") is None


def test_bundled_personas_are_package_data() -> None:
    files = {entry.name for entry in resources.files("bot.bundled_personas").iterdir()}
    assert {f"{name}.toml" for name in BUNDLED} <= files


def test_user_dir_adds_and_overrides(tmp_path: Path) -> None:
    folder = tmp_path / "personas"
    write(folder, "pirate.toml", 'system_prompt = "Arr."\ntemperature = 0.9')
    write(folder, "coder.toml", 'system_prompt = "My own coder."\ntemperature = 0.1')
    write(folder, "notes.txt", "not a persona")  # ignored: not .toml

    personas = load_personas(folder)
    assert set(BUNDLED) | {"pirate"} == set(personas.names())
    pirate = personas.get("pirate")
    assert (pirate.system_prompt, pirate.temperature) == ("Arr.", 0.9)
    coder = personas.get("coder")
    assert (coder.system_prompt, coder.temperature) == ("My own coder.", 0.1)
    assert personas.get("assistant") == load_personas().get("assistant")  # others untouched


def test_name_field_overrides_file_name(tmp_path: Path) -> None:
    folder = tmp_path / "personas"
    write(folder, "my-assistant.toml", 'name = "assistant"\nsystem_prompt = "Mine."')
    personas = load_personas(folder)
    assert personas.get("assistant").system_prompt == "Mine."
    assert personas.get("my-assistant") is None


@pytest.mark.parametrize(
    ("file_name", "text", "expected"),
    [
        pytest.param(
            "hot.toml",
            'system_prompt = "x"\ntemperature = 5.0',
            ["temperature", "less than or equal to 2"],
            id="bad-temperature",
        ),
        pytest.param(
            "extra.toml",
            'system_prompt = "x"\ncolour = "red"',
            ["colour", "unknown field"],
            id="unknown-field",
        ),
        pytest.param(
            "empty.toml", "temperature = 0.5", ["system_prompt", "required"], id="no-prompt"
        ),
        pytest.param(
            "blank.toml", 'system_prompt = "  \\n\\t "', ["system_prompt"], id="blank-prompt"
        ),
        pytest.param("broken.toml", "system_prompt = ", ["not valid TOML"], id="invalid-toml"),
        pytest.param("Bad Name.toml", 'system_prompt = "x"', ["name"], id="bad-file-name"),
        pytest.param(
            "ok.toml", 'name = "-dash"\nsystem_prompt = "x"', ["name", "pattern"], id="bad-name"
        ),
        pytest.param("seed.toml", 'system_prompt = "x"\nseed = -1', ["seed"], id="negative-seed"),
        pytest.param("typed.toml", 'system_prompt = "x"\ntop_k = "many"', ["top_k"], id="bad-type"),
    ],
)
def test_invalid_file_names_file_and_field(
    tmp_path: Path, file_name: str, text: str, expected: list[str]
) -> None:
    folder = tmp_path / "personas"
    write(folder, "good.toml", 'system_prompt = "fine"')
    write(folder, file_name, text)
    with pytest.raises(PersonaError) as caught:
        load_personas(folder)
    message = str(caught.value)
    assert file_name in message
    for part in expected:
        assert part in message


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_personas_dir_must_be_a_directory(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "personas"
    if kind == "file":
        path.write_text('system_prompt = "x"')
    with pytest.raises(PersonaError, match="not a directory"):
        load_personas(path)


def test_system_prompt_whitespace_is_stripped() -> None:
    persona = parse_persona(
        'system_prompt = """\n\n  Be nice.\n  Be brief.  \n"""\ndescription = "  d  "',
        "test.toml",
        default_name="nice",
    )
    assert persona.system_prompt == "Be nice.\n  Be brief."
    assert persona.description == "d"
    assert persona.name == "nice"


def test_sampling_returns_only_sampling_fields() -> None:
    persona = parse_persona(
        'system_prompt = "x"\ndescription = "d"\ntemperature = 0.3\ntop_k = 7\nseed = 42',
        "test.toml",
        default_name="p",
    )
    sampling = persona.sampling()
    assert type(sampling) is Sampling
    assert not isinstance(sampling, Persona)
    assert set(sampling.model_dump()) == set(Sampling.model_fields)
    assert not {"name", "description", "system_prompt"} & set(sampling.model_dump())
    assert (sampling.temperature, sampling.top_k, sampling.seed) == (0.3, 7, 42)
    assert sampling.max_tokens == Sampling().max_tokens  # defaults carried over


def test_wheel_contains_bundled_personas(tmp_path: Path) -> None:
    # Builds from a copy of the source tree, so that neither the repo gets a build/ dir nor a
    # stale build/lib from an earlier build can hide a packaging mistake.
    source = tmp_path / "src"
    skip = {".venv", ".git", "build", "dist", "data", "__pycache__", ".pytest_cache"}
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=lambda _dir, names: [
            n for n in names if n in skip or n.endswith((".egg-info", ".gguf", ".pyc"))
        ],
    )
    out = tmp_path / "wheels"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = out.glob("hearthbot-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for name in BUNDLED:
        assert f"bot/bundled_personas/{name}.toml" in names
    assert "bot/bundled_personas/__init__.py" in names
    assert "bot/personas.py" in names
