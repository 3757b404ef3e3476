//! `bayes-bandit`: P(best) and value remaining for 10 arms x 100 000 draws (target < 50 ms on
//! one core), beside the cost of sampling the same Beta variates alone (the limit: as the
//! analysis draws them, X / (X + Y) of two Gammas; `rand_distr::Beta` for comparison), and
//! the exact integration for 2, 3 and 10 arms.
//!
//! Run: `cargo bench -p benches --bench bandit`.

use std::hint::black_box;

use bayes_bandit::{Arm, Evaluator, Prior, exact_p_best};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Beta, Distribution, Gamma};

fn arms(k: usize) -> Vec<Arm> {
    (0..k)
        .map(|i| Arm::new(format!("a{i}"), 400.0 + 7.0 * i as f64, 10_000.0))
        .collect()
}

fn bench(c: &mut Criterion) {
    let ten = arms(10);
    let mut g = c.benchmark_group("bandit");
    g.sample_size(20);
    let mut evaluator = Evaluator::new();
    g.bench_function("analyze 10 arms x 100k draws", |b| {
        b.iter(|| {
            evaluator
                .analyze(black_box(&ten), Prior::default(), 100_000, 1)
                .unwrap()
        })
    });
    let samplers: Vec<Beta<f64>> = ten
        .iter()
        .map(|a| {
            let p = a.posterior(Prior::default());
            Beta::new(p.alpha, p.beta).unwrap()
        })
        .collect();
    g.bench_function("rand_distr Beta sampling, 10 x 100k", |b| {
        b.iter(|| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
            let mut sum = 0.0;
            for _ in 0..100_000 {
                for s in &samplers {
                    sum += s.sample(&mut rng);
                }
            }
            black_box(sum)
        })
    });
    let gammas: Vec<(Gamma<f64>, Gamma<f64>)> = ten
        .iter()
        .map(|a| {
            let p = a.posterior(Prior::default());
            (
                Gamma::new(p.alpha, 1.0).unwrap(),
                Gamma::new(p.beta, 1.0).unwrap(),
            )
        })
        .collect();
    g.bench_function("the limit: beta as two gammas alone, 10 x 100k", |b| {
        b.iter(|| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
            let mut sum = 0.0;
            for _ in 0..100_000 {
                for (x, y) in &gammas {
                    let x = x.sample(&mut rng);
                    sum += x / (x + y.sample(&mut rng));
                }
            }
            black_box(sum)
        })
    });
    for k in [2, 3, 10] {
        let a = arms(k);
        g.bench_function(format!("exact P(best), {k} arms"), |b| {
            b.iter(|| exact_p_best(black_box(&a), Prior::default()).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
