//! The `kafclaw` binary: everything happens in [`kafclaw::main_with`].

#![forbid(unsafe_code)]

fn main() {
    // Every file and directory this process (or a library it uses, such as sled) creates is
    // private from the moment it exists: 0600/0700, never world-readable for an instant.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let code = kafclaw::main_with(std::env::args().collect(), std::env::vars().collect());
    std::process::exit(code);
}
