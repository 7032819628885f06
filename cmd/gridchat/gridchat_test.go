package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildBinaries builds gridchat and gridnode into a temporary directory.
func buildBinaries(t *testing.T) (gridchat, gridnode string) {
	t.Helper()
	dir := t.TempDir()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, b := range []struct{ pkg, out string }{
		{"github.com/iagon/gridchat/cmd/gridchat", filepath.Join(dir, "gridchat")},
		{"github.com/iagon/gridchat/cmd/gridnode", filepath.Join(dir, "gridnode")},
	} {
		cmd := exec.Command(gobin, "build", "-o", b.out, b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return filepath.Join(dir, "gridchat"), filepath.Join(dir, "gridnode")
}

// lines collects a process's output lines and lets the test wait for one.
type lines struct {
	mu   sync.Mutex
	all  []string
	more chan struct{}
}

func watch(r io.Reader) *lines {
	l := &lines{more: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.all = append(l.all, sc.Text())
			l.mu.Unlock()
			select {
			case l.more <- struct{}{}:
			default:
			}
		}
		close(l.more)
	}()
	return l
}

// waitFor returns the first line containing s, failing after d.
func (l *lines) waitFor(t *testing.T, s string, d time.Duration) string {
	t.Helper()
	deadline := time.After(d)
	for {
		l.mu.Lock()
		for _, x := range l.all {
			if strings.Contains(x, s) {
				l.mu.Unlock()
				return x
			}
		}
		l.mu.Unlock()
		select {
		case _, ok := <-l.more:
			if !ok {
				l.mu.Lock()
				defer l.mu.Unlock()
				for _, x := range l.all {
					if strings.Contains(x, s) {
						return x
					}
				}
				t.Fatalf("output ended without %q:\n%s", s, strings.Join(l.all, "\n"))
			}
		case <-deadline:
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("no %q within %s:\n%s", s, d, strings.Join(l.all, "\n"))
		}
	}
}

// startSwarm runs "gridnode swarm -n 2" until the test ends (cancel stops it with SIGINT, the cleanup waits for
// it) and returns its two gateway URLs once the swarm is ready.
func startSwarm(t *testing.T, ctx context.Context, cancel context.CancelFunc, gridnode string) (string, string) {
	t.Helper()
	swarm := exec.CommandContext(ctx, gridnode, "swarm", "-n", "2", "--data-dir", t.TempDir())
	swarm.Cancel = func() error { return swarm.Process.Signal(os.Interrupt) }
	swarm.WaitDelay = 20 * time.Second
	out, err := swarm.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	swarm.Stderr = os.Stderr
	if err := swarm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = swarm.Wait() })
	nodes := watch(out)
	nodes.waitFor(t, "swarm ready", time.Minute)
	gw := func(n string) string {
		line := nodes.waitFor(t, "node="+n+" ", time.Second)
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "gateway="); ok {
				return v
			}
		}
		t.Fatalf("no gateway in %q", line)
		return ""
	}
	return gw("1"), gw("2")
}

// cliSwarm is a "gridnode swarm" of two nodes started for one process test, and the gridchat binary that the
// test runs against it.
type cliSwarm struct {
	t        *testing.T
	ctx      context.Context // ends with the test, or after 3 minutes
	gridchat string
	gw1, gw2 string // the gateway URLs of node 1 and node 2
}

// startCLISwarm skips the test under -short; otherwise it builds gridchat and gridnode and starts a swarm of two
// nodes (startSwarm) that runs until the test ends, for 3 minutes at the most.
func startCLISwarm(t *testing.T) *cliSwarm {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs binaries")
	}
	gridchat, gridnode := buildBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	gw1, gw2 := startSwarm(t, ctx, cancel, gridnode)
	return &cliSwarm{t: t, ctx: ctx, gridchat: gridchat, gw1: gw1, gw2: gw2}
}

