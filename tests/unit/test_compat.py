"""The start-up check of the private names of faust, mode and aiokafka (tracker_ws.kafka.compat)."""

from __future__ import annotations

import configparser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tracker_ws.domain.errors import ConfigError, IncompatibleLibrary
from tracker_ws.kafka import compat
from tracker_ws.kafka.compat import PRIVATES, WRITTEN_FOR, Private


class _Consumer:
    """Stands in for a library class: one method sets an attribute, one is a hook."""

    def __init__(self) -> None:
        self._fetch_max_wait_ms = 500

    def start(self) -> int:
        return self._fetch_max_wait_ms

    def _hook(self) -> None: ...


class _Renamed:
    def __init__(self) -> None:
        self._fetch_max_wait = 500

    def start(self) -> int:
        return self._fetch_max_wait


def _resolve(classes: dict[str, Any]) -> Any:
    def resolve(path: str) -> Any:
        module, _, name = path.partition(":")
        if module != "fake" or name not in classes:
            raise ImportError(path)
        return classes[name]

    return resolve


def _installed(versions: dict[str, str]) -> Any:
    return lambda dist: versions[dist]


def _refusal(privates: list[Private], classes: dict[str, Any], **installed: str) -> str:
    versions = {**WRITTEN_FOR, **installed}
    with pytest.raises(IncompatibleLibrary) as caught:
        compat.check(privates, resolve=_resolve(classes), versions=_installed(versions))
    assert isinstance(caught.value, ConfigError)  # the CLI prints it as one line, exit 2
    assert caught.value.code == "INCOMPATIBLE_LIBRARY"
    message = caught.value.message
    assert "\n" not in message
    return message


def test_the_installed_libraries_have_every_private_name_we_use() -> None:
    compat.check()


def test_every_entry_names_a_real_class_and_attribute() -> None:
    assert len(PRIVATES) >= 20
    for p in PRIVATES:
        compat.check([p])


def test_a_renamed_instance_attribute_is_named_with_the_versions_written_for() -> None:
    uses = [
        Private("fake:Consumer", "_fetch_max_wait_ms", "transport.py sets it", "__init__"),
        Private("fake:Consumer", "_fetch_max_wait_ms", "start() hands it on", "start"),
    ]
    compat.check(uses, resolve=_resolve({"Consumer": _Consumer}))
    message = _refusal(uses, {"Consumer": _Renamed}, aiokafka="0.15.0")
    assert message.startswith(
        "fake.Consumer.__init__ no longer uses _fetch_max_wait_ms (transport.py sets it); "
    )
    assert "faust-streaming 0.15.3" in message
    assert "mode-streaming 0.7.1" in message
    assert "aiokafka 0.14.0 (installed: 0.15.0)" in message


def test_a_missing_method_or_class_is_named() -> None:
    hook = [Private("fake:Consumer", "_hook", "overridden")]
    compat.check(hook, resolve=_resolve({"Consumer": _Consumer}))
    message = _refusal(hook, {"Consumer": SimpleNamespace()})
    assert message.startswith("fake.Consumer._hook is gone (overridden); ")
    assert _refusal(hook, {}).startswith("fake:Consumer is gone (overridden); ")
    gone = [Private("fake:Consumer", "_x", "read", "start")]
    assert _refusal(gone, {"Consumer": SimpleNamespace()}).startswith(
        "fake.Consumer.start is gone (read); "
    )


def test_a_property_is_checked_through_its_getter() -> None:
    class App:
        @property
        def transport(self) -> Any:
            return self._new_transport()

        def _new_transport(self) -> Any: ...

    uses = [Private("fake:App", "_new_transport", "App.transport calls it", "transport")]
    compat.check(uses, resolve=_resolve({"App": App}))

    class Changed:
        @property
        def transport(self) -> Any:
            return self._make_transport()

        def _make_transport(self) -> Any: ...

    assert _refusal(uses, {"App": Changed}).startswith(
        "fake.App.transport no longer uses _new_transport (App.transport calls it); "
    )


def test_setup_cfg_pins_the_versions_written_for() -> None:
    parser = configparser.ConfigParser()
    parser.read(Path(__file__).parents[2] / "setup.cfg")
    requires = parser["options"]["install_requires"].split("\n")
    pins = dict(line.strip().split("==") for line in requires if "==" in line)
    assert {dist: pins.get(dist) for dist in WRITTEN_FOR} == dict(WRITTEN_FOR)
