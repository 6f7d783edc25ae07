//! Fast path for the Qwen2/Qwen3 pre-tokeniser (the crate's `Split(regex) + ByteLevel` pipeline).
//!
//! Profiling (300k tokens of English): normalise + pre-tokenise took 63% of `encode`, the BPE model
//! (cached) 5%, building the crate's `Encoding` the rest. This scanner yields exactly the pieces
//! the regex
//! `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//! yields (leftmost-first, as Oniguruma runs it), byte-level maps them and hands them to the same
//! BPE model. Exactness by construction: the character classes (\p{L}, \p{N}, \s) and the
//! case-insensitive contraction test are answered by Oniguruma itself (the crate's regex engine,
//! same Unicode tables), memoised per code point; the unit tests fuzz it against the crate path.
//! It is used only when the tokenizer.json has exactly this pre-tokeniser; anything else takes the
//! crate's path.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use tokenizers::utils::SysRegex;
use tokenizers::{Model, ModelWrapper};

pub(super) const QWEN_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 4;
const KNOWN: u8 = 8;

pub(super) struct QwenSplitter {
    /// Memoised class bits per code point (0 = not yet computed).
    classes: Vec<AtomicU8>,
    letter: SysRegex,
    number: SysRegex,
    space: SysRegex,
    contraction: SysRegex,
    /// GPT-2 byte -> char table of the ByteLevel pre-tokeniser.
    byte_char: [char; 256],
}

fn byte_char_table() -> [char; 256] {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    bs.extend(0xA1..=0xAC);
    bs.extend(0xAE..=0xFF);
    let mut table = ['\0'; 256];
    for &b in &bs {
        table[b as usize] = char::from_u32(b).expect("latin-1");
    }
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            table[b as usize] = char::from_u32(256 + n).expect("< 0x200");
            n += 1;
        }
    }
    table
}

impl QwenSplitter {
    /// One per process: the classes are properties of Unicode, not of a tokenizer.
    pub(super) fn shared() -> Option<&'static Self> {
        static SPLITTER: OnceLock<Option<QwenSplitter>> = OnceLock::new();
        SPLITTER.get_or_init(Self::new).as_ref()
    }

    fn new() -> Option<Self> {
        let re = |p: &str| SysRegex::new(p).ok();
        Some(QwenSplitter {
            classes: (0..0x11_0000).map(|_| AtomicU8::new(0)).collect(),
            letter: re(r"\A\p{L}")?,
            number: re(r"\A\p{N}")?,
            space: re(r"\A\s")?,
            contraction: re(r"\A(?i:'s|'t|'re|'ve|'m|'ll|'d)")?,
            byte_char: byte_char_table(),
        })
    }

    fn class(&self, c: char) -> u8 {
        let slot = &self.classes[c as usize];
        let v = slot.load(Ordering::Relaxed);
        if v != 0 {
            return v;
        }
        let mut buf = [0u8; 4];
        let s: &str = c.encode_utf8(&mut buf);
        let hit = |r: &SysRegex| r.find_iter(s).next().is_some();
        let mut v = KNOWN;
        if hit(&self.letter) {
            v |= LETTER;
        }
        if hit(&self.number) {
            v |= NUMBER;
        }
        if hit(&self.space) {
            v |= SPACE;
        }
        slot.store(v, Ordering::Relaxed);
        v
    }

    /// Byte ranges of the pieces of `text`, in order, covering it.
    pub(super) fn split(&self, text: &str, mut piece: impl FnMut(&str)) {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let n = chars.len();
        let byte_at = |k: usize| if k < n { chars[k].0 } else { text.len() };
        let cls = |k: usize| if k < n { self.class(chars[k].1) } else { 0 };
        let is_nl = |k: usize| k < n && matches!(chars[k].1, '\r' | '\n');
        let letter = |k: usize| cls(k) & LETTER != 0;
        let other = |k: usize| k < n && cls(k) & (LETTER | NUMBER | SPACE) == 0;
        let mut p = 0;
        while p < n {
            let c0 = chars[p].1;
            let k0 = cls(p);
            let end = 'm: {
                // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d) -- Oniguruma decides (case folding), on <= 4 chars.
                if c0 == '\'' {
                    let slice = &text[byte_at(p)..byte_at((p + 4).min(n))];
                    if let Some((0, e)) = self.contraction.find_iter(slice).next() {
                        break 'm p + slice[..e].chars().count();
                    }
                }
                // 2. [^\r\n\p{L}\p{N}]?\p{L}+
                let start = if letter(p) {
                    Some(p)
                } else if !is_nl(p) && k0 & NUMBER == 0 && letter(p + 1) {
                    Some(p + 1)
                } else {
                    None
                };
                if let Some(mut e) = start {
                    while letter(e) {
                        e += 1;
                    }
                    break 'm e;
                }
                // 3. \p{N}
                if k0 & NUMBER != 0 {
                    break 'm p + 1;
                }
                // 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*'
                let start = if c0 == ' ' && other(p + 1) {
                    Some(p + 1)
                } else if other(p) {
                    Some(p)
                } else {
                    None
                };
                if let Some(mut e) = start {
                    while other(e) {
                        e += 1;
                    }
                    while is_nl(e) {
                        e += 1;
                    }
                    break 'm e;
                }
                // 5.-7. whitespace run W = p..q
                if k0 & SPACE == 0 {
                    break 'm p + 1; // unreachable: every char is a letter, number, space or other
                }
                let mut q = p;
                let mut last_nl = None;
                while q < n && cls(q) & SPACE != 0 {
                    if is_nl(q) {
                        last_nl = Some(q);
                    }
                    q += 1;
                }
                if let Some(l) = last_nl {
                    break 'm l + 1; // \s*[\r\n]+ : up to the last newline of W
                }
                if q == n || q - p == 1 {
                    break 'm q.max(p + 1); // \s+(?!\S) at the end, or \s+ (a lone space before \S)
                }
                q - 1 // \s+(?!\S): all but the last whitespace char
            };
            piece(&text[byte_at(p)..byte_at(end)]);
            p = end;
        }
    }

    /// Ids of already-normalised `text`: split, byte-level map, BPE.
    pub(super) fn encode(&self, model: &ModelWrapper, text: &str, out: &mut Vec<u32>) -> tokenizers::Result<()> {
        let mut mapped = String::new();
        let mut err = None;
        self.split(text, |piece| {
            if err.is_some() {
                return;
            }
            mapped.clear();
            mapped.extend(piece.bytes().map(|b| self.byte_char[b as usize]));
            match model.tokenize(&mapped) {
                Ok(tokens) => out.extend(tokens.iter().map(|t| t.id)),
                Err(e) => err = Some(e),
            }
        });
        err.map_or(Ok(()), Err)
    }
}