// command returns gridchat with home as its --home and args, bound to the swarm's context.
func (s *cliSwarm) command(home string, args ...string) *exec.Cmd {
	return exec.CommandContext(s.ctx, s.gridchat, append([]string{"--home", home}, args...)...)
}

// run runs gridchat with home as its --home and returns its combined output.
func (s *cliSwarm) run(home string, args ...string) (string, error) {
	b, err := s.command(home, args...).CombinedOutput()
	return string(b), err
}

// must is run for a command that must succeed: it fails the test, with the output, if the command fails.
func (s *cliSwarm) must(home string, args ...string) string {
	s.t.Helper()
	b, err := s.run(home, args...)
	if err != nil {
		s.t.Fatalf("gridchat %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return b
}

// Acceptance 8: gridchat, run as real processes, does one full chat between two users against a swarm
// started by "gridnode swarm".
func TestGridchatProcessesChatAgainstGridnodeSwarm(t *testing.T) {
	s := startCLISwarm(t)
	alice, bob := t.TempDir(), t.TempDir()
	s.must(alice, "init", "--node", s.gw1, "--username", "alice")
	s.must(bob, "init", "--node", s.gw2, "--username", "bob")

	// Bob opens an interactive chat with Alice and keeps it open.
	bobChat := s.command(bob, "chat", "alice")
	bobIn, _ := bobChat.StdinPipe()
	bobOut, _ := bobChat.StdoutPipe()
	bobChat.Stderr = os.Stderr
	if err := bobChat.Start(); err != nil {
		t.Fatal(err)
	}
	bobLines := watch(bobOut)
	bobLines.waitFor(t, "chatting with alice", 30*time.Second)

	// Alice says hello and waits for one answer.
	aliceChat := s.command(alice, "chat", "bob", "--until", "1", "--timeout", "60s")
	aliceChat.Stdin = strings.NewReader("hello bob, it's alice\n")
	aliceOut, _ := aliceChat.StdoutPipe()
	aliceChat.Stderr = os.Stderr
	if err := aliceChat.Start(); err != nil {
		t.Fatal(err)
	}
	aliceLines := watch(aliceOut)

	bobLines.waitFor(t, "alice: hello bob, it's alice", 60*time.Second)
	if _, err := io.WriteString(bobIn, "hi alice, bob here\n"); err != nil {
		t.Fatal(err)
	}
	aliceLines.waitFor(t, "bob: hi alice, bob here", 60*time.Second)
	if err := aliceChat.Wait(); err != nil {
		t.Fatalf("alice's chat: %v", err)
	}
	bobIn.Close()
	if err := bobChat.Wait(); err != nil {
		t.Fatalf("bob's chat: %v", err)
	}
	// Both histories hold the whole chat.
	for _, home := range []string{alice, bob} {
		peer := "bob"
		if home == bob {
			peer = "alice"
		}
		h := s.must(home, "history", peer)
		if !strings.Contains(h, "hello bob, it's alice") || !strings.Contains(h, "hi alice, bob here") {
			t.Fatalf("history of %s:\n%s", peer, h)
		}
	}
}

func TestGridchatHelpAndUsageErrors(t *testing.T) {
	root := newRootCmd()
	var b strings.Builder
	root.SetOut(&b)
	root.SetArgs([]string{"--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"init", "link", "invite", "chat", "group", "verify", "backup", "restore", "devices", "revoke", "contacts"} {
		if !strings.Contains(b.String(), sub) {
			t.Errorf("--help does not list %q", sub)
		}
	}
	root = newRootCmd()
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	root.SetArgs([]string{"--home", t.TempDir(), "init"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "--node") {
		t.Fatalf("init without --node: %v", err)
	}
	root = newRootCmd()
	root.SetOut(io.Discard)
	root.SetArgs([]string{"--home", t.TempDir(), "chat", "bob"})
	err = root.Execute()
	if err == nil || !strings.Contains(err.Error(), "gridchat init") {
		t.Fatalf("chat without a device: %v", err)
	}
}

// Acceptance 4 as processes: "gridchat invite" on the old device prints a code and the gateway holding the
// rendezvous; "gridchat link" on another process joins there, and the new device then sees both devices of
// the account. Linking through another node of the swarm fails with an error that says where to link.
func TestGridchatInviteAndLinkProcessesAgainstGridnodeSwarm(t *testing.T) {
	s := startCLISwarm(t)
	old, fresh := t.TempDir(), t.TempDir()
	if b, err := s.run(old, "init", "--node", s.gw1, "--username", "alice"); err != nil {
		t.Fatalf("init: %v\n%s", err, b)
	}

	invite := s.command(old, "invite")
	invOut, _ := invite.StdoutPipe()
	invite.Stderr = os.Stderr
	if err := invite.Start(); err != nil {
		t.Fatal(err)
	}
	inv := watch(invOut)
	code := strings.TrimSpace(strings.TrimPrefix(inv.waitFor(t, "link code: ", 30*time.Second), "link code: "))
	linkGW := strings.TrimSpace(strings.TrimPrefix(inv.waitFor(t, "link gateway: ", time.Second), "link gateway: "))
	if !strings.Contains(linkGW, strings.TrimPrefix(s.gw1, "http://")) {
		t.Fatalf("invite names gateway %q; alice is on %s", linkGW, s.gw1)
	}
	inv.waitFor(t, "gridchat link --node "+linkGW+" --code "+code, time.Second)

	// The rendezvous is on alice's gateway only: the other node does not know it.
	b, err := s.run(t.TempDir(), "link", "--node", s.gw2, "--code", code)
	if err == nil || !strings.Contains(b, "not_found") {
		t.Fatalf("link on another gateway: %v\n%s", err, b)
	}

	b, err = s.run(fresh, "link", "--node", linkGW, "--code", code)
	if err != nil || !strings.Contains(b, "linked to account") {
		t.Fatalf("link: %v\n%s", err, b)
	}
	inv.waitFor(t, "linked", 30*time.Second)
	if err := invite.Wait(); err != nil {
		t.Fatalf("invite: %v", err)
	}
	devs, err := s.run(fresh, "devices")
	if err != nil {
		t.Fatalf("devices: %v\n%s", err, devs)
	}
	if n := strings.Count(devs, " added "); n != 2 || !strings.Contains(devs, "(this device)") {
		t.Fatalf("the new device sees:\n%s\nwant both devices of the account", devs)
	}
	oldDevs, _ := s.run(old, "devices")
	if strings.Count(oldDevs, " added ") != 2 {
		t.Fatalf("the old device sees:\n%s", oldDevs)
	}

	// The QR path: the payload under the QR code, linked from a third process.
	third := t.TempDir()
	qrInvite := s.command(old, "invite", "--qr")
	qrOut, _ := qrInvite.StdoutPipe()
	qrInvite.Stderr = os.Stderr
	if err := qrInvite.Start(); err != nil {
		t.Fatal(err)
	}
	qr := watch(qrOut)
	payload := strings.TrimSpace(strings.TrimPrefix(qr.waitFor(t, "link payload: ", 30*time.Second), "link payload: "))
	qrGW := strings.TrimSpace(strings.TrimPrefix(qr.waitFor(t, "link gateway: ", time.Second), "link gateway: "))
	if b, err := s.run(third, "link", "--node", qrGW, "--payload", payload); err != nil || !strings.Contains(b, "linked to account") {
		t.Fatalf("link by QR payload: %v\n%s", err, b)
	}
	if err := qrInvite.Wait(); err != nil {
		t.Fatalf("invite --qr: %v", err)
	}
	if devs, _ := s.run(third, "devices"); strings.Count(devs, " added ") != 3 {
		t.Fatalf("the third device sees:\n%s\nwant three devices", devs)
	}
}
