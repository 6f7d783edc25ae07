//! Header-only image size probes: PNG, JPEG, WebP, GIF, BMP, TIFF. They read the few bytes that
//! hold the size (and, for PNG, the colour type, which decides the reference's RGBA rule) and never
//! touch pixel data, so token counting costs microseconds and the decoder's pixel limit can be
//! checked before a single pixel is allocated.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    WebP,
    Gif,
    Bmp,
    Tiff,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpeg",
            Format::WebP => "webp",
            Format::Gif => "gif",
            Format::Bmp => "bmp",
            Format::Tiff => "tiff",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// PNG only: IHDR colour type (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA) and bit depth.
    pub png_color: Option<(u8, u8)>,
}

/// Outcome of probing a byte prefix: the size, or how many bytes are needed to go on.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Info(ImageInfo),
    NeedMore(usize),
}

/// Bytes read first from a file: enough for every format's header except JPEGs whose size comes
/// after large EXIF/ICC segments and TIFFs whose first IFD lies far away.
const FIRST_READ: usize = 4096;

fn decode_err(source: &str, message: impl Into<String>) -> Error {
    Error::ImageDecode { source: source.to_string(), message: message.into() }
}

fn u16be(b: &[u8], at: usize) -> u32 {
    u16::from_be_bytes([b[at], b[at + 1]]) as u32
}
fn u16le(b: &[u8], at: usize) -> u32 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u32
}
fn u32be(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u24le(b: &[u8], at: usize) -> u32 {
    b[at] as u32 | (b[at + 1] as u32) << 8 | (b[at + 2] as u32) << 16
}

/// Which format the magic bytes say (None: not one we read). Needs up to 12 bytes.
pub fn sniff(b: &[u8]) -> Option<Format> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some(Format::WebP)
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if b.starts_with(b"BM") {
        Some(Format::Bmp)
    } else if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        Some(Format::Tiff)
    } else {
        None
    }
}

/// Whether a short prefix may still grow into one of the magic numbers.
fn could_be_magic(b: &[u8]) -> bool {
    const MAGICS: [&[u8]; 8] =
        [b"\x89PNG\r\n\x1a\n", &[0xFF, 0xD8, 0xFF], b"RIFF", b"GIF87a", b"GIF89a", b"BM", b"II*\0", b"MM\0*"];
    MAGICS.iter().any(|m| {
        let n = b.len().min(m.len());
        b[..n] == m[..n]
    })
}

