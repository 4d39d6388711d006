//! The housekeeping job: its rounds and what they deleted.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::store::{PruneOutcome, StoreResult};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoundLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Default)]
pub struct HousekeepingMetrics {
    rounds: Family<RoundLabels, Counter>,
    pruned: Family<KindLabels, Counter>,
}

impl HousekeepingMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "housekeeping_rounds",
            "Housekeeping rounds, by outcome: pruned, skipped (another instance ran it) or failed",
            self.rounds.clone(),
        );
        registry.register(
            "housekeeping_pruned_rows",
            "Rows housekeeping deleted, by kind",
            self.pruned.clone(),
        );
    }

    /// Counts a round and what it deleted.
    pub fn round(&self, outcome: &StoreResult<PruneOutcome>) {
        let label = match outcome {
            Ok(PruneOutcome::Pruned(report)) => {
                for (kind, rows) in report.counts() {
                    self.pruned
                        .get_or_create(&KindLabels { kind: kind.name() })
                        .inc_by(rows);
                }
                "pruned"
            }
            Ok(PruneOutcome::Skipped) => "skipped",
            Err(_) => "failed",
        };
        self.rounds
            .get_or_create(&RoundLabels { outcome: label })
            .inc();
    }
}
