package tlog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"

	"github.com/iagon/gridchat/chain"
)

const testOrigin = "gridchat.grid/log/test"

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32))
}

func openTestLog(t testing.TB, dir string) *Log {
	t.Helper()
	l, err := Open(context.Background(), Config{Dir: dir, Origin: testOrigin, Key: testKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func testRecord(i int) chain.Record {
	var acct chain.AccountKey
	binary.BigEndian.PutUint64(acct[:], uint64(i/3))
	return chain.Record{Account: acct, Seq: uint64(i % 3), Body: fmt.Appendf(nil, "statement %d", i)}
}

// TestPublishReturnsReceiptVerifiedOffline checks what a receipt proves; how fast a publication is, is
// BenchmarkPublish's to measure.
func TestPublishReturnsReceiptVerifiedOffline(t *testing.T) {
	l := openTestLog(t, t.TempDir())
	ctx := context.Background()
	for i := range 5 {
		rc, err := l.Publish(ctx, testRecord(i))
		if err != nil {
			t.Fatal(err)
		}
		// Offline: a fresh policy, from the receipt's bytes only.
		parsed, err := chain.ParseReceipt(rc.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		pol := chain.Policy{LogKey: logKey(l)}
		cp, err := pol.Verify(parsed, testRecord(i))
		if err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		if rc.Index != uint64(i) || cp.Size <= rc.Index || cp.Origin != testOrigin {
			t.Fatalf("receipt %d: index %d, checkpoint %+v", i, rc.Index, cp)
		}
		if _, err := pol.Verify(parsed, testRecord(i+1)); !errors.Is(err, chain.ErrBadProof) {
			t.Fatalf("receipt %d verified another record: %v", i, err)
		}
	}
}

func logKey(l *Log) func(string) (notev, error) {
	v := l.Verifier()
	return func(origin string) (notev, error) {
		if origin != v.Name() {
			return nil, fmt.Errorf("unknown log %q", origin)
		}
		return v, nil
	}
}

func TestThousandPublicationsVerifyAndCheckpointsAreConsistent(t *testing.T) {
	l := openTestLog(t, t.TempDir())
	ctx := context.Background()
	const n = 1000
	receipts := make([]*chain.Receipt, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			rc, err := l.Publish(ctx, testRecord(i))
			if err != nil {
				errs <- err
				return
			}
			receipts[i] = rc
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	pol := chain.Policy{LogKey: logKey(l)}
	seen := map[uint64]bool{}
	cps := map[uint64]chain.Checkpoint{}
	for i, rc := range receipts {
		cp, err := pol.Verify(rc, testRecord(i))
		if err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		if seen[rc.Index] {
			t.Fatalf("index %d handed out twice", rc.Index)
		}
		seen[rc.Index] = true
		cps[cp.Size] = cp
	}
	if len(cps) < 2 {
		t.Fatalf("only %d distinct checkpoints", len(cps))
	}
	// Every pair of checkpoints handed out is consistent.
	for _, a := range cps {
		for _, b := range cps {
			if a.Size >= b.Size {
				continue
			}
			p, err := l.ConsistencyProof(ctx, a.Size, b.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := chain.VerifyConsistency(a, b, p); err != nil {
				t.Fatalf("%d→%d: %v", a.Size, b.Size, err)
			}
			if len(p) > 0 {
				p[0][0] ^= 1
				if err := chain.VerifyConsistency(a, b, p); !errors.Is(err, chain.ErrBadProof) {
					t.Fatalf("tampered consistency proof %d→%d accepted: %v", a.Size, b.Size, err)
				}
			}
		}
	}
}

func TestTamperedReceiptIsRefused(t *testing.T) {
	l := openTestLog(t, t.TempDir())
	ctx := context.Background()
	for i := range 3 {
		if _, err := l.Publish(ctx, testRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := l.Publish(ctx, testRecord(3))
	if err != nil {
		t.Fatal(err)
	}
	pol := chain.Policy{LogKey: logKey(l)}
	if _, err := pol.Verify(rc, testRecord(3)); err != nil {
		t.Fatal(err)
	}
	clone := func() *chain.Receipt {
		c, err := chain.ParseReceipt(rc.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	other := testKey(9)
	forged, err := chain.NewLogSigner(testOrigin, other)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		tamper func(*chain.Receipt) chain.Record
		want   error
	}{
		{"proof hash flipped", func(c *chain.Receipt) chain.Record { c.Proof[0][5] ^= 1; return testRecord(3) }, chain.ErrBadProof},
		{"proof hash dropped", func(c *chain.Receipt) chain.Record { c.Proof = c.Proof[1:]; return testRecord(3) }, chain.ErrBadProof},
		{"index changed", func(c *chain.Receipt) chain.Record { c.Index = 2; return testRecord(3) }, chain.ErrBadProof},
		{"record body changed", func(c *chain.Receipt) chain.Record {
			r := testRecord(3)
			r.Body = append([]byte(nil), r.Body...)
			r.Body[0] ^= 1
			return r
		}, chain.ErrBadProof},
		{"record seq changed", func(c *chain.Receipt) chain.Record { r := testRecord(3); r.Seq++; return r }, chain.ErrBadProof},
		{"checkpoint root changed", func(c *chain.Receipt) chain.Record {
			c.Checkpoint = replaceLine(t, c.Checkpoint, 2, base64.StdEncoding.EncodeToString(make([]byte, 32)))
			return testRecord(3)
		}, chain.ErrBadSignature},
		{"checkpoint size changed", func(c *chain.Receipt) chain.Record {
			c.Checkpoint = replaceLine(t, c.Checkpoint, 1, "1000")
			return testRecord(3)
		}, chain.ErrBadSignature},
		{"checkpoint signed by another key", func(c *chain.Receipt) chain.Record {
			cp, err := chain.ParseCheckpointText(c.Checkpoint[:bytes.Index(c.Checkpoint, []byte("\n\n"))+1])
			if err != nil {
				t.Fatal(err)
			}
			c.Checkpoint = signCheckpoint(t, forged, cp)
			return testRecord(3)
		}, chain.ErrBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := clone()
			r := tc.tamper(c)
			if _, err := pol.Verify(c, r); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func replaceLine(t *testing.T, note []byte, i int, s string) []byte {
	lines := bytes.Split(note, []byte("\n"))
	lines[i] = []byte(s)
	return bytes.Join(lines, []byte("\n"))
}

func TestLogSurvivesKillMidAppendWithoutLosingReceiptsOrForking(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "GRIDCHAT_TLOG_HELPER="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type printed struct {
		rc  *chain.Receipt
		rec chain.Record
	}
	var got []printed
	sc := bufio.NewScanner(out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var i int
		var b64 string
		if _, err := fmt.Sscanf(sc.Text(), "%d %s", &i, &b64); err != nil {
			t.Fatalf("child printed %q: %v", sc.Text(), err)
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := chain.ParseReceipt(raw)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, printed{rc, testRecord(i)})
		if len(got) == 60 {
			// The child keeps appending from many goroutines: kill it mid-append.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	cmd.Wait()
	if len(got) < 60 {
		t.Fatalf("child printed only %d receipts", len(got))
	}

	l := openTestLog(t, dir)
	ctx := context.Background()
	// Appending after the restart must extend, not fork, the old tree.
	if _, err := l.Publish(ctx, testRecord(100000)); err != nil {
		t.Fatal(err)
	}
	raw, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pol := chain.Policy{LogKey: logKey(l)}
	now, err := pol.OpenCheckpoint(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range got {
		old, err := pol.Verify(p.rc, p.rec)
		if err != nil {
			t.Fatalf("receipt %d: %v", p.rc.Index, err)
		}
		cons, err := l.ConsistencyProof(ctx, old.Size, now.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := chain.VerifyConsistency(old, now, cons); err != nil {
			t.Fatalf("checkpoint %d not a prefix of the reopened log's %d: %v", old.Size, now.Size, err)
		}
		e, err := l.Entry(ctx, p.rc.Index, now.Size)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := chain.NewEntry(p.rec)
		if e != want {
			t.Fatalf("entry %d changed after restart", p.rc.Index)
		}
	}
}

// TestHelperProcess is the child of TestLogSurvivesKillMidAppend...: it
// appends forever and prints each receipt it gets.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("GRIDCHAT_TLOG_HELPER")
	if dir == "" {
		return
	}
	l, err := Open(context.Background(), Config{Dir: dir, Origin: testOrigin, Key: testKey(1)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := g; ; i += 8 {
				rc, err := l.Publish(context.Background(), testRecord(i))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(w, "%d %s\n", i, base64.StdEncoding.EncodeToString(rc.Marshal()))
				w.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func TestReopenedLogKeepsItsSize(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	l, err := Open(ctx, Config{Dir: dir, Origin: testOrigin, Key: testKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := l.Publish(ctx, testRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Publish(ctx, testRecord(9)); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
	l2 := openTestLog(t, dir)
	rc, err := l2.Publish(ctx, testRecord(3))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Index != 3 {
		t.Fatalf("index after reopen = %d, want 3", rc.Index)
	}
}
