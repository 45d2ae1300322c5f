//! Kernel confinement of every `exec` child with Landlock: the second layer under the path
//! checks, so a program that follows a symlink, races a check or parses an option differently
//! from the checker still cannot read or write outside what is granted here.
//!
//! Owns: `tools.exec.sandbox` ([`SandboxMode`]), the probe of the kernel's Landlock ABI, what
//! one child may touch ([`KernelJail`]), and the two system calls made between fork and exec.
//! Must not: allocate, lock or log between fork and exec ([`restrict_in_child`] only issues
//! `prctl` and `landlock_restrict_self` on values prepared in the parent).
//!
//! Granted: read and execute on the system trees (`/usr`, `/lib*`, `/bin`, `/sbin`, `/etc`)
//! and on the program itself; `/dev/null` read-write, `/dev/zero`, `/dev/random`,
//! `/dev/urandom` read; the workspace read-only; the work repo read-write for programs whose
//! rule writes, read-only for every other. Nothing else: not the rest of `~/.kafclaw`, not
//! `~/.config/kafclaw`, not the rest of the home, not `/proc` (the gateway's own environment
//! lives there), not `/tmp`. Where the ABI has them (4+): no TCP bind or connect; (6+) no
//! abstract unix socket outside the child's domain and no signal to a process outside it;
//! (9+) no connect to a pathname unix socket (such as `~/.kafclaw/control.sock`). Access
//! rights newer than the running kernel are dropped (best effort), older kernels keep the rest.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, ABI,
};
use serde::{Deserialize, Serialize};

use crate::executor::paths::Confinement;

/// The Landlock ABI whose access rights this module asks for (best effort below it).
const TARGET_ABI: ABI = ABI::V9;

/// System trees every program needs, read and execute (those that exist).
const SYSTEM_TREES: &[&str] = &["/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc"];
/// Devices a program may read.
const READ_DEVICES: &[&str] = &["/dev/zero", "/dev/random", "/dev/urandom"];

/// `tools.exec.sandbox`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Landlock when the kernel has it, else the path checks alone (said at start, in
    /// `status`, and as a `security check` WARN).
    #[default]
    Auto,
    /// Landlock or no start.
    Landlock,
    /// The path checks alone (`security check` FAILs it).
    Off,
}

impl SandboxMode {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Auto => "auto",
            SandboxMode::Landlock => "landlock",
            SandboxMode::Off => "off",
        }
    }
}

/// What the running kernel offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSupport {
    /// Landlock at this ABI version.
    Landlock {
        /// The kernel's ABI version.
        abi: i32,
    },
    /// No Landlock.
    Missing {
        /// Why (not built in, or not enabled at boot).
        reason: &'static str,
    },
}

/// Asks the kernel for its Landlock ABI version.
#[allow(unsafe_code)]
pub fn kernel_support() -> KernelSupport {
    /// `LANDLOCK_CREATE_RULESET_VERSION`: return the ABI version, create nothing.
    const VERSION_FLAG: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the version flag,
    // landlock_create_ruleset(2) reads no memory, creates no file descriptor and only
    // returns the ABI version (or -1 with errno).
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            VERSION_FLAG,
        )
    };
    if v > 0 {
        return KernelSupport::Landlock {
            abi: i32::try_from(v).unwrap_or(i32::MAX),
        };
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EOPNOTSUPP) => KernelSupport::Missing {
            reason: "Landlock is built in but not enabled at boot (lsm=)",
        },
        _ => KernelSupport::Missing {
            reason: "the kernel has no Landlock",
        },
    }
}

/// How `exec` children are confined, decided once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxStatus {
    /// Every child runs under Landlock.
    Landlock {
        /// The kernel's ABI version.
        abi: i32,
    },
    /// `auto` on a kernel without Landlock: the path checks alone.
    PathChecksOnly {
        /// Why the kernel cannot confine.
        reason: &'static str,
    },
    /// `off`: the path checks alone, by configuration.
    Off,
}

impl std::fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SandboxStatus::Landlock { abi } => write!(
                f,
                "landlock (ABI {abi}): the kernel confines every exec child to the system trees, the workspace (read) and the work repo"
            ),
            SandboxStatus::PathChecksOnly { reason } => write!(
                f,
                "path checks only: {reason}; tools.exec.sandbox is auto, so exec children are not confined by the kernel"
            ),
            SandboxStatus::Off => write!(
                f,
                "off: tools.exec.sandbox is off, so exec children are not confined by the kernel (path checks only)"
            ),
        }
    }
}

/// `tools.exec.sandbox = landlock` on a kernel without it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refusing to start: tools.exec.sandbox is landlock but {reason}; set it to auto to run with path checks only")]
pub struct LandlockUnavailable {
    /// Why the kernel cannot confine.
    pub reason: &'static str,
}

impl SandboxStatus {
    /// What `mode` means on a kernel that offers `support`.
    pub fn decide(mode: SandboxMode, support: KernelSupport) -> Result<Self, LandlockUnavailable> {
        match (mode, support) {
            (SandboxMode::Off, _) => Ok(SandboxStatus::Off),
            (_, KernelSupport::Landlock { abi }) => Ok(SandboxStatus::Landlock { abi }),
            (SandboxMode::Auto, KernelSupport::Missing { reason }) => {
                Ok(SandboxStatus::PathChecksOnly { reason })
            }
            (SandboxMode::Landlock, KernelSupport::Missing { reason }) => {
                Err(LandlockUnavailable { reason })
            }
        }
    }

    /// Whether children run under Landlock.
    pub fn confines(&self) -> bool {
        matches!(self, SandboxStatus::Landlock { .. })
    }
}

