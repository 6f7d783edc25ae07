"""`vlrank tokens` through the real CLI (a subprocess, as a user runs it)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import vlrank

GOLDEN = Path(__file__).resolve().parent / "golden"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlrank.cli", "tokens", *args], capture_output=True, text=True,
                          timeout=60)


def test_table_and_total():
    imgs = [str(GOLDEN / "images" / n) for n in ("big_2500x1700.png", "photo_like_200x150.jpg")]
    r = run(*imgs)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split() == ["image", "format", "size", "resized", "tokens"]
    assert "2500x1700" in lines[1] and "1376x928" in lines[1] and lines[1].split()[-1] == "1247"
    assert "200x150" in lines[2] and lines[2].split()[-1] == "30"
    assert lines[-1].split() == ["total", str(1247 + 30)]


def test_json_matches_library_and_budget_flags():
    img = str(GOLDEN / "images" / "big_2500x1700.png")
    r = run(img, "--json", "--max-pixels", "1843200", "--min-pixels", "4096")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    want = vlrank.count_image_tokens(img, max_pixels=1843200)
    (row,) = out["images"]
    assert row["tokens"] == want.tokens == out["total_tokens"]
    assert (row["width"], row["height"]) == (2500, 1700)
    assert (row["resized_width"], row["resized_height"]) == (want.resized_width, want.resized_height)
    assert out["max_pixels"] == 1843200


def test_samples_ship_with_the_package():
    r = run("--samples", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["images"]
    assert {row["format"] for row in rows} >= {"jpeg", "png", "webp"}
    for row in rows:
        p = Path(row["image"])
        assert p.stat().st_size < 60_000
        assert row["tokens"] == vlrank.preprocess_image(p).num_tokens  # header count == decoded count


def test_header_only_on_a_huge_claimed_image(tmp_path):
    # A PNG whose header claims 100000 x 60000 pixels and has no pixel data: the count never decodes.
    ihdr = struct.pack(">IIBBBBB", 100_000, 60_000, 8, 2, 0, 0, 0)
    p = tmp_path / "huge.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                  + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF))
    r = run(str(p), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["images"][0]["tokens"] <= 1280


def test_errors_exit_nonzero_without_traceback(tmp_path):
    r = run(str(tmp_path / "missing.png"))
    assert r.returncode == 1
    assert "vlrank: error:" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    r = run(str(bad))
    assert r.returncode == 1 and "unrecognised image format" in r.stderr
    r = run()
    assert r.returncode == 1 and "--samples" in r.stderr
    thin = tmp_path / "thin.png"
    from PIL import Image

    Image.new("RGB", (1000, 2)).save(thin)
    r = run(str(thin))
    assert r.returncode == 1 and "aspect ratio" in r.stderr
