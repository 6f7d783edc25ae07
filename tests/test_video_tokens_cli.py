"""`vlrank tokens` on videos through the real CLI (a subprocess, as a user runs it), against the golden
video cases: grids, sizes and sampled frames from cases/video_pixels.json, and each video's token count
both from the README's layout rule over video_pixels.json and from the golden prompts' input_ids
(cases/video_rerank.json, video_embed.json), where a video is the span from its outer <|vision_start|>
to its outer <|vision_end|>."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
PIXELS = json.loads((GOLDEN / "cases" / "video_pixels.json").read_text())
RERANK = json.loads((GOLDEN / "cases" / "video_rerank.json").read_text())
EMBED = json.loads((GOLDEN / "cases" / "video_embed.json").read_text())
VISION_START, VISION_END, VIDEO_PAD = 151652, 151653, 151656


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vlrank.cli", "tokens", *args] if code is None else [sys.executable, "-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def cli_arg(video) -> list[str]:
    """The command line that names a golden video: a file path, or the folder of a frame list (the golden
    list must be that folder's files in name order, which is what --video-frames DIR reads)."""
    if isinstance(video, str):
        return [str(GOLDEN / video)]
    folder = (GOLDEN / video[0]).parent
    assert [str(GOLDEN / f) for f in video] == [str(p) for p in sorted(folder.iterdir())]
    return ["--video-frames", str(folder)]


def key(video) -> str:
    return video if isinstance(video, str) else str(Path(video[0]).parent)


def layout_tokens(case: dict) -> int:
    """The README's transformers 5.24 layout: per frame pair `<t seconds>` (`<`, one token per digit, `.`,
    ` seconds`, `>`) + <|vision_start|> + the pads + <|vision_end|>, and one outer pair per video."""
    ts = sum(sum(ch.isdigit() for ch in t) + 4 for t in case["timestamp_text"])
    return case["groups"] * (case["tokens_per_group"] + 2) + ts + 2


def video_spans(ids: list[int]) -> list[int]:
    """Lengths of the outer <|vision_start|> ... <|vision_end|> spans that hold <|video_pad|>, in order."""
    spans, depth, start, has_video = [], 0, 0, False
    for i, t in enumerate(ids):
        if t == VISION_START:
            if depth == 0:
                start, has_video = i, False
            depth += 1
        elif t == VISION_END:
            depth -= 1
            if depth == 0 and has_video:
                spans.append(i - start + 1)
        elif t == VIDEO_PAD:
            has_video = True
    return spans


def golden_prompts() -> list[tuple[list, list[int]]]:
    """(videos in prompt order, their token spans) of every untruncated golden prompt with a video: a
    truncated prompt may have lost timestamp tokens, which are ordinary text."""
    out = []
    for c in RERANK:
        for r in c["results"]:
            if r["videos"] and r["prompt_tokens"] == r["prompt_tokens_before_truncation"]:
                out.append(([v.get("video") or v["frames"] for v in r["videos"]], video_spans(r["input_ids"])))
    for c in EMBED:
        if c["videos"] and c["prompt_tokens"] == c["prompt_tokens_before_truncation"]:
            out.append(([v.get("video") or v["frames"] for v in c["videos"]], video_spans(c["input_ids"])))
    return out


@pytest.fixture(scope="module")
def counted() -> dict[str, dict]:
    """One CLI run over every golden video, with the defaults (the golden cases' fps 1 / max_frames 64 and
    the official budgets are the defaults)."""
    for c in RERANK + EMBED:
        assert (c["fps"], c["max_frames"]) == (1, 64)
    videos = [c["video"] or c["frames"] for c in PIXELS]
    r = run(*[a for v in videos for a in cli_arg(v)], "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["images"] == [] and len(out["videos"]) == len(videos)
    assert out["total_tokens"] == sum(row["tokens"] for row in out["videos"])
    # Rows come files first, then frame lists; each names its input as given on the command line.
    by_name = {row["video"]: row for row in out["videos"]}
    return {key(v): by_name[cli_arg(v)[-1]] for v in videos}


@pytest.mark.parametrize("case", PIXELS, ids=[key(c["video"] or c["frames"]) for c in PIXELS])
def test_plan_fields_match_video_pixels(counted, case):
    row = counted[key(case["video"] or case["frames"])]
    assert row["grid_thw"] == case["video_grid_thw"]
    assert (row["resized_height"], row["resized_width"]) == (case["resized_height"], case["resized_width"])
    assert row["sampled_frames"] == case["nframes"]
    assert row["tokens_per_frame_pair"] == case["tokens_per_group"]
    assert row["timestamps"] == case["timestamp_text"]
    assert (row["min_pixels"], row["total_pixels"], row["max_pixels"]) == (
        case["resize_min_pixels"], case["resize_total_pixels"], case["resize_max_pixels"])
    assert row["tokens"] == layout_tokens(case)
    if case["source"] == "file":
        assert row["kind"] == "file" and row["fps"] == case["video_fps"]
        assert row["frames"] == case["decoded_frames"]  # the header's count equals the decoder's here
        assert (row["height"], row["width"]) == (case["decoded_height"], case["decoded_width"])
    else:
        assert row["kind"] == "frames" and row["frames"] == case["input_frames"]
        assert (row["height"], row["width"]) == (case["original_height"], case["original_width"])


def test_tokens_equal_the_golden_prompts_spans(counted):
    prompts = golden_prompts()
    assert len(prompts) >= 15
    for videos, spans in prompts:
        assert [counted[key(v)]["tokens"] for v in videos] == spans, videos


def test_table_lists_videos_and_the_total():
    clip = GOLDEN / "videos" / "clip_24s_1fps_1024x672.mp4"
    webm = GOLDEN / "videos" / "clip_2s_15fps_160x120.webm"
    img = GOLDEN / "images" / "photo_like_200x150.jpg"
    r = run(str(img), str(clip), str(webm))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split() == ["image", "format", "size", "resized", "tokens"] and lines[1].split()[-1] == "30"
    vh = lines.index(next(ln for ln in lines if ln.startswith("video")))
    assert lines[vh].split() == ["video", "codec", "seconds", "fps", "size", "frames", "resized", "grid", "tokens"]
    big = next(c for c in PIXELS if c["video"] == "videos/clip_24s_1fps_1024x672.mp4")
    small = next(c for c in PIXELS if c["video"] == "videos/clip_2s_15fps_160x120.webm")
    assert lines[vh + 1].split()[1:] == ["h264", "24.0", "1", "1024x672", "24/24", "1024x672", "12x42x64",
                                         str(layout_tokens(big))]
    assert lines[vh + 2].split()[-1] == str(layout_tokens(small)) and "30~" in lines[vh + 2]  # WebM: estimated
    assert any(ln.startswith("~ ") for ln in lines)
    assert lines[-1].split() == ["total", str(30 + layout_tokens(big) + layout_tokens(small))]


def test_per_video_options_change_the_plan():
    # clip_9s: 225 frames at 25 fps. --max-frames 4 keeps round(linspace(0, 224, 4)) = 0, 75, 149, 224; the
    # size is the golden one (only the per-frame cap could bind), pairs at (0 + 75) / 2 / 25 = 1.5 s and
    # (149 + 224) / 2 / 25 = 7.46 s: `<1.5 seconds>`, `<7.5 seconds>`, 6 tokens each.
    case = next(c for c in PIXELS if c["video"] == "videos/clip_9s_25fps_320x180.mp4")
    r = run(str(GOLDEN / case["video"]), "--max-frames", "4", "--json")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["videos"]
    assert row["sampled_frames"] == 4 and row["grid_thw"] == [2] + case["video_grid_thw"][1:]
    assert row["timestamps"] == ["<1.5 seconds>", "<7.5 seconds>"]
    assert row["tokens"] == 2 * (case["tokens_per_group"] + 2) + 2 * 6 + 2
    # --fps 2 on the 3 s, 30-frame clip: n = 30 / 10 x 2 = 6 frames.
    r = run(str(GOLDEN / "videos" / "clip_3s_10fps_128x96.mp4"), "--fps", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["videos"][0]["sampled_frames"] == 6
    # A glob names the same frame list as its folder.
    folder = GOLDEN / "videos" / "fl70_576x448"
    a, b = (json.loads(run("--video-frames", s, "--json").stdout)["videos"][0] for s in (str(folder), f"{folder}/*.png"))
    assert {k: v for k, v in a.items() if k != "video"} == {k: v for k, v in b.items() if k != "video"}


def test_help_shows_video_examples():
    r = run("--help")
    assert r.returncode == 0
    assert "vlrank tokens clip.mp4" in r.stdout and "--video-frames" in r.stdout and "--max-frames" in r.stdout


def test_bad_videos_are_one_line_errors(tmp_path):
    clip = (GOLDEN / "videos" / "clip_3s_10fps_128x96.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip[:300])  # the header is cut off
    audio = tmp_path / "tone.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0\0" * 8000)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for n, src in (("000.png", "fl8_160x120/000.png"), ("001.png", "fl5_rgba_200x96/000.png")):
        (mixed / n).write_bytes((GOLDEN / "videos" / src).read_bytes())
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(cut)], "nor a readable video"),
        ([str(audio)], "no video stream"),
        (["--video-frames", str(mixed)], "one size"),
        (["--video-frames", str(tmp_path / "empty")], "has no files"),
        (["--video-frames", str(tmp_path / "none*.png")], "neither a folder nor a glob"),
        ([str(GOLDEN / "videos" / "clip_3s_10fps_128x96.mp4"), "--max-frames", "1"], "max_frames"),
        ([str(GOLDEN / "videos" / "clip_3s_10fps_128x96.mp4"), "--fps", "0"], "fps"),
        ([str(tmp_path / "missing.mp4")], "no such file"),
    ]
    for argv, needle in cases:
        r = run(*argv)
        assert r.returncode == 1, (argv, r.stderr)
        assert r.stderr.startswith("vlrank: error:") and needle in r.stderr, (argv, r.stderr)
        assert "Traceback" not in r.stderr and r.stdout == ""


def test_without_pyav_a_video_is_an_installation_error_exit_2():
    clip = GOLDEN / "videos" / "clip_3s_10fps_128x96.mp4"
    img = GOLDEN / "images" / "photo_like_200x150.jpg"
    code = ("import sys; sys.modules['av'] = None\n"  # PyAV absent: `import av` raises ImportError
            "from vlrank.cli import main\n"
            f"sys.exit(main(['tokens', {str(clip)!r}]))")
    r = run(code=code)
    assert r.returncode == 2 and 'pip install "vlrank[video]"' in r.stderr and "Traceback" not in r.stderr
    r = run(code=code.replace(repr(str(clip)), repr(str(img))))  # images never need PyAV
    assert r.returncode == 0, r.stderr
