//! Encoded bytes or arrays -> packed 8-bit RGB, by the reference's rules (qwen-vl-utils `to_rgb`:
//! only images that PIL opens as mode "RGBA" are composited on white; every other mode goes
//! through `convert("RGB")`).
//!
//! JPEG goes through libjpeg-turbo (`jpeg.rs`); the other formats through the `image` crate's
//! decoders, which write into a buffer we allocate fallibly at the size the header promised
//! (`ImageDecoder::read_image`), so no decoder allocates the pixel buffer behind our back.
//! 8-bit RGB and RGBA are converted to RGB in place.

use std::io::Cursor;

use image::{ColorType, ImageDecoder};

use super::budget::{try_with_capacity, try_zeroed};
use super::{jpeg, Rgb};
use crate::error::{Error, Result};
use crate::probe::{probe_bytes, Format, ImageInfo};

fn decode_err(source: &str, message: impl Into<String>) -> Error {
    Error::ImageDecode { source: source.to_string(), message: message.into() }
}

pub(super) fn check_pixel_limit(width: u64, height: u64, limit: u64, source: &str) -> Result<()> {
    if width.saturating_mul(height) > limit {
        return Err(Error::ImageTooLarge {
            source: source.to_string(),
            message: format!(
                "{width}x{height} = {} pixels exceeds the decode limit of {limit} pixels (decompression-bomb guard); \
                 downscale the image first or raise max_decode_pixels",
                width.saturating_mul(height)
            ),
        });
    }
    Ok(())
}

/// PIL's RGBA-on-white paste (`Image.paste(img, mask=alpha)`), per channel:
/// `DIV255(255 * (255 - a) + c * a)` with Pillow's `DIV255(v) = ((v + 128) >> 8) + v + 128) >> 8`.
#[inline]
pub(super) fn blend_white(c: u8, a: u8) -> u8 {
    let v = 255 * (255 - a as u32) + c as u32 * a as u32;
    let t = v + 128;
    (((t >> 8) + t) >> 8) as u8
}

/// Whether a decoded alpha channel is one the reference composites on white. qwen-vl-utils
/// composites only images whose PIL mode is "RGBA"; palette+tRNS, RGB+tRNS, gray+tRNS and 8-bit
/// LA open in other modes and `convert("RGB")` drops their alpha. PIL opens 16-bit LA PNGs as RGBA.
fn composites_alpha(info: &ImageInfo) -> bool {
    match info.format {
        Format::Png => matches!(info.png_color, Some((6, _)) | Some((4, 16))),
        Format::WebP | Format::Tiff | Format::Bmp => true,
        Format::Gif | Format::Jpeg => false,
    }
}

/// In place: RGBA -> RGB (composited on white or alpha dropped); the vector shrinks to 3 bytes a
/// pixel. Pixel i's RGB lands at 3i <= 4i, so reading ahead of writing is safe.
fn rgba_to_rgb_in_place(data: &mut Vec<u8>, composite: bool) {
    let n = data.len() / 4;
    for i in 0..n {
        let (r, g, b, a) = (data[i * 4], data[i * 4 + 1], data[i * 4 + 2], data[i * 4 + 3]);
        let px = if composite { [blend_white(r, a), blend_white(g, a), blend_white(b, a)] } else { [r, g, b] };
        data[i * 3..i * 3 + 3].copy_from_slice(&px);
    }
    data.truncate(n * 3);
    data.shrink_to_fit();
}

/// RGBA (already 8-bit) -> RGB, appended to `out`.
fn rgba_to_rgb(rgba: &[u8], composite: bool, out: &mut Vec<u8>) {
    if composite {
        rgba.chunks_exact(4).for_each(|p| {
            let a = p[3];
            out.extend_from_slice(&[blend_white(p[0], a), blend_white(p[1], a), blend_white(p[2], a)]);
        });
    } else {
        rgba.chunks_exact(4).for_each(|p| out.extend_from_slice(&p[..3]));
    }
}

fn u16s(buf: &[u8]) -> impl Iterator<Item = u16> + '_ {
    buf.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]]))
}

