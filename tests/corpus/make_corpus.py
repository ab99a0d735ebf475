#!/usr/bin/env python3
"""Write Quire's notebook test corpus, deterministically (fixed cell ids, no randomness).

    python make_corpus.py [OUTDIR] [--large]

Without --large only the small, committed files are written (OUTDIR defaults to this
script's directory). With --large, thousand-cells.ipynb and big-outputs.ipynb (~10 MB,
not committed) are written as well: tests generate them into a temporary directory.
Every file is validated with nbformat against its own nbformat_minor.
"""
import argparse
import base64
import hashlib
import json
import os
import struct
import sys
import zlib

import nbformat
from nbformat.v4 import (
    new_code_cell,
    new_markdown_cell,
    new_notebook,
    new_output,
    new_raw_cell,
)

HERE = os.path.dirname(os.path.abspath(__file__))

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
    "version": "3.11.7",
}


def tiny_png(width: int = 4, height: int = 4) -> str:
    """A real, decodable RGB PNG (a colour gradient), base64 encoded."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 60, y * 60, 200)) for x in range(width)) for y in range(height)
    )
    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows, 9))
           + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


PNG = tiny_png()
SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20">\n'
       '  <circle cx="10" cy="10" r="8" fill="teal"/>\n'
       '</svg>\n')
ANSI_TRACEBACK = [
    "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
    "\x1b[0;31mZeroDivisionError\x1b[0m                         Traceback (most recent call last)",
    "Cell \x1b[0;32mIn[4], line 1\x1b[0m\n\x1b[0;32m----> 1\x1b[0m \x1b[38;5;241m1\x1b[39m"
    "\x1b[38;5;241m/\x1b[39m\x1b[38;5;241m0\x1b[39m\n",
    "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
]


def write(nb, outdir: str, name: str) -> str:
    """Validate, then write with nbformat (which splits multi-line strings into lists)."""
    nbformat.validate(nb)
    path = os.path.join(outdir, name)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        nbformat.write(nb, f)
    return path


def write_old_minor(nb: dict, outdir: str, name: str) -> str:
    """Write a 4.0-4.4 notebook as plain JSON (nbformat's writer would add cell ids)."""
    node = nbformat.from_dict(nb)
    nbformat.validate(node)  # against the schema of nb's own nbformat_minor
    path = os.path.join(outdir, name)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def every_output() -> nbformat.NotebookNode:
    nb = new_notebook(metadata={
        "kernelspec": KERNELSPEC,
        "language_info": LANGUAGE_INFO,
        "quire_test": {"nested": {"level": 2, "items": [1, "two", 3.5, None, True]}, "note": "custom"},
    })
    nb.cells = [
        new_markdown_cell("# Every output type\n\nOne cell per kind of output.", id="eo-md-title"),
        new_code_cell(
            "import sys\nprint('line one')\nprint('line two')\nprint('oops', file=sys.stderr)",
            id="eo-stream", execution_count=1,
            metadata={"tags": ["streams", "smoke"], "collapsed": False, "scrolled": True},
            outputs=[
                new_output("stream", name="stdout", text="line one\nline two\n"),
                new_output("stream", name="stderr", text="oops\nsecond stderr line\n"),
            ]),
        new_code_cell(
            "from IPython.display import HTML\nHTML('<b>bold</b>')", id="eo-execute-result",
            execution_count=2, metadata={"jupyter": {"source_hidden": True}},
            outputs=[new_output(
                "execute_result", execution_count=2, metadata={},
                data={"text/plain": "<IPython.core.display.HTML object>",
                      "text/html": "<b>bold</b>\n<i>and italic</i>"})]),
        new_code_cell(
            "display_everything()", id="eo-display-data", execution_count=3,
            metadata={"quire": {"deep": {"deeper": {"deepest": [1, {"x": "y"}]}}},
                      "jupyter": {"outputs_hidden": False}},
            outputs=[
                new_output("display_data", metadata={"image/png": {"width": 4, "height": 4}},
                           data={"image/png": PNG, "text/plain": "<Figure size 4x4 with 1 Axes>"}),
                new_output("display_data", data={"image/svg+xml": SVG, "text/plain": "<svg>"}),
                new_output("display_data", metadata={"application/json": {"expanded": False}},
                           data={"application/json": {
                               "int": 1, "float": 1.5, "whole_float": 2.0, "negative": -3,
                               "small": 0.001, "big": 12345678901234, "yes": True, "no": False,
                               "nothing": None, "list": [1, 2.5, "three", [4.0, None]],
                               "nested": {"a": {"b": {"c": [True, False, None]}}}},
                               "text/plain": "<IPython.core.display.JSON object>"}),
                new_output("display_data", data={"text/markdown": "## Heading\n\n* item 1\n* item 2",
                                                 "text/plain": "<IPython.core.display.Markdown object>"}),
                new_output("display_data", data={"text/latex": "$$\n\\int_0^1 x^2\\,dx = \\frac{1}{3}\n$$",
                                                 "text/plain": "<IPython.core.display.Latex object>"}),
                new_output("display_data", data={
                    "application/vnd.custom+json": {"version": 1, "payload": {"rows": [[1, 2], [3, 4]]}},
                    "text/plain": "custom"}),
            ]),
        new_code_cell("1/0", id="eo-error", execution_count=4, outputs=[
            new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                       traceback=ANSI_TRACEBACK)]),
        new_code_cell("# never run", id="eo-never-run", execution_count=None, outputs=[]),
    ]
    return nb


