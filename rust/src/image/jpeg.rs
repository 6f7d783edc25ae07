//! JPEG decoding with libjpeg-turbo's decoder, set up as Pillow sets it up, so the pixels are
//! Pillow's: default DCT method (ISLOW) and fancy upsampling; 1- and 3-component files come out
//! as RGB (libjpeg's gray -> RGB replicates, like `convert("RGB")` of mode "L"); 4-component
//! files come out as CMYK, inverted as Pillow's "CMYK;I" rawmode does (Adobe convention) and
//! converted with Pillow's `cmyk2rgb`.
//!
//! libjpeg reports fatal errors through `error_exit`, which must not return; ours unwinds (the
//! crate's `unwinding` feature makes the callbacks `C-unwind`) to the `catch_unwind` around the
//! decode, which turns it into an `ImageDecode` error after the decompressor is destroyed.
//! A premature end of data is fatal too: Pillow refuses a truncated JPEG ("image file is
//! truncated"), where libjpeg alone would pad it with grey.

use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_ulong};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use mozjpeg_sys as j;

use super::budget::try_zeroed;
use super::Rgb;
use crate::error::{Error, Result};

/// What `error_exit` unwinds with: libjpeg's message text.
struct JpegFailure(String);

fn message_of(cinfo: &mut j::jpeg_common_struct) -> String {
    // libjpeg writes at most JMSG_LENGTH_MAX (200) bytes; the binding types the buffer as 80.
    let buf = [0u8; 200];
    // SAFETY: `err` is the error manager `decode` installed; the buffer is JMSG_LENGTH_MAX long.
    unsafe {
        if let Some(fmt) = (*cinfo.err).format_message {
            fmt(cinfo, &*(buf.as_ptr() as *const [u8; 80]));
        }
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

unsafe extern "C-unwind" fn on_error(cinfo: &mut j::jpeg_common_struct) {
    let msg = message_of(cinfo);
    resume_unwind(Box::new(JpegFailure(msg)));
}

unsafe extern "C-unwind" fn on_message(cinfo: &mut j::jpeg_common_struct, level: c_int) {
    // Warnings (level -1) are tolerated as Pillow tolerates them, except running out of data.
    if level < 0 && (*cinfo.err).msg_code == j::JWRN_JPEG_EOF as c_int {
        resume_unwind(Box::new(JpegFailure("premature end of JPEG data (the file is truncated)".into())));
    }
}

fn decode_err(source: &str, message: impl Into<String>) -> Error {
    Error::ImageDecode { source: source.to_string(), message: message.into() }
}

/// Pillow's `MULDIV255(a, b)`: `a * b / 255` rounded, in integers.
#[inline]
fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// In place: CMYK as libjpeg writes it (Adobe-inverted) -> RGB, Pillow's "CMYK;I" unpack followed
/// by its `cmyk2rgb` (`nk = 255 - k; out = nk - muldiv255(c, nk)`). The vector shrinks to 3 bytes
/// a pixel.
fn inverted_cmyk_to_rgb(data: &mut Vec<u8>) {
    let n = data.len() / 4;
    for i in 0..n {
        let p = [data[i * 4], data[i * 4 + 1], data[i * 4 + 2], data[i * 4 + 3]];
        let nk = p[3] as u32; // 255 - (255 - raw k)
        for c in 0..3 {
            let cyan = 255 - p[c] as u32;
            data[i * 3 + c] = (nk - muldiv255(cyan, nk)) as u8;
        }
    }
    data.truncate(n * 3);
    data.shrink_to_fit();
}

/// Decode a complete JPEG to RGB. `expect` is the (width, height) its header was probed and
/// budgeted at; a frame of another size is refused before any pixel buffer is allocated.
pub fn decode(bytes: &[u8], source: &str, expect: (u32, u32)) -> Result<Rgb> {
    // SAFETY (whole function): the structs are zero-initialised then set up by libjpeg's own
    // constructors before use; `err` outlives `cinfo`; every libjpeg call happens inside the
    // catch_unwind, and the decompressor is destroyed exactly once afterwards on both paths.
    let mut err: j::jpeg_error_mgr = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut cinfo: j::jpeg_decompress_struct = unsafe { MaybeUninit::zeroed().assume_init() };
    unsafe {
        j::jpeg_std_error(&mut err);
    }
    err.error_exit = Some(on_error);
    err.emit_message = Some(on_message);
    cinfo.common.err = &mut err;
    let created = catch_unwind(AssertUnwindSafe(|| unsafe {
        j::jpeg_CreateDecompress(&mut cinfo, j::JPEG_LIB_VERSION, std::mem::size_of::<j::jpeg_decompress_struct>());
    }));
    if created.is_err() {
        return Err(decode_err(source, "libjpeg could not create a decompressor"));
    }
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<Rgb> {
        unsafe {
            j::jpeg_mem_src(&mut cinfo, bytes.as_ptr(), bytes.len() as c_ulong);
            j::jpeg_read_header(&mut cinfo, 1);
        }
        if (cinfo.image_width, cinfo.image_height) != expect {
            return Err(decode_err(
                source,
                format!(
                    "its frame is {}x{} but its header said {}x{}; pass a well-formed JPEG",
                    cinfo.image_width, cinfo.image_height, expect.0, expect.1
                ),
            ));
        }
        let cmyk = cinfo.num_components == 4;
        cinfo.out_color_space = match cinfo.num_components {
            1 | 3 => j::JCS_RGB,
            4 => j::JCS_CMYK,
            n => return Err(decode_err(source, format!("{n}-component JPEG; pass a gray, RGB/YCbCr or CMYK JPEG"))),
        };
        unsafe {
            j::jpeg_start_decompress(&mut cinfo);
        }
        let (w, h) = (cinfo.output_width as usize, cinfo.output_height as usize);
        let comps = cinfo.output_components as usize;
        let stride = w * comps;
        let mut data: Vec<u8> = try_zeroed(stride * h, source)?;
        while (cinfo.output_scanline as usize) < h {
            let y = cinfo.output_scanline as usize;
            let rows: Vec<*mut u8> = data[y * stride..].chunks_exact_mut(stride).take(16).map(|r| r.as_mut_ptr()).collect();
            let got = unsafe { j::jpeg_read_scanlines(&mut cinfo, rows.as_ptr() as j::JSAMPARRAY_MUT, rows.len() as u32) };
            if got == 0 {
                return Err(decode_err(source, "libjpeg returned no scanlines (corrupt data)"));
            }
        }
        unsafe {
            j::jpeg_finish_decompress(&mut cinfo);
        }
        if cmyk {
            inverted_cmyk_to_rgb(&mut data);
        }
        Ok(Rgb { width: w, height: h, data })
    }));
    unsafe {
        j::jpeg_destroy_decompress(&mut cinfo);
    }
    match result {
        Ok(r) => r,
        Err(payload) => match payload.downcast::<JpegFailure>() {
            Ok(f) => Err(decode_err(source, format!("corrupt JPEG data: {}", f.0))),
            Err(other) => resume_unwind(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_is_pillows() {
        // raw (inverted) CMYK 255,255,255,255 = C=M=Y=K=0 -> white; raw k = 0 -> K = 255 -> black.
        let mut v = vec![255, 255, 255, 255, 10, 20, 30, 0, 200, 100, 50, 128];
        inverted_cmyk_to_rgb(&mut v);
        assert_eq!(&v[..6], &[255, 255, 255, 0, 0, 0]);
        // nk = 128; c = 55 -> 128 - muldiv255(55, 128) = 128 - 28 = 100
        assert_eq!(v[6], (128 - muldiv255(55, 128)) as u8);
        assert_eq!(v.len(), 9);
    }

    #[test]
    fn garbage_is_a_typed_error_not_an_abort() {
        let e = decode(&[0xFF, 0xD8, 0xFF, 0xC0, 0, 3, 1, 2, 3], "x.jpg", (1, 1)).unwrap_err();
        assert!(matches!(e, Error::ImageDecode { ref source, .. } if source == "x.jpg"), "{e:?}");
    }
}
