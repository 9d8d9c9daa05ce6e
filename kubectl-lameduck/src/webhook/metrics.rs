//! The webhook's `/metrics` in the OpenMetrics text format: reviews answered, by result, and how
//! long answering took.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What became of one review; the label value of `result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a patch that injects lameduck.
    Injected,
    /// Allowed unchanged: not opted in, opted out, already injected, or not a pod create.
    Skipped,
    /// Allowed unchanged with a warning: inject refused the pod.
    Refused,
    /// Allowed unchanged with a warning: the webhook's own error.
    Error,
    /// Not a review: answered 400.
    BadRequest,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::BadRequest => "bad_request",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// The registry, built once; counters are shared by every connection.
pub struct Metrics {
    registry: Registry,
    reviews: Family<Labels, Counter>,
    latency: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lameduck_webhook");
        let reviews = Family::<Labels, Counter>::default();
        // 0.1 ms to ~3.3 s: the API server's own timeout (timeoutSeconds: 5) is the upper end.
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "reviews",
            "Admission reviews answered, by result",
            reviews.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "Time from a review's first byte read to its answer",
            latency.clone(),
        );
        Metrics {
            registry,
            reviews,
            latency,
        }
    }

    pub fn observe(&self, outcome: Outcome, seconds: f64) {
        self.reviews
            .get_or_create(&vec![("result", outcome.name())])
            .inc();
        self.latency.observe(seconds);
    }

    /// The exposition for one scrape.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