def markdown_raw_attachments() -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO})
    nb.cells = [
        new_markdown_cell("An attached image:\n\n![dot](attachment:dot.png)", id="mra-md-attach",
                          attachments={"dot.png": {"image/png": PNG}}),
        new_markdown_cell("Two attachments: ![a](attachment:a.png) ![b](attachment:b.png)",
                          id="mra-md-two", attachments={"a.png": {"image/png": PNG},
                                                        "b.png": {"image/png": tiny_png(2, 3)}}),
        new_raw_cell("def raw():\n    return 'not executed'\n", id="mra-raw",
                     metadata={"format": "text/x-python"}),
        new_markdown_cell("", id="mra-md-empty"),
        new_code_cell("x = 1", id="mra-code", execution_count=None, outputs=[]),
    ]
    return nb


def unicode_nb() -> nbformat.NotebookNode:
    text = ("Emoji: 😀 👍🏽 family 👩‍👩‍👧 flags 🇯🇵🇫🇷\n"
            "CJK: 漢字 한국어 ひらがな カタカナ\n"
            "RTL: مرحبا بالعالم\n"
            "Combining: e\u0301 a\u0308 n\u0303 Z\u0324\u0354\u0367\u0311\u0313\n"
            "Tab:\there\n"
            "Math: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∑ ∫ ℵ\n")
    nb = new_notebook(metadata={"kernelspec": KERNELSPEC, "title": "ユニコード 🎌"})
    nb.cells = [
        new_markdown_cell("# Ünïcödé 🌍\n\n" + text, id="uni-md"),
        new_code_cell(
            's = "windows\\r\\nline"\nprint("👩‍👩‍👧 漢字 🇯🇵")\t# tab before comment\n'
            'crlf = "a\r\nb"\nprint("𝔘𝔫𝔦")',
            id="uni-code", execution_count=1, metadata={"tags": ["ユニコード", "😀"]},
            outputs=[
                new_output("stream", name="stdout", text="👩‍👩‍👧 漢字 🇯🇵\n𝔘𝔫𝔦\n"),
                new_output("execute_result", execution_count=1,
                           data={"text/plain": "'مرحبا e\u0301 한국어\tтекст\r\nend'"}),
            ]),
        new_raw_cell("raw 🇯🇵 ひらがな\r\nsecond line after CRLF", id="uni-raw"),
    ]
    return nb


def old_minor(minor: int) -> dict:
    """A 4.`minor` notebook as plain JSON: no cell ids (only allowed from 4.5)."""
    return {
        "nbformat": 4, "nbformat_minor": minor,
        "metadata": {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": [f"# nbformat 4.{minor}\n", "\n", "No cell ids."]},
            {"cell_type": "code", "execution_count": 1, "metadata": {},
             "source": ["x = 40 + 2\n", "print(x)\n", "x"],
             "outputs": [
                 {"output_type": "stream", "name": "stdout", "text": ["42\n"]},
                 {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                  "data": {"text/plain": ["42"]}}]},
            {"cell_type": "code", "execution_count": None, "metadata": {}, "source": [], "outputs": []},
        ],
    }


def v45() -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    nb.cells = [
        new_markdown_cell("# nbformat 4.5\n\nCells have ids.", id="v45-md"),
        new_code_cell("x = 40 + 2\nprint(x)\nx", id="v45-code", execution_count=1, outputs=[
            new_output("stream", name="stdout", text="42\n"),
            new_output("execute_result", execution_count=1, data={"text/plain": "42"})]),
    ]
    return nb


def thousand_cells() -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"kernelspec": KERNELSPEC})
    for i in range(1000):
        if i % 2 == 0:
            nb.cells.append(new_code_cell(
                f"print({i})", id=f"tc-{i:04d}", execution_count=i // 2 + 1,
                outputs=[new_output("stream", name="stdout", text=f"{i}\n")]))
        else:
            nb.cells.append(new_markdown_cell(f"Cell **{i}**", id=f"tc-{i:04d}"))
    return nb


def big_outputs() -> nbformat.NotebookNode:
    """200 cells x ~50 KB of base64 (deterministic bytes, not a decodable PNG): ~10 MB."""
    nb = new_notebook(metadata={"kernelspec": KERNELSPEC})
    for i in range(200):
        blob = hashlib.shake_256(f"quire-big-outputs-{i}".encode()).digest(37_500)
        nb.cells.append(new_code_cell(
            f"plot({i})", id=f"bo-{i:03d}", execution_count=i + 1, outputs=[new_output(
                "display_data", data={"image/png": base64.b64encode(blob).decode(),
                                      "text/plain": f"<Figure {i}>"})]))
    return nb


def main() -> int:
    p = argparse.ArgumentParser(description="Write the notebook test corpus.")
    p.add_argument("outdir", nargs="?", default=HERE)
    p.add_argument("--large", action="store_true",
                   help="also write thousand-cells.ipynb and big-outputs.ipynb (not committed)")
    args = p.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    written = [
        write(every_output(), args.outdir, "every-output.ipynb"),
        write(markdown_raw_attachments(), args.outdir, "markdown-raw-attachments.ipynb"),
        write(unicode_nb(), args.outdir, "unicode.ipynb"),
        write(v45(), args.outdir, "v4.5.ipynb"),
        write(new_notebook(), args.outdir, "empty.ipynb"),
    ]
    written += [write_old_minor(old_minor(m), args.outdir, f"v4.{m}.ipynb") for m in range(5)]
    if args.large:
        written.append(write(thousand_cells(), args.outdir, "thousand-cells.ipynb"))
        written.append(write(big_outputs(), args.outdir, "big-outputs.ipynb"))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
