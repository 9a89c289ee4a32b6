//! The results table: each figure beside its baseline, measured in the same run.

use serde::Serialize;

/// One line of the results.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Herald's value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The baseline it is compared with, if any.
    pub baseline: Option<String>,
    /// The baseline's value (same unit).
    pub baseline_value: Option<f64>,
    /// The target, as text (e.g. `>= 0.6 x ceiling`).
    pub target: String,
    /// Whether the target was met (`None` when it is not a comparison we can decide).
    pub met: Option<bool>,
}

impl Figure {
    /// value / baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline_value
            .filter(|b| *b > 0.0)
            .map(|b| self.value / b)
    }
}

/// Renders figures as a Markdown table.
pub fn markdown(figures: &[Figure]) -> String {
    let mut out = String::from("| figure | Herald | baseline | baseline value | ratio | target | met |\n|---|---|---|---|---|---|---|\n");
    for f in figures {
        out.push_str(&format!(
            "| {} | {:.1} {} | {} | {} | {} | {} | {} |\n",
            f.name,
            f.value,
            f.unit,
            f.baseline.as_deref().unwrap_or("–"),
            f.baseline_value
                .map_or("–".into(), |v| format!("{v:.1} {}", f.unit)),
            f.ratio().map_or("–".into(), |r| format!("{r:.2}")),
            f.target,
            match f.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "–",
            }
        ));
    }
    out
}
