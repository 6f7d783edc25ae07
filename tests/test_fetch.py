"""vlrank.inputs.sources / policy / http: every image source, the URL policy against a real local HTTP server, strict data URLs."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vlrank.errors import ImageDecodeError, ImageFetchError, ImageTooLargeError, InvalidInputError
from vlrank.inputs import FetchPolicy
from vlrank.inputs.sources import ImageSource, decode_data_url, resolve_image, sniff_format

GOLDEN = Path(__file__).resolve().parent / "golden"
IMAGES = GOLDEN / "images"
PNG = (IMAGES / "rgb_noise_70x50.png").read_bytes()
JPG = (IMAGES / "photo_like_200x150.jpg").read_bytes()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PRIVATE_OK = FetchPolicy(allow_private_urls=True, timeout_s=5.0)


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


# Malformed URLs: each must fail typed (never a bare ValueError from urlsplit().port or http.client).
BAD_URLS = ["http://127.0.0.1:99999/x.png", "http://127.0.0.1:abc/x.png", "http://127.0.0.1:-1/x.png",
            "http://[::1/x", "https://h:65536/", "http://127.0.0.1:0/x.png", "http://127.0.0.1/a b.png"]


class _QuietServer(ThreadingHTTPServer):
    """Clients that give up early (cap, timeout) are the point of these tests: no traceback for them."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


# ---------------------------------------------------------------- a real HTTP server on 127.0.0.1
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, ctype: str = "image/png", length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        port = self.server.server_address[1]
        path = self.path
        if path == "/img.png":
            self._send(200, PNG)
        elif path == "/img.jpg?x=1":
            self._send(200, JPG, "image/jpeg")
        elif path == "/big":
            self._send(200, PNG + b"\0" * 5000)
        elif path == "/big-stream":  # no Content-Length: the cap must stop the stream itself
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(PNG)
            try:
                for _ in range(200):
                    self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/slow":
            time.sleep(SLOW_ORIGIN_S)
            self._send(200, PNG)
        elif path == "/drip":  # answers at once, then trickles: the whole fetch has one deadline
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            try:
                for i in range(0, len(PNG), 64):
                    self.wfile.write(PNG[i : i + 64])
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/to-img":
            self._redirect("/img.png")
        elif path == "/to-private":
            self._redirect("http://10.0.0.1/img.png")
        elif path == "/to-localhost":
            self._redirect(f"http://localhost:{port}/img.png")
        elif path == "/to-file":
            self._redirect(f"file://{IMAGES / 'rgb_noise_70x50.png'}")
        elif path == "/loop":
            self._redirect("/loop")
        elif path.startswith("/to-bad/"):  # a redirect to a malformed URL: /to-bad/<index into BAD_URLS>
            self._redirect(BAD_URLS[int(path.rsplit("/", 1)[1])])
        elif path == "/html":
            self._send(200, b"<html>not an image</html>", "text/html")
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _expect(exc_type: type[Exception], field: str, fn, *words: str) -> Exception:
    with pytest.raises(exc_type) as info:
        fn()
    err = info.value
    assert err.field == field, (err.field, str(err))
    assert field in str(err)
    for w in words:
        assert w.lower() in str(err).lower(), (w, str(err))
    return err


# ---------------------------------------------------------------- http(s)
def test_loopback_refused_by_default(server: str) -> None:
    _expect(ImageFetchError, "doc.url", lambda: resolve_image(f"{server}/img.png", field="doc.url",
                                                              policy=FetchPolicy()), "loopback", "allow_private_urls")


def test_localhost_name_refused_by_default(server: str) -> None:
    url = server.replace("127.0.0.1", "localhost")
    _expect(ImageFetchError, "f", lambda: resolve_image(url, field="f", policy=FetchPolicy()), "loopback")


