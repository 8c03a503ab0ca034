//! Percentiles of one run, medians over runs, and the JSON lines the harness prints.

use serde_json::{Map, Value, json};

/// The figures of one run: name → number.
pub type Figures = Map<String, Value>;

/// The `p`-th percentile (0–100) of `samples` by nearest rank; 0 when there are none.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Rounds to three decimals, so the JSON stays readable.
pub fn round(value: f64) -> Value {
    json!((value * 1000.0).round() / 1000.0)
}

/// For each figure, the median over the runs (the middle run, or the mean of the two
/// middle ones).
pub fn median_of(runs: &[Figures]) -> Figures {
    let mut medians = Figures::new();
    let Some(first) = runs.first() else {
        return medians;
    };
    for key in first.keys() {
        let mut values: Vec<f64> = runs
            .iter()
            .filter_map(|run| run.get(key).and_then(Value::as_f64))
            .collect();
        if values.is_empty() {
            continue;
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        };
        medians.insert(key.clone(), round(median));
    }
    medians
}

/// Prints one JSON line: the figure's name, its parameters and its numbers.
pub fn emit(figure: &str, kind: &str, params: &Value, figures: &Figures) {
    let mut line = Map::new();
    line.insert("figure".into(), json!(figure));
    line.insert("kind".into(), json!(kind));
    if let Value::Object(params) = params {
        line.extend(params.clone());
    }
    line.extend(figures.clone());
    println!("{}", Value::Object(line));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut samples, 50.0), 50.0);
        assert_eq!(percentile(&mut samples, 99.0), 99.0);
        assert_eq!(percentile(&mut samples, 100.0), 100.0);
        assert_eq!(percentile(&mut [7.0], 99.0), 7.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }

    #[test]
    fn the_median_is_taken_per_figure() {
        let runs: Vec<Figures> = [(3.0, 10.0), (1.0, 30.0), (2.0, 20.0)]
            .iter()
            .map(|(a, b)| {
                let mut run = Figures::new();
                run.insert("a".into(), json!(a));
                run.insert("b".into(), json!(b));
                run
            })
            .collect();
        let median = median_of(&runs);
        assert_eq!(median["a"], json!(2.0));
        assert_eq!(median["b"], json!(20.0));
        assert_eq!(median_of(&runs[..2])["a"], json!(2.0));
    }
}
