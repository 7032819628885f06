package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The tests run gridnode as a real process: the test binary re-executes
// itself with runAsGridnode set, and then runs main() and nothing else.
const runAsGridnode = "GRIDNODE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsGridnode) == "1" {
		os.Args = append([]string{"gridnode"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// gridnode returns a command that runs gridnode with args, with a clean
// GRIDCHAT_* environment plus extraEnv, in its own process group.
func gridnode(t *testing.T, extraEnv []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) && !strings.HasPrefix(kv, "XDG_DATA_HOME=") {
			env = append(env, kv)
		}
	}
	env = append(env, runAsGridnode+"=1", "XDG_DATA_HOME="+t.TempDir())
	cmd.Env = append(env, extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// runToEnd runs cmd to its end (at most 60 s) and returns its exit code,
// stdout and stderr.
func runToEnd(t *testing.T, cmd *exec.Cmd) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("gridnode %v did not end; stderr:\n%s", cmd.Args[1:], stderr.String())
		return 0, "", ""
	}
}

var gatewayRE = regexp.MustCompile(`gateway=(http://\S+) peer_id=(\S+)`)

func TestSwarmOfThreeServesHealthzAndExitsZeroOnSIGINT(t *testing.T) {
	tmp := t.TempDir()
	cmd := gridnode(t, []string{"TMPDIR=" + tmp}, "swarm", "-n", "3")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// Three nodes start in one process, under -race on a loaded machine; the deadline only guards against a hang.
	deadline := time.After(60 * time.Second)
	urls := map[string]string{} // gateway URL -> peer ID
	for len(urls) < 3 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("gridnode swarm ended early; stderr:\n%s", stderr.String())
			}
			if m := gatewayRE.FindStringSubmatch(line); m != nil {
				urls[m[1]] = m[2]
			}
		case <-deadline:
			t.Fatalf("gridnode swarm printed %d gateways in 60 s; stderr:\n%s", len(urls), stderr.String())
		}
	}
	client := &http.Client{Timeout: 2 * time.Second}
	for url, id := range urls {
		for {
			if healthy(client, url) {
				break
			}
			if time.Since(start) > 60*time.Second {
				t.Fatalf("%s/healthz not OK within 60 s of start", url)
			}
			time.Sleep(50 * time.Millisecond) // polling a separate process
		}
		var info struct {
			PeerID string `json:"peer_id"`
		}
		getJSON(t, client, url+"/v1/info", &info)
		if info.PeerID != id {
			t.Errorf("%s/v1/info peer_id = %s, printed %s", url, info.PeerID, id)
		}
	}
	go func() {
		for range lines { // drain the rest of stdout
		}
	}()

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("gridnode swarm after SIGINT: %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("gridnode swarm did not exit within 20 s of SIGINT; stderr:\n%s", stderr.String())
	}
	// No process is left in its process group...
	if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("processes left in gridnode's group after exit (kill -0: %v)", err)
	}
	// ...no gateway still answers...
	for url := range urls {
		if healthy(client, url) {
			t.Errorf("%s still answers after exit", url)
		}
	}
	// ...and the temporary data directories are gone.
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("swarm left %d entries in its temporary directory", len(left))
	}
}

