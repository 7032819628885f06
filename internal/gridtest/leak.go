package gridtest

import (
	"testing"

	"go.uber.org/goleak"
)

// LeakOptions are the goleak options for a package whose tests run nodes:
// they may ignore only goroutines that a library starts once per process and
// never stops, each named here with the reason. There are none today: with
// go-libp2p v0.51, kad-dht v0.42, pubsub v0.19 and go-ds-pebble v0.5, a
// closed node leaves no goroutine behind (pebble's disk-health goroutine
// leaks only when opening a locked store fails, which the node's own data
// directory lock prevents).
func LeakOptions() []goleak.Option {
	return nil
}

// VerifyNone fails t if goroutines other than the process-wide ones in
// LeakOptions are still running (goleak retries for a while, so goroutines
// that are finishing are given time to). Call it after closing every node,
// e.g. deferred at the top of a test that closes its nodes itself.
func VerifyNone(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	goleak.VerifyNone(t, append(LeakOptions(), opts...)...)
}

// VerifyTestMain runs a package's tests and then fails if goroutines are
// left running: use it as the package's TestMain.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, append(LeakOptions(), opts...)...)
}
