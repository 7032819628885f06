package mailbox

import "github.com/prometheus/client_golang/prometheus"

// metrics are the mailbox counters, registered on the node's registry.
type metrics struct {
	stored       prometheus.Counter
	fetched      prometheus.Counter
	deleted      prometheus.Counter
	expired      *prometheus.CounterVec // reason: ttl, count
	quotaRefused *prometheus.CounterVec // reason: sender_quota, mailbox_full, too_large
	refused      *prometheus.CounterVec // status of every other refusal
	repaired     prometheus.Counter
	reconciled   *prometheus.CounterVec // kind: envelope, delete
	subsDropped  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "gridchat", Subsystem: "mailbox", Name: name, Help: help})
	}
	v := func(name, help, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gridchat", Subsystem: "mailbox", Name: name, Help: help}, []string{label})
	}
	m := &metrics{
		stored:       c("stored_total", "Envelopes this replica wrote to disk and signed a receipt for."),
		fetched:      c("fetched_total", "Envelopes this replica sent to a device's gateway."),
		deleted:      c("deleted_total", "Envelopes deleted from this replica at the device's request."),
		expired:      v("expired_total", "Envelopes expired on this replica, by reason.", "reason"),
		quotaRefused: v("quota_refused_total", "Puts refused by a size limit or quota, by reason.", "reason"),
		refused:      v("refused_total", "Requests refused for other reasons, by status.", "status"),
		repaired:     c("repaired_total", "Envelopes this replica copied to another replica that lacked them."),
		reconciled:   v("reconciled_total", "Envelopes and deletes this replica took from another replica by anti-entropy.", "kind"),
		subsDropped:  c("subscribers_dropped_total", "Open fetch streams cut because the gateway fell behind."),
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{m.stored, m.fetched, m.deleted, m.expired, m.quotaRefused,
			m.refused, m.repaired, m.reconciled, m.subsDropped} {
			if err := reg.Register(col); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) refusal(err error) {
	switch st := statusOf(err); st {
	case StatusSenderQuota, StatusMailboxFull, StatusTooLarge:
		m.quotaRefused.WithLabelValues(st.String()).Inc()
	default:
		m.refused.WithLabelValues(st.String()).Inc()
	}
}
