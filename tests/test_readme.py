"""The README's map of the code lists exactly the modules and folders that exist, one line each."""

from __future__ import annotations

import re

from tests.conftest import REPO


def mapped_paths() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"### Map of the code\n.*?```text\n(.*?)```", text, re.S).group(1)
    paths, stack = [], []
    for line in block.splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        assert len(line.split(maxsplit=1)) == 2 or name.endswith("/"), f"no description: {line!r}"
        del stack[depth:]
        paths.append("".join(stack) + name)
        if name.endswith("/"):
            stack.append(name)
    return paths


def test_the_map_lists_every_module_once():
    mapped = mapped_paths()
    assert len(mapped) == len(set(mapped)), "a path is listed twice"
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "lmcli").rglob("*.py")}
    folders = {p.relative_to(REPO).as_posix() + "/" for p in (REPO / "lmcli").rglob("*") if p.is_dir()
               and p.name != "__pycache__"} | {"lmcli/"}
    assert set(mapped) == modules | folders