/// Probe a byte prefix. `source` names the input in errors.
pub fn probe_prefix(b: &[u8], source: &str) -> Result<Probe> {
    if b.is_empty() {
        return Err(decode_err(source, "the image is empty (0 bytes); pass PNG, JPEG, WebP, GIF, BMP or TIFF bytes"));
    }
    if b.len() < 12 && sniff(b).is_none() && could_be_magic(b) {
        return Ok(Probe::NeedMore(12));
    }
    let format = sniff(b).ok_or_else(|| {
        decode_err(source, "unrecognised image format; pass PNG, JPEG, WebP, GIF, BMP or TIFF")
    })?;
    let info = |width: u32, height: u32| -> Result<Probe> {
        if width == 0 || height == 0 {
            return Err(decode_err(source, format!("{} header says {width}x{height}: a zero side", format.name())));
        }
        Ok(Probe::Info(ImageInfo { format, width, height, png_color: None }))
    };
    match format {
        Format::Png => {
            if b.len() < 26 {
                return Ok(Probe::NeedMore(26));
            }
            if &b[12..16] != b"IHDR" {
                return Err(decode_err(source, "PNG without IHDR as its first chunk"));
            }
            let p = info(u32be(b, 16), u32be(b, 20))?;
            Ok(match p {
                Probe::Info(mut i) => {
                    i.png_color = Some((b[25], b[24]));
                    Probe::Info(i)
                }
                other => other,
            })
        }
        Format::Gif => {
            if b.len() < 10 {
                return Ok(Probe::NeedMore(10));
            }
            info(u16le(b, 6), u16le(b, 8))
        }
        Format::Bmp => {
            if b.len() < 26 {
                return Ok(Probe::NeedMore(26));
            }
            let dib = u32le(b, 14);
            if dib == 12 {
                info(u16le(b, 18), u16le(b, 20))
            } else if dib >= 40 {
                let w = u32le(b, 18) as i32;
                let h = u32le(b, 22) as i32; // negative: top-down rows
                if w < 0 {
                    return Err(decode_err(source, "BMP with a negative width"));
                }
                info(w.unsigned_abs(), h.unsigned_abs())
            } else {
                Err(decode_err(source, format!("BMP with an unknown header size {dib}")))
            }
        }
        Format::WebP => {
            if b.len() < 30 {
                return Ok(Probe::NeedMore(30));
            }
            match &b[12..16] {
                b"VP8 " => {
                    if b[23..26] != [0x9d, 0x01, 0x2a] {
                        return Err(decode_err(source, "WebP VP8 frame without its start code"));
                    }
                    info(u16le(b, 26) & 0x3fff, u16le(b, 28) & 0x3fff)
                }
                b"VP8L" => {
                    if b[20] != 0x2f {
                        return Err(decode_err(source, "WebP VP8L without its signature byte"));
                    }
                    let bits = u32le(b, 21);
                    info((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1)
                }
                b"VP8X" => info(u24le(b, 24) + 1, u24le(b, 27) + 1),
                other => Err(decode_err(source, format!("WebP with an unknown first chunk {:?}", String::from_utf8_lossy(other)))),
            }
        }
        Format::Jpeg => probe_jpeg(b, source),
        Format::Tiff => probe_tiff(b, source),
    }
}

/// Walk JPEG markers from SOI to the first SOFn (baseline, progressive, lossless, arithmetic).
fn probe_jpeg(b: &[u8], source: &str) -> Result<Probe> {
    let mut i = 2;
    loop {
        // A marker is 0xFF, optional 0xFF fill bytes, then the code.
        if i >= b.len() {
            return Ok(Probe::NeedMore(i + 64));
        }
        if b[i] != 0xFF {
            return Err(decode_err(source, format!("JPEG marker expected at byte {i}: corrupt or truncated file")));
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        if i >= b.len() {
            return Ok(Probe::NeedMore(i + 64));
        }
        let code = b[i];
        i += 1;
        match code {
            0xD0..=0xD7 | 0x01 | 0xD8 => continue, // markers without a length
            0xD9 | 0xDA => {
                return Err(decode_err(source, "JPEG without a frame header (SOF) before its scan data"));
            }
            _ => {}
        }
        if i + 2 > b.len() {
            return Ok(Probe::NeedMore(i + 64));
        }
        let len = u16be(b, i) as usize;
        if len < 2 {
            return Err(decode_err(source, "JPEG segment with a length under 2"));
        }
        let is_sof = matches!(code, 0xC0..=0xCF) && !matches!(code, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            if i + 7 > b.len() {
                return Ok(Probe::NeedMore(i + 7));
            }
            let height = u16be(b, i + 3);
            let width = u16be(b, i + 5);
            if height == 0 || width == 0 {
                return Err(decode_err(source, format!("JPEG frame header says {width}x{height}: a zero side")));
            }
            return Ok(Probe::Info(ImageInfo { format: Format::Jpeg, width, height, png_color: None }));
        }
        i += len;
    }
}

/// The frame header of a JPEG: its SOFn marker code and the offset of its segment body (after
/// the length field). None: no frame header before the first scan.
fn jpeg_sof_segment(b: &[u8]) -> Option<(u8, usize)> {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let code = b[i + 1];
        if code == 0xFF {
            i += 1;
            continue;
        }
        i += 2;
        if matches!(code, 0xD0..=0xD7 | 0x01 | 0xD8) {
            continue;
        }
        if code == 0xDA || code == 0xD9 {
            return None;
        }
        let len = u16be(b, i) as usize;
        if matches!(code, 0xC0..=0xCF) && !matches!(code, 0xC4 | 0xC8 | 0xCC) {
            return Some((code, i));
        }
        i += len;
    }
    None
}

/// Whether a JPEG's frame has a chroma component at half the luma resolution in both directions
/// (4:2:0, "h2v2"): the layout where the choice of upsampler shows in the pixels.
pub fn jpeg_is_h2v2(b: &[u8]) -> bool {
    let Some((_, i)) = jpeg_sof_segment(b) else { return false };
    let n = *b.get(i + 7).unwrap_or(&0) as usize;
    let comps: Vec<(u8, u8)> =
        (0..n).filter_map(|c| b.get(i + 8 + 3 * c + 1).map(|&s| (s >> 4, s & 15))).collect();
    let (hmax, vmax) = comps.iter().fold((1, 1), |(h, v), &(ch, cv)| (h.max(ch), v.max(cv)));
    comps.len() == 3 && comps.iter().any(|&(ch, cv)| ch > 0 && cv > 0 && hmax / ch == 2 && vmax / cv == 2)
}

/// Whether a JPEG is Huffman-coded (SOF0-3, SOF5-7): then every 8x8 luma block costs at least one
/// bit of its DC code, so a file shorter than blocks / 8 bytes cannot hold its image (a bomb that
/// claims a huge frame). Arithmetic-coded frames have no such floor.
pub fn jpeg_is_huffman(b: &[u8]) -> bool {
    matches!(jpeg_sof_segment(b), Some((code, _)) if code & 0x08 == 0)
}

/// Whether a JPEG runs from SOI through its scans to an EOI marker. The decoder we use fills a
/// truncated scan with gray instead of failing; Pillow raises "image file is truncated", and a
/// silently half-gray image must never reach the model, so we check the structure first. Inside
/// entropy-coded data 0xFF is always followed by 0x00 (stuffing) or an RST marker, so the next
/// real marker is found by a linear scan (an EXIF thumbnail's EOI lives inside APP1 and is skipped).
pub fn jpeg_is_complete(b: &[u8]) -> bool {
    let mut i = 2;
    while i + 1 < b.len() {
        if b[i] != 0xFF {
            return false;
        }
        let code = b[i + 1];
        i += 2;
        match code {
            0xFF => i -= 1, // fill byte
            0xD9 => return true,
            0xD0..=0xD7 | 0x01 | 0xD8 => {}
            _ => {
                if i + 2 > b.len() {
                    return false;
                }
                let len = u16be(b, i) as usize;
                i += len;
                if code == 0xDA {
                    // entropy-coded data up to the next marker
                    loop {
                        match b.get(i..).and_then(|rest| rest.iter().position(|&x| x == 0xFF)) {
                            None => return false,
                            Some(p) => i += p,
                        }
                        match b.get(i + 1) {
                            None => return false,
                            Some(0x00) | Some(0xD0..=0xD7) | Some(0xFF) => i += 1,
                            Some(_) => break,
                        }
                    }
                }
            }
        }
    }
    false
}

/// The first IFD's ImageWidth (256) and ImageLength (257), either byte order.
fn probe_tiff(b: &[u8], source: &str) -> Result<Probe> {
    if b.len() < 8 {
        return Ok(Probe::NeedMore(8));
    }
    let le = b[0] == b'I';
    let r16 = |at: usize| if le { u16le(b, at) } else { u16be(b, at) };
    let r32 = |at: usize| if le { u32le(b, at) } else { u32be(b, at) };
    let ifd = r32(4) as usize;
    if ifd < 8 {
        return Err(decode_err(source, "TIFF with an invalid first IFD offset"));
    }
    if ifd + 2 > b.len() {
        return Ok(Probe::NeedMore(ifd + 2));
    }
    let n = r16(ifd) as usize;
    let end = ifd + 2 + 12 * n;
    if end > b.len() {
        return Ok(Probe::NeedMore(end));
    }
    let (mut width, mut height) = (None, None);
    for k in 0..n {
        let e = ifd + 2 + 12 * k;
        let tag = r16(e);
        let typ = r16(e + 2);
        let value = match typ {
            3 => r16(e + 8),  // SHORT: left-justified in the value field
            4 => r32(e + 8),  // LONG
            _ => continue,
        };
        match tag {
            256 => width = Some(value),
            257 => height = Some(value),
            _ => {}
        }
    }
    match (width, height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => {
            Ok(Probe::Info(ImageInfo { format: Format::Tiff, width: w, height: h, png_color: None }))
        }
        (Some(w), Some(h)) => Err(decode_err(source, format!("TIFF header says {w}x{h}: a zero side"))),
        _ => Err(decode_err(source, "TIFF first IFD has no ImageWidth/ImageLength")),
    }
}

/// Probe complete bytes (all of the file is here: asking for more means it is truncated).
pub fn probe_bytes(b: &[u8], source: &str) -> Result<ImageInfo> {
    match probe_prefix(b, source)? {
        Probe::Info(i) => Ok(i),
        Probe::NeedMore(_) => Err(decode_err(source, "the image is truncated before its size header")),
    }
}

/// Probe a file, reading only a small prefix (more only when a JPEG/TIFF header needs it).
pub fn probe_file(path: &Path) -> Result<ImageInfo> {
    let source = path.display().to_string();
    let io_err = |e: std::io::Error| Error::Io { path: source.clone(), message: e.to_string() };
    let mut f = File::open(path).map_err(io_err)?;
    let mut buf = Vec::with_capacity(FIRST_READ);
    let mut want = FIRST_READ;
    loop {
        let have = buf.len();
        (&mut f).take((want - have) as u64).read_to_end(&mut buf).map_err(io_err)?;
        let eof = buf.len() < want;
        match probe_prefix(&buf, &source)? {
            Probe::Info(i) => return Ok(i),
            Probe::NeedMore(n) => {
                if eof {
                    return Err(decode_err(&source, "the image is truncated before its size header"));
                }
                // Grow geometrically so a JPEG with many segments costs few reads.
                want = n.max(want * 2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(b: &[u8]) -> ImageInfo {
        probe_bytes(b, "test").unwrap()
    }

    fn png_header(w: u32, h: u32, depth: u8, ctype: u8) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&[depth, ctype, 0, 0, 0]);
        v.extend_from_slice(&[0, 0, 0, 0]);
        v
    }

    #[test]
    fn png() {
        let i = info(&png_header(1296, 1936, 8, 6));
        assert_eq!((i.format, i.width, i.height, i.png_color), (Format::Png, 1296, 1936, Some((6, 8))));
        assert!(matches!(probe_prefix(&png_header(1, 1, 8, 2)[..20], "t").unwrap(), Probe::NeedMore(26)));
        assert!(probe_bytes(&png_header(0, 5, 8, 2), "t").is_err());
    }

    #[test]
    fn jpeg_walks_segments() {
        let mut v = vec![0xFF, 0xD8];
        // APP1 with 1000 bytes of payload, a fill byte, then SOF2 (progressive)
        v.extend_from_slice(&[0xFF, 0xE1]);
        v.extend_from_slice(&1002u16.to_be_bytes());
        v.extend(std::iter::repeat(0u8).take(1000));
        v.extend_from_slice(&[0xFF, 0xFF, 0xC2, 0x00, 0x11, 0x08]);
        v.extend_from_slice(&480u16.to_be_bytes());
        v.extend_from_slice(&640u16.to_be_bytes());
        v.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        let i = info(&v);
        assert_eq!((i.format, i.width, i.height), (Format::Jpeg, 640, 480));
        assert!(matches!(probe_prefix(&v[..500], "t").unwrap(), Probe::NeedMore(_)));
        // DHT (C4) is not a frame header
        let mut w = vec![0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x02, 0xFF, 0xDA, 0, 2];
        assert!(probe_bytes(&w, "t").is_err());
        w.truncate(6);
        assert!(probe_bytes(&w, "t").is_err());
    }

    #[test]
    fn gif_bmp() {
        let mut g = b"GIF89a".to_vec();
        g.extend_from_slice(&300u16.to_le_bytes());
        g.extend_from_slice(&40u16.to_le_bytes());
        assert_eq!((info(&g).width, info(&g).height), (300, 40));
        let mut b = b"BM".to_vec();
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&40u32.to_le_bytes());
        b.extend_from_slice(&123i32.to_le_bytes());
        b.extend_from_slice(&(-45i32).to_le_bytes());
        let i = info(&b);
        assert_eq!((i.format, i.width, i.height), (Format::Bmp, 123, 45));
    }

    #[test]
    fn webp_variants() {
        let riff = |chunk: &[u8; 4], payload: &[u8]| {
            let mut v = b"RIFF\0\0\0\0WEBP".to_vec();
            v.extend_from_slice(chunk);
            v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            v.extend_from_slice(payload);
            v.resize(v.len().max(40), 0);
            v
        };
        // VP8: 3-byte frame tag, start code, 14-bit sizes
        let mut p = vec![0, 0, 0, 0x9d, 0x01, 0x2a];
        p.extend_from_slice(&(640u16 | 0xC000).to_le_bytes()); // scale bits must be masked off
        p.extend_from_slice(&480u16.to_le_bytes());
        let i = info(&riff(b"VP8 ", &p));
        assert_eq!((i.width, i.height), (640, 480));
        // VP8L: 0x2f then (w-1) | (h-1) << 14
        let bits: u32 = (99) | (49 << 14);
        let mut p = vec![0x2f];
        p.extend_from_slice(&bits.to_le_bytes());
        let i = info(&riff(b"VP8L", &p));
        assert_eq!((i.width, i.height), (100, 50));
        // VP8X: flags, 3 reserved, 24-bit (w-1), 24-bit (h-1)
        let p = [0x10, 0, 0, 0, 0x1f, 0x03, 0x00, 0x0f, 0x00, 0x00];
        let i = info(&riff(b"VP8X", &p));
        assert_eq!((i.width, i.height), (800, 16));
    }

    fn tiff(le: bool, ifd_at: u32, entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let p16 = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let p32 = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut v = if le { b"II*\0".to_vec() } else { b"MM\0*".to_vec() };
        v.extend_from_slice(&p32(ifd_at));
        v.resize(ifd_at as usize, 0);
        v.extend_from_slice(&p16(entries.len() as u16));
        for &(tag, typ, val) in entries {
            v.extend_from_slice(&p16(tag));
            v.extend_from_slice(&p16(typ));
            v.extend_from_slice(&p32(1));
            if typ == 3 {
                v.extend_from_slice(&p16(val as u16));
                v.extend_from_slice(&[0, 0]);
            } else {
                v.extend_from_slice(&p32(val));
            }
        }
        v
    }

    #[test]
    fn tiff_both_endians() {
        for le in [true, false] {
            let t = tiff(le, 8, &[(254, 4, 0), (256, 3, 321), (257, 4, 70000)]);
            let i = info(&t);
            assert_eq!((i.format, i.width, i.height), (Format::Tiff, 321, 70000));
            // IFD far from the start: asks for more bytes
            let t = tiff(le, 9000, &[(256, 4, 5), (257, 3, 7)]);
            assert!(matches!(probe_prefix(&t[..4096], "t").unwrap(), Probe::NeedMore(9002)));
            assert_eq!(info(&t).width, 5);
        }
    }

    #[test]
    fn jpeg_sampling() {
        let sof = |s: [u8; 3]| {
            let mut v = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0, 16, 0, 16, 3];
            for (i, x) in s.iter().enumerate() {
                v.extend_from_slice(&[i as u8 + 1, *x, 0]);
            }
            v
        };
        assert!(jpeg_is_h2v2(&sof([0x22, 0x11, 0x11])));
        assert!(!jpeg_is_h2v2(&sof([0x11, 0x11, 0x11])));
        assert!(!jpeg_is_h2v2(&sof([0x21, 0x11, 0x11])));
        assert!(!jpeg_is_h2v2(&[0xFF, 0xD8]));
    }

    #[test]
    fn jpeg_completeness() {
        // SOI, APP1 holding a thumbnail EOI, SOS with stuffed 0xFF00 and an RST, EOI
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0, 0];
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56]);
        let full = [v.clone(), vec![0xFF, 0xD9]].concat();
        assert!(jpeg_is_complete(&full));
        for cut in 3..full.len() - 1 {
            assert!(!jpeg_is_complete(&full[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn garbage_and_empty() {
        assert!(matches!(probe_bytes(b"", "t"), Err(Error::ImageDecode { .. })));
        assert!(matches!(probe_bytes(b"hello world, not an image", "t"), Err(Error::ImageDecode { .. })));
        assert!(matches!(probe_bytes(b"\x89PNG", "t"), Err(Error::ImageDecode { .. })));
    }

    #[test]
    fn probe_file_reads_far_tiff_ifd() {
        let dir = std::env::temp_dir().join(format!("vlrank-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("far.tif");
        std::fs::write(&p, tiff(true, 20000, &[(256, 4, 11), (257, 4, 13)])).unwrap();
        let i = probe_file(&p).unwrap();
        assert_eq!((i.width, i.height), (11, 13));
        let q = dir.join("short.png");
        std::fs::write(&q, &png_header(3, 4, 8, 2)[..20]).unwrap();
        assert!(matches!(probe_file(&q), Err(Error::ImageDecode { .. })));
        assert!(matches!(probe_file(&dir.join("missing.png")), Err(Error::Io { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
