"""tox plugin, loaded by tox from this file: every test env shares the packages of the interpreter running tox.

``sitepackages = true`` (tox.ini) gives an env the site-packages of the *base* interpreter only: virtualenv
builds every env from the base Python, also when tox runs inside a virtualenv, so a torch installed in that
virtualenv is invisible and pip installs another copy (several GB) in every env. Before an env's first
install, this adds a ``.pth`` file to it naming the site-packages of the interpreter that runs tox. The
paths come after the env's own, so the avalanche-lib / timm versions an env installs still win, and pip
sees torch as installed and leaves it alone. When tox runs from the base interpreter (``.ci/run``) the
paths are the ones ``sitepackages`` already shares, and nothing changes.
"""
from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from tox.plugin import impl
from tox.tox_env.python.virtual_env.runner import VirtualEnvRunner

PTH_NAME = "_tox_outer_site_packages.pth"


def outer_site_packages() -> list:
    """The site-packages folders of the interpreter running tox."""
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


@impl
def tox_on_install(tox_env, arguments, section: str, of_type: str) -> None:
    # Test envs only: the packaging env builds the sdist/wheel in isolation, as it should.
    if not isinstance(tox_env, VirtualEnvRunner):
        return
    if tuple(tox_env.base_python.version_info[:2]) != sys.version_info[:2]:
        return  # another Python version: compiled packages (torch) would not load
    pth = Path(tox_env.env_site_package_dir()) / PTH_NAME
    lines = "".join(f"{p}\n" for p in outer_site_packages() if Path(p).is_dir())
    if not pth.is_file() or pth.read_text() != lines:
        pth.write_text(lines)
