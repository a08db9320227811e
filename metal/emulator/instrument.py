#!/usr/bin/env python3
"""LLVM IR instrumentation for checked emulator builds.

MSL address spaces are clang address spaces in the emulator (device=1,
constant=2, threadgroup=3), so after clang has lowered a kernel to IR every
access to device, constant or threadgroup memory is a load/store (or memory
intrinsic) on a `ptr addrspace(N)`. This pass routes each such pointer
through the runtime before use:

    %p' = mtlemu_check_dev(%p, size, is_write, space)   ; bounds
    %p' = mtlemu_check_tg(%p, size, is_write)           ; bounds + races

The runtime returns the pointer itself, or a scratch block after reporting an
out-of-bounds access so execution can continue safely. Any memory
instruction on those address spaces that this pass does not understand is
an error: silently skipping it would leave a hole in the checking.
"""
from __future__ import annotations

import re
import sys

MEM_SPACES = ("1", "2", "3")
PTR_ATTRS = {"align", "noalias", "nocapture", "writeonly", "readonly", "noundef", "nonnull", "captures(none)"}


class InstrumentError(Exception):
    pass


def scan_operand(s: str, i: int) -> int:
    """End index of the operand starting at s[i] (stops at a top-level comma)."""
    depth = 0
    while i < len(s):
        c = s[i]
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            if depth == 0:
                return i
            depth -= 1
        elif c == "," and depth == 0:
            return i
        i += 1
    return i


def split_type(s: str) -> tuple[str, str]:
    """Split 'TYPE VALUE' at the end of the leading IR type."""
    s = s.strip()
    if s[0] in "<{[":
        close = {"<": ">", "{": "}", "[": "]"}[s[0]]
        depth = 0
        for i, c in enumerate(s):
            if c in "<{[":
                depth += 1
            elif c in ">}]":
                depth -= 1
                if depth == 0:
                    j = i + 1
                    if s[0] == "<" and s[1:2] == "{":  # packed struct <{ }>
                        pass
                    return s[:j], s[j:].strip()
        raise InstrumentError(f"cannot parse type in: {s}")
    m = re.match(r"(ptr(?: addrspace\(\d+\))?|[%\w.$\"]+)\s*(.*)$", s, re.S)
    return m.group(1), m.group(2)


def size_of(ty: str) -> str:
    return f"ptrtoint (ptr getelementptr ({ty}, ptr null, i32 1) to i64)"


