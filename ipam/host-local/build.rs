//! The build ID of this host-local: a SHA-256 over everything its behaviour is built from (its
//! sources, the shared library's, the workspace manifest and lock file, the version, profile,
//! target, flags and compiler). The binary carries it in an ELF note; bridge, vxlan and
//! macvlan carry it as the ID of the host-local compiled into them, and run that one in-process
//! instead of executing the `host-local` in CNI_PATH only when the IDs match (see
//! `cni_shared::builtin`).

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let manifest = fs::canonicalize(&manifest).unwrap_or(manifest);
    // Paths are hashed relative to the workspace, so the checkout's location does not count.
    let workspace = manifest.join("../..");
    let workspace = fs::canonicalize(&workspace).unwrap_or(workspace);
    let inputs = [
        manifest.join("Cargo.toml"),
        manifest.join("src"),
        workspace.join("shared/Cargo.toml"),
        workspace.join("shared/src"),
        workspace.join("Cargo.toml"),
        workspace.join("Cargo.lock"),
    ];
    let mut files = Vec::new();
    for input in &inputs {
        println!("cargo:rerun-if-changed={}", input.display());
        collect(input, &mut files);
    }
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        let rel = f.strip_prefix(&workspace).unwrap_or(f);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(fs::read(f).unwrap_or_default());
        h.update([0]);
    }
    for var in [
        "CARGO_PKG_VERSION",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        h.update(var.as_bytes());
        h.update([b'=']);
        h.update(std::env::var(var).unwrap_or_default().as_bytes());
        h.update([0]);
    }
    // The compiler that builds this crate (and, in one build, the plugins linking it).
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    println!("cargo:rerun-if-env-changed=RUSTC");
    let version = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    h.update(b"rustc=");
    h.update(&version);
    let id: [u8; 32] = h.finalize().into();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("build_id.rs");
    if let Err(e) = fs::write(&out, format!("{id:?}\n")) {
        println!("cargo:warning=writing {}: {e}", out.display());
        std::process::exit(1);
    }
}

/// The files under `path` (or `path` itself), recursively.
fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    match fs::read_dir(path) {
        Ok(dir) => {
            for entry in dir.flatten() {
                collect(&entry.path(), files);
            }
        }
        Err(_) if path.is_file() => files.push(path.to_path_buf()),
        Err(_) => {}
    }
}
