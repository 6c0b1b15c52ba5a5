//! Running nft scripts: in-process through libnftables (`dlopen("libnftables.so.1")`), or by
//! executing the `nft` binary when the library is not there.
//!
//! Measured on the development VM (2 cores, nftables 1.0.6): one `nft -f -` exec costs about
//! 2.5 ms (process start, dynamic loading, ruleset cache); the same batch through an already
//! loaded libnftables about 0.1 ms, and loading the library about 1 ms once per plugin process.
//! Whole bridge ADD with ipMasq: 6.9 ms with the library, 8.4 ms with the binary (6.0 ms without
//! ipMasq); DEL: 25 ms vs 40 ms (the binary's exit waits for the kernel's RCU grace period
//! before the veth deletion starts, the library's overlaps it). So the library is preferred;
//! `CNI_NFT=binary` forces the binary (for measurements, and as a way around a broken library).
//! The static musl build we ship cannot dlopen, so it always runs the binary; the hot paths do
//! not come here (element changes and lookups go through nfnetlink: `nftelem`, `nftset`).
//!
//! A script runs as one transaction either way: `nft -f` and `nft_run_cmd_from_buffer` send
//! the whole buffer as one netlink batch, which the kernel applies atomically or not at all.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::error::{CniError, Result};
use crate::nfnl::{Nfnl, SUBSYS_NFTABLES};

/// Why a script failed: nft's own error text (first line is the kernel's or parser's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftError(pub String);

impl NftError {
    /// The kernel said ENOENT: a table, chain, set or element named in the script is missing.
    pub fn is_missing(&self) -> bool {
        self.0.contains("No such file or directory")
    }

    /// The kernel said EEXIST (e.g. `create element` of an existing key).
    pub fn is_exists(&self) -> bool {
        self.0.contains("File exists")
    }

    /// The kernel said EINTR: a dump met a concurrent change of the ruleset.
    pub fn is_interrupted(&self) -> bool {
        self.0.contains("Interrupted system call")
    }

    /// The error for the caller. On a kernel without nf_tables (or without netfilter netlink)
    /// any script fails — with whatever nft makes of the kernel's refusal — and that is "not
    /// available here", code 50, so that ADD with no backend named uses iptables and DEL and
    /// GC find nothing there; asked of the kernel (one nfnetlink probe) only when a script
    /// failed.
    pub fn cni(&self, what: &str) -> CniError {
        self.classify(what, kernel_has_nf_tables())
    }

    fn classify(&self, what: &str, has_nf_tables: Option<bool>) -> CniError {
        let msg = format!("nftables: {what}: {}", self.0.trim());
        match has_nf_tables {
            Some(false) => CniError::not_available(format!("{msg} (this kernel has no nf_tables)")),
            _ => CniError::internal(msg),
        }
    }
}

/// Whether the kernel has nf_tables in the calling thread's namespace; `Some(false)` also
/// without a netfilter netlink socket, `None` when it could not be told.
fn kernel_has_nf_tables() -> Option<bool> {
    let Ok(mut nl) = Nfnl::open() else {
        return Some(false);
    };
    let has = nl.has_subsystem(SUBSYS_NFTABLES);
    // Nothing was committed on it: closing does not wait.
    nl.close_now();
    has
}

/// The nft engine of this process.
pub enum Nft {
    Lib(Lib),
    Binary(PathBuf),
}

impl std::fmt::Debug for Nft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Nft::Lib(_) => f.write_str("Nft::Lib"),
            Nft::Binary(p) => write!(f, "Nft::Binary({})", p.display()),
        }
    }
}

