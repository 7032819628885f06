package keyregistry_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"

	"github.com/iagon/gridchat/internal/gridtest"
	"github.com/iagon/gridchat/keyregistry"
)

// anyValidator accepts every value: the namespace of the benchmark's tiny
// baseline records.
type anyValidator struct{}

func (anyValidator) Validate(string, []byte) error        { return nil }
func (anyValidator) Select(string, [][]byte) (int, error) { return 0, nil }

// BenchmarkLookupByAccountID measures lookups by account ID in a 20-node
// swarm: cold (cache emptied: DHT search with quorum, then a full chain
// replay) and warm (cache hit), against a raw DHT GetValue of a 16-byte
// record with the same quorum, measured in the same run. It reports p50 and
// p95 of each and their ratios to the raw GetValue.
func BenchmarkLookupByAccountID(b *testing.B) {
	g := newGrid(b, 20, gridtest.Validators(map[string]record.Validator{"bench": anyValidator{}}), gridtest.FormTimeout(60*time.Second))
	const accounts = 8
	var users []*user
	for i := range accounts {
		u, _ := g.register(i%len(g.nodes), fmt.Sprintf("conn-%d", i))
		g.link(u)
		g.mustSubmit(i%len(g.nodes), u)
		users = append(users, u)
		if err := g.nodes[i%len(g.nodes)].DHT().PutValue(ctxT(b), fmt.Sprintf("/bench/%d", i), []byte("0123456789abcdef")); err != nil {
			b.Fatal(err)
		}
	}
	var raw, cold, warm []time.Duration
	ctx := context.Background()
	i := 0
	for b.Loop() {
		u := users[i%accounts]
		nd := g.nodes[(i*7+3)%len(g.nodes)]
		i++

		t0 := time.Now()
		if _, err := nd.DHT().GetValue(ctx, fmt.Sprintf("/bench/%d", (i-1)%accounts), kaddht.Quorum(keyregistry.DefaultLimits().LookupQuorum)); err != nil {
			b.Fatal(err)
		}
		raw = append(raw, time.Since(t0))

		nd.Directory().Forget()
		t0 = time.Now()
		if _, err := nd.Directory().LookupAccount(ctx, u.id); err != nil {
			b.Fatal(err)
		}
		cold = append(cold, time.Since(t0))

		t0 = time.Now()
		if _, err := nd.Directory().LookupAccount(ctx, u.id); err != nil {
			b.Fatal(err)
		}
		warm = append(warm, time.Since(t0))
	}
	rp50, rp95 := percentiles(raw)
	cp50, cp95 := percentiles(cold)
	wp50, wp95 := percentiles(warm)
	b.ReportMetric(float64(rp50.Microseconds()), "raw-p50-µs")
	b.ReportMetric(float64(rp95.Microseconds()), "raw-p95-µs")
	b.ReportMetric(float64(cp50.Microseconds()), "cold-p50-µs")
	b.ReportMetric(float64(cp95.Microseconds()), "cold-p95-µs")
	b.ReportMetric(float64(wp50.Nanoseconds()), "warm-p50-ns")
	b.ReportMetric(float64(wp95.Nanoseconds()), "warm-p95-ns")
	b.ReportMetric(float64(cp50)/float64(rp50), "cold/raw-p50")
	b.ReportMetric(float64(cp95)/float64(rp95), "cold/raw-p95")
	b.ReportMetric(float64(wp50)/float64(rp50), "warm/raw-p50")
	b.ReportMetric(float64(wp95)/float64(rp95), "warm/raw-p95")
	b.ReportMetric(0, "ns/op") // the per-op time mixes three lookups; the metrics above are the result
}

func percentiles(d []time.Duration) (p50, p95 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0, 0
	}
	return s[len(s)*50/100], s[min(len(s)-1, len(s)*95/100)]
}