func healthy(c *http.Client, url string) bool {
	resp, err := c.Get(url + "/healthz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok"
}

func getJSON(t *testing.T, c *http.Client, url string, v any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func TestRunServesInfoAndStopsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "gridnode.toml")
	writeFile(t, conf, fmt.Sprintf(`
data_dir = %q
listen_addrs = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0/ws"]
gateway_addr = "127.0.0.1:0"
log_format = "json"

[conn_manager]
low_water = 10
high_water = 20
grace_period = "30s"
`, filepath.Join(dir, "data")))
	cmd := gridnode(t, nil, "run", "--config", conf)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no output: %v; stderr:\n%s", err, stderr.String())
	}
	m := gatewayRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("unexpected first line %q", line)
	}
	var info struct {
		PeerID string   `json:"peer_id"`
		Addrs  []string `json:"addrs"`
	}
	getJSON(t, &http.Client{Timeout: 5 * time.Second}, m[1]+"/v1/info", &info)
	if info.PeerID != m[2] || len(info.Addrs) < 3 {
		t.Errorf("/v1/info = %+v, want peer %s and 3 addresses", info, m[2])
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("gridnode run after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
	// The JSON log format from the file is in effect.
	if !strings.Contains(stderr.String(), `"msg":"node started"`) {
		t.Errorf("stderr is not JSON logs:\n%s", stderr.String())
	}
	// The same data directory gives the same peer ID.
	code, out, errOut := runToEnd(t, gridnode(t, nil, "id", "--data-dir", filepath.Join(dir, "data")))
	if code != 0 || strings.TrimSpace(out) != m[2] {
		t.Errorf("gridnode id = %q (exit %d, stderr %q), want %s", out, code, errOut, m[2])
	}
}

func TestBadConfigurationEndsWithOneErrorLine(t *testing.T) {
	inUse, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inUse.Close()
	dir := t.TempDir()
	unknownKey := filepath.Join(dir, "unknown.toml")
	writeFile(t, unknownKey, "data_dir = \"x\"\n[conn_manager]\nlow_watermark = 3\n")
	badSyntax := filepath.Join(dir, "syntax.toml")
	writeFile(t, badSyntax, "data_dir = \n")
	negativeLimit := filepath.Join(dir, "negative.toml")
	writeFile(t, negativeLimit, "[link_relay]\nmax_per_conn = -2\n")
	aFile := filepath.Join(dir, "file")
	writeFile(t, aFile, "x")
	loopback := []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--gateway-addr", "127.0.0.1:0"}

	tests := []struct {
		name string
		env  []string
		args []string
		want string // in the error line
	}{
		{"unknown key in file", nil, []string{"run", "--config", unknownKey}, `unknown key "conn_manager.low_watermark" (line 3)`},
		{"bad TOML", nil, []string{"run", "--config", badSyntax}, "line 1"},
		{"missing config file", nil, []string{"run", "--config", filepath.Join(dir, "nope.toml")}, "no such file"},
		{"unparsable listen address", nil, []string{"run", "--data-dir", filepath.Join(dir, "d1"), "--listen", "/ip4/1.2.3/tcp/1"}, "listen_addrs"},
		{"unparsable bootstrap in env", []string{"GRIDCHAT_BOOTSTRAP=/ip4/127.0.0.1/tcp/1"}, append([]string{"run", "--data-dir", filepath.Join(dir, "d2")}, loopback...), "bootstrap"},
		{"bad number in env", []string{"GRIDCHAT_CONN_MANAGER_LOW_WATER=many"}, []string{"run"}, "environment"},
		{"gateway port in use", nil, []string{"run", "--data-dir", filepath.Join(dir, "d3"), "--listen", "/ip4/127.0.0.1/tcp/0", "--gateway-addr", inUse.Addr().String()}, "address already in use"},
		{"p2p port in use", nil, []string{"run", "--data-dir", filepath.Join(dir, "d4"), "--gateway-addr", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0,/ip4/" + inUse.Addr().String() + "/tcp"}, "listen"},
		{"unwritable data dir", nil, append([]string{"run", "--data-dir", filepath.Join(aFile, "data")}, loopback...), "data directory"},
		{"unwritable data dir for id", nil, []string{"id", "--data-dir", filepath.Join(aFile, "data")}, "data directory"},
		{"bad log level", nil, []string{"run", "--log-level", "loud"}, "log_level"},
		{"negative limit in file", nil, []string{"run", "--config", negativeLimit}, "gridnode: link_relay.max_per_conn = -2: must not be negative"},
		{"mailbox quorum over replicas in env", []string{"GRIDCHAT_MAILBOX_REPLICAS=2", "GRIDCHAT_MAILBOX_WRITE_QUORUM=3"}, []string{"run"}, "gridnode: mailbox.write_quorum = 3: must not exceed mailbox.replicas (2)"},
		{"unknown flag", nil, []string{"run", "--colour"}, "unknown flag"},
		{"swarm of zero", nil, []string{"swarm", "-n", "0"}, "want 1 to"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.args = fixPortInUse(tc.args, inUse.Addr().(*net.TCPAddr).Port)
			code, stdout, stderr := runToEnd(t, gridnode(t, tc.env, tc.args...))
			if code == 0 {
				t.Fatalf("exit 0; stdout %q", stdout)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "gridnode: ") {
				t.Fatalf("stderr is not one error line:\n%s", stderr)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Fatalf("panic:\n%s", stderr)
			}
			if !strings.Contains(lines[0], tc.want) {
				t.Errorf("error line %q does not mention %q", lines[0], tc.want)
			}
		})
	}
}

// fixPortInUse rewrites the placeholder address "/ip4/<host:port>/tcp" into
// a TCP multiaddr of the busy port.
func fixPortInUse(args []string, port int) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, fmt.Sprintf("/ip4/127.0.0.1:%d/tcp", port), fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))
	}
	return out
}

func TestVersionPrintsOneLine(t *testing.T) {
	code, out, _ := runToEnd(t, gridnode(t, nil, "version"))
	if code != 0 || !strings.HasPrefix(out, "gridnode ") || strings.Count(out, "\n") != 1 {
		t.Errorf("gridnode version: exit %d, %q", code, out)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
