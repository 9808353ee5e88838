"""JUnit XML for CI systems: one test case per menu choice of a replayed script.

A test case is named by its choice, title and ordinal among the steps of the same choice
(`3 Login #2`), never by its script line, so a CI's history follows a step across edits of the
script. The steps a failure kept from running are there too, as skipped. Each case carries the
step's transcript in system-out, masked as the transcript is (masking.py); the suite's time is
the wall clock of the whole run, @sleep included.
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from .runner import NotRun, Step

NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")  # XML 1.0 Char


def xml_text(text: str) -> str:
    """Text an XML parser accepts: a terminal escape or a NUL shown as \\x1b, \\x00."""
    return NOT_XML.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


def write(steps: list[Step], path: str | Path, suite: str, error: str | None = None) -> None:
    """`steps` is a replay's StepLog (runner.py) or, for a script that never ran, []."""
    not_run: list[NotRun] = getattr(steps, "not_run", [])
    failures = [s for s in steps if not s.passed]
    began_at = getattr(steps, "began_at", None) or datetime.now()
    elapsed_s = steps.elapsed_s() if hasattr(steps, "elapsed_s") else 0.0
    suite = xml_text(suite)
    root = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(steps) + len(not_run) + (1 if error else 0)),
        failures=str(len(failures)),
        errors="1" if error else "0",
        skipped=str(len(not_run) + sum(1 for s in steps if s.skipped)),
        time=f"{elapsed_s:.3f}",
        timestamp=began_at.isoformat(timespec="seconds"),
        hostname=socket.gethostname(),
    )
    for step in steps:
        r = step.result
        # names, messages and output come from script answers: masked as in the transcript
        case = ET.SubElement(
            root, "testcase", classname=suite, name=xml_text(step.mask(step.name)), time=f"{step.seconds:.3f}"
        )
        if step.skipped:
            ET.SubElement(case, "skipped", message=xml_text(step.mask(step.skip_reason)))
        if not step.passed:
            failure = ET.SubElement(case, "failure", message=xml_text(step.verdict()), type=r.status)
            failure.text = xml_text(step.mask(r.message))
        ET.SubElement(case, "system-out").text = xml_text(step.mask(step.output))
    for planned in not_run:
        case = ET.SubElement(root, "testcase", classname=suite, name=xml_text(planned.name), time="0.000")
        ET.SubElement(
            case,
            "skipped",
            message=f"not run: the replay stopped at the first failure "
            f"(line {planned.line}; --keep-going runs on)",
        )
        ET.SubElement(case, "system-out").text = xml_text(
            "script lines not run:\n" + "".join(f"{line}\n" for line in planned.lines)
        )
    if error:
        case = ET.SubElement(root, "testcase", classname=suite, name="script")
        ET.SubElement(case, "error", message=xml_text(error))
    ET.indent(root)
    Path(path).write_text(ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")
