package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/iagon/gridchat/wire"
)

// TestRunningNodeAnnouncesConfiguredLimitsInHello starts gridnode as a real
// process with WebSocket and delivery limits from the file, one of them
// overridden by the environment, and reads them back from the hello its
// WebSocket API sends a client.
func TestRunningNodeAnnouncesConfiguredLimitsInHello(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "gridnode.toml")
	writeFile(t, conf, fmt.Sprintf(`
data_dir = %q
listen_addrs = ["/ip4/127.0.0.1/tcp/0"]
gateway_addr = "127.0.0.1:0"

[websocket]
max_frame_bytes = 200001
max_in_flight = 33
requests_per_second = 44.5
request_burst = 55
handshake_timeout = "7s"
idle_timeout = "66s"

[delivery]
max_ciphertext = 40000
max_recipients = 77

[mailbox]
max_envelope_bytes = 40000
`, filepath.Join(dir, "data")))
	cmd := gridnode(t, []string{"GRIDCHAT_DELIVERY_MAX_RECIPIENTS=88"}, "run", "--config", conf)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no output: %v; stderr:\n%s", err, stderr.String())
	}
	m := gatewayRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("unexpected first line %q", line)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(m[1], "http")+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.DecodeServerFrame(data)
	if err != nil || f.Push == nil || f.Push.Name != wire.PushHello {
		t.Fatalf("first frame %s: %v", data, err)
	}
	var hello wire.Hello
	if err := wire.StrictUnmarshal(f.Push.Body, &hello); err != nil {
		t.Fatal(err)
	}
	want := wire.Limits{
		MaxFrameBytes: 200001, MaxCiphertextBytes: 40000, MaxRecipients: 88, MaxInFlight: 33,
		RequestsPerSecond: 44.5, RequestBurst: 55, HandshakeTimeoutMS: 7000, IdleTimeoutMS: 66000,
	}
	if hello.Limits != want {
		t.Errorf("hello limits\n got %+v\nwant %+v", hello.Limits, want)
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("gridnode run after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
}
