"""Dependencies point one way (STYLE: cli -> menu -> handlers -> ha -> members), checked with ast:
each part of the package (a subpackage, or a top-level module) imports only what MAY_IMPORT
allows it, and NEVER names what a part must not reach even through the parts it may import.

Every import counts, including those inside functions and relative ones, resolved to absolute
module names; `importlib.import_module("...")` / `__import__("...")` with a literal count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ckdemo"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of_source(source: str, name: str, is_package: bool = False) -> set[str]:
    """Absolute names a module imports (for `from a import b`, both `a` and `a.b`)."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                found.add(node.args[0].value)
    found.discard("")
    return found


def imports_of(path: Path) -> set[str]:
    return imports_of_source(path.read_text(), module_name(path), path.name == "__init__.py")


def sources(*subpackages: str) -> list[Path]:
    roots = [PACKAGE / sub for sub in subpackages] if subpackages else [PACKAGE]
    return sorted(p for root in roots for p in root.rglob("*.py"))


def offending(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in paths:
        hits = sorted(
            name for name in imports_of(path) if any(name == f or name.startswith(f + ".") for f in forbidden)
        )
        if hits:
            bad[str(path.relative_to(PACKAGE.parent))] = hits
    return bad


# ---- the scanner itself ----------------------------------------------------------------------------
def test_scanner_resolves_relative_and_nested_imports():
    source = (
        "from __future__ import annotations\n"
        "from ..menu.context import Context\n"
        "from . import replication\n"
        "from .. import handlers\n"
        "def later():\n"
        "    import pkcs11.util.ec\n"
        "    import importlib\n"
        "    importlib.import_module('ctypes')\n"
    )
    found = imports_of_source(source, "ckdemo.ha.group")
    assert {
        "ckdemo.menu.context",
        "ckdemo.ha.replication",
        "ckdemo.handlers",
        "pkcs11.util.ec",
        "ctypes",
    } <= found
    assert imports_of_source("from .policy import X", "ckdemo.ha", is_package=True) >= {"ckdemo.ha.policy"}


def test_scanner_sees_the_member_layer_use_pkcs11_and_ctypes():
    members = {module_name(p): imports_of(p) for p in sources("members")}
    assert "pkcs11" in members["ckdemo.members.module"]
    assert any("ctypes" in names for names in members.values())
    assert "ckdemo.ha.policy" in imports_of(PACKAGE / "config" / "ha.py")


@pytest.mark.parametrize("subpackage", ["ha", "menu", "handlers", "members"])
def test_layer_exists(subpackage):
    assert sources(subpackage), f"ckdemo/{subpackage} has no modules: the rules below check nothing"


# ---- the rules -----------------------------------------------------------------------------------
def test_ha_imports_no_ui_and_no_pkcs11():
    assert offending(sources("ha"), ("ckdemo.menu", "ckdemo.handlers", "ckdemo.cli", "pkcs11")) == {}


def test_menu_and_handlers_do_not_reach_members_or_pkcs11():
    assert offending(sources("menu", "handlers"), ("pkcs11", "ckdemo.members")) == {}


def test_only_members_import_pkcs11_or_ctypes():
    outside = [p for p in sources() if (PACKAGE / "members") not in p.parents]
    assert offending(outside, ("pkcs11", "ctypes")) == {}


def test_rpc_codec_imports_nothing_from_ckdemo_but_codes():
    """ckdemo/rpc is the wire format only: both the server and a member client build on it.
    It may read the two spec tables, CKR codes and CKA types (which import only codes)."""

    def foreign(names: set[str]) -> list[str]:
        return sorted(
            n
            for n in names
            if n in ("pkcs11", "ctypes")
            or n.startswith(("pkcs11.", "ctypes."))
            or (
                n.startswith("ckdemo.")
                and not n.startswith(("ckdemo.rpc", "ckdemo.codes", "ckdemo.attribute_table"))
            )
        )

    assert sources("rpc"), "ckdemo/rpc has no modules: this rule checks nothing"
    assert {str(p): foreign(imports_of(p)) for p in sources("rpc") if foreign(imports_of(p))} == {}
    assert foreign(imports_of_source("from ..ha import group", "ckdemo.rpc.codec")) == [
        "ckdemo.ha",
        "ckdemo.ha.group",
    ]
    assert foreign(imports_of_source("from .. import codes", "ckdemo.rpc.codec")) == []
    assert {n for n in imports_of(PACKAGE / "attribute_table.py") if n.startswith("ckdemo.")} <= {
        "ckdemo.codes",
        "ckdemo.codes.CKR_ATTRIBUTE_TYPE_INVALID",
        "ckdemo.codes.CKR_ATTRIBUTE_VALUE_INVALID",
        "ckdemo.codes.CKRError",
    }


SERVE_MAY_USE = (
    "ckdemo.serve",
    "ckdemo.slots",
    "ckdemo.rpc",
    "ckdemo.codes",
    "ckdemo.model",
    "ckdemo.screens",
    "ckdemo.attribute_table",
)


def test_serve_drives_slots_only_through_the_slot_protocol():
    """ckdemo/serve sees slots through ckdemo.slots: never HA or member internals, never the UI
    (the cli wiring in ckdemo/commands/serve.py builds the workspace and hands the slots over)."""

    def foreign(names: set[str]) -> list[str]:
        return sorted(
            n
            for n in names
            if n in ("pkcs11", "ctypes")
            or n.startswith(("pkcs11.", "ctypes."))
            or (n.startswith("ckdemo.") and not n.startswith(SERVE_MAY_USE))
        )

    assert sources("serve"), "ckdemo/serve has no modules: this rule checks nothing"
    assert {str(p): foreign(imports_of(p)) for p in sources("serve") if foreign(imports_of(p))} == {}
    assert foreign(imports_of(PACKAGE / "slots.py")) == []
    bad = imports_of_source(
        "from ..ha.group import HAGroup\nfrom ..members import slot", "ckdemo.serve.connection"
    )
    assert foreign(bad) == [
        "ckdemo.ha.group",
        "ckdemo.ha.group.HAGroup",
        "ckdemo.members",
        "ckdemo.members.slot",
    ]
    assert foreign(imports_of_source("from ..slots import Slot", "ckdemo.serve.server")) == []


ABOVE_MEMBERS = (
    "ckdemo.ha",
    "ckdemo.handlers",
    "ckdemo.menu",
    "ckdemo.replay",
    "ckdemo.commands",
    "ckdemo.cli",
    "ckdemo.harness",
    "ckdemo.serve",
    "ckdemo.workspace",
)


def test_members_import_nothing_above_them():
    assert offending(sources("members"), ABOVE_MEMBERS) == {}
    assert imports_of_source("from ..ha import group", "ckdemo.members.slot") & set(ABOVE_MEMBERS)


def test_ha_imports_neither_the_harness_nor_the_front_doors():
    assert (
        offending(
            sources("ha"),
            ("ckdemo.harness", "ckdemo.replay", "ckdemo.commands", "ckdemo.serve", "ckdemo.workspace"),
        )
        == {}
    )


def test_handlers_do_not_reach_ha_internals():
    assert offending(sources("menu", "handlers"), ("ckdemo.ha",)) == {}


def test_nobody_asks_which_kind_of_slot_it_holds():
    """Handlers and the server drive a virtual and a physical slot alike (ckdemo/slots.py): the
    HA groups are known as such only where the harness built them (workspace.groups)."""
    asking = {}
    for path in sources():
        tree = ast.parse(path.read_text())
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | {
            n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        if "is_virtual" in names:
            asking[str(path)] = "is_virtual"
    assert asking == {}


def runtime_imports(path: Path) -> set[str]:
    """imports_of without the `if TYPE_CHECKING:` blocks (annotations only: never executed)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = [ast.Pass()]
    name = module_name(path)
    return imports_of_source(ast.unparse(tree), name, is_package=path.name == "__init__.py")


def import_graph() -> dict[str, set[str]]:
    """ckdemo module -> the ckdemo modules it imports at run time (lazy imports inside functions
    included); a module's own parent packages are not edges (Python imports them first anyway)."""
    modules = {module_name(p): p for p in sources()}
    return {
        name: {
            n for n in runtime_imports(path) if n in modules and n != name and not name.startswith(n + ".")
        }
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_loops():
    """cli <-> commands, group <-> session and the like: one direction only (STYLE)."""
    assert cycles(import_graph()) == []
    assert cycles({"ckdemo.cli": {"ckdemo.commands.member"}, "ckdemo.commands.member": {"ckdemo.cli"}}) == [
        ["ckdemo.cli", "ckdemo.commands.member", "ckdemo.cli"]
    ]


# ---- what each part may import (an allow-list: a new import is a decision written here) ----------
FOUNDATIONS = {"ckdemo.codes", "ckdemo.model", "ckdemo.attribute_table"}
MAY_IMPORT: dict[str, set[str]] = {
    "ckdemo.__main__": {"ckdemo.cli"},
    "ckdemo.codes": set(),
    "ckdemo.model": {"ckdemo.codes"},
    "ckdemo.attribute_table": {"ckdemo.codes"},
    "ckdemo.slots": FOUNDATIONS,
    "ckdemo.screens": FOUNDATIONS,
    "ckdemo.known_keys": FOUNDATIONS,
    "ckdemo.attributes": FOUNDATIONS,
    "ckdemo.interprocess": FOUNDATIONS,
    "ckdemo.childenv": FOUNDATIONS,
    "ckdemo.libraries": {"ckdemo.childenv"},  # standard library only: bootstrap runs it before any venv
    "ckdemo.rpc": FOUNDATIONS,
    "ckdemo.members": FOUNDATIONS
    | {"ckdemo.slots", "ckdemo.rpc", "ckdemo.childenv", "ckdemo.interprocess", "pkcs11", "ctypes"},
    "ckdemo.ha": FOUNDATIONS | {"ckdemo.slots"},
    "ckdemo.config": FOUNDATIONS | {"ckdemo.ha"},  # the HA settings name the recovery defaults
    "ckdemo.provision": FOUNDATIONS | {"ckdemo.config", "ckdemo.childenv", "ckdemo.libraries"},
    "ckdemo.settings": FOUNDATIONS | {"ckdemo.config", "ckdemo.ha", "ckdemo.provision"},
    "ckdemo.tokeninit": FOUNDATIONS | {"ckdemo.ha", "ckdemo.members"},
    "ckdemo.workspace": FOUNDATIONS | {"ckdemo.slots"},
    "ckdemo.harness": FOUNDATIONS
    | {
        "ckdemo.config",
        "ckdemo.ha",
        "ckdemo.interprocess",
        "ckdemo.members",
        "ckdemo.provision",
        "ckdemo.settings",
        "ckdemo.workspace",
    },
    "ckdemo.serve": FOUNDATIONS | {"ckdemo.slots", "ckdemo.rpc", "ckdemo.screens"},
    # the fault lab: scenarios, the call journal, the report; it drives a server it is handed
    "ckdemo.lab": FOUNDATIONS | {"ckdemo.serve", "ckdemo.timeline", "ckdemo.provenance"},
    "ckdemo.provenance": set(),  # standard library only: which ckdemo wrote a document, and when
    "ckdemo.timeline": set(),  # standard library only: the lab, the soak and bench draw with it
    "ckdemo.uri": FOUNDATIONS,  # RFC 7512 pkcs11 URIs
    "ckdemo.menu": FOUNDATIONS | {"ckdemo.workspace", "ckdemo.slots", "ckdemo.uri", "tabulate"},
    "ckdemo.handlers": FOUNDATIONS
    | {"ckdemo.menu", "ckdemo.slots", "ckdemo.attributes", "ckdemo.known_keys", "ckdemo.screens"},
    "ckdemo.replay": FOUNDATIONS | {"ckdemo.menu", "ckdemo.workspace", "ckdemo.config"},
    "ckdemo.histogram": set(),  # standard library only: bench-serve's client processes load it too
    "ckdemo.bench": FOUNDATIONS | {"ckdemo.known_keys", "ckdemo.histogram", "ckdemo.timeline"},
    "ckdemo.soak": FOUNDATIONS
    | {"ckdemo.known_keys", "ckdemo.histogram", "ckdemo.timeline", "ckdemo.soak_dropouts"},
    "ckdemo.soak_dropouts": FOUNDATIONS,  # the members a soak loses for good
    "ckdemo.interruption": set(),
    "ckdemo.exit_codes": set(),
    "ckdemo.bench_serve": FOUNDATIONS | {"ckdemo.childenv", "ckdemo.interruption"},
    "ckdemo.commands": FOUNDATIONS
    | {
        "ckdemo.bench",
        "ckdemo.bench_serve",
        "ckdemo.soak",
        "ckdemo.soak_dropouts",
        "ckdemo.provenance",
        "ckdemo.config",
        "ckdemo.exit_codes",
        "ckdemo.ha",
        "ckdemo.harness",
        "ckdemo.interruption",
        "ckdemo.interprocess",  # hagroup recover: is a menu running on the home?
        "ckdemo.libraries",
        "ckdemo.members",
        "ckdemo.menu",
        "ckdemo.provision",
        "ckdemo.screens",
        "ckdemo.serve",
        "ckdemo.settings",
        "ckdemo.lab",
        "ckdemo.uri",
        "click",
        "tabulate",
    },
    "ckdemo.cli": {
        "ckdemo.commands",
        "ckdemo.config",
        "ckdemo.exit_codes",
        "ckdemo.interprocess",  # the interactive menu says it runs (menu_presence)
        "ckdemo.menu",
        "ckdemo.provision",
        "ckdemo.replay",
        "click",
    },
}
WATCHED_OUTSIDE = ("pkcs11", "ctypes", "click", "tabulate")


def part_of(name: str) -> str:
    """ckdemo.ha.group -> ckdemo.ha; ckdemo.bench -> ckdemo.bench."""
    return ".".join(name.split(".")[:2])


def not_allowed(path: Path, names: set[str] | None = None) -> list[str]:
    part = part_of(module_name(path))
    allowed = MAY_IMPORT[part]
    found = imports_of(path) if names is None else names
    used = {part_of(n) for n in found if n.startswith("ckdemo.")} | {
        n.split(".")[0] for n in found if n.split(".")[0] in WATCHED_OUTSIDE
    }
    return sorted(used - allowed - {part})


def test_every_part_of_the_package_says_what_it_may_import():
    parts = {part_of(module_name(p)) for p in sources()} - {"ckdemo"}
    assert sorted(parts - set(MAY_IMPORT)) == [], "a new part: write down what it may import"
    assert {
        str(p.relative_to(PACKAGE.parent)): not_allowed(p)
        for p in sources()
        if module_name(p) != "ckdemo" and not_allowed(p)
    } == {}


@pytest.mark.parametrize(
    "importer, source",
    [
        ("ckdemo.handlers.keys", "from ..harness import build_workspace"),
        ("ckdemo.handlers.keys", "from ..serve import server"),
        ("ckdemo.handlers.keys", "from .. import cli"),
        ("ckdemo.handlers.keys", "from ..rpc import codec"),
        ("ckdemo.handlers.keys", "from ..ha.group import HAGroup"),
        ("ckdemo.handlers.keys", "from ..members.slot import PhysicalSlot"),
        ("ckdemo.menu.loop", "from ..serve import server"),
        ("ckdemo.ha.group", "from ..config import chrystoki"),
        ("ckdemo.ha.group", "from ..rpc import codec"),
        ("ckdemo.ha.group", "from ..menu import context"),
        ("ckdemo.ha.group", "import pkcs11"),
        ("ckdemo.members.slot", "from ..settings import Settings"),
        ("ckdemo.members.slot", "from ..provision import provision"),
        ("ckdemo.members.slot", "from ..ha import group"),
        ("ckdemo.serve.server", "from ..ha.group import HAGroup"),
        ("ckdemo.serve.server", "from ..members import slot"),
        ("ckdemo.rpc.codec", "from ..members import rpcclient"),
        ("ckdemo.slots", "from .ha import group"),
    ],
)
def test_the_allow_list_refuses_an_import_across_the_layers(importer, source):
    path = PACKAGE.parent / (importer.replace(".", "/") + ".py")
    assert not_allowed(path, imports_of_source(source, importer)) != [], source


# ---- the rules that matter, kept by the allow-list itself (also through what a part may import) -
NEVER: dict[str, set[str]] = {
    # the HA logic knows nothing of the UI, the configuration file, the wire format or python-pkcs11
    "ckdemo.ha": {
        "ckdemo.menu",
        "ckdemo.handlers",
        "ckdemo.cli",
        "ckdemo.commands",
        "ckdemo.config",
        "ckdemo.rpc",
        "ckdemo.serve",
        "pkcs11",
        "ctypes",
    },
    # the menu and its handlers know slots, not python-pkcs11 or the members behind them
    "ckdemo.menu": {"pkcs11", "ctypes", "ckdemo.members", "ckdemo.ha"},
    "ckdemo.handlers": {"pkcs11", "ctypes", "ckdemo.members", "ckdemo.ha"},
    # members are handed what they need: they read no settings and provision nothing
    "ckdemo.members": {"ckdemo.settings", "ckdemo.provision", "ckdemo.config", "ckdemo.ha"},
    # the wire format and the server see slots only
    "ckdemo.rpc": {"ckdemo.members", "ckdemo.ha", "ckdemo.serve"},
    "ckdemo.serve": {"ckdemo.members", "ckdemo.ha", "ckdemo.menu", "ckdemo.handlers", "pkcs11"},
}


def reachable(allowed: dict[str, set[str]], part: str) -> set[str]:
    """Every part `part` may reach, directly or through the parts it may import."""
    seen: set[str] = set()
    todo = [part]
    while todo:
        for name in allowed.get(todo.pop(), set()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def rules_broken(allowed: dict[str, set[str]]) -> dict[str, list[str]]:
    return {
        part: sorted(reachable(allowed, part) & never)
        for part, never in NEVER.items()
        if reachable(allowed, part) & never
    }


def test_the_allow_list_keeps_the_rules_that_matter():
    assert set(NEVER) <= set(MAY_IMPORT)
    assert rules_broken(MAY_IMPORT) == {}


def test_a_rule_broken_through_another_part_is_found():
    widened = {**MAY_IMPORT, "ckdemo.slots": MAY_IMPORT["ckdemo.slots"] | {"ckdemo.menu"}}
    assert rules_broken(widened)["ckdemo.ha"] == ["ckdemo.menu"]
    widened = {**MAY_IMPORT, "ckdemo.members": MAY_IMPORT["ckdemo.members"] | {"ckdemo.settings"}}
    assert rules_broken(widened)["ckdemo.members"] == [
        "ckdemo.config",
        "ckdemo.ha",
        "ckdemo.provision",
        "ckdemo.settings",
    ]
