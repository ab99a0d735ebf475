#!/usr/bin/env python3
"""Validate notebooks with nbformat: `python validate.py FILE...`.

Each file is read without conversion (so a 4.2 notebook is checked against the 4.2
schema) and validated; prints `ok FILE` or `invalid FILE: reason`. Exit 1 if any is invalid.
"""
import sys

import nbformat


def check(path: str) -> str | None:
    """Return None when the file is a valid notebook, else the reason."""
    try:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        return e.message.splitlines()[0] if e.message else str(e).splitlines()[0]
    except Exception as e:  # unreadable, not JSON, unknown version...
        return f"{type(e).__name__}: {e}"
    return None


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: validate.py FILE...", file=sys.stderr)
        return 2
    bad = 0
    for path in paths:
        reason = check(path)
        if reason is None:
            print(f"ok {path}")
        else:
            bad += 1
            print(f"invalid {path}: {reason}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