class Instrumenter:
    def __init__(self):
        self.n = 0
        self.counts = {"load": 0, "store": 0, "intrinsic": 0}

    def fresh(self) -> str:
        self.n += 1
        return f"%mtlemu.{self.n}"

    def check(self, space: str, operand: str, size: str, is_write: int, out: list[str], indent: str) -> str:
        gen, chk, back = self.fresh(), self.fresh(), self.fresh()
        out.append(f"{indent}{gen} = addrspacecast ptr addrspace({space}) {operand} to ptr")
        if space == "3":
            out.append(f"{indent}{chk} = call ptr @mtlemu_check_tg(ptr {gen}, i64 {size}, i32 {is_write})")
        else:
            out.append(f"{indent}{chk} = call ptr @mtlemu_check_dev(ptr {gen}, i64 {size}, i32 {is_write}, i32 {space})")
        out.append(f"{indent}{back} = addrspacecast ptr {chk} to ptr addrspace({space})")
        return back

    def do_line(self, line: str, out: list[str]) -> None:
        indent = line[: len(line) - len(line.lstrip())]
        body = line.strip()
        if "addrspace(" not in body or body.startswith(";") or not line.startswith(" "):
            out.append(line)
            return
        lm = re.match(r"(%[\w.$\"-]+ = load (?:volatile )?)(.*)$", body)
        if lm:
            rest = lm.group(2)
            pm = re.search(r", ptr addrspace\((\d+)\) ", rest)
            if pm and pm.group(1) in MEM_SPACES and not rest.startswith("atomic"):
                ty = rest[: pm.start()]
                op_start = pm.end()
                op_end = scan_operand(rest, op_start)
                ptr = self.check(pm.group(1), rest[op_start:op_end], size_of(ty), 0, out, indent)
                out.append(f"{indent}{lm.group(1)}{ty}, ptr addrspace({pm.group(1)}) {ptr}{rest[op_end:]}")
                self.counts["load"] += 1
                return
        sm = re.match(r"(store (?:volatile )?)(.*)$", body)
        if sm:
            rest = sm.group(2)
            pm = re.search(r", ptr addrspace\((\d+)\) ", rest)
            if pm and pm.group(1) in MEM_SPACES and not rest.startswith("atomic"):
                ty, _ = split_type(rest[: pm.start()])
                op_start = pm.end()
                op_end = scan_operand(rest, op_start)
                ptr = self.check(pm.group(1), rest[op_start:op_end], size_of(ty), 1, out, indent)
                out.append(f"{indent}{sm.group(1)}{rest[: pm.start()]}, ptr addrspace({pm.group(1)}) {ptr}{rest[op_end:]}")
                self.counts["store"] += 1
                return
        im = re.search(r"call void @llvm\.(memcpy|memmove|memset)(?:\.inline)?\.[\w.]+\(", body)
        if im:
            self.do_mem_intrinsic(line, body, im, out, indent)
            return
        if re.search(r"\b(load|store|atomicrmw|cmpxchg)\b.*ptr addrspace\([123]\)", body) or re.search(
            r"call .*@llvm\.(masked|vp|experimental)\.[\w.]*\(.*ptr addrspace\([123]\)", body
        ):
            raise InstrumentError(f"unhandled memory instruction on device/threadgroup memory: {body}")
        out.append(line)

    def do_mem_intrinsic(self, line, body, im, out, indent):
        kind = im.group(1)
        args_start = im.end()
        args_end = len(body) - body[::-1].index(")") - 1
        args = body[args_start:args_end]
        spans, i = [], 0
        while i < len(args):
            j = scan_operand(args, i)
            spans.append((i, j))
            i = j + 1
        texts = [args[a:b].strip() for a, b in spans]
        length = split_type(texts[2])[1]
        new = list(texts)
        for idx, is_write in ((0, 1), (1, 0)) if kind != "memset" else ((0, 1),):
            pm = re.match(r"ptr addrspace\((\d+)\)\s+(.*)$", texts[idx])
            if not pm or pm.group(1) not in MEM_SPACES:
                continue
            toks = pm.group(2)
            attrs = []
            while True:
                am = re.match(r"(align \d+|dereferenceable\(\d+\)|noalias|nocapture|writeonly|readonly|noundef|nonnull)\s+", toks)
                if not am:
                    break
                attrs.append(am.group(1))
                toks = toks[am.end():]
            ptr = self.check(pm.group(1), toks, length, is_write, out, indent)
            new[idx] = f"ptr addrspace({pm.group(1)}) {' '.join(attrs + [ptr])}"
        out.append(indent + body[:args_start] + ", ".join(new) + body[args_end:])
        self.counts["intrinsic"] += 1


def instrument(ir: str) -> tuple[str, dict]:
    ins = Instrumenter()
    out: list[str] = []
    for line in ir.split("\n"):
        ins.do_line(line, out)
    text = "\n".join(out)
    if ins.n:
        if not re.search(r"^declare .*@mtlemu_check_tg\(", text, re.M):
            text += "\ndeclare ptr @mtlemu_check_tg(ptr, i64, i32)\n"
        if not re.search(r"^declare .*@mtlemu_check_dev\(", text, re.M):
            text += "\ndeclare ptr @mtlemu_check_dev(ptr, i64, i32, i32)\n"
    return text, ins.counts


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: instrument.py in.ll out.ll", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        ir = f.read()
    try:
        text, _ = instrument(ir)
    except InstrumentError as e:
        print(f"instrument: error: {e}", file=sys.stderr)
        return 1
    with open(argv[1], "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
