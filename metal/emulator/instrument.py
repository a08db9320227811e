#!/usr/bin/env python3
"""LLVM IR instrumentation for checked emulator builds.

Every load, store and memcpy/memmove/memset in the kernel module is routed
through the runtime before it touches memory:

    %p' = call ptr @mtlemu_check(ptr %p, i64 size, i32 is_write)

The runtime decides from the address what is being accessed: threadgroup
memory (bounds + race checks), the checked heap holding the launch's
buffers (bounds checks, writes to constant buffers), or anything else
(thread-private memory; passes). It returns the pointer itself, or a scratch
block after reporting an out-of-bounds access so execution continues
safely. Accesses that provably hit the stack frame (allocas and addresses
computed from them) or program globals are skipped. Atomic instructions are left alone (the MSL atomics
check bounds themselves and are not races). Memory intrinsics this pass does
not understand are an error: silently skipping them would leave a hole.
"""
from __future__ import annotations

import re
import sys



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


def split_top(s: str) -> list[str]:
    parts, i = [], 0
    while i <= len(s):
        j = scan_operand(s, i)
        parts.append(s[i:j])
        i = j + 1
    return parts


PTR_ATTR_RE = re.compile(r"(align \d+|dereferenceable(?:_or_null)?\(\d+\)|noalias|nocapture|writeonly|readonly|"
                         r"noundef|nonnull|captures\([^)]*\))\s+")


class Instrumenter:
    def __init__(self):
        self.n = 0
        self.counts = {"load": 0, "store": 0, "intrinsic": 0, "skipped": 0}
        self.allocas: set[str] = set()

    def fresh(self) -> str:
        self.n += 1
        return f"%mtlemu.{self.n}"

    def static_ok(self, operand: str) -> bool:
        """Pointers that cannot reach device or threadgroup memory."""
        op = operand.strip()
        return op in self.allocas or op.startswith("@") or (op.startswith("getelementptr") and "@" in op
                                                              and "%" not in op)

    def check(self, operand: str, size: str, is_write: int, out: list[str], indent: str) -> str:
        chk = self.fresh()
        out.append(f"{indent}{chk} = call ptr @mtlemu_check(ptr {operand}, i64 {size}, i32 {is_write})")
        return chk

    def do_line(self, line: str, out: list[str]) -> None:
        body = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if body.startswith("define "):
            self.allocas = set()
        if not line.startswith(" ") or body.startswith(";"):
            out.append(line)
            return
        am = re.match(r"(%[\w.$\"-]+) = alloca\b", body)
        if am:
            self.allocas.add(am.group(1))
            out.append(line)
            return
        # Pointers computed from a stack slot stay in thread-private memory.
        gm = re.match(r"(%[\w.$\"-]+) = getelementptr (?:inbounds |nuw |nusw )*[^,]+, ptr (%[\w.$\"-]+)[,\s]", body)
        if gm and gm.group(2) in self.allocas:
            self.allocas.add(gm.group(1))
            out.append(line)
            return
        if "addrspace(" in body and re.search(r"\b(load|store|call)\b", body):
            raise InstrumentError(f"unexpected address space in: {body}")
        lm = re.match(r"(%[\w.$\"-]+ = load (?:volatile )?)(.*)$", body)
        if lm and not lm.group(2).startswith("atomic"):
            parts = split_top(lm.group(2))
            ty, ptr_part = parts[0].strip(), parts[1].strip()
            if not ptr_part.startswith("ptr "):
                raise InstrumentError(f"cannot parse load: {body}")
            operand = ptr_part[4:]
            if self.static_ok(operand):
                self.counts["skipped"] += 1
                out.append(line)
                return
            chk = self.check(operand, size_of(ty), 0, out, indent)
            out.append(f"{indent}{lm.group(1)}{ty}, ptr {chk}," + ",".join(parts[2:]))
            self.counts["load"] += 1
            return
        sm = re.match(r"(store (?:volatile )?)(.*)$", body)
        if sm and not sm.group(2).startswith("atomic"):
            parts = split_top(sm.group(2))
            value, ptr_part = parts[0].strip(), parts[1].strip()
            if not ptr_part.startswith("ptr "):
                raise InstrumentError(f"cannot parse store: {body}")
            operand = ptr_part[4:]
            if self.static_ok(operand):
                self.counts["skipped"] += 1
                out.append(line)
                return
            ty, _ = split_type(value)
            chk = self.check(operand, size_of(ty), 1, out, indent)
            out.append(f"{indent}{sm.group(1)}{value}, ptr {chk}," + ",".join(parts[2:]))
            self.counts["store"] += 1
            return
        im = re.search(r"call void @llvm\.(memcpy|memmove|memset)(?:\.inline)?\.[\w.]+\(", body)
        if im:
            self.do_mem_intrinsic(body, im, out, indent)
            return
        if re.search(r"@llvm\.(masked|vp|experimental\.vp|matrix)\.", body) or re.search(
                r"@llvm\.experimental\.(gather|scatter|load|store)", body):
            raise InstrumentError(f"unhandled memory intrinsic: {body}")
        out.append(line)

    def do_mem_intrinsic(self, body, im, out, indent):
        kind = im.group(1)
        args_start = im.end()
        args_end = args_start
        while True:  # the call's closing parenthesis: skip top-level commas
            args_end = scan_operand(body, args_end)
            if args_end >= len(body) or body[args_end] == ")":
                break
            args_end += 1
        texts = [t.strip() for t in split_top(body[args_start:args_end])]
        length = split_type(texts[2])[1]
        new = list(texts)
        for idx, is_write in ((0, 1), (1, 0)) if kind != "memset" else ((0, 1),):
            if not texts[idx].startswith("ptr "):
                raise InstrumentError(f"cannot parse memory intrinsic: {body}")
            toks, attrs = texts[idx][4:], []
            while True:
                am = PTR_ATTR_RE.match(toks)
                if not am:
                    break
                attrs.append(am.group(1))
                toks = toks[am.end():]
            if self.static_ok(toks):
                continue
            chk = self.check(toks, length, is_write, out, indent)
            new[idx] = "ptr " + " ".join(attrs + [chk])
        out.append(indent + body[:args_start] + ", ".join(new) + body[args_end:])
        self.counts["intrinsic"] += 1


def instrument(ir: str) -> tuple[str, dict]:
    ins = Instrumenter()
    out: list[str] = []
    for line in ir.split("\n"):
        ins.do_line(line, out)
    text = "\n".join(out)
    if ins.n and not re.search(r"^declare .*@mtlemu_check\(", text, re.M):
        text += "\ndeclare ptr @mtlemu_check(ptr, i64, i32)\n"
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
