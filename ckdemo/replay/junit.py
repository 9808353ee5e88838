"""JUnit XML for CI systems: one test case per menu choice of a replayed script."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .runner import Step


def write(steps: list[Step], path: str | Path, suite: str, error: str | None = None) -> None:
    failures = [s for s in steps if not s.passed]
    root = ET.Element("testsuite", name=suite, tests=str(len(steps) + (1 if error else 0)),
                      failures=str(len(failures)), errors="1" if error else "0",
                      time=f"{sum(s.seconds for s in steps):.3f}")
    for step in steps:
        r = step.result
        # names and messages come from script answers: masked as in the transcript (masking.py)
        name = step.mask(f"line {step.line}: {step.choice_text} {r.title}")
        case = ET.SubElement(root, "testcase", classname=suite, name=name, time=f"{step.seconds:.3f}")
        if not step.passed:
            failure = ET.SubElement(case, "failure", message=step.verdict(), type=r.status)
            failure.text = step.mask(r.message)
    if error:
        case = ET.SubElement(root, "testcase", classname=suite, name="script")
        ET.SubElement(case, "error", message=error)
    ET.indent(root)
    Path(path).write_text(ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")
