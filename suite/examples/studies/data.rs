//! scikit-learn's 8×8 handwritten digits (UCI "Optical Recognition of
//! Handwritten Digits", CC BY 4.0; `examples/data/README.md`), embedded in
//! the binary, scaled to [0, 1] and split with a fixed seed.

use std::error::Error;
use std::io::Read;

use nalgebra::DMatrix;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Pixels per image (8 × 8, row by row).
pub const PIXELS: usize = 64;
/// Side of an image.
pub const SIDE: usize = 8;
/// Number of classes (the digits 0–9).
pub const CLASSES: usize = 10;
/// Images in the set.
pub const IMAGES: usize = 1797;
/// Images held out for testing; the other 1 437 train.
pub const TEST_IMAGES: usize = 360;
/// The seed of the one split every study uses (training seeds vary apart).
pub const SPLIT_SEED: u64 = 0;

/// The file as scikit-learn 1.9.1 ships it.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

/// The trigger of the backdoor study: the 2×2 patch in the top-right
/// corner, rows 0–1 and columns 6–7, as pixel indices.
pub const TRIGGER: [usize; 4] = [6, 7, SIDE + 6, SIDE + 7];

/// Images with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// One image a column, `PIXELS × N`, pixels in [0, 1].
    pub x: DMatrix<f64>,
    /// The digit of each image.
    pub y: Vec<usize>,
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// The images at `index`, in that order.
    pub fn select(&self, index: &[usize]) -> Self {
        Self {
            x: self.x.select_columns(index),
            y: index.iter().map(|&i| self.y[i]).collect(),
        }
    }

    /// The indices of the images whose label is in `classes`, in order.
    pub fn of_classes(&self, classes: &[usize]) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| classes.contains(&self.y[i]))
            .collect()
    }

    /// The images whose label is in `classes`.
    pub fn only(&self, classes: &[usize]) -> Self {
        self.select(&self.of_classes(classes))
    }

    /// Every image with the trigger stamped on it, labels unchanged.
    pub fn triggered(&self) -> Self {
        let mut out = self.clone();
        for mut column in out.x.column_iter_mut() {
            stamp(column.as_mut_slice());
        }
        out
    }

    /// One image a row (`N × PIXELS`), as the library's output metrics
    /// take their inputs.
    pub fn rows(&self) -> DMatrix<f64> {
        self.x.transpose()
    }
}

/// Sets the trigger's pixels of one image to 1 (full brightness).
pub fn stamp(image: &mut [f64]) {
    for &p in &TRIGGER {
        image[p] = 1.0;
    }
}

/// The fixed train / test split.
#[derive(Clone, Debug)]
pub struct Split {
    /// 1 437 training images.
    pub train: Images,
    /// 360 test images.
    pub test: Images,
}

/// Reads the embedded file: every image, pixels divided by 16.
pub fn load() -> Result<Images, Box<dyn Error>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_CSV_GZ).read_to_string(&mut text)?;
    parse(&text)
}

/// Parses the CSV: each row 64 pixel values 0–16, then the label 0–9.
fn parse(text: &str) -> Result<Images, Box<dyn Error>> {
    let mut pixels = Vec::with_capacity(IMAGES * PIXELS);
    let mut y = Vec::with_capacity(IMAGES);
    for (row, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != PIXELS + 1 {
            return Err(format!(
                "digits row {row}: {} fields, expected {}",
                fields.len(),
                PIXELS + 1
            )
            .into());
        }
        for f in &fields[..PIXELS] {
            let v: f64 = f.trim().parse()?;
            if !(0.0..=16.0).contains(&v) {
                return Err(format!("digits row {row}: pixel {v} outside 0–16").into());
            }
            pixels.push(v / 16.0);
        }
        let label: usize = fields[PIXELS].trim().parse()?;
        if label >= CLASSES {
            return Err(format!("digits row {row}: label {label}").into());
        }
        y.push(label);
    }
    let n = y.len();
    Ok(Images {
        x: DMatrix::from_vec(PIXELS, n, pixels),
        y,
    })
}

/// Shuffles the images with `seed` and holds out the first
/// [`TEST_IMAGES`] of the shuffled order; each part keeps the file's order.
pub fn split(images: &Images, seed: u64) -> Split {
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let held = TEST_IMAGES.min(images.len() / 2);
    let (mut test, mut train) = (order[..held].to_vec(), order[held..].to_vec());
    test.sort_unstable();
    train.sort_unstable();
    Split {
        train: images.select(&train),
        test: images.select(&test),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_file_is_the_whole_set() {
        let all = load().unwrap();
        assert_eq!(all.len(), IMAGES);
        assert_eq!(all.x.shape(), (PIXELS, IMAGES));
        let mut counts = [0; CLASSES];
        for &y in &all.y {
            counts[y] += 1;
        }
        // scikit-learn's description: 174 to 183 images of each digit.
        assert!(
            counts.iter().all(|&c| (174..=183).contains(&c)),
            "{counts:?}"
        );
        assert!(all.x.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert_eq!(all.x.max(), 1.0);
        // The file's first row: a 0 whose first pixels are 0, 0, 5, 13.
        assert_eq!(all.y[0], 0);
        assert_eq!(all.x[(3, 0)], 13.0 / 16.0);
    }

    #[test]
    fn the_split_is_a_seeded_partition() {
        let all = load().unwrap();
        let s = split(&all, 0);
        assert_eq!((s.train.len(), s.test.len()), (1437, 360));
        let again = split(&all, 0);
        assert_eq!(s.test, again.test);
        assert_ne!(s.test, split(&all, 1).test);
        // Every image lands in exactly one part.
        let mut columns: Vec<Vec<u64>> = s
            .train
            .x
            .column_iter()
            .chain(s.test.x.column_iter())
            .map(|c| c.iter().map(|v| v.to_bits()).collect())
            .collect();
        let mut reference: Vec<Vec<u64>> = all
            .x
            .column_iter()
            .map(|c| c.iter().map(|v| v.to_bits()).collect())
            .collect();
        columns.sort();
        reference.sort();
        assert_eq!(columns, reference);
    }

    #[test]
    fn the_trigger_is_the_top_right_two_by_two_patch() {
        let mut image = vec![0.0; PIXELS];
        stamp(&mut image);
        for row in 0..SIDE {
            for col in 0..SIDE {
                let lit = row < 2 && col >= SIDE - 2;
                assert_eq!(image[row * SIDE + col], f64::from(u8::from(lit)));
            }
        }
    }
}
