"""`--json` of the state views (`hagroup status`, `show`, `listgroups`, `member list`): data, not
lines, each document in one envelope saying which ckdemo, when (UTC) and which PKCS#11 library.
The long runs (`bench`, `soak`, `bench-serve`) and `fault list` put the same envelope first.
docs/JSON.md describes every field."""

from __future__ import annotations

import json
from typing import Any

import click

from ..codes import ckr_name
from ..config import ha
from ..provenance import ckdemo_version, timestamp
from .hagroup_view import LiveState, groups_with_members


def envelope(settings, /, **body: Any) -> dict[str, Any]:
    """What every state document carries first: version, time, home, configuration and library."""
    modules = settings.libraries()
    return {
        "ckdemo_version": ckdemo_version(),
        "timestamp": timestamp(),
        "home": str(settings.home),
        "config": str(settings.config_path),
        "module": modules[0] if modules else None,
        "modules": modules,
        **body,
    }


def echo(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2))


def ha_settings(conf) -> dict[str, Any]:
    cfg = ha.settings(conf)
    return {
        "reconnect_attempts": cfg.reconnect_attempts,
        "interval_s": cfg.interval_s,
        "ha_only": cfg.ha_only,
        "log_enabled": cfg.log_enabled,
        "log_path": cfg.log_path or None,
        "recovery_mode": ha.recovery_mode(conf),
    }


def groups_document(
    settings, live: LiveState | None, why: str | None, only: str | None = None
) -> dict[str, Any]:
    """`hagroup show --json` and `hagroup listgroups --json` (-group: one group): the groups as
    the file sets them, each member's live state when the library loaded here."""
    found = groups_with_members(settings, live)
    groups = []
    for group, members in [] if isinstance(found, str) else found:
        if only is not None and only not in (group.label, group.serial):
            continue
        groups.append(
            {
                "label": group.label,
                "serial": group.serial,
                "synchronize": ha.synchronize_on_recovery(settings.conf, group.label),
                "members": [
                    {
                        "number": n,
                        "serial": serial,
                        "label": None if label == "-" else label,
                        "role": "standby" if serial in group.standby else "active",
                        "found": found_it,
                        "status": None if code is None else ckr_name(code),
                    }
                    for n, serial, label, found_it, code in members
                ],
            }
        )
    return envelope(
        settings,
        live=live is not None,
        not_live_reason=why,
        groups=groups,
        settings=ha_settings(settings.conf),
    )


def status_document(settings, reply: dict[str, Any], recovered: list[str] | None) -> dict[str, Any]:
    """`hagroup status --json`: the running server's HA Status (its control reply's groups)."""
    groups = [
        {
            "label": g["label"],
            "serial": g["serial"],
            "recovery_mode": g.get("recovery_mode"),
            "interval_s": g.get("interval_s"),
            "retry": g.get("retry"),
            "members": [
                {
                    "number": n,
                    "serial": m["serial"],
                    "label": m["label"] or None,
                    "role": "standby" if m["standby"] else "active",
                    "status": m["status"],
                    "recovery_attempts": m.get("recovery_attempts"),
                    "recovery_exhausted": m.get("recovery_exhausted", False),
                }
                for n, m in enumerate(g["members"], start=1)
            ],
        }
        for g in reply["groups"]
    ]
    return envelope(settings, source="ckdemo serve", recovery=recovered, groups=groups)


def members_document(settings, servers: list) -> dict[str, Any]:
    """`member list --json`: the remote members' p11-kit servers."""
    return envelope(
        settings,
        members=[
            {
                "label": s.label,
                "pid": s.pid(),
                "socket": str(s.socket),
                "state": s.state(),
                "served_by": "ckdemo" if s.managed else "elsewhere",
                "provider": str(s.provider),
            }
            for s in servers
        ],
    )
