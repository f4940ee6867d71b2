//! The recorder in front of Prometheus's: it adds `tenant="<id>"` to what a tenant's
//! work records, from the scope the work runs in ([`crate::tasks`]), so no call site
//! has to name its tenant.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Mutex;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};

use super::{MIXED, PROCESS};

/// The label's name.
const TENANT: &str = "tenant";

/// `inner`, with the `tenant` label added to every key but the process's.
pub struct TenantLabels<R> {
    inner: R,
    /// Names of tenants' metrics recorded outside any tenant's scope, already logged.
    unscoped: Mutex<HashSet<String>>,
}

impl<R> TenantLabels<R> {
    pub fn new(inner: R) -> TenantLabels<R> {
        TenantLabels {
            inner,
            unscoped: Mutex::default(),
        }
    }

    /// `key` as it is recorded: with the current task's tenant, unless it is the
    /// process's or names its tenant itself.
    fn labelled<'k>(&self, key: &'k Key) -> Cow<'k, Key> {
        let name = key.name();
        if PROCESS.contains(&name) || key.labels().any(|label| label.key() == TENANT) {
            return Cow::Borrowed(key);
        }
        match crate::tasks::current_tenant() {
            Some(tenant) => Cow::Owned(
                key.with_extra_labels(vec![Label::new(TENANT, SharedString::from(tenant))]),
            ),
            None => {
                if !MIXED.contains(&name) {
                    self.note_unscoped(name);
                }
                Cow::Borrowed(key)
            }
        }
    }

    /// Logs, once per name, a tenant's metric recorded where no tenant is known: a
    /// task spawned around [`crate::tasks`], most likely.
    fn note_unscoped(&self, name: &str) {
        let mut unscoped = self.unscoped.lock().expect("not poisoned");
        if !unscoped.contains(name) {
            unscoped.insert(name.to_owned());
            tracing::warn!(
                metric = name,
                "a tenant's metric was recorded outside any tenant's scope; its series has \
                 no tenant label"
            );
        }
    }
}

impl<R: Recorder> Recorder for TenantLabels<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(&self.labelled(key), metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(&self.labelled(key), metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.inner.register_histogram(&self.labelled(key), metadata)
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusHandle;

    use super::*;
    use crate::tasks::sync_in_tenant;
    use crate::telemetry::names::{
        API_REFUSALS_TOTAL, FAILOVER_SECONDS, HTTP_ACCEPT_ERRORS_TOTAL, TENANT_LEADER,
        TRANSITIONS_TOTAL, WEBHOOK_QUEUE_DEPTH,
    };

    /// What `record` leaves in a recorder of its own, as `/metrics` would show it.
    fn rendered(record: impl FnOnce()) -> (PrometheusHandle, String) {
        let prometheus = crate::telemetry::prometheus().build_recorder();
        let handle = prometheus.handle();
        let recorder = TenantLabels::new(prometheus);
        metrics::with_local_recorder(&recorder, record);
        let text = handle.render();
        (handle, text)
    }

    #[test]
    fn a_tenants_work_is_labelled_with_its_tenant_and_the_processs_is_not() {
        let alpha = "alpha".parse().unwrap();
        let (_, text) = rendered(|| {
            sync_in_tenant(&alpha, || {
                metrics::counter!(TRANSITIONS_TOTAL, "outcome" => "succeeded").increment(2);
                metrics::gauge!(WEBHOOK_QUEUE_DEPTH).set(3.0);
                metrics::counter!(HTTP_ACCEPT_ERRORS_TOTAL).increment(1);
            });
            metrics::counter!(API_REFUSALS_TOTAL, "reason" => "host").increment(1);
        });
        for line in [
            format!(r#"{TRANSITIONS_TOTAL}{{outcome="succeeded",tenant="alpha"}} 2"#),
            format!(r#"{WEBHOOK_QUEUE_DEPTH}{{tenant="alpha"}} 3"#),
            format!("{HTTP_ACCEPT_ERRORS_TOTAL} 1"),
            format!(r#"{API_REFUSALS_TOTAL}{{reason="host"}} 1"#),
        ] {
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn a_distribution_is_a_histogram_of_the_fixed_buckets_not_a_summary() {
        let alpha = "alpha".parse().unwrap();
        let (_, text) = rendered(|| {
            sync_in_tenant(&alpha, || {
                for seconds in [0.003, 0.7, 2.0, 45.0, 900.0] {
                    metrics::histogram!(FAILOVER_SECONDS).record(seconds);
                }
            });
        });
        let bucket = |le: &str| {
            let series = format!("wfmd_failover_seconds_bucket{{tenant=\"alpha\",le=\"{le}\"}} ");
            let line = text.lines().find(|line| line.starts_with(&series));
            line.map(|line| line[series.len()..].to_owned())
        };
        // Cumulative: how many took at most each bound.
        assert_eq!(bucket("0.005").as_deref(), Some("1"), "{text}");
        assert_eq!(bucket("1").as_deref(), Some("2"), "{text}");
        assert_eq!(bucket("2.5").as_deref(), Some("3"), "{text}");
        assert_eq!(bucket("60").as_deref(), Some("4"), "{text}");
        assert_eq!(bucket("300").as_deref(), Some("4"), "{text}");
        assert_eq!(bucket("+Inf").as_deref(), Some("5"), "{text}");
        assert_eq!(
            text.lines()
                .filter(|line| line.starts_with("wfmd_failover_seconds_bucket"))
                .count(),
            crate::telemetry::HISTOGRAM_BUCKETS.len() + 1,
            "{text}"
        );
        assert!(!text.contains("quantile"), "no summary: {text}");
        assert!(
            text.contains("wfmd_failover_seconds_count{tenant=\"alpha\"} 5"),
            "{text}"
        );
    }

    #[test]
    fn a_series_that_names_its_tenant_keeps_that_one() {
        let alpha = "alpha".parse().unwrap();
        let (_, text) = rendered(|| {
            sync_in_tenant(&alpha, || {
                metrics::gauge!(TENANT_LEADER, "tenant" => "beta").set(1.0);
            });
        });
        assert!(
            text.contains(&format!(r#"{TENANT_LEADER}{{tenant="beta"}} 1"#)),
            "{text}"
        );
        assert!(!text.contains("alpha"), "{text}");
    }
}
