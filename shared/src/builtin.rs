//! Built-in IPAM: our host-local compiled into the plugins that delegate to it (bridge, vxlan,
//! macvlan), run in-process instead of executed when — and only when — the `host-local` found
//! in CNI_PATH is provably the same build.
//!
//! Executing the IPAM plugin is the CNI contract, and the binary in CNI_PATH may be anything a
//! user put there (the reference's host-local, a wrapper script). Running our own copy instead
//! is only the same thing when that binary is ours, built from the same sources: then the code
//! that would run in the child is the code linked here, and the child process is pure cost
//! (~0.7 ms of exec and start-up per ADD and DEL). The proof is a build ID: host-local's build
//! script hashes everything its behaviour is built from (`ipam/host-local/build.rs`); the
//! host-local binary carries that ID in an ELF note ([`Note`]), and a plugin with the built-in
//! IPAM registers it with the same ID ([`crate::invoke::set_builtin`]). Before delegating,
//! [`crate::invoke`] reads the found binary's notes (its ELF header, program headers and note
//! segments: a few kilobytes from the page cache) and runs the registered plugin in-process
//! when the IDs match; anything else — another build, another program, a script, an unreadable
//! file — is executed as before. Without CNI_PATH nothing is found, so nothing runs in-process
//! either: the delegation is code 4 naming CNI_PATH (`invoke::find_ipam`).
//!
//! In-process, the IPAM sees the same request (configuration, CNI_* values) with the delegated
//! verb, and its ADD result goes through the same encoding in the configuration's version and
//! back that the executed plugin's stdout would, so the caller gets the same result either way.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::skel::Plugin;

/// The owner name of our ELF note, NUL-terminated and padded to four bytes.
const NOTE_NAME: [u8; 8] = *b"cni-rs\0\0";
/// The note's type: a 32-byte build ID.
const NOTE_TYPE: u32 = 0x4349_4431; // "CID1"

/// An IPAM plugin compiled into this binary, with the build ID its own binary carries.
pub struct Builtin {
    /// The plugin's type name, as in `ipam.type`.
    pub name: &'static str,
    pub build_id: [u8; 32],
    pub plugin: &'static (dyn Plugin + Sync),
}

/// The ELF note a plugin binary carries its build ID in. Place it with
/// `#[used] #[link_section = ".note.cni-rs"] static NOTE: Note = Note::new(ID);` — the linker
/// puts `.note.*` sections into the binary's PT_NOTE segment, near the start of the file.
#[repr(C, align(4))]
pub struct Note {
    namesz: u32,
    descsz: u32,
    kind: u32,
    name: [u8; 8],
    desc: [u8; 32],
}

impl Note {
    pub const fn new(build_id: [u8; 32]) -> Note {
        Note {
            namesz: 7, // "cni-rs" and its NUL
            descsz: 32,
            kind: NOTE_TYPE,
            name: NOTE_NAME,
            desc: build_id,
        }
    }
}

/// Whether the ELF executable at `path` carries our note with `build_id`. Any doubt (not ELF,
/// another word size or byte order, truncated or implausible headers, unreadable) is "no".
pub fn carries(path: &Path, build_id: &[u8; 32]) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    note_segments(&file)
        .unwrap_or_default()
        .iter()
        .any(|seg| has_note(seg, build_id))
}

const PT_NOTE: u32 = 4;
/// Bounds that no executable of ours comes near; anything beyond is not looked at.
const MAX_PHNUM: usize = 64;
const MAX_NOTE_SEGMENT: u64 = 4096;

/// The contents of the PT_NOTE segments (with their alignment) of a 64-bit ELF file of this
/// machine's byte order.
fn note_segments(file: &File) -> Option<Vec<(u64, Vec<u8>)>> {
    let mut eh = [0u8; 64];
    file.read_exact_at(&mut eh, 0).ok()?;
    let native = if cfg!(target_endian = "little") { 1 } else { 2 };
    if eh[..4] != *b"\x7fELF" || eh[4] != 2 || eh[5] != native {
        return None;
    }
    let phoff = u64_at(&eh, 32)?;
    let phentsize = usize::from(u16_at(&eh, 54)?);
    let phnum = usize::from(u16_at(&eh, 56)?);
    if phentsize < 56 || phnum > MAX_PHNUM {
        return None;
    }
    let mut ph = vec![0u8; phentsize * phnum];
    file.read_exact_at(&mut ph, phoff).ok()?;
    let mut segments = Vec::new();
    for entry in ph.chunks_exact(phentsize) {
        if u32_at(entry, 0)? != PT_NOTE {
            continue;
        }
        let (offset, size, align) = (u64_at(entry, 8)?, u64_at(entry, 32)?, u64_at(entry, 48)?);
        if size > MAX_NOTE_SEGMENT {
            continue;
        }
        let mut seg = vec![0u8; usize::try_from(size).ok()?];
        file.read_exact_at(&mut seg, offset).ok()?;
        segments.push((align, seg));
    }
    Some(segments)
}

