"""OBJECT MANAGEMENT FUNCTIONS (20-27) on any slot: objects chosen by handle, attributes by name."""

from __future__ import annotations

from .. import attributes
from ..codes import CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID, CKRError
from ..menu.context import Context, InputError
from ..model import CK_UNAVAILABLE_INFORMATION, CKA_CLASS, CKA_ID, CKA_KEY_TYPE, CKA_LABEL

CLASSES = [
    (0x0, "Data object"),
    (0x4, "Secret key"),
    (0x2, "Public key"),
    (0x3, "Private key"),
    (0x1, "Certificate"),
]
DONE = (".", "")  # ends an attribute list (scripts skip blank lines, so they write ".")
SENSITIVE = "<sensitive>"


def _ask_attributes(ctx: Context, prompt: str) -> dict[int, object]:
    ctx.say(
        f"{prompt} NAME=VALUE per line (e.g. CKA_LABEL=mykey, CKA_ENCRYPT=true, "
        "CKA_VALUE=hex:00ff); '.' to finish."
    )
    template: dict[int, object] = {}
    while True:
        text = ctx.ask("Attribute : ")
        if text in DONE:
            return template
        attribute, value = _typed(attributes.parse_assignment, text)
        template[attribute.code] = value


def _ask_handle(ctx: Context, prompt: str = "Enter object handle : ") -> int:
    return ctx.ask_int(prompt, 0)


def create_object(ctx: Context) -> None:
    opened = ctx.choose_session()
    for n, (_, title) in enumerate(CLASSES, start=1):
        ctx.say(f"\t({n}) {title}")
    cls = CLASSES[ctx.ask_int("Select object class: ", 1, len(CLASSES)) - 1][0]
    template = {CKA_CLASS: cls, **_ask_attributes(ctx, "Attributes of the new object:")}
    handle = opened.session.create_object(template)
    ctx.workspace.remember(object=handle)
    ctx.say(f"Object created: handle {handle}")


def copy_object(ctx: Context) -> None:
    opened = ctx.choose_session()
    handle = _ask_handle(ctx)
    template = _ask_attributes(ctx, "Attributes to change in the copy:")
    copy = opened.session.copy_object(handle, template)
    ctx.workspace.remember(object=copy)
    ctx.say(f"Object {handle} copied: new handle {copy}")


def destroy_object(ctx: Context) -> None:
    opened = ctx.choose_session()
    handle = _ask_handle(ctx)
    opened.session.destroy_object(handle)
    ctx.say(f"Object {handle} destroyed.")


def object_size(ctx: Context) -> None:
    opened = ctx.choose_session()
    handle = _ask_handle(ctx)
    size = opened.session.object_size(handle)
    shown = "unavailable (the module does not say)" if size == CK_UNAVAILABLE_INFORMATION else f"{size} bytes"
    ctx.say(f"Object {handle} size: {shown}")


def _typed(parse, text: str):
    """An attribute name or NAME=VALUE as typed; a wrong one is the user's one clear line."""
    try:
        return parse(text)
    except (KeyError, ValueError) as exc:
        raise InputError(f"Invalid input: {exc.args[0]}") from None


def get_attribute(ctx: Context) -> None:
    opened = ctx.choose_session()
    handle = _ask_handle(ctx)
    attribute = _typed(attributes.lookup, ctx.ask("Enter attribute name (e.g. CKA_LABEL) : "))
    value = opened.session.read_attribute(handle, attribute.code)
    ctx.say(f"{attribute.name} = {attributes.render(attribute, value)}")


def set_attribute(ctx: Context) -> None:
    opened = ctx.choose_session()
    handle = _ask_handle(ctx)
    attribute, value = _typed(
        attributes.parse_assignment, ctx.ask("Enter NAME=VALUE (e.g. CKA_LABEL=newname) : ")
    )
    opened.session.set_attributes(handle, {attribute.code: value})
    ctx.say(f"{attribute.name} of object {handle} set to {attributes.render(attribute, value)}")


def find_object(ctx: Context) -> None:
    opened = ctx.choose_session()
    template = _ask_attributes(ctx, "Search template (none: every object; by class, label, id or key type):")
    handles = opened.session.find_objects(template)
    rows = []
    for handle in handles:
        values = {}
        for code in (CKA_CLASS, CKA_KEY_TYPE, CKA_LABEL, CKA_ID):
            try:
                values[code] = opened.session.read_attribute(handle, code)
            except CKRError as exc:
                if exc.ckr != CKR_ATTRIBUTE_TYPE_INVALID:
                    raise
                values[code] = None
        rows.append(
            (
                handle,
                attributes.render(attributes.BY_CODE[CKA_CLASS], values[CKA_CLASS]),
                "-"
                if values[CKA_KEY_TYPE] is None
                else attributes.render(attributes.BY_CODE[CKA_KEY_TYPE], values[CKA_KEY_TYPE]),
                values[CKA_LABEL] or "",
                attributes.render(None, values[CKA_ID]),
            )
        )
    ctx.table(rows, ["Handle", "Class", "Key type", "Label", "ID"])
    ctx.say(f"{len(rows)} object(s) found.")


def display_object(ctx: Context) -> None:
    opened = ctx.choose_session()
    handle = _ask_handle(ctx)
    rows = []
    for attribute in attributes.ATTRIBUTES:
        try:
            value = opened.session.read_attribute(handle, attribute.code)
        except CKRError as exc:
            if exc.ckr == CKR_ATTRIBUTE_SENSITIVE:
                rows.append((attribute.name, SENSITIVE))
            elif exc.ckr == CKR_ATTRIBUTE_TYPE_INVALID:
                continue  # not an attribute of this object's class
            else:
                raise
            continue
        rows.append((attribute.name, attributes.render(attribute, value, wrap=64)))
    ctx.table(rows, ["Attribute", "Value"])