def test_allowed_with_allow_private_urls(server: str) -> None:
    img = resolve_image(f"{server}/img.png", field="f", policy=PRIVATE_OK)
    assert img.data == PNG and img.format == "png" and img.origin == "f" and img.array is None
    jpg = resolve_image(f"{server}/img.jpg?x=1", field="f", policy=PRIVATE_OK)
    assert jpg.data == JPG and jpg.format == "jpeg"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.1.2.3/a.png", "private"),
        ("http://192.168.0.1/a.png", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://224.0.0.1/a.png", "multicast"),
        ("http://0.0.0.0/a.png", "unspecified"),
        ("http://[::1]/a.png", "loopback"),
        ("http://[::ffff:127.0.0.1]/a.png", "loopback"),
        ("http://100.64.0.1/a.png", "non-global"),
    ],
)
def test_private_addresses_refused_before_connecting(url: str, why: str) -> None:
    _expect(ImageFetchError, "x", lambda: resolve_image(url, field="x", policy=FetchPolicy(timeout_s=0.5)), why)


def test_byte_cap_with_content_length(server: str) -> None:
    pol = FetchPolicy(allow_private_urls=True, max_bytes=len(PNG) + 100)
    _expect(ImageTooLargeError, "f", lambda: resolve_image(f"{server}/big", field="f", policy=pol), "cap")


def test_byte_cap_stops_a_stream(server: str) -> None:
    pol = FetchPolicy(allow_private_urls=True, max_bytes=100_000)
    t0 = time.perf_counter()
    _expect(ImageTooLargeError, "f", lambda: resolve_image(f"{server}/big-stream", field="f", policy=pol), "cap")
    assert time.perf_counter() - t0 < 2.0


# The timeout tests tell "cut at the deadline" from "waited for the origin": the origin takes SLOW_ORIGIN_S (/slow)
# or 14 s (/drip, 140 chunks 0.1 s apart), the bound sits between with room for a loaded 2-core machine's delays.
SLOW_ORIGIN_S = 5.0
CUT_BY_S = 3.0


def test_timeout_on_slow_server(server: str) -> None:
    pol = FetchPolicy(allow_private_urls=True, timeout_s=0.3)
    t0 = time.perf_counter()
    _expect(ImageFetchError, "f", lambda: resolve_image(f"{server}/slow", field="f", policy=pol), "timed out")
    assert time.perf_counter() - t0 < CUT_BY_S


def test_timeout_is_a_total_deadline(server: str) -> None:
    pol = FetchPolicy(allow_private_urls=True, timeout_s=0.5)
    t0 = time.perf_counter()
    _expect(ImageFetchError, "f", lambda: resolve_image(f"{server}/drip", field="f", policy=pol), "timed out")
    assert time.perf_counter() - t0 < CUT_BY_S


def test_redirect_followed(server: str) -> None:
    assert resolve_image(f"{server}/to-img", field="f", policy=PRIVATE_OK).data == PNG


def test_redirect_to_private_address_refused(server: str) -> None:
    # 127.0.0.1 is explicitly trusted; the redirect targets are not and must be re-checked.
    pol = FetchPolicy(allowed_private_hosts=frozenset({"127.0.0.1"}), timeout_s=2.0)
    assert resolve_image(f"{server}/img.png", field="f", policy=pol).data == PNG
    _expect(ImageFetchError, "f", lambda: resolve_image(f"{server}/to-private", field="f", policy=pol), "10.0.0.1")
    _expect(ImageFetchError, "f", lambda: resolve_image(f"{server}/to-localhost", field="f", policy=pol), "loopback")


def test_redirect_to_file_refused(server: str) -> None:
    _expect(ImageFetchError, "f", lambda: resolve_image(f"{server}/to-file", field="f", policy=PRIVATE_OK), "http(s)")


def test_redirect_loop(server: str) -> None:
    _expect(ImageFetchError, "f", lambda: resolve_image(f"{server}/loop", field="f", policy=PRIVATE_OK), "redirected")


@pytest.mark.parametrize("url", BAD_URLS)
def test_malformed_url_is_a_typed_error(url: str) -> None:
    err = _expect(InvalidInputError, "doc.url", lambda: resolve_image(url, field="doc.url", policy=PRIVATE_OK),
                  "invalid URL")
    assert type(err) is InvalidInputError  # the caller's own URL: an input fault, not a fetch failure


