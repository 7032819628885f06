package relay

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iagon/gridchat/wire"
)

type metrics struct {
	sent      prometheus.Counter
	delivered prometheus.Counter
	stored    prometheus.Counter
	offline   prometheus.Counter
	failed    *prometheus.CounterVec
	fallback  *prometheus.CounterVec
	retried   *prometheus.CounterVec
	copies    *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	inbound   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{Name: "gridchat_relay_sent_total",
			Help: "Envelopes dispatched, one per recipient device."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "gridchat_relay_delivered_total",
			Help: "Envelopes acknowledged by the recipient device."}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{Name: "gridchat_relay_stored_total",
			Help: "Envelopes handed to a mailbox."}),
		offline: prometheus.NewCounter(prometheus.CounterOpts{Name: "gridchat_relay_offline_total",
			Help: "Envelopes for devices that were offline with no mailbox service."}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gridchat_relay_failed_total",
			Help: "Envelopes that failed, by reason."}, []string{"reason"}),
		fallback: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gridchat_relay_mailbox_fallback_total",
			Help: "Envelopes handed to a mailbox after their live delivery failed, by the failure's reason."},
			[]string{"reason"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gridchat_relay_gateway_retries_total",
			Help: "Envelopes tried on another gateway of a device connected to several, by why the previous one failed."},
			[]string{"reason"}),
		copies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gridchat_relay_mailbox_copies_total",
			Help: "Envelopes delivered through a gateway named only by a superseded presence record and also put in the mailbox, by result (stored, failed)."},
			[]string{"result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gridchat_relay_dropped_total",
			Help: "Deliver frames or streams dropped, by reason."}, []string{"reason"}),
		inbound: prometheus.NewCounter(prometheus.CounterOpts{Name: "gridchat_relay_inbound_total",
			Help: "Envelopes received from other nodes over the deliver protocol."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sent, m.delivered, m.stored, m.offline, m.failed, m.fallback, m.retried, m.copies, m.dropped, m.inbound} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(o Outcome) {
	switch o.Status {
	case wire.StatusDelivered:
		m.delivered.Inc()
	case wire.StatusStored:
		m.stored.Inc()
	case wire.StatusOffline:
		m.offline.Inc()
	default:
		m.failed.WithLabelValues(o.Reason).Inc()
	}
}
