"""Reads one of SGLang's cookbook data files (`export const config = {...}`, an ES module) into
Python data, with a real JavaScript parser: comments, trailing commas, unquoted and numeric keys,
single-quoted strings and template literals are JavaScript's own rules, not ours to re-implement.

The parser is tree-sitter with its JavaScript grammar (the `tree-sitter` and
`tree-sitter-javascript` wheels): both are maintained by the tree-sitter project, release often and
ship binary wheels for every platform and Python we run, with no compiler or Node.js needed. The
alternatives on PyPI (esprima, pyjsparser) are ports of esprima frozen since 2018-2019.

Only literal data is accepted: strings, numbers, booleans, null, arrays, objects and template
literals without `${}`. Anything else (a spread, a call, an identifier, a substitution) is an
error naming its line: SGLang's files keep to literals too (their header says why), so something
else there is news a maintainer should read, not guess at."""

from __future__ import annotations

from typing import Any

import tree_sitter_javascript
from tree_sitter import Language, Node, Parser

from cookbook.errors import BadInputError

_JS = Language(tree_sitter_javascript.language())

# JavaScript's single-character escapes; any other escaped character stands for itself.
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


class UpstreamInputError(BadInputError):
    """An upstream file that cannot be had, or read as literal data: the message names the file
    (and the line); exit status 2."""

    names_command = True


def _fail(name: str, node: Node, what: str) -> UpstreamInputError:
    return UpstreamInputError(f"{name}, line {node.start_point.row + 1}: {what}")


def parse_export(text: str, name: str) -> tuple[str, Any]:
    """The file's one `export const NAME = <literal>`: (NAME, the literal as Python data).
    `name` is how errors name the file."""
    tree = Parser(_JS).parse(text.encode())
    if tree.root_node.has_error:
        bad = _first_error(tree.root_node)
        what = "missing " + bad.type if bad.is_missing else "not valid JavaScript here"
        raise _fail(name, bad, f"{what} (syntax error)")
    exports = [n for n in tree.root_node.named_children if n.type == "export_statement"]
    declarators = [
        d
        for e in exports
        for decl in e.named_children
        if decl.type == "lexical_declaration"
        for d in decl.named_children
        if d.type == "variable_declarator"
    ]
    if len(declarators) != 1 or declarators[0].child_by_field_name("value") is None:
        raise UpstreamInputError(
            f"{name}: expected one `export const NAME = {{...}}`, found {len(declarators)}"
        )
    declarator = declarators[0]
    ident = declarator.child_by_field_name("name")
    return ident.text.decode(), to_python(declarator.child_by_field_name("value"), name)


def _first_error(node: Node) -> Node:
    for child in node.children:
        if child.is_error or child.is_missing:
            return child
        if child.has_error:
            return _first_error(child)
    return node


def to_python(node: Node, name: str) -> Any:
    """A literal's value; anything that is not a literal is an error naming its line."""
    kind = node.type
    if kind == "object":
        out = {}
        for child in node.named_children:
            if child.type == "comment":
                continue
            if child.type != "pair":
                raise _fail(name, child, f"{_describe(child)} in an object: only `key: value`")
            out[_key(child.child_by_field_name("key"), name)] = to_python(
                child.child_by_field_name("value"), name
            )
        return out
    if kind == "array":
        return [to_python(c, name) for c in node.named_children if c.type != "comment"]
    if kind in ("string", "template_string"):
        return _string(node, name)
    if kind == "number":
        return _number(node, name)
    if kind == "unary_expression" and node.children[0].type in ("-", "+"):
        value = to_python(node.named_children[0], name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(name, node, f"{_describe(node)}: a sign applies to a number only")
        return -value if node.children[0].type == "-" else value
    if kind in ("true", "false"):
        return kind == "true"
    if kind == "null":
        return None
    if kind == "parenthesized_expression":
        return to_python(node.named_children[0], name)
    raise _fail(name, node, f"{_describe(node)}: only literal data is read")


def _describe(node: Node) -> str:
    text = node.text.decode().splitlines()[0]
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{node.type.replace('_', ' ')} `{text}`"


def _key(node: Node, name: str) -> str:
    if node.type == "property_identifier":
        return node.text.decode()
    if node.type == "string":
        return _string(node, name)
    if node.type == "number":  # JavaScript keys are strings: { 1: 10 } has the key "1"
        value = _number(node, name)
        return str(int(value)) if float(value).is_integer() else str(value)
    raise _fail(name, node, f"{_describe(node)} as a key: only names, strings and numbers")


def _string(node: Node, name: str) -> str:
    parts = []
    for child in node.named_children:
        if child.type == "string_fragment":
            parts.append(child.text.decode())
        elif child.type == "escape_sequence":
            parts.append(_unescape(child.text.decode()))
        elif child.type == "template_substitution":
            raise _fail(name, child, f"{_describe(child)}: a template with a substitution")
        else:
            raise _fail(name, child, f"{_describe(child)} inside a string")
    return "".join(parts)


def _unescape(seq: str) -> str:
    body = seq[1:]
    if body[0] in "\r\n\u2028\u2029":  # a line continuation
        return ""
    if body[0] in "xu" and len(body) > 1:
        return chr(int(body[1:].strip("{}"), 16))
    return _ESCAPES.get(body, body)


def _number(node: Node, name: str) -> int | float:
    text = node.text.decode().replace("_", "").lower()
    try:
        if text.startswith(("0x", "0o", "0b")):
            return int(text, 0)
        return int(text) if text.isdigit() else float(text)
    except ValueError:
        raise _fail(name, node, f"{_describe(node)}: not a plain number") from None
