//! What the fuzz targets share.

use arbitrary::{Arbitrary, Unstructured};

/// Runs one fuzz input in the mode its first byte picks: even = `raw` on the bytes that follow
/// (what the seed corpus holds: real bodies, lines and files), odd = `structured` on an input
/// built from them (skipped when they do not make one).
pub fn two_modes<'a, I: Arbitrary<'a>>(
    data: &'a [u8],
    raw: impl FnOnce(&'a [u8]),
    structured: impl FnOnce(I),
) {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => raw(rest),
        Some((_, rest)) => {
            if let Ok(input) = I::arbitrary_take_rest(Unstructured::new(rest)) {
                structured(input);
            }
        }
        None => {}
    }
}
