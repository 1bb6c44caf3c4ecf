#!/usr/bin/env python3
"""Generates seeded random inputs plus edge cases for the five functions and
the outputs CPython computes for them with the seed's functions.

Writes one JSON-lines file per function into OUT_DIR. Each line is
{"args": [...], "out": ...}. Floats are written as 16 hex digits of their IEEE
bits (so NaN payloads, -0.0 and infinities survive), NULL as null, strings as
JSON strings.

usage: generate.py OUT_DIR [--rows N] [--seed S]
"""
import argparse
import json
import os
import random
import struct

from seed_udfs import (
    calc_discrepancy_py,
    derive_status_py,
    flag_compliance_py,
    kpi_calculation_py,
    mask_sensitive_py,
)

EDGE_FLOATS = [
    0.0, -0.0, float("nan"), -float("nan"), float("inf"), -float("inf"),
    5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308,
    2.675, 0.125, 0.375, -0.125, -0.001, 0.005, 0.015, 1.005, 2.5, -2.5, 0.8, 0.8000000000000002,
    0.7999999999999999, 1e14 + 0.015625, 4.5e13, 4.503599627370496e13, 4503599627370495.5,
    4503599627370496.0, 9007199254740993.0, 123456789012.345, 1e16, -1e-10, 1e-300, 0.045, 0.055,
]

# Characters chosen to stress Unicode upper-casing, code-point counting and UTF-8 widths.
ODD_CHARS = [
    "ß", "ﬁ", "ﬅ", "ı", "ſ", "İ", "ǅ", "é", "e\u0301", "Ω", "ω", "ж", "中", "🦀", "\u00a0",
    "ŉ", "ΐ", "ᾳ", "ﬀ", "ǰ", "ẞ", "\u0345", "k", "K",
]
WORDS = ["KYC", "kyc", "Kyc", "BLACKLIST", "blacklist", "BlackList", "AML", "REGIONAL_LIMIT",
         "blacklıst", "ſkyc", "KY", "BLACK", "LIST", "kyć"]
STATUSES = ["PENDING", "APPROVED", "DECLINED", "REFUNDED", "MATCHED", "UNMATCHED", "matched",
            "unmatched", "Matched", "UnMatched", "MATCHED ", " MATCHED", "MATCHEDX", "UNKNOWN"]


def hexf(x):
    return struct.pack(">d", x).hex()


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def money(self):
        r = self.r
        kind = r.random()
        if kind < 0.05:
            return None
        if kind < 0.15:
            return r.choice(EDGE_FLOATS)
        if kind < 0.25:
            # random bit patterns: subnormals, NaN payloads, huge values
            return struct.unpack(">d", r.getrandbits(64).to_bytes(8, "big"))[0]
        if kind < 0.35:
            # exact binary ties at the third decimal place and below
            return r.randint(-10**6, 10**6) / r.choice([8, 16, 32, 64, 200, 400, 1000])
        if kind < 0.42:
            return r.uniform(4.5e13, 4.6e15) * r.choice([1, -1])
        return round(r.uniform(-2000.0, 2000.0), r.choice([0, 1, 2, 3, 4, 6, 10]))

    def text(self, pool, max_len=12):
        r = self.r
        kind = r.random()
        if kind < 0.05:
            return None
        if kind < 0.1:
            return ""
        parts = []
        for _ in range(r.randint(1, max_len)):
            c = r.random()
            if c < 0.6:
                parts.append(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_,"))
            elif c < 0.8:
                parts.append(r.choice(ODD_CHARS))
            else:
                parts.append(r.choice(pool))
        return "".join(parts)

    def score(self):
        r = self.r
        k = r.random()
        if k < 0.1:
            return None
        if k < 0.3:
            return r.choice(EDGE_FLOATS)
        return r.random()

    def flags(self):
        r = self.r
        k = r.random()
        if k < 0.5:
            return ",".join(r.choice(WORDS) for _ in range(r.randint(0, 4)))
        return self.text(WORDS)

    def status(self):
        r = self.r
        return r.choice(STATUSES) if r.random() < 0.6 else self.text(STATUSES, 8)

    def merchant(self):
        r = self.r
        k = r.random()
        if k < 0.5:
            return r.choice(["MCH-A", "MCH-B", "mch-a", "MCH-", "MCH-Ä", "MCH-a"]) + str(r.randint(0, 9999))
        return self.text(["MCH-A", "MCH-AB", "MCH"], 8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=20250119)
    a = ap.parse_args()
    g = Gen(a.seed)
    os.makedirs(a.out_dir, exist_ok=True)

    def f(x):
        return None if x is None else hexf(x)

    specs = {
        "calc_discrepancy": (
            lambda: (g.money(), g.money()),
            lambda x, y: [f(x), f(y)],
            lambda x, y: hexf(calc_discrepancy_py(x, y)),
            [(x, y) for x in EDGE_FLOATS + [None] for y in EDGE_FLOATS + [None]],
        ),
        "flag_compliance": (
            lambda: (g.score(), g.flags()),
            lambda s, fl: [f(s), fl],
            flag_compliance_py,
            [(s, fl) for s in [None, 0.8, 0.81, float("nan"), -0.0, float("inf")]
             for fl in [None, "", "kyc", "BLACKLIST", "ß", "blacklıst", "ſkyc"]],
        ),
        "mask_sensitive": (
            lambda: (g.text(ODD_CHARS, 24),),
            lambda u: [u],
            mask_sensitive_py,
            [(u,) for u in [None, "", "A", "AB", "ABC", "USR-1234", "é", "e\u0301x", "🦀🦀🦀", "中文字"]],
        ),
        "derive_status": (
            lambda: (g.status(), g.status()),
            lambda c, b: [c, b],
            derive_status_py,
            [(c, b) for c in [None, "", "APPROVED"] for b in [None, "", "matched", "UNMATCHED", "x", "ﬁ"]],
        ),
        "kpi_calculation": (
            lambda: (g.merchant(), g.money()),
            lambda m, v: [m, f(v)],
            lambda m, v: hexf(kpi_calculation_py(m, v)),
            [(m, v) for m in [None, "", "MCH-A", "MCH-A1", "MCH-B1", "mch-a1"] for v in EDGE_FLOATS + [None]],
        ),
    }
    for name, (draw, encode, expected, edges) in specs.items():
        with open(os.path.join(a.out_dir, name + ".jsonl"), "w", encoding="utf-8") as out:
            for args in edges + [draw() for _ in range(a.rows)]:
                out.write(json.dumps({"args": encode(*args), "out": expected(*args)}) + "\n")


if __name__ == "__main__":
    main()
