//! The `kafclaw` binary: everything happens in [`kafclaw::main_with`].

#![forbid(unsafe_code)]

fn main() {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    // Before any thread exists: glibc malloc with two arenas and a fixed trim threshold, so
    // RSS follows the live heap under a long flood (kafclaw_actors::heap; issue 20).
    kafclaw_actors::heap::tune(env.keys());
    // Every file and directory this process (or a library it uses, such as sled) creates is
    // private from the moment it exists: 0600/0700, never world-readable for an instant.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let code = kafclaw::main_with(std::env::args().collect(), env);
    std::process::exit(code);
}
