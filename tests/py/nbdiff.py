#!/usr/bin/env python3
"""Compare two notebooks as nbformat sees them: `python nbdiff.py A B`.

Both files are read with nbformat (no conversion). Compared: nbformat and
nbformat_minor, notebook metadata, and for each cell its id, cell_type, source (joined
to one string), metadata, outputs (multi-line strings joined), execution_count and
attachments. JSON formatting, key order, and list-of-lines vs string do not matter.
Numbers compare as Python does (2 == 2.0, but true != 1); with --strict-numbers an int
and a float differ too (2 vs 2.0: a Yjs round trip turns every number into a float64).
Prints the first difference and exits 1, or exits 0 when equal.
"""
import json
import sys

import nbformat

MISSING = "<missing>"
STRICT_NUMBERS = False


def join_multiline(value):
    """nbformat stores multi-line strings as str or list of str: normalise to str."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    return value


def is_json_mime(mime: str) -> bool:
    """As nbformat: JSON mimetypes hold structured values that are never joined."""
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def norm_output(out: dict) -> dict:
    out = json.loads(json.dumps(out))  # plain dicts, deep copy
    if "text" in out:
        out["text"] = join_multiline(out["text"])
    if isinstance(out.get("data"), dict):
        # JSON mimetypes hold structured values and are left alone; other values are strings
        out["data"] = {k: v if is_json_mime(k) else join_multiline(v)
                       for k, v in out["data"].items()}
    return out


def norm_attachments(att):
    if not isinstance(att, dict):
        return att
    return {name: {mime: v if is_json_mime(mime) else join_multiline(v)
                   for mime, v in bundle.items()}
            for name, bundle in att.items()}


def norm_cell(cell: dict) -> dict:
    c = {
        "id": cell.get("id", MISSING),
        "cell_type": cell.get("cell_type", MISSING),
        "source": join_multiline(cell.get("source", MISSING)),
        "metadata": json.loads(json.dumps(cell.get("metadata", MISSING))),
        "attachments": norm_attachments(json.loads(json.dumps(cell.get("attachments", MISSING)))),
    }
    if cell.get("cell_type") == "code":
        c["execution_count"] = cell.get("execution_count", MISSING)
        c["outputs"] = [norm_output(o) for o in cell.get("outputs", [])]
    return c


def first_difference(a, b, where: str) -> str | None:
    """Walk both values; describe the first place they differ."""
    numbers = (int, float)
    if (not STRICT_NUMBERS and type(a) in numbers and type(b) in numbers
            and type(a) is not bool and type(b) is not bool):
        return None if a == b else f"{where}: {a!r} != {b!r}"
    if type(a) is not type(b):
        return f"{where}: {a!r} ({type(a).__name__}) != {b!r} ({type(b).__name__})"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                side = "A" if k not in a else "B"
                return f"{where}.{k}: missing in {side}"
            d = first_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}"
        return None
    if a != b:
        return f"{where}: {a!r} != {b!r}"
    return None


def diff(path_a: str, path_b: str) -> str | None:
    a = nbformat.read(path_a, as_version=nbformat.NO_CONVERT)
    b = nbformat.read(path_b, as_version=nbformat.NO_CONVERT)
    for key in ("nbformat", "nbformat_minor"):
        d = first_difference(a.get(key), b.get(key), key)
        if d:
            return d
    d = first_difference(json.loads(json.dumps(a.get("metadata", {}))),
                         json.loads(json.dumps(b.get("metadata", {}))), "metadata")
    if d:
        return d
    cells_a, cells_b = a.get("cells", []), b.get("cells", [])
    for i, (ca, cb) in enumerate(zip(cells_a, cells_b)):
        d = first_difference(norm_cell(ca), norm_cell(cb), f"cells[{i}]")
        if d:
            return d
    if len(cells_a) != len(cells_b):
        return f"cells: count {len(cells_a)} != {len(cells_b)}"
    return None


def main(argv: list[str]) -> int:
    global STRICT_NUMBERS
    if argv[:1] == ["--strict-numbers"]:
        STRICT_NUMBERS, argv = True, argv[1:]
    if len(argv) != 2:
        print("usage: nbdiff.py [--strict-numbers] A B", file=sys.stderr)
        return 2
    d = diff(*argv)
    if d:
        print(d[:2000])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
