"""The menu loop: read a choice, dispatch it to its handler, print the status line."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Sequence

from ..codes import CKR_FUNCTION_NOT_SUPPORTED, CKR_OK, CKRError, NotCarried
from . import render
from .context import Context, InputError
from .io import EndOfInput, InputAborted
from .table import BY_NUMBER, HELP, QUIT, Entry

INTERNAL_ERROR = "INTERNAL_ERROR"  # a bug in ckdemo: reported in one line, the menu goes on
BAD_INPUT = "BAD_INPUT"  # the step's answers could not be used (no PKCS#11 call failed)
NO_ANSWER = "NO_ANSWER"  # input ended while a prompt was waiting
PROMPT = "Enter your choice : "
PROMPT_NO_MENU = "Enter your choice (99 for help): "


@dataclass
class StepResult:
    choice: int | None
    title: str
    status: str  # a CKR_* name, BAD_INPUT or NO_ANSWER
    ckr: int | None = None
    message: str = ""
    function: str = ""
    shown: dict[str, Any] = field(default_factory=dict)  # what the step showed as data (shown.py)
    not_carried: str = ""  # why the way to a member cannot carry the call (codes.NotCarried)


Observer = Callable[[StepResult], None]


def resolve(entry: Entry) -> Callable[[Context], None] | None:
    if not entry.handler:
        return None
    module_name, function = entry.handler.split(":")
    module = importlib.import_module(f"ckdemo.handlers.{module_name}")
    handler = getattr(module, function)
    return partial(handler, entry=entry) if entry.extension else handler


def report_internal_error(exc: BaseException, path: str) -> str:
    """Writes the traceback where a bug report can pick it up; returns where."""
    import traceback

    try:
        with open(path, "a") as log:
            log.write("".join(traceback.format_exception(exc)) + "\n")
    except OSError:
        return "nowhere (the error log could not be written)"
    return path


class MenuLoop:
    def __init__(
        self,
        context: Context,
        extra: Sequence[Entry] = (),
        extra_groups: Sequence = (),
        observer: Observer | None = None,
        error_log: str = "ckdemo-errors.log",
        prompt: str | None = None,
        watch: Callable[[], list[str]] | None = None,
    ) -> None:
        self.context = context
        # before each choice: changes made to the config meanwhile, applied or named (config/watch.py)
        self.watch = watch or (lambda: [])
        self.prompt = prompt  # a replay always shows CKDemo's own prompt (PROMPT)
        self.error_log = error_log
        self.entries = dict(BY_NUMBER)
        self.entries.update({e.number: e for e in extra})
        self.extra, self.extra_groups = extra, extra_groups
        self.menu = render.menu_text(extra, extra_groups)
        self.observer = observer or (lambda result: None)

    def run(self) -> None:
        """The menu, with HA events shown as they happen (between the lines of the call they
        happened in), those recorded before it started first."""
        logs = list({id(group.log): group.log for group in self.context.workspace.groups}.values())
        earlier = [event for log in logs for event in log.follow(self.context.event)]
        try:
            for event in sorted(earlier, key=lambda e: e.when):
                self.context.event(event)
            self._run()
        finally:
            for log in logs:
                log.unfollow(self.context.event)

    def _run(self) -> None:
        show = self.context.workspace.options
        self.context.write(self.menu)
        while True:
            try:
                text = self.context.ask_menu_choice(
                    self.prompt or (PROMPT if show.show_menu else PROMPT_NO_MENU)
                ).strip()
            except EndOfInput:
                return
            if not text:
                continue
            for notice in self.watch():
                self.context.say(f"  ({notice})")
            try:
                number = int(text)
            except ValueError:
                self.context.write(f"Invalid input ({text}).\n")
                self.observer(StepResult(None, text, BAD_INPUT, message=f"Invalid input ({text})."))
                continue
            if number == QUIT:
                return
            if number == HELP:
                self.context.write(self.help())
                continue
            entry = self.entries.get(number)
            if entry is None:
                self.context.write(f"Invalid input ({number}).\n")
                self.observer(StepResult(number, text, BAD_INPUT, message=f"Invalid input ({number})."))
                continue
            result = self.dispatch(entry)
            self.observer(result)
            if result.status == NO_ANSWER:
                return
            if show.show_menu:
                self.context.write("\n" + self.menu)

    def help(self) -> str:
        """99: the menu with each Luna-only choice marked, and what the marks mean."""
        missing, exported = self.luna_only()
        marks = {n: render.LUNA_ONLY_MISSING for n in missing}
        marks.update({n: render.LUNA_ONLY_EXPORTED for n in exported})
        return render.menu_text(self.extra, self.extra_groups, marks) + render.luna_only_note(
            missing, exported
        )

    def luna_only(self) -> tuple[list[int], list[int]]:
        """The Luna-only choices (a Luna CA_ extension, or a Luna facility ckdemo cannot find by
        symbol), split by whether a loaded module exports their function: (lacking, exported)."""
        luna = [e for e in sorted(self.entries.values(), key=lambda e: e.number) if e.extension]
        exported = {e.number for e in luna if self.context.workspace.exports(e.extension)}
        return (
            [e.number for e in luna if e.number not in exported],
            [e.number for e in luna if e.number in exported],
        )

    def dispatch(self, entry: Entry) -> StepResult:
        self.context.take_shown()  # nothing an earlier step recorded belongs to this one
        result = self._dispatch(entry)  # HA events are shown as they happen (run)
        result = replace(result, shown=self.context.take_shown())
        if result.ckr is not None:
            self.context.say(render.status_line(result.ckr, result.function))
        return result

    def _dispatch(self, entry: Entry) -> StepResult:
        context = self.context
        handler = resolve(entry)
        try:
            if handler is None:
                raise CKRError(CKR_FUNCTION_NOT_SUPPORTED, entry.title, entry.unavailable)
            handler(context)
        except CKRError as exc:
            if exc.detail and context.workspace.options.verbose_errors:
                context.say(f"{entry.title}: {exc.detail}")
            return StepResult(
                entry.number,
                entry.title,
                exc.name,
                exc.ckr,
                str(exc),
                exc.function,
                not_carried=exc.detail if isinstance(exc, NotCarried) else "",
            )
        except InputError as exc:
            context.say(str(exc))
            return StepResult(entry.number, entry.title, BAD_INPUT, message=str(exc))
        except EndOfInput as exc:
            message = f"Input ended while waiting for an answer to '{str(exc).strip()}'."
            context.say("\n" + message)
            return StepResult(entry.number, entry.title, NO_ANSWER, message=message)
        except KeyboardInterrupt:  # Ctrl-C in a choice abandons the choice, not the session
            if not getattr(context.io, "abandon_on_interrupt", False):
                raise  # a replay stops: its later answers belong to this choice
            message = "Choice abandoned (interrupted)."
            context.say("\n" + message)
            return StepResult(entry.number, entry.title, BAD_INPUT, message=message)
        except (SystemExit, InputAborted):
            raise
        except Exception as exc:  # a ckdemo bug must not end the session or lose its state
            where = report_internal_error(exc, self.error_log)
            message = (
                f"Internal error in {entry.title}: {type(exc).__name__}: {exc} "
                f"(a ckdemo bug; details in {where})"
            )
            context.say(message)
            return StepResult(entry.number, entry.title, INTERNAL_ERROR, message=message)
        return StepResult(entry.number, entry.title, "CKR_OK", CKR_OK)
