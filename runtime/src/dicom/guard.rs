//! A structural pre-scan of a Part 10 file, run before the dicom-rs parser sees the bytes.
//!
//! Why: the parser trusts declared value lengths (it reserves and zero-fills `length` bytes before it reads
//! them), so a 200-byte file that declares a 4 GiB element costs 4 GiB of memory, and it recurses once per
//! nested sequence, so deep nesting overflows the stack. Both are unacceptable for manifests that arrive
//! from peers. The scan walks every element header with the framing rules of PS3.5 7.1 (explicit VR: 2- or
//! 4-byte lengths by VR, Table 7.1-1/7.1-2; implicit VR: 4-byte lengths and the dictionary for SQ;
//! items and delimiters in group FFFE; undefined lengths for sequences and encapsulated pixel data, A.4),
//! framing exactly as the dicom-rs reader does, and rejects any defined length that runs past the end of its container, and nesting deeper
//! than [`MAX_DEPTH`]. It reads nothing but headers and allocates only the nesting stack.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::{DicomError, transfer_syntax as ts};

/// Deepest sequence/item nesting accepted. Real objects rarely exceed 6 (SR trees go deeper, so the bound is
/// generous) while staying far from the parser's stack limit.
pub(crate) const MAX_DEPTH: usize = 64;

const UNDEFINED: u32 = 0xFFFF_FFFF;

/// What the scan learnt about the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Whether a 128-byte preamble precedes `DICM`.
    pub preamble: bool,
    /// Transfer Syntax UID (0002,0010), trimmed.
    pub transfer_syntax: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

#[derive(Clone, Copy)]
struct Coding {
    explicit: bool,
    endian: Endian,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    /// A sequence: expects items.
    Seq,
    /// An item of a sequence: holds elements.
    Item,
    /// Encapsulated pixel data: items hold raw fragment bytes.
    Fragments,
}

#[derive(Clone, Copy)]
struct Frame {
    kind: FrameKind,
    /// End offset for a defined length; `None` for an undefined length (ends at a delimiter).
    end: Option<usize>,
    /// Whether elements inside use implicit VR (the file's coding: the scan mirrors the dicom-rs reader,
    /// which keeps one coding for the whole data set).
    implicit: bool,
}