impl Nft {
    /// The process-wide engine, loaded on first use. Code 50 when neither libnftables nor an
    /// `nft` binary is available. `CNI_NFT=binary` skips libnftables; `CNI_NFT=none` uses
    /// neither, as on a host without nftables (to try what the plugins do there).
    pub fn get() -> Result<&'static Nft> {
        static NFT: OnceLock<std::result::Result<Nft, String>> = OnceLock::new();
        NFT.get_or_init(|| {
            let choice = std::env::var("CNI_NFT").unwrap_or_default();
            if choice == "none" {
                return Err("nftables is not usable: CNI_NFT=none".to_string());
            }
            if choice != "binary" {
                match Lib::load() {
                    Ok(lib) => return Ok(Nft::Lib(lib)),
                    Err(e) => tracing::debug!("libnftables not usable ({e}); using the nft binary"),
                }
            }
            super::find_tool("nft").map(Nft::Binary).ok_or_else(|| {
                "nftables is not usable: neither libnftables.so.1 nor an nft binary was found"
                    .to_string()
            })
        })
        .as_ref()
        .map_err(|e| CniError::not_available(e.clone()))
    }

    /// STATUS of an nftables backend (`what` names it in the error): the engine that creates
    /// our tables when they are missing is there, and the kernel answers an nf_tables request
    /// (one table dump through nfnetlink: no script, no process). Code 50 otherwise.
    pub fn ready(what: &str) -> Result<()> {
        Nft::get().map_err(|e| e.context(what))?;
        let mut nl = crate::nfnl::Nfnl::open_backend(what)?;
        super::nftrule::answers(&mut nl, super::nftset::INET).map_err(|e| {
            CniError::not_available(format!(
                "{what}: the kernel refused an nf_tables listing: {}",
                e.what
            ))
        })
    }

    /// Which engine: `"libnftables"` or the binary's path.
    pub fn describe(&self) -> String {
        match self {
            Nft::Lib(_) => "libnftables".into(),
            Nft::Binary(p) => p.display().to_string(),
        }
    }

    /// Run a script (one transaction); its text output.
    pub fn run(&self, script: &str) -> std::result::Result<String, NftError> {
        tracing::debug!(script, "nft");
        self.run_retrying(script)
    }

    /// Run a script whose output is not needed; a failure is the CNI error [`NftError::cni`]
    /// makes of it, `what` naming the step.
    pub fn apply(&self, script: &str, what: &str) -> Result<()> {
        self.run(script).map(drop).map_err(|e| e.cni(what))
    }

    /// Run once, and again while the kernel reports EINTR: nft's own cache fill that met a
    /// concurrent change of the ruleset, which the kernel refuses to answer inconsistently. Nothing was applied then (a transaction is all or nothing), so a
    /// rerun is safe. Without the rerun, 1 or 2 of 200 parallel DELs failed
    /// (tests/reliability).
    fn run_retrying(&self, script: &str) -> std::result::Result<String, NftError> {
        let mut pause = std::time::Duration::from_millis(1);
        for _ in 1..INTERRUPTED_TRIES {
            match self.run_once(script) {
                Err(e) if e.is_interrupted() => {
                    tracing::debug!("nft: {}; trying again", e.0.trim());
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
                r => return r,
            }
        }
        self.run_once(script)
    }

    fn run_once(&self, script: &str) -> std::result::Result<String, NftError> {
        match self {
            Nft::Lib(lib) => lib.run(script),
            Nft::Binary(p) => run_binary(p, script),
        }
    }
}

/// How often a script interrupted by concurrent ruleset changes is run in all.
const INTERRUPTED_TRIES: usize = 20;

fn run_binary(path: &PathBuf, script: &str) -> std::result::Result<String, NftError> {
    let mut child = Command::new(path)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NftError(format!("executing {}: {e}", path.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NftError(format!("waiting for {}: {e}", path.display())))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NftError(String::from_utf8_lossy(&out.stderr).into_owned()))
    }
}