@pytest.mark.parametrize("index", range(len(BAD_URLS)))
def test_redirect_to_malformed_url_is_a_typed_error(server: str, index: int) -> None:
    _expect(ImageFetchError, "doc.url",
            lambda: resolve_image(f"{server}/to-bad/{index}", field="doc.url", policy=PRIVATE_OK),
            "redirected to an invalid URL")


def test_malformed_file_url_is_a_typed_error() -> None:
    _expect(InvalidInputError, "doc.url", lambda: resolve_image("file://[::1/x.png", field="doc.url", policy=FetchPolicy()),
            "invalid file URL")


def test_404(server: str) -> None:
    _expect(ImageFetchError, "f", lambda: resolve_image(f"{server}/nope", field="f", policy=PRIVATE_OK), "404")


def test_not_an_image(server: str) -> None:
    _expect(ImageDecodeError, "f", lambda: resolve_image(f"{server}/html", field="f", policy=PRIVATE_OK), "PNG")


def test_unreachable_port() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    _expect(ImageFetchError, "f", lambda: resolve_image(f"http://127.0.0.1:{port}/a.png", field="f",
                                                        policy=PRIVATE_OK), "connect")


def test_unresolvable_host() -> None:
    _expect(ImageFetchError, "f", lambda: resolve_image("http://no-such-host.invalid/a.png", field="f",
                                                        policy=FetchPolicy(timeout_s=2)), "resolve")


# ---------------------------------------------------------------- data URLs
def test_data_url_png_and_jpeg() -> None:
    img = resolve_image(data_url(PNG), field="f", policy=FetchPolicy())
    assert img.data == PNG and img.format == "png"
    assert resolve_image(data_url(JPG, "image/jpeg"), field="f", policy=FetchPolicy()).format == "jpeg"
    upper = "DATA:IMAGE/PNG;BASE64," + data_url(PNG).split(",", 1)[1]
    assert resolve_image(upper, field="f", policy=FetchPolicy()).data == PNG
    with_params = "data:image/png;name=a.png;base64," + data_url(PNG).split(",", 1)[1]
    assert resolve_image(with_params, field="f", policy=FetchPolicy()).data == PNG


@pytest.mark.parametrize(
    "bad",
    [
        data_url(PNG)[:40] + "\n" + data_url(PNG)[40:],  # whitespace inside
        data_url(PNG)[:40] + " " + data_url(PNG)[40:],
        data_url(PNG).rstrip("=") + "=" * 3,  # wrong padding
        data_url(PNG[:10]) + "A",  # length not a multiple of 4
        data_url(PNG)[:60] + "-_" + data_url(PNG)[62:],  # URL-safe alphabet
        data_url(PNG)[:60] + "*" + data_url(PNG)[61:],  # garbage character
        "data:image/png;base64,ÿÿÿÿ",  # non-ASCII
    ],
)
def test_data_url_strict_base64(bad: str) -> None:
    _expect(InvalidInputError, "q.url", lambda: resolve_image(bad, field="q.url", policy=FetchPolicy()), "base64")


@pytest.mark.parametrize("mime", ["image/svg+xml", "text/plain", "application/octet-stream", ""])
def test_data_url_mime_allow_list(mime: str) -> None:
    _expect(InvalidInputError, "f", lambda: resolve_image(data_url(PNG, mime), field="f", policy=FetchPolicy()),
            "image/png")


def test_data_url_not_base64_or_malformed() -> None:
    _expect(InvalidInputError, "f", lambda: resolve_image("data:image/png,%89PNG", field="f",
                                                          policy=FetchPolicy()), "base64")
    _expect(InvalidInputError, "f", lambda: resolve_image("data:image/png;base64", field="f",
                                                          policy=FetchPolicy()), "malformed")


def test_data_url_oversized() -> None:
    pol = FetchPolicy(max_bytes=1000)
    _expect(ImageTooLargeError, "f", lambda: resolve_image(data_url(PNG), field="f", policy=pol), "cap")
    # exactly at the cap is fine
    assert resolve_image(data_url(PNG), field="f", policy=FetchPolicy(max_bytes=len(PNG))).data == PNG


