//! Progress bars on stderr (hidden in tests).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps named `prefix`, or a hidden one.
pub fn bar(len: usize, prefix: &'static str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64).with_prefix(prefix);
    // The template is a literal; a typo would show up on the first run.
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}