/// Whether a note segment holds our note with `build_id`.
fn has_note((align, seg): &(u64, Vec<u8>), build_id: &[u8; 32]) -> bool {
    // Notes are 4-byte aligned, 8-byte in a segment aligned so (as the gABI allows).
    let pad = |n: usize| {
        if *align == 8 {
            n.next_multiple_of(8)
        } else {
            n.next_multiple_of(4)
        }
    };
    let mut at = 0;
    while let (Some(namesz), Some(descsz), Some(kind)) =
        (u32_at(seg, at), u32_at(seg, at + 4), u32_at(seg, at + 8))
    {
        let (namesz, descsz) = (namesz as usize, descsz as usize);
        let name_at = at + 12;
        let desc_at = pad(name_at + namesz);
        let next = pad(desc_at + descsz);
        let (Some(name), Some(desc)) = (
            seg.get(name_at..name_at + namesz),
            seg.get(desc_at..desc_at + descsz),
        ) else {
            return false;
        };
        if kind == NOTE_TYPE && name == &NOTE_NAME[..7] && desc == build_id {
            return true;
        }
        at = next;
    }
    false
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const ID: [u8; 32] = [7; 32];

    /// A minimal 64-bit ELF file: header, `phnum` program headers (the first PT_NOTE, pointing
    /// at `notes`), then `notes`.
    fn elf(notes: &[u8], align: u64) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = if cfg!(target_endian = "little") { 1 } else { 2 };
        f[32..40].copy_from_slice(&64u64.to_ne_bytes());
        f[54..56].copy_from_slice(&56u16.to_ne_bytes());
        f[56..58].copy_from_slice(&1u16.to_ne_bytes());
        let ph = &mut f[64..];
        ph[..4].copy_from_slice(&PT_NOTE.to_ne_bytes());
        ph[8..16].copy_from_slice(&120u64.to_ne_bytes());
        ph[32..40].copy_from_slice(&(notes.len() as u64).to_ne_bytes());
        ph[48..56].copy_from_slice(&align.to_ne_bytes());
        f.extend_from_slice(notes);
        f
    }

    fn note_bytes(n: &Note) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [n.namesz, n.descsz, n.kind] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&n.name);
        b.extend_from_slice(&n.desc);
        b
    }

    /// A GNU build-id note (name "GNU", 20 bytes), as linkers put before ours.
    fn gnu_note() -> Vec<u8> {
        let mut b = Vec::new();
        for v in [4u32, 20, 3] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(b"GNU\0");
        b.extend_from_slice(&[0xaa; 20]);
        b
    }

    fn file_with(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cni-builtin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn finds_the_build_id_after_other_notes_and_nothing_else() {
        let ours = [gnu_note(), note_bytes(&Note::new(ID))].concat();
        let p = file_with("ours", &elf(&ours, 4));
        assert!(carries(&p, &ID));
        assert!(!carries(&p, &[8; 32]), "another build ID");

        let only_gnu = file_with("gnu", &elf(&gnu_note(), 4));
        assert!(!carries(&only_gnu, &ID));

        let mut other_owner = Note::new(ID);
        other_owner.name = *b"cni-xx\0\0";
        let p = file_with("owner", &elf(&note_bytes(&other_owner), 4));
        assert!(
            !carries(&p, &ID),
            "another owner's note with the same bytes"
        );
    }

    #[test]
    fn anything_doubtful_is_not_ours() {
        let good = elf(&note_bytes(&Note::new(ID)), 4);
        let script = file_with("script", b"#!/bin/sh\nexec /usr/lib/cni/host-local\n");
        assert!(!carries(&script, &ID));
        assert!(!carries(Path::new("/nonexistent/host-local"), &ID));
        for cut in [10, 64, 100, good.len() - 1] {
            let p = file_with(&format!("cut{cut}"), &good[..cut]);
            assert!(!carries(&p, &ID), "truncated at {cut}");
        }
        let mut bad = good.clone();
        bad[4] = 1; // 32-bit
        assert!(!carries(&file_with("class", &bad), &ID));
        let mut bad = good.clone();
        bad[56..58].copy_from_slice(&1000u16.to_ne_bytes()); // implausible phnum
        assert!(!carries(&file_with("phnum", &bad), &ID));
        let mut bad = good;
        bad[120..124].copy_from_slice(&u32::MAX.to_ne_bytes()); // namesz beyond the segment
        assert!(!carries(&file_with("namesz", &bad), &ID));
    }

    #[test]
    fn eight_byte_aligned_note_segments() {
        // In a segment aligned to 8, the description starts at the next multiple of 8: the
        // 12-byte header and "cni-rs\0" end at 19, so the ID starts at 24.
        let mut n = Vec::new();
        for v in [7u32, 32, NOTE_TYPE] {
            n.extend_from_slice(&v.to_ne_bytes());
        }
        n.extend_from_slice(b"cni-rs\0\0\0\0\0\0");
        n.extend_from_slice(&ID);
        let p = file_with("align8", &elf(&n, 8));
        assert!(carries(&p, &ID));
        // Our 4-aligned layout read with the 8-byte rule is not mistaken for it.
        let p = file_with("align8-wrong", &elf(&note_bytes(&Note::new(ID)), 8));
        assert!(!carries(&p, &ID));
    }
}