/// What one child needs from the kernel beyond the defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChildAccess {
    /// The work repo read-write (else read-only).
    pub write_work_repo: bool,
    /// TCP connect and bind (else refused where the ABI can).
    pub network: bool,
}

/// The roots a child may touch, and whether the kernel enforces them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelJail {
    /// Whether to build and apply a ruleset at all.
    enforce: bool,
    /// Read-only roots (the workspace).
    read_only: Vec<PathBuf>,
    /// The work repo.
    work_repo: PathBuf,
    /// The home's secret paths: never granted, even when a misconfigured root holds them.
    secrets: Vec<PathBuf>,
}

/// How deep a root holding a secret is split into grantable parts.
const MAX_SPLIT_DEPTH: usize = 8;

/// Building the ruleset failed; the child is not started.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the Landlock ruleset: {0}")]
pub struct RulesetFailed(String);

impl KernelJail {
    /// A jail for `status` over the confinement's workspace (read) and work repo.
    pub fn new(status: &SandboxStatus, roots: &Confinement) -> Self {
        Self {
            enforce: status.confines(),
            read_only: vec![roots.workspace().to_path_buf()],
            work_repo: roots.work_repo().to_path_buf(),
            secrets: roots.secrets().to_vec(),
        }
    }

    /// No kernel confinement (tests of the other layers).
    pub fn unconfined(work_repo: &Path) -> Self {
        Self {
            enforce: false,
            read_only: Vec::new(),
            work_repo: work_repo.to_path_buf(),
            secrets: Vec::new(),
        }
    }

    /// What of `root` may be granted: the root itself, or — when a misconfigured root holds
    /// a secret — every entry beside the secrets, split as deep as needed.
    fn grantable(&self, root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        self.split(root, 0, &mut out);
        out
    }

    fn split(&self, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        if self.secrets.iter().any(|s| dir.starts_with(s)) {
            return;
        }
        if !self.secrets.iter().any(|s| s.starts_with(dir)) {
            out.push(dir.to_path_buf());
            return;
        }
        if depth >= MAX_SPLIT_DEPTH {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => self.split(&path, depth + 1, out),
                Ok(_) if !self.secrets.iter().any(|s| path.starts_with(s)) => out.push(path),
                _ => {}
            }
        }
    }

    /// This jail with `dir` added as a read-only root (a skill's directory).
    pub fn with_read_only(&self, dir: &Path) -> Self {
        let mut jail = self.clone();
        jail.read_only.push(dir.to_path_buf());
        jail
    }

    /// Whether the kernel enforces this jail.
    pub fn enforces(&self) -> bool {
        self.enforce
    }

    /// The ruleset for one child running `program`, as the file descriptor
    /// [`restrict_in_child`] applies; `None` when not enforcing. Built in the parent: it
    /// opens path descriptors and allocates.
    pub fn ruleset(
        &self,
        program: &Path,
        access: ChildAccess,
    ) -> Result<Option<OwnedFd>, RulesetFailed> {
        if !self.enforce {
            return Ok(None);
        }
        let fail = |e: &dyn std::fmt::Display| RulesetFailed(e.to_string());
        let abi = TARGET_ABI;
        let read = AccessFs::from_read(abi);
        let mut ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))
            .map_err(|e| fail(&e))?
            .scope(Scope::from_all(abi))
            .map_err(|e| fail(&e))?;
        if !access.network {
            ruleset = ruleset
                .handle_access(AccessNet::from_all(abi))
                .map_err(|e| fail(&e))?;
        }
        let mut created = ruleset
            .create()
            .map_err(|e| fail(&e))?
            .add_rules(path_beneath_rules(SYSTEM_TREES, read))
            .map_err(|e| fail(&e))?
            .add_rules(path_beneath_rules(READ_DEVICES, AccessFs::ReadFile))
            .map_err(|e| fail(&e))?
            .add_rules(path_beneath_rules(
                ["/dev/null"],
                AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate,
            ))
            .map_err(|e| fail(&e))?
            .add_rules(path_beneath_rules(
                [program],
                AccessFs::Execute | AccessFs::ReadFile,
            ))
            .map_err(|e| fail(&e))?;
        let work_repo = if access.write_work_repo {
            AccessFs::from_all(abi)
        } else {
            read
        };
        let roots = self
            .read_only
            .iter()
            .map(|p| (p, read))
            .chain([(&self.work_repo, work_repo)]);
        for (root, rights) in roots {
            for part in self.grantable(root) {
                let fd =
                    PathFd::new(&part).map_err(|e| fail(&format!("{}: {e}", part.display())))?;
                let rights = if part.is_dir() {
                    rights
                } else {
                    rights & AccessFs::from_file(abi)
                };
                created = created
                    .add_rule(PathBeneath::new(fd, rights))
                    .map_err(|e| fail(&e))?;
            }
        }
        let fd: Option<OwnedFd> = created.into();
        match fd {
            Some(fd) => Ok(Some(fd)),
            None => Err(RulesetFailed(
                "the kernel created no ruleset (Landlock disappeared since start)".into(),
            )),
        }
    }
}

/// Applies the ruleset `fd` to the calling process: `PR_SET_NO_NEW_PRIVS`, then
/// `landlock_restrict_self`. Meant for the forked child before exec.
///
/// # Safety
/// Called between fork and exec: it allocates nothing, takes no lock and only issues the two
/// system calls on `fd`, which the parent keeps open until the spawn returned.
#[allow(unsafe_code)]
pub unsafe fn restrict_in_child(fd: RawFd) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: landlock_restrict_self(2) takes a ruleset descriptor and flags (0).
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The raw descriptor of a prepared ruleset.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}
