"""Every file the runtime serves or loads from the package directory (the map page, the
compiled SDK, vendored Leaflet, the Lua scripts) is declared as package data in setup.cfg, so
the wheel and the Docker image (`pip install .`) carry them."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

from setuptools.config.setupcfg import read_configuration  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tracker_ws"


def test_static_files_and_lua_scripts_are_package_data() -> None:
    patterns = read_configuration(str(ROOT / "setup.cfg"))["options"]["package_data"]["tracker_ws"]
    files = [
        p.relative_to(PACKAGE).as_posix()
        for d in ("web/static", "bus/lua")
        for p in (PACKAGE / d).rglob("*")
        if p.is_file()
    ]
    assert any(f.startswith("web/static/sdk/") for f in files)
    assert any(f.startswith("web/static/vendor/leaflet/") for f in files)
    # setuptools globs `*` within one directory, like fnmatch on a path without a separator.
    missing = [
        f
        for f in files
        if not any(fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)
    ]
    assert not missing, f"not package data (setup.cfg [options.package_data]): {missing}"
