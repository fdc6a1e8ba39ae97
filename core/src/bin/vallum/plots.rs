//! SVG plots for `vallum eval --plots DIR`: ROC curves and score histograms per source.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

/// ROC points (FPR, TPR) for scored examples, threshold swept from high to low.
pub fn roc(scores: &[(f32, bool)]) -> Vec<(f64, f64)> {
    let pos = scores.iter().filter(|s| s.1).count().max(1) as f64;
    let neg = scores.iter().filter(|s| !s.1).count().max(1) as f64;
    let mut v = scores.to_vec();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut pts = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            if v[j].1 {
                tp += 1.0
            } else {
                fp += 1.0
            }
            j += 1;
        }
        pts.push((fp / neg, tp / pos));
        i = j;
    }
    pts
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes `roc.svg` (overall and per source; a source with only one class is plotted against
/// all negatives or all positives of the run) and `hist-<source>.svg` into `dir`.
pub fn write(dir: &Path, all: &[(f32, bool)], per_source: &BTreeMap<String, Vec<(f32, bool)>>) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut written = Vec::new();
    let negatives: Vec<(f32, bool)> = all.iter().filter(|s| !s.1).copied().collect();
    let positives: Vec<(f32, bool)> = all.iter().filter(|s| s.1).copied().collect();
    let roc_path = dir.join("roc.svg");
    {
        let root = SVGBackend::new(&roc_path, (900, 700)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("ROC (final score)", ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(err)?;
        chart.configure_mesh().x_desc("false-positive rate").y_desc("true-positive rate").draw().map_err(err)?;
        chart
            .draw_series(LineSeries::new(roc(all), BLACK.stroke_width(3)))
            .map_err(err)?
            .label("overall")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        for (i, (name, s)) in per_source.iter().enumerate() {
            let has_pos = s.iter().any(|x| x.1);
            let has_neg = s.iter().any(|x| !x.1);
            let mut pts = s.clone();
            if has_pos && !has_neg {
                pts.extend_from_slice(&negatives);
            } else if has_neg && !has_pos {
                pts.extend_from_slice(&positives);
            }
            let color = Palette99::pick(i).mix(0.8);
            chart
                .draw_series(LineSeries::new(roc(&pts), color.stroke_width(1)))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).label_font(("sans-serif", 11)).draw().map_err(err)?;
        root.present().map_err(err)?;
    }
    written.push(roc_path.display().to_string());
    for (name, s) in per_source {
        let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
        let path = dir.join(format!("hist-{safe}.svg"));
        let bins = 20usize;
        let mut neg = vec![0u32; bins];
        let mut pos = vec![0u32; bins];
        for (sc, l) in s {
            let b = ((sc.clamp(0.0, 1.0) * bins as f32) as usize).min(bins - 1);
            if *l {
                pos[b] += 1
            } else {
                neg[b] += 1
            }
        }
        let ymax = neg.iter().chain(pos.iter()).copied().max().unwrap_or(1).max(1);
        let root = SVGBackend::new(&path, (700, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{name}: final score (blue benign, red injection)"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0u32..ymax + ymax / 10 + 1)
            .map_err(err)?;
        chart.configure_mesh().x_desc("score").y_desc("count").draw().map_err(err)?;
        let w = 1.0 / bins as f64;
        for (counts, color, off) in [(&neg, BLUE.mix(0.6), 0.0), (&pos, RED.mix(0.6), w / 2.0)] {
            chart
                .draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(b, c)| {
                    let x0 = b as f64 * w + off;
                    Rectangle::new([(x0, 0u32), (x0 + w / 2.0, *c)], color.filled())
                }))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
        written.push(path.display().to_string());
    }
    Ok(written)
}
