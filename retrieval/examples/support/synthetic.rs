//! Synthetic vectors for the benchmarks, shared by the examples that
//! include this file.
// Each example uses a part of this file.
#![allow(dead_code)]

/// A random unit vector: no structure at all.
pub fn unit(rng: &mut fastrand::Rng, dims: usize) -> Vec<f32> {
    normalized((0..dims).map(|_| rng.f32() * 2.0 - 1.0).collect())
}

pub fn normalized(v: Vec<f32>) -> Vec<f32> {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.into_iter().map(|x| x / n).collect()
}

/// Standard normal by Box-Muller.
fn gauss(rng: &mut fastrand::Rng) -> f32 {
    let u = rng.f32().max(f32::MIN_POSITIVE);
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * rng.f32()).cos()
}

/// Topics in a `LATENT`-dimensional space, projected to `dims`.
pub struct Mixture {
    centers: Vec<Vec<f32>>,
    projection: Vec<Vec<f32>>,
}

const LATENT: usize = 48;

impl Mixture {
    pub fn new(rng: &mut fastrand::Rng, topics: usize, dims: usize) -> Self {
        let centers = (0..topics)
            .map(|_| (0..LATENT).map(|_| gauss(rng)).collect())
            .collect();
        let projection = (0..dims)
            .map(|_| (0..LATENT).map(|_| gauss(rng)).collect())
            .collect();
        Self {
            centers,
            projection,
        }
    }

    pub fn draw(&self, rng: &mut fastrand::Rng) -> Vec<f32> {
        let center = &self.centers[rng.usize(..self.centers.len())];
        let latent: Vec<f32> = center.iter().map(|c| c + 0.6 * gauss(rng)).collect();
        let v = self
            .projection
            .iter()
            .map(|row| row.iter().zip(&latent).map(|(a, b)| a * b).sum::<f32>() + 0.5 * gauss(rng))
            .collect();
        normalized(v)
    }
}
