//! The reference cnitool's container ID: `cnitool-` and the first 10 bytes of the SHA-512 of the
//! absolute netns path, in hex. The path is made absolute the way Go's `filepath.Abs` does it:
//! joined to the working directory and cleaned lexically (no symlinks resolved).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha512};

/// `path` made absolute against `cwd` and cleaned: `.` dropped, `..` applied, slashes collapsed.
pub fn absolute(path: &Path, cwd: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    let mut parts: Vec<OsString> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let mut out = Vec::new();
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p.as_bytes());
    }
    if out.is_empty() {
        out.push(b'/');
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The container ID the reference cnitool uses for the (absolute) netns path.
pub fn container_id(abs_netns: &Path) -> String {
    let digest = Sha512::digest(abs_netns.as_os_str().as_bytes());
    let mut id = String::from("cnitool-");
    for b in digest.iter().take(10) {
        let _ = write!(id, "{b:02x}");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_derivation() {
        // Values computed independently (Python hashlib) from the reference formula.
        assert_eq!(
            container_id(Path::new("/var/run/netns/test")),
            "cnitool-7b8a61d5d8e94d07cbe4"
        );
        assert_eq!(
            container_id(Path::new("/run/netns/c1")),
            "cnitool-20b4ff582526573bbe7d"
        );
    }

    #[test]
    fn paths_are_made_absolute_and_clean_like_go() {
        let cwd = Path::new("/run/user");
        let abs = |p: &str| absolute(Path::new(p), cwd).display().to_string();
        assert_eq!(abs("/var/run/netns/test"), "/var/run/netns/test");
        assert_eq!(abs("netns/x"), "/run/user/netns/x");
        assert_eq!(abs("./x/../y//z/"), "/run/user/y/z");
        assert_eq!(abs("../../../../a"), "/a");
        assert_eq!(abs("/"), "/");
        assert_eq!(
            container_id(&absolute(
                Path::new("../../run/netns/c1"),
                Path::new("/a/b")
            )),
            "cnitool-20b4ff582526573bbe7d"
        );
    }
}
