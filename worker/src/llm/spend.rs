//! What the model costs: tokens per model and kind, and, when prices are configured,
//! money. Counted for every reply that reports usage, a reply whose content turned out
//! unusable included: the provider bills those tokens all the same.
//!
//! The `model` label is the configured `LLM_MODEL`, never the name in the provider's
//! reply: a label must come from a bounded set, and a reply can say anything.

use metrics::{counter, gauge};

/// Prices per million tokens, in whatever currency the operator reads them in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prices {
    pub prompt_per_million: Option<f64>,
    pub completion_per_million: Option<f64>,
}

impl Prices {
    /// What `prompt` and `completion` tokens cost; `None` when no price is set.
    pub fn cost(&self, prompt: u32, completion: u32) -> Option<f64> {
        if self.prompt_per_million.is_none() && self.completion_per_million.is_none() {
            return None;
        }
        let part = |price: Option<f64>, tokens: u32| price.unwrap_or(0.0) * f64::from(tokens) / 1e6;
        Some(part(self.prompt_per_million, prompt) + part(self.completion_per_million, completion))
    }
}

/// Counts one reply's tokens (`llm_tokens_total{model,kind}`) and their cost
/// (`llm_cost_total{model}`, only with prices).
pub fn record(model: &str, prices: &Prices, prompt: u32, completion: u32) {
    let model = model.to_owned();
    counter!("llm_tokens_total", "model" => model.clone(), "kind" => "prompt")
        .increment(u64::from(prompt));
    counter!("llm_tokens_total", "model" => model.clone(), "kind" => "completion")
        .increment(u64::from(completion));
    if let Some(cost) = prices.cost(prompt, completion) {
        // A gauge that only grows: the metrics facade's counters take whole numbers,
        // and a cost is a fraction. Read it with increase(), as a counter.
        gauge!("llm_cost_total", "model" => model).increment(cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_tokens_times_price_per_million_and_none_without_prices() {
        let prices = Prices {
            prompt_per_million: Some(0.15),
            completion_per_million: Some(0.60),
        };
        let cost = prices.cost(1_000_000, 500_000).expect("priced");
        assert!((cost - 0.45).abs() < 1e-12, "{cost}");
        let prompt_only = Prices {
            prompt_per_million: Some(2.0),
            completion_per_million: None,
        };
        assert_eq!(prompt_only.cost(500_000, 1_000), Some(1.0));
        assert_eq!(Prices::default().cost(1_000, 1_000), None);
    }
}
