//! SVG plots (feature `plot`, plotters): posterior densities, and a simulation's traffic
//! shares and conversions lost per day for both designs.

use std::path::Path;

use plotters::prelude::*;
use statrs::distribution::{Beta as BetaDist, Continuous};

use crate::arms::{Arm, Prior};
use crate::error::{Error, Result};
use crate::simulate::Simulation;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |message| Error::Plot {
        path: path.display().to_string(),
        message,
    }
}

/// Draws every arm's posterior density of its rate into an SVG file.
///
/// # Errors
/// Invalid posteriors or a file that cannot be written.
pub fn posteriors(arms: &[Arm], prior: Prior, path: &Path) -> Result<()> {
    let e = err(path);
    let dists = arms
        .iter()
        .map(|a| {
            let p = a.posterior(prior);
            BetaDist::new(p.alpha, p.beta)
                .map(|d| (a.label.clone(), p, d))
                .map_err(|x| e(x.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let lo = dists
        .iter()
        .map(|(_, p, _)| p.mean() - 5.0 * p.sd())
        .fold(1.0, f64::min)
        .max(0.0);
    let hi = dists
        .iter()
        .map(|(_, p, _)| p.mean() + 5.0 * p.sd())
        .fold(0.0, f64::max)
        .min(1.0);
    let xs: Vec<f64> = (0..=400)
        .map(|i| lo + (hi - lo) * f64::from(i) / 400.0)
        .collect();
    let curves: Vec<Vec<(f64, f64)>> = dists
        .iter()
        .map(|(_, _, d)| xs.iter().map(|&x| (x, d.pdf(x))).collect())
        .collect();
    let ymax = curves
        .iter()
        .flatten()
        .map(|p| p.1)
        .filter(|y| y.is_finite())
        .fold(0.0, f64::max)
        * 1.05;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Posterior densities of the conversion rates",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(lo..hi, 0.0..ymax.max(1e-9))
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("rate")
        .y_desc("density")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, ((label, _, _), curve)) in dists.iter().zip(curves).enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(curve, color.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Draws a simulation into an SVG file: each arm's mean traffic share per day for the bandit
/// and for the classical test, and the mean cumulative conversions lost per day for both.
///
/// # Errors
/// A file that cannot be written.
pub fn simulation(sim: &Simulation, path: &Path) -> Result<()> {
    let e = err(path);
    let days = sim.bandit.daily_share.len();
    let root = SVGBackend::new(path, (900, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let panels = root.split_evenly((3, 1));
    let rates: Vec<String> = sim
        .config
        .rates
        .iter()
        .map(|r| format!("{:.1}%", r * 100.0))
        .collect();
    for (panel, (title, design)) in panels.iter().zip([
        ("Bandit: traffic share per day", &sim.bandit),
        ("Fixed-horizon test: traffic share per day", &sim.classical),
    ]) {
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d(0..days, 0.0..1.0)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("day")
            .y_desc("share")
            .draw()
            .map_err(|x| e(x.to_string()))?;
        for (arm, rate) in rates.iter().enumerate() {
            let color = COLORS[arm % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    design
                        .daily_share
                        .iter()
                        .enumerate()
                        .map(|(d, s)| (d, s[arm])),
                    color.stroke_width(2),
                ))
                .map_err(|x| e(x.to_string()))?
                .label(format!("arm {arm} ({rate})"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(x.to_string()))?;
    }
    let ymax = sim
        .bandit
        .daily_lost
        .iter()
        .chain(&sim.classical.daily_lost)
        .copied()
        .fold(0.0, f64::max)
        * 1.05;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption("Cumulative conversions lost (mean)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(44)
        .build_cartesian_2d(0..days, 0.0..ymax.max(1.0))
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("day")
        .y_desc("conversions")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, (name, design)) in [("bandit", &sim.bandit), ("fixed horizon", &sim.classical)]
        .into_iter()
        .enumerate()
    {
        let color = COLORS[i];
        chart
            .draw_series(LineSeries::new(
                design.daily_lost.iter().copied().enumerate(),
                color.stroke_width(2),
            ))
            .map_err(|x| e(x.to_string()))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}
