"""Write dvc_plots_template/offline.html: the HTML page that `dvc plots show` and `dvc plots diff`
fill (.dvc/config: plots.html_template), with Vega, Vega-Lite and vega-embed inlined, so that the
page they write renders with no network. dvc-render's own page loads the three from a CDN.

The scripts are the standalone builds of the versions dvc-render's page loads (dvc-render 1.0.2:
vega 5.20.2, vega-lite 5.2.0, vega-embed 6.18.2), taken from the npm registry's tarballs and checked
against the registry's sha512 `dist.integrity` pinned below. `make setup` runs this with the system
Python (standard library only) and again when this file or page.html changes.

    python3 dvc_plots_template/build.py [OUT]
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKELETON = HERE / "page.html"
OUT = HERE / "offline.html"
REGISTRY = "https://registry.npmjs.org"
MARKER = "<!-- @vega-scripts@ -->"
# What dvc-render substitutes in a page (dvc_render/html.py); none may occur in the scripts.
DVC_PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")

# (package, version, the registry's dist.integrity, the standalone build in the tarball), in load order.
PINS = (
    ("vega", "5.20.2",
     "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
     "package/build/vega.min.js"),
    ("vega-lite", "5.2.0",
     "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
     "package/build/vega-lite.min.js"),
    ("vega-embed", "6.18.2",
     "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
     "package/build/vega-embed.min.js"),
)


def tarball_url(name: str, version: str) -> str:
    return f"{REGISTRY}/{name}/-/{name}-{version}.tgz"


def download(url: str, tries: int = 3) -> bytes:
    for attempt in range(1, tries + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return response.read()
        except OSError as error:
            if attempt == tries:
                raise SystemExit(f"build.py: cannot download {url}: {error}") from error
            time.sleep(2 * attempt)
    raise AssertionError("unreachable")


def check_integrity(data: bytes, integrity: str, what: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise ValueError(f"{what}: only sha512 integrity is accepted, not {integrity!r}")
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != expected:
        raise ValueError(f"{what}: sha512 mismatch: expected {expected}, got {got}")


def member_text(tarball: bytes, member: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        return tar.extractfile(member).read().decode("utf-8")


def script_tag(name: str, version: str, js: str) -> str:
    """One inline <script>; refuses a script that would end the tag early or hold a placeholder
    that dvc-render would substitute."""
    js = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", js)  # the .map is not shipped with the page
    if re.search(r"</script|<!--", js, re.IGNORECASE):
        raise ValueError(f"{name}@{version} holds '</script' or '<!--' and cannot be inlined")
    found = [p for p in DVC_PLACEHOLDERS if p in js]
    if found:
        raise ValueError(f"{name}@{version} holds dvc-render's placeholder {found[0]}")
    return f"<script>/* {name}@{version}, BSD-3-Clause, from its npm tarball */\n{js.strip()}\n</script>"


def page(skeleton: str, tags: list[str]) -> str:
    if skeleton.count(MARKER) != 1:
        raise ValueError(f"page.html must hold {MARKER} exactly once")
    if "{plot_divs}" not in skeleton:
        raise ValueError("page.html must hold {plot_divs}")
    return skeleton.replace(MARKER, "\n".join(tags))


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    tags = []
    for name, version, integrity, member in PINS:
        url = tarball_url(name, version)
        tarball = download(url)
        check_integrity(tarball, integrity, url)
        tags.append(script_tag(name, version, member_text(tarball, member)))
    text = page(SKELETON.read_text(encoding="utf-8"), tags)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)  # never a half-written page where DVC looks
    print(f"{out}: {len(text.encode()) // 1024} KiB, " + ", ".join(f"{n}@{v}" for n, v, _, _ in PINS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