/// Look `name` up in `handle` as a function pointer of type `F`.
///
/// # Safety
///
/// `handle` must be a live dlopen handle and `F` an `extern "C" fn` type matching the symbol's
/// C signature.
unsafe fn symbol<F: Copy>(handle: *mut c_void, name: &CStr) -> std::result::Result<F, String> {
    if std::mem::size_of::<F>() != std::mem::size_of::<*mut c_void>() {
        return Err(format!(
            "{}: not a function pointer type",
            name.to_string_lossy()
        ));
    }
    // SAFETY: the caller guarantees a live handle; `name` is NUL-terminated.
    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if p.is_null() {
        return Err(format!("libnftables lacks {}", name.to_string_lossy()));
    }
    // SAFETY: same size (checked above); the caller guarantees `F` is the symbol's real type.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxStr = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// libnftables, loaded at run time (no build-time dependency on its headers or package).
pub struct Lib {
    ctx: Mutex<Ctx>,
    run_cmd: RunCmd,
    get_output: CtxStr,
    get_error: CtxStr,
}

/// The `struct nft_ctx *`; only used under the mutex.
struct Ctx(*mut c_void);

// SAFETY: the context pointer is only ever used while holding the Mutex in `Lib`, so one thread
// at a time uses it; libnftables keeps no thread-local state for a context.
unsafe impl Send for Ctx {}

impl Lib {
    fn load() -> std::result::Result<Lib, String> {
        // SAFETY: dlopen with a constant, NUL-terminated name; the handle is never closed, so
        // the symbols stay valid for the life of the process.
        let handle = unsafe { libc::dlopen(c"libnftables.so.1".as_ptr(), libc::RTLD_LAZY) };
        if handle.is_null() {
            return Err("dlopen libnftables.so.1 failed".into());
        }
        // SAFETY: `handle` is live and never closed; each function type below is the C
        // signature of that libnftables function (libnftables.h, stable since 0.9).
        let (ctx_new, buffer_output, buffer_error, lib) = unsafe {
            let ctx_new: CtxNew = symbol(handle, c"nft_ctx_new")?;
            let buffer_output: CtxInt = symbol(handle, c"nft_ctx_buffer_output")?;
            let buffer_error: CtxInt = symbol(handle, c"nft_ctx_buffer_error")?;
            let lib = Lib {
                ctx: Mutex::new(Ctx(std::ptr::null_mut())),
                run_cmd: symbol(handle, c"nft_run_cmd_from_buffer")?,
                get_output: symbol(handle, c"nft_ctx_get_output_buffer")?,
                get_error: symbol(handle, c"nft_ctx_get_error_buffer")?,
            };
            (ctx_new, buffer_output, buffer_error, lib)
        };
        // SAFETY: nft_ctx_new(NFT_CTX_DEFAULT = 0) returns a new context or NULL.
        let ctx = unsafe { ctx_new(0) };
        if ctx.is_null() {
            return Err("nft_ctx_new failed".into());
        }
        // SAFETY: `ctx` is the live context just created; buffering makes output and errors
        // readable through the get_*_buffer functions instead of going to stdout/stderr.
        let buffered = unsafe { buffer_output(ctx) == 0 && buffer_error(ctx) == 0 };
        if !buffered {
            return Err("nft_ctx_buffer_output failed".into());
        }
        if let Ok(mut c) = lib.ctx.lock() {
            c.0 = ctx;
        }
        Ok(lib)
    }

    fn run(&self, script: &str) -> std::result::Result<String, NftError> {
        let cmd =
            CString::new(script).map_err(|_| NftError("script contains a NUL byte".into()))?;
        let ctx = self
            .ctx
            .lock()
            .map_err(|_| NftError("libnftables context poisoned".into()))?;
        let read = |f: CtxStr| -> String {
            // SAFETY: ctx is live and buffered; the returned pointer is NULL or a NUL-terminated
            // buffer owned by the context, valid until the next call on it, and copied here.
            let p = unsafe { f(ctx.0) };
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: non-null, NUL-terminated (see above).
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        // SAFETY: ctx is live, `cmd` a NUL-terminated buffer that outlives the call.
        let rc = unsafe { (self.run_cmd)(ctx.0, cmd.as_ptr()) };
        // The buffers are rewound, not cleared, between runs: a run that prints nothing leaves
        // the previous text in place. Callers only read the output of listings (which always
        // print on success) and the error text of failed runs (which always print one).
        let out = read(self.get_output);
        let err = read(self.get_error);
        if rc == 0 {
            Ok(out)
        } else {
            Err(NftError(if err.is_empty() {
                format!("nft_run_cmd_from_buffer returned {rc}")
            } else {
                err
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    #[test]
    fn a_failed_script_is_not_available_only_on_a_kernel_without_nf_tables() {
        let e = NftError("Error: Could not process rule: Operation not supported\n".into());
        let absent = e.classify("creating table inet cni_hostport", Some(false));
        assert_eq!(absent.code, code::NOT_AVAILABLE);
        assert_eq!(
            absent.msg,
            "nftables: creating table inet cni_hostport: Error: Could not process rule: \
             Operation not supported (this kernel has no nf_tables)"
        );
        for has in [Some(true), None] {
            assert_eq!(e.classify("x", has).code, code::INTERNAL, "{has:?}");
        }
    }
}
