//! `--outputs LIST`: the output selection `Q` of SPEC §2 on the command
//! line, one class's logit or several.
//!
//! A list is comma-separated 0-based indices and inclusive ranges:
//! `9`, `3,9`, `0-4,9`. It is parsed before any model is read and checked
//! against the models' output width once they are ([`OutputList::resolve`]),
//! so that a range is never expanded beyond the outputs that exist.

use std::fmt;

use tensor_similarity::Error;

/// An output selection as given: indices and inclusive ranges, none listed
/// twice, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputList {
    /// Inclusive ranges `(first, last)`; an index is `(i, i)`.
    ranges: Vec<(usize, usize)>,
}

impl OutputList {
    /// Parses `9`, `3,9` or `0-4,9` (spaces around items allowed): clap's
    /// value parser for `--outputs`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let index = |s: &str| {
            s.trim().parse::<usize>().map_err(|_| {
                format!(
                    "{:?} is not an output index (0-based, e.g. 9; a list 3,9; a range 0-4)",
                    s.trim()
                )
            })
        };
        let mut ranges = Vec::new();
        for item in text.split(',') {
            if item.trim().is_empty() {
                return Err(format!(
                    "{text:?}: an empty item (give indices separated by commas, e.g. 3,9)"
                ));
            }
            let range = match item.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (index(first)?, index(last)?);
                    if first > last {
                        return Err(format!(
                            "{}: a range goes up, first-last inclusive (e.g. {last}-{first})",
                            item.trim()
                        ));
                    }
                    (first, last)
                }
                None => {
                    let i = index(item)?;
                    (i, i)
                }
            };
            ranges.push(range);
        }
        let mut sorted = ranges.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[1].0 <= w[0].1) {
            return Err(format!(
                "output {} is listed twice (each output counts once)",
                w[1].0
            ));
        }
        Ok(Self { ranges })
    }

    /// The indices, checked against the models' `width` outputs: an
    /// [`Error::InvalidOption`] naming the first index that does not exist
    /// and the width.
    pub fn resolve(&self, width: usize) -> Result<Vec<usize>, Error> {
        if let Some(&(first, last)) = self.ranges.iter().find(|&&(_, last)| last >= width) {
            let missing = first.max(width);
            let within = if first == last {
                String::new()
            } else {
                format!(" (in the range {first}-{last})")
            };
            return Err(Error::InvalidOption {
                what: "--outputs",
                reason: format!(
                    "output {missing}{within} does not exist: the models have {width} output{} \
                     (indices 0 to {})",
                    if width == 1 { "" } else { "s" },
                    width.saturating_sub(1)
                ),
            });
        }
        Ok(self.ranges.iter().flat_map(|&(a, b)| a..=b).collect())
    }

    /// The items as a title shows them: `[9]`, `[3, 9]`, `[0-4, 9]`.
    pub fn bracketed(&self) -> String {
        format!("[{}]", self.items().join(", "))
    }

    /// The items separated by spaces (`3 9`, `0-4 9`), for the CSV's corner
    /// cell, which holds no comma.
    pub fn spaced(&self) -> String {
        self.items().join(" ")
    }

    fn items(&self) -> Vec<String> {
        self.ranges
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect()
    }
}

impl fmt::Display for OutputList {
    /// As the command line writes it: `3,9`, `0-4,9`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.items().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::OutputList;

    #[test]
    fn lists_ranges_and_their_errors() {
        let list = OutputList::parse("3, 9").unwrap();
        assert_eq!(list.resolve(10).unwrap(), [3, 9]);
        assert_eq!(list.to_string(), "3,9");
        assert_eq!(list.bracketed(), "[3, 9]");
        assert_eq!(list.spaced(), "3 9");
        let ranged = OutputList::parse("7,0-2").unwrap();
        assert_eq!(ranged.resolve(8).unwrap(), [7, 0, 1, 2]);
        assert_eq!(ranged.bracketed(), "[7, 0-2]");
        for bad in ["", "3,", "x", "-1", "3-1", "1-", "2,2", "0-4,3", "1.5"] {
            assert!(OutputList::parse(bad).is_err(), "{bad:?}");
        }
        let e = OutputList::parse("9").unwrap().resolve(3).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("--outputs") && text.contains("output 9") && text.contains("3 outputs"),
            "{text}"
        );
        // A range is not expanded past the width: the first missing index is named.
        let e = OutputList::parse("1-18446744073709551615")
            .unwrap()
            .resolve(4)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("output 4 (in the range 1-18446744073709551615)"),
            "{e}"
        );
    }
}