/// Scans `bytes` (a whole Part 10 file, with or without the 128-byte preamble).
pub(crate) fn scan(bytes: &[u8]) -> Result<Scan, DicomError> {
    let (preamble, mut pos) = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        (true, 132)
    } else if bytes.len() >= 4 && &bytes[0..4] == b"DICM" {
        (false, 4)
    } else if bytes.len() < 132 {
        return Err(DicomError::NotPart10(format!(
            "{} bytes, no DICM prefix (a Part 10 file has a 128-byte preamble and DICM)",
            bytes.len()
        )));
    } else {
        return Err(DicomError::NotPart10(
            "no DICM prefix at offset 128 or 0 (raw data set without File Meta Information?)"
                .into(),
        ));
    };

    // File Meta Information: always explicit VR little endian, group 0002 (PS3.10 7.1).
    let meta = Coding {
        explicit: true,
        endian: Endian::Little,
    };
    // The parser reads the group by its declared length (0002,0000), which must come first: require the
    // declared length to match the elements, so that the data set starts where both readers think it does.
    let group_length = {
        let h = header(bytes, pos, meta, bytes.len())?;
        if h.tag != Tag(0x0002, 0x0000) || h.len != 4 {
            return Err(DicomError::Malformed(format!(
                "File Meta Information starts with {} instead of its Group Length (0002,0000)",
                tag_text(h.tag)
            )));
        }
        let v = read_u32(bytes, pos + h.header_len, Endian::Little) as usize;
        pos += h.header_len + 4;
        v
    };
    let meta_start = pos;
    let mut transfer_syntax = None;
    while pos + 4 <= bytes.len() && read_u16(bytes, pos, Endian::Little) == 0x0002 {
        let h = header(bytes, pos, meta, bytes.len())?;
        if h.len == UNDEFINED {
            return Err(DicomError::Malformed(format!(
                "File Meta element {} at offset {pos} has an undefined length",
                tag_text(h.tag)
            )));
        }
        let start = pos + h.header_len;
        let end = start + h.len as usize;
        if h.tag == Tag(0x0002, 0x0010) {
            let raw = &bytes[start..end];
            let text = String::from_utf8_lossy(raw);
            transfer_syntax = Some(text.trim_end_matches(['\0', ' ']).trim().to_owned());
        }
        pos = end;
    }
    if pos - meta_start != group_length {
        return Err(DicomError::Malformed(format!(
            "File Meta Information Group Length (0002,0000) is {group_length} but the group holds {} bytes",
            pos - meta_start
        )));
    }
    let transfer_syntax = match transfer_syntax {
        Some(t) if !t.is_empty() => t,
        _ => {
            return Err(DicomError::MissingAttribute(
                "Transfer Syntax UID (0002,0010) in File Meta Information",
            ));
        }
    };
    let coding = match transfer_syntax.as_str() {
        ts::IMPLICIT_VR_LITTLE_ENDIAN => Coding {
            explicit: false,
            endian: Endian::Little,
        },
        ts::EXPLICIT_VR_BIG_ENDIAN => Coding {
            explicit: true,
            endian: Endian::Big,
        },
        // Deflated data sets cannot be scanned (nor decoded: no deflate codec is built in).
        ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
        | "1.2.840.10008.1.2.4.95"
        | "1.2.840.10008.1.2.4.205" => {
            return Err(DicomError::UnsupportedTransferSyntax(format!(
                "{transfer_syntax} (deflated data set)"
            )));
        }
        // Explicit VR little endian and every encapsulated (compressed) transfer syntax.
        _ => Coding {
            explicit: true,
            endian: Endian::Little,
        },
    };
    walk(bytes, pos, coding, &transfer_syntax)?;
    Ok(Scan {
        preamble,
        transfer_syntax,
    })
}

struct Header {
    tag: Tag,
    vr: Option<VR>,
    len: u32,
    header_len: usize,
}

fn read_u16(b: &[u8], pos: usize, e: Endian) -> u16 {
    let v = [b[pos], b[pos + 1]];
    match e {
        Endian::Little => u16::from_le_bytes(v),
        Endian::Big => u16::from_be_bytes(v),
    }
}

fn read_u32(b: &[u8], pos: usize, e: Endian) -> u32 {
    let v = [b[pos], b[pos + 1], b[pos + 2], b[pos + 3]];
    match e {
        Endian::Little => u32::from_le_bytes(v),
        Endian::Big => u32::from_be_bytes(v),
    }
}

fn tag_text(t: Tag) -> String {
    format!("({:04X},{:04X})", t.0, t.1)
}

/// Reads the element header at `pos` and checks that a defined length fits before `limit`.
fn header(b: &[u8], pos: usize, c: Coding, limit: usize) -> Result<Header, DicomError> {
    let short =
        |what: &str| DicomError::Malformed(format!("data ends inside {what} at offset {pos}"));
    if pos + 8 > limit {
        return Err(short("an element header"));
    }
    let tag = Tag(read_u16(b, pos, c.endian), read_u16(b, pos + 2, c.endian));
    let (vr, len, header_len) = if tag.0 == 0xFFFE || !c.explicit {
        // Items, delimiters and implicit VR elements: tag + 4-byte length (PS3.5 7.1.3, 7.5).
        (None, read_u32(b, pos + 4, c.endian), 8)
    } else {
        // Unknown VR codes are read as UN, as the dicom-rs decoder does.
        let vr = VR::from_binary([b[pos + 4], b[pos + 5]]).unwrap_or(VR::UN);
        if short_length_vr(vr) {
            (Some(vr), u32::from(read_u16(b, pos + 6, c.endian)), 8)
        } else {
            if pos + 12 > limit {
                return Err(short("an element header"));
            }
            (Some(vr), read_u32(b, pos + 8, c.endian), 12)
        }
    };
    if len != UNDEFINED {
        let start = pos + header_len;
        if (len as usize) > limit - start {
            return Err(DicomError::Malformed(format!(
                "element {} at offset {pos} declares {len} bytes but only {} remain",
                tag_text(tag),
                limit - start
            )));
        }
    }
    Ok(Header {
        tag,
        vr,
        len,
        header_len,
    })
}