def test_data_url_payload_not_an_image() -> None:
    _expect(ImageDecodeError, "f", lambda: resolve_image(data_url(b"GIF90a nope"), field="f", policy=FetchPolicy()),
            "supported")
    _expect(ImageDecodeError, "f", lambda: resolve_image("data:image/png;base64,", field="f", policy=FetchPolicy()),
            "empty")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000))
def test_base64_round_trip_property(tail: bytes) -> None:
    raw = PNG_MAGIC + tail
    img = decode_data_url(data_url(raw), field="f", max_bytes=10_000)
    assert img.data == raw and img.format == "png"


# ---------------------------------------------------------------- local files
def test_paths_and_file_urls() -> None:
    p = IMAGES / "gray_40x300.png"
    raw = p.read_bytes()
    for src in (str(p), p, p.as_uri(), "file://localhost" + str(p)):
        assert resolve_image(src, field="f", policy=FetchPolicy()).data == raw


def test_local_files_refused_when_disallowed() -> None:
    pol = FetchPolicy(allow_local_files=False)
    p = IMAGES / "gray_40x300.png"
    for src in (str(p), p, p.as_uri()):
        _expect(ImageFetchError, "d.url", lambda s=src: resolve_image(s, field="d.url", policy=pol), "data:image")


def test_local_file_errors(tmp_path: Path) -> None:
    pol = FetchPolicy()
    _expect(ImageFetchError, "f", lambda: resolve_image(str(tmp_path / "missing.png"), field="f", policy=pol),
            "no such")
    _expect(ImageFetchError, "f", lambda: resolve_image(str(tmp_path), field="f", policy=pol), "directory")
    _expect(InvalidInputError, "f", lambda: resolve_image("file://otherhost/x.png", field="f", policy=pol), "host")
    (tmp_path / "a.txt").write_text("hello")
    _expect(ImageDecodeError, "f", lambda: resolve_image(str(tmp_path / "a.txt"), field="f", policy=pol), "supported")
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\0" * 100)
    _expect(ImageTooLargeError, "f", lambda: resolve_image(str(big), field="f",
                                                           policy=FetchPolicy(max_bytes=len(PNG))), "cap")


def test_unsupported_scheme_and_empty() -> None:
    _expect(InvalidInputError, "f", lambda: resolve_image("ftp://example.com/a.png", field="f",
                                                          policy=FetchPolicy()), "scheme")
    _expect(InvalidInputError, "f", lambda: resolve_image("  ", field="f", policy=FetchPolicy()), "empty")


# ---------------------------------------------------------------- in-memory images
def test_raw_bytes() -> None:
    for raw in (PNG, bytearray(PNG), memoryview(PNG)):
        img = resolve_image(raw, field="f", policy=FetchPolicy())
        assert img.data == PNG and img.format == "png"
    _expect(ImageDecodeError, "f", lambda: resolve_image(b"", field="f", policy=FetchPolicy()), "empty")
    _expect(ImageTooLargeError, "f", lambda: resolve_image(PNG, field="f", policy=FetchPolicy(max_bytes=10)), "cap")


def test_sniff_every_supported_format() -> None:
    im = Image.open(IMAGES / "gradient_130x97.png").convert("RGB")
    for fmt, name in [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp"),
                      ("TIFF", "tiff")]:
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        assert sniff_format(buf.getvalue()) == name
        assert resolve_image(buf.getvalue(), field="f", policy=FetchPolicy()).format == name
    assert sniff_format(b"MM\x00*" + b"\0" * 8) == "tiff"
    for other in (b"<svg xmlns=", b"\x00\x00\x00\x0cjP  ", b"RIFF\0\0\0\0WAVE", b"P6\n"):
        assert sniff_format(other) is None


