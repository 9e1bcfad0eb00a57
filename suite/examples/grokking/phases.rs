//! The phases of a grokking run, read off the training curves.

use crate::train::CurvePoint;

/// Training accuracy at which the training set counts as memorised.
pub const MEMORISED: f64 = 0.99;
/// Held-out accuracy at which the network counts as generalising (chance is `1/P`).
pub const ONSET: f64 = 0.10;
/// Held-out accuracy at which the network counts as having grokked.
pub const GROKKED: f64 = 0.95;

/// One phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Training accuracy climbs to 99%; held-out stays at chance.
    Memorise,
    /// Training set memorised, held-out accuracy still below 10%.
    Plateau,
    /// Held-out accuracy climbs from 10% to 95%.
    Grok,
    /// Held-out accuracy at or above 95%.
    Generalised,
}

impl Phase {
    /// A short label for the figure.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Memorise => "memorise",
            Phase::Plateau => "plateau",
            Phase::Grok => "grok",
            Phase::Generalised => "generalised",
        }
    }
}

/// The first step at which each threshold is reached; `None` where the run
/// never reached it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// First step with training accuracy ≥ [`MEMORISED`].
    pub memorised: Option<usize>,
    /// First step after that with held-out accuracy ≥ [`ONSET`].
    pub onset: Option<usize>,
    /// First step after that with held-out accuracy ≥ [`GROKKED`].
    pub grokked: Option<usize>,
}

impl Phases {
    /// Reads the boundaries off `curves` (sorted by step).
    pub fn detect(curves: &[CurvePoint]) -> Self {
        let first = |from: usize, hit: &dyn Fn(&CurvePoint) -> bool| {
            curves
                .iter()
                .find(|c| c.step >= from && hit(c))
                .map(|c| c.step)
        };
        let memorised = first(0, &|c| c.train.accuracy >= MEMORISED);
        let onset = memorised.and_then(|m| first(m, &|c| c.test.accuracy >= ONSET));
        let grokked = onset.and_then(|o| first(o, &|c| c.test.accuracy >= GROKKED));
        Self {
            memorised,
            onset,
            grokked,
        }
    }

    /// The boundaries that were reached, in order.
    pub fn boundaries(&self) -> Vec<usize> {
        [self.memorised, self.onset, self.grokked]
            .into_iter()
            .flatten()
            .collect()
    }

    /// `(phase, first step, end step)` for each phase the run entered, up to `last`.
    pub fn bands(&self, last: usize) -> Vec<(Phase, usize, usize)> {
        let phases = [
            Phase::Memorise,
            Phase::Plateau,
            Phase::Grok,
            Phase::Generalised,
        ];
        let mut starts = vec![0];
        starts.extend(self.boundaries());
        starts
            .iter()
            .enumerate()
            .map(|(k, &s)| (phases[k], s, starts.get(k + 1).copied().unwrap_or(last)))
            .collect()
    }
}