/// The decoder's native pixels (`color`, `buf`) -> RGB by the reference's mode rules.
fn to_rgb(color: ColorType, mut buf: Vec<u8>, width: usize, height: usize, info: &ImageInfo, source: &str) -> Result<Rgb> {
    let composite = composites_alpha(info);
    let n = width * height;
    let data = match color {
        ColorType::Rgb8 => buf,
        ColorType::Rgba8 => {
            rgba_to_rgb_in_place(&mut buf, composite);
            buf
        }
        other => {
            let mut data = try_with_capacity(n * 3, source)?;
            match other {
                ColorType::L8 => buf.iter().for_each(|&v| data.extend_from_slice(&[v, v, v])),
                ColorType::La8 => buf.chunks_exact(2).for_each(|p| data.extend_from_slice(&[p[0], p[0], p[0]])),
                // PIL reads 16-bit RGB(A) and LA PNGs by their most significant byte ...
                ColorType::Rgb16 => u16s(&buf).for_each(|v| data.push((v >> 8) as u8)),
                ColorType::Rgba16 => {
                    let msb: Vec<u8> = u16s(&buf).map(|v| (v >> 8) as u8).collect();
                    drop(buf);
                    rgba_to_rgb(&msb, composite, &mut data);
                }
                ColorType::La16 => {
                    let v: Vec<u16> = u16s(&buf).collect();
                    if composite {
                        v.chunks_exact(2).for_each(|p| {
                            let (g, a) = ((p[0] >> 8) as u8, (p[1] >> 8) as u8);
                            let c = blend_white(g, a);
                            data.extend_from_slice(&[c, c, c]);
                        });
                    } else {
                        v.chunks_exact(2).for_each(|p| {
                            let g = p[0].min(255) as u8;
                            data.extend_from_slice(&[g, g, g]);
                        });
                    }
                }
                // ... but 16-bit gray opens as mode "I;16", whose convert("RGB") clips at 255.
                ColorType::L16 => u16s(&buf).for_each(|v| {
                    let g = v.min(255) as u8;
                    data.extend_from_slice(&[g, g, g]);
                }),
                other => {
                    return Err(decode_err(
                        source,
                        format!("unsupported pixel format {other:?}; pass an 8- or 16-bit gray, RGB or RGBA image"),
                    ))
                }
            }
            data
        }
    };
    if data.len() != n * 3 {
        return Err(decode_err(source, format!("decoder returned {} bytes for {width}x{height} RGB", data.len())));
    }
    Ok(Rgb { width, height, data })
}

fn image_format(f: Format) -> image::ImageFormat {
    match f {
        Format::Png => image::ImageFormat::Png,
        Format::Jpeg => image::ImageFormat::Jpeg,
        Format::WebP => image::ImageFormat::WebP,
        Format::Gif => image::ImageFormat::Gif,
        Format::Bmp => image::ImageFormat::Bmp,
        Format::Tiff => image::ImageFormat::Tiff,
    }
}

fn map_image_err(e: image::ImageError, info: &ImageInfo, source: &str) -> Error {
    match e {
        image::ImageError::Limits(l) => Error::ImageTooLarge {
            source: source.to_string(),
            message: format!("{l}; pass a smaller image or raise max_decode_bytes_in_flight"),
        },
        image::ImageError::Unsupported(u) => decode_err(source, format!("unsupported {} variant: {u}", info.format.name())),
        other => decode_err(source, format!("corrupt or truncated {} data: {other}", info.format.name())),
    }
}