/// VRs with a 16-bit length field in explicit VR (PS3.5 Table 7.1-2).
fn short_length_vr(vr: VR) -> bool {
    use VR::*;
    matches!(
        vr,
        AE | AS
            | AT
            | CS
            | DA
            | DS
            | DT
            | FL
            | FD
            | IS
            | LO
            | LT
            | PN
            | SH
            | SL
            | SS
            | ST
            | TM
            | UI
            | UL
            | US
    )
}

fn dictionary_says_sequence(tag: Tag) -> bool {
    StandardDataDictionary
        .by_tag(tag)
        .map(|e| matches!(e.vr(), VirtualVr::Exact(VR::SQ)))
        .unwrap_or(false)
}

fn walk(b: &[u8], mut pos: usize, top: Coding, transfer_syntax: &str) -> Result<(), DicomError> {
    let mut stack: Vec<Frame> = Vec::new();
    // A data set whose first element has no VR letters where explicit VR puts them was written in implicit VR
    // despite its transfer syntax (a known writer bug that pydicom tolerates): name that, rather than the
    // absurd length that follows from misreading it.
    if top.explicit && pos + 6 <= b.len() && !b[pos + 4..pos + 6].iter().all(u8::is_ascii_uppercase)
    {
        return Err(DicomError::Malformed(format!(
            "the data set is encoded in implicit VR although its transfer syntax {transfer_syntax} is explicit VR"
        )));
    }
    loop {
        // Close containers whose defined length ends here.
        while let Some(f) = stack.last() {
            match f.end {
                Some(end) if pos >= end => {
                    if pos > end {
                        return Err(DicomError::Malformed(format!(
                            "content overruns its container ending at offset {end}"
                        )));
                    }
                    stack.pop();
                }
                _ => break,
            }
        }
        if pos >= b.len() {
            if let Some(open) = stack.iter().find(|f| f.end.is_none()) {
                let what = match open.kind {
                    FrameKind::Seq => "a sequence",
                    FrameKind::Item => "an item",
                    FrameKind::Fragments => "encapsulated pixel data",
                };
                return Err(DicomError::Malformed(format!(
                    "data ends inside {what} (no delimiter)"
                )));
            }
            return Ok(());
        }
        let limit = stack.iter().rev().find_map(|f| f.end).unwrap_or(b.len());
        let (implicit, kind) = match stack.last() {
            Some(f) => (f.implicit, Some(f.kind)),
            None => (!top.explicit, None),
        };
        let coding = Coding {
            explicit: !implicit,
            endian: top.endian,
        };
        let h = header(b, pos, coding, limit)?;
        let body = pos + h.header_len;
        match (h.tag, kind) {
            (Tag(0xFFFE, 0xE000), Some(FrameKind::Fragments)) => {
                if h.len == UNDEFINED {
                    return Err(DicomError::Malformed(format!(
                        "pixel data fragment at offset {pos} has an undefined length"
                    )));
                }
                pos = body + h.len as usize;
            }
            (Tag(0xFFFE, 0xE000), Some(FrameKind::Seq)) => {
                let end = (h.len != UNDEFINED).then(|| body + h.len as usize);
                push(
                    &mut stack,
                    Frame {
                        kind: FrameKind::Item,
                        end,
                        implicit,
                    },
                )?;
                pos = body;
            }
            (Tag(0xFFFE, 0xE000), _) => {
                return Err(DicomError::Malformed(format!(
                    "item tag outside a sequence at offset {pos}"
                )));
            }
            (Tag(0xFFFE, 0xE00D), _) => {
                // Item delimiter: closes an undefined-length item; a stray one is skipped as the parser does.
                if matches!(
                    stack.last(),
                    Some(Frame {
                        kind: FrameKind::Item,
                        end: None,
                        ..
                    })
                ) {
                    stack.pop();
                }
                pos = body;
            }
            (Tag(0xFFFE, 0xE0DD), _) => {
                // Sequence delimiter: closes an undefined-length sequence (or fragment list), first closing
                // an undefined-length item whose delimiter is missing.
                if matches!(
                    stack.last(),
                    Some(Frame {
                        kind: FrameKind::Item,
                        end: None,
                        ..
                    })
                ) {
                    stack.pop();
                }
                if matches!(
                    stack.last(),
                    Some(Frame {
                        kind: FrameKind::Seq | FrameKind::Fragments,
                        end: None,
                        ..
                    })
                ) {
                    stack.pop();
                }
                pos = body;
            }
            _ => {
                if kind == Some(FrameKind::Seq) || kind == Some(FrameKind::Fragments) {
                    return Err(DicomError::Malformed(format!(
                        "element {} at offset {pos} where a sequence item was expected",
                        tag_text(h.tag)
                    )));
                }
                let is_seq = match h.vr {
                    Some(VR::SQ) => true,
                    Some(_) => false,
                    None => h.len == UNDEFINED || dictionary_says_sequence(h.tag),
                };
                if h.len == UNDEFINED && h.vr == Some(VR::UN) {
                    // PS3.5 6.2.2: an undefined-length UN is a sequence in implicit VR little endian; the dicom-rs
                    // reader would read it with the file's explicit VR coding and misframe everything after.
                    return Err(DicomError::UnsupportedEncoding(format!(
                        "element {} at offset {pos} has VR UN with undefined length (an implicit VR sequence, PS3.5 6.2.2)",
                        tag_text(h.tag)
                    )));
                }
                if h.len == UNDEFINED {
                    // As the dicom-rs reader does: undefined-length Pixel Data is a fragment list, any other
                    // undefined-length element a sequence read with the current coding.
                    let kind = if h.tag == Tag(0x7FE0, 0x0010) {
                        FrameKind::Fragments
                    } else {
                        FrameKind::Seq
                    };
                    push(
                        &mut stack,
                        Frame {
                            kind,
                            end: None,
                            implicit,
                        },
                    )?;
                    pos = body;
                } else if is_seq {
                    push(
                        &mut stack,
                        Frame {
                            kind: FrameKind::Seq,
                            end: Some(body + h.len as usize),
                            implicit,
                        },
                    )?;
                    pos = body;
                } else {
                    pos = body + h.len as usize;
                }
            }
        }
    }
}

