package keyregistry

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	refusals        *prometheus.CounterVec // by reason
	accepted        *prometheus.CounterVec // by op
	lookups         *prometheus.CounterVec // by source: cache, dht
	badAnswers      *prometheus.CounterVec // DHT answers caught: invalid, superseded, released (a claim its account has left)
	staleRefused    *prometheus.CounterVec // by source and kind: rollback, fork
	gossip          *prometheus.CounterVec // announcements by result
	publishFailures prometheus.Counter
	republished     prometheus.Counter
	namesLost       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gridchat_directory_refusals_total", Help: "Directory requests refused, by reason.",
		}, []string{"reason"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gridchat_directory_accepted_total", Help: "Directory updates accepted, by operation.",
		}, []string{"op"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gridchat_directory_lookups_total", Help: "Directory lookups, by source.",
		}, []string{"source"}),
		badAnswers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gridchat_directory_bad_answers_total", Help: "DHT answers that were invalid or stale.",
		}, []string{"kind"}),
		staleRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gridchat_directory_stale_refused_total", Help: "Rollbacks and forks refused by the cache.",
		}, []string{"source", "kind"}),
		gossip: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gridchat_directory_announcements_total", Help: "Directory announcements received, by result.",
		}, []string{"result"}),
		publishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gridchat_directory_publish_failures_total", Help: "Statements the log refused or could not take.",
		}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gridchat_directory_republished_total", Help: "Held records stored again.",
		}),
		namesLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gridchat_directory_username_lost_total", Help: "Held records not stored under their username because another account's claim comes first.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.refusals, m.accepted, m.lookups, m.badAnswers, m.staleRefused, m.gossip, m.publishFailures, m.republished, m.namesLost} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