/// Decode encoded bytes to RGB by the reference rules. `info` is the probed header, already
/// checked against the pixel limit and the memory budgets by the caller; `max_alloc` caps what
/// a decoder may allocate for itself beside the pixel buffer.
pub fn decode_with_info(bytes: &[u8], info: &ImageInfo, source: &str, max_alloc: u64) -> Result<Rgb> {
    if info.format == Format::Jpeg {
        if !crate::probe::jpeg_is_complete(bytes) {
            return Err(decode_err(source, "truncated JPEG (its scan data ends before the EOI marker); pass the complete file"));
        }
        let blocks = (info.width as u64).div_ceil(8) * (info.height as u64).div_ceil(8);
        if crate::probe::jpeg_is_huffman(bytes) && (bytes.len() as u64) < blocks / 8 {
            return Err(decode_err(
                source,
                format!(
                    "truncated JPEG: a {}x{} frame needs at least {} bytes of scan data, the file has {}; pass the complete file",
                    info.width,
                    info.height,
                    blocks / 8,
                    bytes.len()
                ),
            ));
        }
        return jpeg::decode(bytes, source, (info.width, info.height));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image_format(info.format));
    let mut limits = image::Limits::default();
    // A frame larger than the probed canvas is refused by the decoder itself.
    limits.max_image_width = Some(info.width.max(1));
    limits.max_image_height = Some(info.height.max(1));
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| map_image_err(e, info, source))?;
    let (w, h) = decoder.dimensions();
    if (w, h) != (info.width, info.height) {
        return Err(decode_err(
            source,
            format!("its image is {w}x{h} but its header said {}x{}; pass a well-formed file", info.width, info.height),
        ));
    }
    let color = decoder.color_type();
    let total = decoder.total_bytes();
    let len = usize::try_from(total).map_err(|_| super::budget::alloc_error(source, total))?;
    let mut buf = try_zeroed::<u8>(len, source)?;
    decoder.read_image(&mut buf).map_err(|e| map_image_err(e, info, source))?;
    to_rgb(color, buf, w as usize, h as usize, info, source)
}

/// Decode encoded bytes to RGB (probe, pixel limit, decode), without the in-flight budgets.
pub fn decode_to_rgb(bytes: &[u8], source: &str, max_decode_pixels: u64) -> Result<Rgb> {
    let info = probe_bytes(bytes, source)?;
    check_pixel_limit(info.width as u64, info.height as u64, max_decode_pixels, source)?;
    decode_with_info(bytes, &info, source, max_decode_pixels.saturating_mul(8).saturating_add(1 << 24))
}

/// A uint8 array (H, W, C), C = 1 (gray), 3 (RGB) or 4 (RGBA, composited on white), to RGB.
pub fn array_to_rgb(data: &[u8], height: usize, width: usize, channels: usize, source: &str, max_decode_pixels: u64) -> Result<Rgb> {
    if height == 0 || width == 0 {
        return Err(Error::invalid(source, format!("image array of shape ({height}, {width}) has a zero side; pass a non-empty image")));
    }
    if !matches!(channels, 1 | 3 | 4) {
        return Err(Error::invalid(
            source,
            format!("image array has {channels} channels; pass (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA uint8"),
        ));
    }
    check_pixel_limit(width as u64, height as u64, max_decode_pixels, source)?;
    if data.len() != height * width * channels {
        return Err(Error::invalid(source, format!("image array has {} bytes, expected {height}x{width}x{channels}", data.len())));
    }
    let mut out = try_with_capacity(height * width * 3, source)?;
    match channels {
        3 => out.extend_from_slice(data),
        1 => data.iter().for_each(|&v| out.extend_from_slice(&[v, v, v])),
        _ => rgba_to_rgb(data, true, &mut out),
    }
    Ok(Rgb { width, height, data: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_matches_pillow_corners() {
        assert_eq!(blend_white(0, 0), 255);
        assert_eq!(blend_white(0, 255), 0);
        assert_eq!(blend_white(200, 255), 200);
        // 255*127 + 0*128 = 32385 -> (32385+128 = 32513; (32513>>8)+32513 = 32640; >>8 = 127)
        assert_eq!(blend_white(0, 128), 127);
    }

    #[test]
    fn in_place_rgba_equals_copy() {
        let rgba: Vec<u8> = (0..4 * 257).map(|v| (v * 37 % 256) as u8).collect();
        for composite in [false, true] {
            let mut want = Vec::new();
            rgba_to_rgb(&rgba, composite, &mut want);
            let mut got = rgba.clone();
            rgba_to_rgb_in_place(&mut got, composite);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn png_bomb_header_refused_before_decoding() {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&100_000u32.to_be_bytes());
        v.extend_from_slice(&100_000u32.to_be_bytes());
        v.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        let e = decode_to_rgb(&v, "bomb.png", super::super::DEFAULT_MAX_DECODE_PIXELS).unwrap_err();
        assert!(matches!(e, Error::ImageTooLarge { .. }));
    }
}
