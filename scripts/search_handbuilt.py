"""Search designs in the MyNet report's spirit for its hand-built networks' exact parameter counts.

VGGNet 14,777,162: VGG-11/13/16/19 conv stacks (conv bias on/off, BN on/off), flatten 1x1/2x2/4x4, heads of
0, 1 or 2 hidden FC layers (BN1d on/off). ResNet 4,737,098: basic-block ResNets of 2-4 stages, widths base*2^i,
1-4 blocks per stage, stems 16/32/64/base, conv bias on/off, pooled head 1x1/2x2/4x4 with 0 or 1 hidden FC.
Hidden widths are "round" as a hand-built net's would be: powers of two 16..4096 or multiples of 100 up to 1000
(the MyNet report used 100 and 500). The last width is solved for exactly (integer check) and must be round too,
so the search is exhaustive over those ranges. With any width allowed, solving for one free integer "hits" for
almost any stack (e.g. vgg16 with hidden 98-70), which says nothing: those are left out.
Prints every exact hit. Pure arithmetic: no model is built.
"""

from __future__ import annotations

import itertools

VGG_TARGET, RESNET_TARGET = 14_777_162, 4_737_098
ROUND = frozenset([2**k for k in range(4, 13)] + list(range(100, 1001, 100)))
VGG = {"vgg11": (64, 128, 256, 256, 512, 512, 512, 512),
       "vgg13": (64, 64, 128, 128, 256, 256, 512, 512, 512, 512),
       "vgg16": (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512),
       "vgg19": (64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512)}


def convs(channels: tuple[int, ...], bias: bool, bn: bool) -> int:
    total, cin = 0, 3
    for c in channels:
        total += cin * c * 9 + (c if bias else 0) + (2 * c if bn else 0)
        cin = c
    return total


def solve_last_hidden(rest: int, fin: int, hbn: bool) -> int | None:
    """h with rest == fin*h + h (+2h with BN1d) + 10h + 10, if an integer >= 1."""
    per = fin + 1 + (2 if hbn else 0) + 10
    h, r = divmod(rest - 10, per)
    return h if r == 0 and h in ROUND else None


def vgg_hits() -> list[tuple]:
    hits = []
    for (name, ch), bias, bn, hbn, spatial in itertools.product(VGG.items(), (0, 1), (0, 1), (0, 1), (1, 4, 16)):
        fin, rest = 512 * spatial, VGG_TARGET - convs(ch, bias, bn)
        if rest == fin * 10 + 10:
            hits.append((name, bias, bn, spatial, ()))
        if (h := solve_last_hidden(rest, fin, hbn)) is not None:
            hits.append((name, bias, bn, hbn, spatial, (h,)))
        for h1 in sorted(ROUND):
            h2 = solve_last_hidden(rest - (fin * h1 + h1 + (2 * h1 if hbn else 0)), h1, hbn)
            if h2 is not None:
                hits.append((name, bias, bn, hbn, spatial, (h1, h2)))
    return hits


def block(cin: int, cout: int, proj: bool, bias: bool) -> int:
    total = cin * cout * 9 + cout * cout * 9 + 4 * cout + (2 * cout if bias else 0)
    return total + ((cin * cout + 2 * cout + (cout if bias else 0)) if proj else 0)


def resnet_body(widths: tuple[int, ...], depths: tuple[int, ...], stem: int, bias: bool) -> int:
    total, cin = 3 * stem * 9 + 2 * stem + (stem if bias else 0), stem
    for i, (w, d) in enumerate(zip(widths, depths, strict=True)):
        for j in range(d):
            total += block(cin, w, j == 0 and (i > 0 or cin != w), bias)
            cin = w
    return total


def resnet_hits() -> list[tuple]:
    hits = []
    for base, n in itertools.product((16, 32, 48, 64, 96, 128), (2, 3, 4)):
        widths = tuple(base * 2**i for i in range(n))
        for depths, stem, bias, pool in itertools.product(itertools.product(range(1, 5), repeat=n),
                                                          sorted({16, 32, 64, base}), (0, 1), (1, 2, 4)):
            rest, fin = RESNET_TARGET - resnet_body(widths, depths, stem, bias), widths[-1] * pool * pool
            if rest == fin * 10 + 10:
                hits.append((widths, depths, stem, bias, pool, ()))
            if (h := solve_last_hidden(rest, fin, False)) is not None:
                hits.append((widths, depths, stem, bias, pool, (h,)))
    return hits


if __name__ == "__main__":
    print("VGGNet 14,777,162 exact hits:", vgg_hits() or "none")
    print("ResNet 4,737,098 exact hits:", resnet_hits() or "none")