fn push(stack: &mut Vec<Frame>, f: Frame) -> Result<(), DicomError> {
    if stack.len() >= MAX_DEPTH * 2 {
        return Err(DicomError::Malformed(format!(
            "sequences nested deeper than {MAX_DEPTH} levels"
        )));
    }
    stack.push(f);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal Part 10 header (no preamble) with the given transfer syntax.
    fn meta(ts_uid: &str) -> Vec<u8> {
        let mut uid = ts_uid.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        with_group_length(explicit_el((0x0002, 0x0010), b"UI", &uid))
    }

    fn with_group_length(group: Vec<u8>) -> Vec<u8> {
        let mut v = b"DICM".to_vec();
        v.extend(explicit_el(
            (0x0002, 0x0000),
            b"UL",
            &(group.len() as u32).to_le_bytes(),
        ));
        v.extend(group);
        v
    }

    fn explicit_el(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        if short_length_vr(VR::from_binary(*vr).unwrap_or(VR::UN)) {
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        } else {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn accepts_a_plain_explicit_file() {
        let mut f = meta(ts::EXPLICIT_VR_LITTLE_ENDIAN);
        f.extend(explicit_el((0x0010, 0x0020), b"LO", b"12345678"));
        let s = scan(&f).unwrap();
        assert!(!s.preamble);
        assert_eq!(s.transfer_syntax, ts::EXPLICIT_VR_LITTLE_ENDIAN);
    }

    #[test]
    fn rejects_a_length_past_the_end() {
        let mut f = meta(ts::EXPLICIT_VR_LITTLE_ENDIAN);
        // OB with a declared length of 0xFFFFFFF0: the parser would zero-fill 4 GiB before reading.
        f.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF,
        ]);
        let e = scan(&f).unwrap_err();
        assert!(
            matches!(e, DicomError::Malformed(ref m) if m.contains("(7FE0,0010)") && m.contains("remain")),
            "{e}"
        );
    }

    #[test]
    fn rejects_deep_nesting() {
        let mut f = meta(ts::EXPLICIT_VR_LITTLE_ENDIAN);
        for _ in 0..200 {
            // SQ undefined length followed by an undefined-length item, never closed
            f.extend_from_slice(&[
                0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let e = scan(&f).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }

    #[test]
    fn rejects_unclosed_sequence_and_missing_meta_ts() {
        let mut f = meta(ts::EXPLICIT_VR_LITTLE_ENDIAN);
        f.extend_from_slice(&[
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        assert!(scan(&f).unwrap_err().to_string().contains("no delimiter"));

        let g = with_group_length(explicit_el((0x0002, 0x0002), b"UI", b"1.2.3\0"));
        assert_eq!(
            scan(&g).unwrap_err(),
            DicomError::MissingAttribute(
                "Transfer Syntax UID (0002,0010) in File Meta Information"
            )
        );
        assert!(matches!(scan(b"hello"), Err(DicomError::NotPart10(_))));
        assert!(matches!(scan(&[0u8; 400]), Err(DicomError::NotPart10(_))));
    }

    #[test]
    fn group_length_must_match_the_meta_elements() {
        // A declared group length shorter than the elements would make the parser read the rest of group
        // 0002 as data set (in implicit VR: "UI" and a 16-bit length become one 32-bit length).
        let mut f = meta(ts::IMPLICIT_VR_LITTLE_ENDIAN);
        f.extend(explicit_el((0x0002, 0x0013), b"SH", b"HOSTILE "));
        let e = scan(&f).unwrap_err();
        assert!(e.to_string().contains("Group Length (0002,0000)"), "{e}");
        let mut no_length = b"DICM".to_vec();
        no_length.extend(explicit_el((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2\0"));
        assert!(
            scan(&no_length)
                .unwrap_err()
                .to_string()
                .contains("instead of its Group Length")
        );
    }

    #[test]
    fn implicit_sequences_found_through_the_dictionary() {
        let mut f = meta(ts::IMPLICIT_VR_LITTLE_ENDIAN);
        // (0008,1115) Referenced Series Sequence, defined length 16, holding one item whose element lies.
        let mut item = Vec::new();
        item.extend_from_slice(&[0x20, 0x00, 0x0E, 0x00]);
        item.extend_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        let mut seq_body = vec![0xFE, 0xFF, 0x00, 0xE0];
        seq_body.extend_from_slice(&(item.len() as u32).to_le_bytes());
        seq_body.extend_from_slice(&item);
        f.extend_from_slice(&[0x08, 0x00, 0x15, 0x11]);
        f.extend_from_slice(&(seq_body.len() as u32).to_le_bytes());
        f.extend_from_slice(&seq_body);
        let e = scan(&f).unwrap_err();
        assert!(e.to_string().contains("(0020,000E)"), "{e}");
    }
}