def test_pil_colour_rule() -> None:
    rgba = Image.open(IMAGES / "rgba_60x90.png")
    assert rgba.mode == "RGBA"
    a = resolve_image(rgba, field="f", policy=FetchPolicy()).array
    assert a is not None and a.shape == (90, 60, 4) and np.array_equal(a, np.asarray(rgba))
    pal = Image.open(IMAGES / "palette_64x64.png")
    assert pal.mode == "P"
    p = resolve_image(pal, field="f", policy=FetchPolicy()).array
    assert p is not None and p.shape == (64, 64, 3) and np.array_equal(p, np.asarray(pal.convert("RGB")))
    gray = Image.open(IMAGES / "gray_40x300.png").convert("L")
    g = resolve_image(gray, field="f", policy=FetchPolicy()).array
    assert g is not None and g.shape == (300, 40)
    la = gray.convert("LA")  # alpha is dropped, never composited (reference to_rgb)
    assert resolve_image(la, field="f", policy=FetchPolicy()).array.shape == (300, 40, 3)  # type: ignore[union-attr]
    rgb = Image.open(IMAGES / "photo_like_200x150.jpg")
    r = resolve_image(rgb, field="f", policy=FetchPolicy())
    assert r.data is None and r.array is not None and r.array.shape == (150, 200, 3) and r.format is None


def test_numpy_arrays() -> None:
    for shape in [(5, 7), (5, 7, 3), (5, 7, 4)]:
        arr = np.zeros(shape, np.uint8)
        assert resolve_image(arr, field="f", policy=FetchPolicy()).array.shape == shape  # type: ignore[union-attr]
    view = np.zeros((10, 10, 3), np.uint8)[::2]
    assert resolve_image(view, field="f", policy=FetchPolicy()).array.flags["C_CONTIGUOUS"]  # type: ignore[union-attr]
    _expect(InvalidInputError, "f", lambda: resolve_image(np.zeros((4, 4, 3), np.float32), field="f",
                                                          policy=FetchPolicy()), "uint8")
    _expect(InvalidInputError, "f", lambda: resolve_image(np.zeros((4, 4, 2), np.uint8), field="f",
                                                          policy=FetchPolicy()), "(H, W, 3)")
    _expect(InvalidInputError, "f", lambda: resolve_image(np.zeros((4,), np.uint8), field="f",
                                                          policy=FetchPolicy()), "shape")
    _expect(InvalidInputError, "f", lambda: resolve_image(np.zeros((0, 4, 3), np.uint8), field="f",
                                                          policy=FetchPolicy()), "empty")


def test_wrong_types() -> None:
    for bad in (3, 1.5, None, object(), ["a"]):
        _expect(InvalidInputError, "f", lambda b=bad: resolve_image(b, field="f", policy=FetchPolicy()), "pass")


def test_policy_and_source_validation() -> None:
    with pytest.raises(InvalidInputError):
        FetchPolicy(timeout_s=0)
    with pytest.raises(InvalidInputError):
        FetchPolicy(max_bytes=0)
    with pytest.raises(InvalidInputError):
        ImageSource()
    with pytest.raises(InvalidInputError):
        ImageSource(data=PNG, array=np.zeros((1, 1), np.uint8))
    assert FetchPolicy(allowed_private_hosts=frozenset({"Img.Internal"})).allowed_private_hosts == {"img.internal"}
    assert ImageSource(data=PNG).payload == PNG


# ---------------------------------------------------------------- https: pinned address, verified host name
@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    import shutil
    import ssl
    import subprocess

    openssl = shutil.which("openssl")
    assert openssl, "the https tests need the openssl command line tool to make a self-signed certificate"
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"), "-out",
         str(d / "cert.pem"), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"https://localhost:{httpd.server_address[1]}", d / "cert.pem"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_https_untrusted_certificate_refused(tls_server: tuple[str, Path]) -> None:
    url, _ = tls_server
    _expect(ImageFetchError, "f", lambda: resolve_image(f"{url}/img.png", field="f", policy=PRIVATE_OK),
            "certificate")


def test_https_verifies_the_url_host_name(tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # Trust the test certificate the ordinary way (OpenSSL reads SSL_CERT_FILE for the default paths).
    url, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    # connected to the pinned 127.0.0.1, verified as "localhost" (SNI + host name check)
    assert resolve_image(f"{url}/img.png", field="f", policy=PRIVATE_OK).data == PNG
    # same server by IP: the certificate does not name 127.0.0.1, so it must be refused
    by_ip = url.replace("localhost", "127.0.0.1")
    _expect(ImageFetchError, "f", lambda: resolve_image(f"{by_ip}/img.png", field="f", policy=PRIVATE_OK),
            "certificate", "mismatch")
