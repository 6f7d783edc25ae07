"""Peak memory of a real ``vlrank serve`` fed 40 crafted giant-canvas images in one rerank request.

For each bomb kind (a 35-byte GIF whose logical screen is 13000 x 13000 with a 1 x 1 frame, a 57-byte lossless
WebP header claiming 13000 x 13000, a 632-byte JPEG claiming 12000 x 12000, and a GIF canvas of 8192 x 8192 =
64 MiP, just at the default ``max_image_pixels``) one request of 40 distinct bombs goes to a fresh server
process over the tiny golden Qwen3-VL reranker, with and without a 5 GiB address-space cap (``prlimit --as``,
what a container limit does). Recorded: the answer (status, error code, param), its time, the server's peak
RSS (VmHWM from /proc/<pid>/status) before and after, its RSS after, and whether the process still answers
``/health`` and a normal image rerank. A second pair of servers runs with ``--max-image-pixels 200000000``
(above the bombs) to show what the decode-byte budgets alone do when the header cap lets a bomb through.

    python benches/bench_image_memory.py               # writes its section of benches/RESULTS.md
    python benches/bench_image_memory.py --no-write --kinds gif
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchlib import REPO, eprint, finish, load_average, machine, machine_line, status_kib

sys.path.insert(0, str(REPO / "tests"))
from images_support import gif_screen_bomb, jpeg_size_bomb, webp_lossless_bomb  # noqa: E402

GOLDEN = REPO.parent / "shared" / "golden"
CAP = 5 * 1024**3  # bytes (prlimit takes a plain number)
COUNT = 40
RAISED = 200_000_000  # --max-image-pixels above every bomb: only the decode-byte budgets stand in the way
# Each document's bomb differs by one pixel of canvas, so none is deduplicated as a repeat of another.
KINDS = {
    "gif": ("GIF 13000x13000 screen, 1x1 frame", "image/gif", lambda i: gif_screen_bomb(13000 + i, 13000)),
    "webp": ("lossless WebP 13000x13000", "image/webp", lambda i: webp_lossless_bomb(13000 + i, 13000)),
    "jpeg": ("JPEG claiming 12000x12000", "image/jpeg", lambda i: jpeg_size_bomb(12000 + i, 12000)),
    "gif-at-cap": ("GIF 8192x8192 screen (= 64 MiP)", "image/gif", lambda i: gif_screen_bomb(8192 - i, 8192)),
}


def bomb_request(kind: str) -> dict:
    _, mime, make = KINDS[kind]
    docs = [{"content": [{"type": "image_url", "image_url": {
        "url": f"data:{mime};base64," + base64.b64encode(make(i)).decode()}}]} for i in range(COUNT)]
    return {"model": "rr", "query": "q", "documents": docs}


def normal_request() -> dict:
    photo = base64.b64encode((GOLDEN / "images" / "photo_like_200x150.jpg").read_bytes()).decode()
    return {"model": "rr", "query": "a photo", "documents": [
        {"content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + photo}}]}, "text"]}


class Server:
    def __init__(self, model_dir: Path, *, cap: int | None, max_image_pixels: int | None) -> None:
        cmd = [sys.executable, "-m", "vlrank.cli", "serve", "--model", f"rr={model_dir}", "--port", "0"]
        if max_image_pixels is not None:
            cmd += ["--max-image-pixels", str(max_image_pixels)]
        if cap is not None:
            cmd = ["prlimit", f"--as={cap}"] + cmd  # prlimit execs the server: same pid
        env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.url = None
        deadline = time.monotonic() + 180
        self.lines: list[str] = []
        while self.url is None and time.monotonic() < deadline and self.proc.poll() is None:
            self.lines.append(self.proc.stdout.readline())
            if m := re.search(r"running on (http://127\.0\.0\.1:\d+)", self.lines[-1]):
                self.url = m.group(1)
        if self.url is None:
            raise RuntimeError("server did not start: " + "".join(self.lines))
        while httpx.get(self.url + "/health").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("server not healthy")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> str:
        if self.alive():
            self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return "".join(self.lines) + (out or "")


def run_one(server: Server, kind: str) -> dict:
    pid = server.proc.pid
    body = bomb_request(kind)
    hwm0 = status_kib("VmHWM", pid)
    t0 = time.perf_counter()
    try:
        r = httpx.post(server.url + "/v1/rerank", json=body, timeout=600)
        status = r.status_code
        err = r.json().get("error") or {} if r.headers.get("content-type", "").startswith("application/json") else {}
    except httpx.HTTPError as exc:
        status, err = f"no answer ({type(exc).__name__})", {}
    took = time.perf_counter() - t0
    row = {"kind": kind, "status": status, "code": err.get("code") or "-", "param": err.get("param") or "-",
           "s": took, "alive": server.alive()}
    if row["alive"]:
        row["hwm0"], row["hwm1"], row["rss"] = hwm0, status_kib("VmHWM", pid), status_kib("VmRSS", pid)
        health = httpx.get(server.url + "/health").status_code
        nxt = httpx.post(server.url + "/v1/rerank", json=normal_request(), timeout=120).status_code
        row["next"] = f"{health} / {nxt}"
    else:
        row["hwm0"], row["hwm1"], row["rss"], row["next"] = hwm0, None, None, "dead"
    eprint(row)
    return row


def mib(kib: int | None) -> str:
    return "—" if kib is None else f"{kib / 1024:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--no-raised", action="store_true", help="skip the servers with --max-image-pixels raised")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from vlrank.export import export

    info, load0 = machine(), load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = export(GOLDEN / "models" / "tiny-qwen3-vl", Path(tmp) / "rr", task="rerank", progress=False)
        configs = [(None, None), (CAP, None)]
        if not args.no_raised:
            configs += [(None, RAISED), (CAP, RAISED)]
        for cap, pixels in configs:
            kinds = [k for k in args.kinds if pixels is None or k != "gif-at-cap"]
            # Cheap kinds first: VmHWM only grows, so each row's before/after is that request's own rise.
            for kind in sorted(kinds, key=lambda k: k.startswith("gif")):
                server = Server(model, cap=cap, max_image_pixels=pixels)
                try:
                    row = run_one(server, kind)
                finally:
                    log = server.stop()
                row.update(cap="5 GiB" if cap else "none", pixels=pixels or "default (67,108,864)",
                           aborted="memory allocation" in log or "Traceback" in log)
                rows.append(row)
    load1 = load_average()

    lines = ["## Image bombs and server memory (bench_image_memory.py)", "",
             f"`python benches/bench_image_memory.py`: one rerank request of {COUNT} distinct crafted giant-canvas "
             "images (data URLs) to a fresh `vlrank serve` process (tiny golden Qwen3-VL reranker) per row, "
             "with and without `prlimit --as` = 5 GiB. Peak RSS = VmHWM of the server process before → after "
             "the request (before = loaded and warm); RSS after = VmRSS once answered; next = `/health` and a "
             "normal image rerank afterwards.", "",
             "| bomb (x40) | max_image_pixels | AS cap | answer | param | time | peak RSS before → after | "
             "RSS after | next |",
             "|---|---|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        answer = f"{r['status']} {r['code']}" + (" (aborted)" if r["aborted"] else "")
        lines.append(f"| {KINDS[r['kind']][0]} | {r['pixels']} | {r['cap']} | {answer} | `{r['param']}` | "
                     f"{r['s']:.2f} s | {mib(r['hwm0'])} → {mib(r['hwm1'])} | {mib(r['rss'])} | {r['next']} |")
    lines += ["", machine_line(info, load0, load1), "",
              "Reading it: with the default `max_image_pixels` every giant canvas is refused from its header "
              "(the first bomb's field named), nothing is decoded and the peak RSS does not move, with or without "
              "the cap. A canvas at the cap (8192 x 8192) is decoded: the call's 1 GiB decode budget runs the 40 "
              "in waves and each decoded RGB is freed inside its resize, so what the peak holds beyond the "
              "decodes is the model's own input (40 x 4,900 patches x 1,536 floats of `pixel_values`, ~1.2 GB) "
              "and the vision tower's activations. With the header cap raised above the bombs, the 13000^2 GIFs "
              "are decoded in full (several seconds each on this machine: a 200 after minutes, where the header cap answers in well under a second) but the decode budgets keep the peak "
              "near the at-cap run and the process survives the 5 GiB cap; the WebP is over the per-call decode "
              "budget alone (413) and the JPEG's missing scan data is a 400 before any allocation."]
    text = "\n".join(lines)
    finish(text, section="bench_image_memory", args=args)


if __name__ == "__main__":
    main()
