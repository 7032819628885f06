package gateway

import "github.com/prometheus/client_golang/prometheus"

type wsMetrics struct {
	conns      prometheus.Gauge
	authed     prometheus.Gauge
	queueDepth prometheus.Gauge
	pending    prometheus.Gauge
	framesIn   prometheus.Counter
	pushes     prometheus.Counter
	acks       prometheus.Counter
	refused    *prometheus.CounterVec
	closed     *prometheus.CounterVec
	dropped    *prometheus.CounterVec
}

func newWSMetrics(reg prometheus.Registerer) (*wsMetrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "gridchat", Subsystem: "ws", Name: name, Help: help}
	}
	m := &wsMetrics{
		conns:      prometheus.NewGauge(prometheus.GaugeOpts(opts("connections", "Open WebSocket connections."))),
		authed:     prometheus.NewGauge(prometheus.GaugeOpts(opts("authenticated_connections", "Authenticated WebSocket connections."))),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts(opts("send_queue_frames", "Frames waiting in all connections' send queues."))),
		pending:    prometheus.NewGauge(prometheus.GaugeOpts(opts("pending_acks", "Envelopes pushed to devices and not yet acknowledged."))),
		framesIn:   prometheus.NewCounter(prometheus.CounterOpts(opts("frames_received_total", "Frames received from clients."))),
		pushes:     prometheus.NewCounter(prometheus.CounterOpts(opts("envelopes_pushed_total", "Envelopes pushed to devices (once per envelope, to all its connections)."))),
		acks:       prometheus.NewCounter(prometheus.CounterOpts(opts("acks_total", "Acknowledgements received from devices."))),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts(opts("refused_total",
			"Requests answered with an error frame, by reason.")), []string{"reason"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts(opts("closed_total",
			"Connections closed by the gateway or the client, by reason.")), []string{"reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts(opts("dropped_total",
			"Envelopes not pushed, by reason.")), []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.conns, m.authed, m.queueDepth, m.pending, m.framesIn, m.pushes, m.acks, m.refused, m.closed, m.dropped} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
