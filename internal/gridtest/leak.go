package gridtest

import (
	"testing"

	"go.uber.org/goleak"
)

// LeakOptions are the goleak options for a package whose tests run nodes:
// they ignore only goroutines that libraries start once per process and
// never stop, each named with the reason.
func LeakOptions() []goleak.Option {
	return []goleak.Option{}
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
