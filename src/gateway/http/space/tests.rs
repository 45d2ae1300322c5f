use super::{decide, Space};

const MIB: u64 = 1 << 20;

/// `decide` with a 64 MiB reserve: (was short, the file systems as (total, free) MiB or
/// unmeasured) → short.
fn check(was_short: bool, spaces: &[Option<(u64, u64)>], expected: bool) {
    let spaces: Vec<Option<Space>> = spaces
        .iter()
        .map(|s| {
            s.map(|(total, free)| Space {
                total: total * MIB,
                free: free * MIB,
            })
        })
        .collect();
    let (short, _) = decide(64 * MIB, was_short, &spaces);
    assert_eq!(short, expected, "was_short={was_short} spaces={spaces:?}");
}

#[test]
fn new_work_waits_for_the_reserve_on_every_file_system() {
    let big = 100_000;
    // Plenty, exactly the reserve, one MiB short.
    check(false, &[Some((big, 1000)), Some((big, 1000))], false);
    check(false, &[Some((big, 64)), Some((big, 1000))], false);
    check(false, &[Some((big, 1000)), Some((big, 63))], true);
    // A file system that cannot be measured counts as full.
    check(false, &[Some((big, 1000)), None], true);
    // A small file system keeps an eighth of itself: 24 MiB keeps 3.
    check(false, &[Some((24, 3)), Some((24, 3))], false);
    check(false, &[Some((24, 2)), Some((24, 3))], true);
    // Once short, work resumes only an eighth above the reserve (72 MiB), so it does not flap.
    check(true, &[Some((big, 70)), Some((big, 1000))], true);
    check(true, &[Some((big, 72)), Some((big, 1000))], false);
}

#[test]
fn the_tightest_file_system_is_reported() {
    let spaces = [
        Some(Space {
            total: 1000 * MIB,
            free: 500 * MIB,
        }),
        Some(Space {
            total: 80 * MIB,
            free: 5 * MIB,
        }),
    ];
    assert_eq!(
        decide(64 * MIB, false, &spaces),
        (true, Some((5 * MIB, 10 * MIB)))
    );
}
